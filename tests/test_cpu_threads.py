"""The engine chooses torch's CPU thread count at every heavy call; users can override it.

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


@pytest.mark.parametrize("others, expected", [(0.0, 2), (0.1, 2), (1.0, 1), (1.6, 1), (3.0, 1)])
def test_automatic_choice_uses_the_cores_other_processes_leave_free(editor, make_image, monkeypatch, others, expected):
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(cpu_threads, "TORCH_DEFAULT", 2)
    monkeypatch.setattr(cpu_threads, "cores_used_by_others", lambda: others)
    assert cpu_threads.choose_cpu_threads() == expected
    if others == 0.0:  # once through the engine: an idle machine gets both cores despite the pin
        assert threads_during_run(editor, make_image, seed=33) == 2


def test_automatic_choice_never_exceeds_torchs_own_default(monkeypatch):
    # torch's default is the physical cores (or OMP_NUM_THREADS): hyper-threads do not count.
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 16)
    monkeypatch.setattr(cpu_threads, "TORCH_DEFAULT", 8)
    monkeypatch.setattr(cpu_threads, "cores_used_by_others", lambda: 0.0)
    assert cpu_threads.choose_cpu_threads() == 8


def test_a_busy_process_is_measured_as_a_used_core():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + 20\n"
                                                   "while time.monotonic() < end: pass\n"])
    try:
        time.sleep(0.3)
        cpu_threads.cores_used_by_others()   # starts the window
        time.sleep(0.6)
        others = cpu_threads.cores_used_by_others()
    finally:
        busy.kill()
        busy.wait()
    if others is None:
        pytest.skip("no way to measure other processes' CPU use on this platform")
    assert others >= 0.3


def test_non_cpu_devices_keep_torchs_setting(monkeypatch):
    monkeypatch.setenv(cpu_threads.ENV_VAR, "3")
    for device in ("cuda", "mps", torch.device("cuda", 0)):
        cpu_threads.use_cpu_threads(device)
        assert torch.get_num_threads() == 1
    cpu_threads.use_cpu_threads("cpu")
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
