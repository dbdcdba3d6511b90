"""The engine sets torch's CPU thread count for its model at every heavy call; users can override it.

tests/conftest.py pins torch to one thread for the whole session: every test here starts from that
pin (and puts it back), so a count seen inside a run is the engine's doing.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from dragwidget import DragCancelled, DragEditor, DragRequest, InputError
from dragwidget import cpu_threads


@pytest.fixture(autouse=True)
def pinned_to_one_thread(monkeypatch):
    monkeypatch.delenv(cpu_threads.ENV_VAR, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def threads_during_run(editor, make_image, seed):
    """torch's thread count as seen from the run's first progress event; the run is then cancelled
    (a forced count above the free cores would make the rest of it slow on a loaded machine)."""
    seen = []
    request = DragRequest(make_image(40, 40, seed=seed), [{"handle": [10, 20], "target": [14, 20]}], prompt="a disc")
    with pytest.raises(DragCancelled):
        editor.run(request, progress=lambda event: seen.append(torch.get_num_threads()), cancel=lambda: bool(seen))
    return seen[0]


def test_the_environment_variable_sets_the_threads_of_a_run(editor, make_image, monkeypatch):
    monkeypatch.setenv(cpu_threads.ENV_VAR, "3")
    assert threads_during_run(editor, make_image, seed=31) == 3


def test_the_editor_argument_wins_over_the_environment(tiny_model, small_config, make_image, tmp_path, monkeypatch):
    monkeypatch.setenv(cpu_threads.ENV_VAR, "3")
    editor = DragEditor(tiny_model, config=small_config, cache_dir=tmp_path, cpu_threads=2)
    assert threads_during_run(editor, make_image, seed=32) == 2


def test_a_small_model_runs_on_one_thread_whatever_was_set_before(editor, make_image):
    torch.set_num_threads(2)            # e.g. torch's default on two cores
    assert threads_during_run(editor, make_image, seed=33) == 1


def test_a_large_model_gets_torchs_default(editor, make_image, monkeypatch):
    monkeypatch.setattr(cpu_threads, "TORCH_DEFAULT", 3)
    monkeypatch.setattr(cpu_threads, "SMALL_UNET_PARAMETERS", 10)     # the tiny UNet now counts as large
    assert threads_during_run(editor, make_image, seed=34) == 3


def test_the_choice_does_not_follow_the_machines_load(tiny_model):
    # The thread count changes the last bits of a CPU result: a choice that followed the load
    # would make the same edit differ between a quiet and a busy moment.
    quiet = cpu_threads.choose_cpu_threads(tiny_model.unet)
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + 20\n"
                                                   "while time.monotonic() < end: pass\n"])
    try:
        time.sleep(0.5)
        assert cpu_threads.choose_cpu_threads(tiny_model.unet) == quiet == 1
    finally:
        busy.kill()
        busy.wait()


def test_non_cpu_devices_keep_torchs_setting(tiny_model, monkeypatch):
    monkeypatch.setenv(cpu_threads.ENV_VAR, "3")
    for device in ("cuda", "mps", torch.device("cuda", 0)):
        cpu_threads.use_cpu_threads(device, tiny_model.unet)
        assert torch.get_num_threads() == 1
    cpu_threads.use_cpu_threads("cpu", tiny_model.unet)
    assert torch.get_num_threads() == 3


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5", "2 threads"])
def test_an_invalid_environment_value_is_a_clear_error_before_the_model_loads(tiny_model, monkeypatch, value):
    monkeypatch.setenv(cpu_threads.ENV_VAR, value)
    with pytest.raises(InputError, match=rf"DRAGWIDGET_CPU_THREADS must be 'auto' or a whole number.*{value!r}"):
        DragEditor(tiny_model)
    with pytest.raises(InputError, match="DRAGWIDGET_CPU_THREADS"):
        DragEditor("no/such-model-is-ever-loaded")


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "many"])
def test_an_invalid_argument_is_a_clear_error(tiny_model, value):
    with pytest.raises(InputError, match="cpu_threads must be 'auto' or a whole number"):
        DragEditor(tiny_model, cpu_threads=value)


@pytest.mark.parametrize("value", ["auto", "AUTO", " auto ", ""])
def test_auto_means_the_automatic_choice(monkeypatch, value):
    monkeypatch.setenv(cpu_threads.ENV_VAR, value)
    assert cpu_threads.requested_threads() is None
    assert cpu_threads.requested_threads("auto") is None
    assert cpu_threads.requested_threads(" 4 ") == 4
