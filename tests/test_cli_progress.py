"""Progress on the command line: tqdm bars on a terminal; piped or in a file (CI, a Slurm log), one
plain line per stage start, quarter and end, with no carriage return or cursor move."""

import ast
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dragwidget.cli_progress import Counter, StageProgress, quiet_library_bars


@dataclass
class Event:          # the engine's Progress, as the printer reads it (duck-typed)
    stage: str
    step: int
    total: int
    message: str = ""
    cached: bool = False


class Terminal(io.StringIO):
    def isatty(self):
        return True


def ticking(seconds=0.5):
    """A clock that advances `seconds` per reading, so that durations are known."""
    ticks = iter(range(10_000))
    return lambda: next(ticks) * seconds


def assert_plain(text):
    assert "\r" not in text and "\x1b[" not in text, repr(text)


def run_stages(stream, events):
    with StageProgress(stream, clock=ticking()) as show:
        for event in events:
            show(event)
    return stream.getvalue()


def a_drag_run():
    yield Event("waiting", 0, 0, "waiting for another run on this model to finish")
    yield from (Event("lora", step, 80, f"loss {1 / step:.4f}") for step in range(1, 81))
    yield Event("inversion", 7, 7, cached=True)
    yield Event("drag", 0, 80)
    yield from (Event("drag", step, 80) for step in range(1, 31))   # the handles arrived at step 30
    yield from (Event("denoise", step, 7) for step in range(1, 8))
    yield Event("decode", 1, 1)
    yield Event("verdict", 1, 1, "reached, shape kept: 0.4 px from the target")


def test_off_a_terminal_each_stage_has_its_start_quarters_and_end_in_plain_lines():
    text = run_stages(io.StringIO(), a_drag_run())
    assert_plain(text)
    assert text.splitlines() == [
        "waiting: waiting for another run on this model to finish",
        "waiting: done in 0.5 s",
        "lora: started, 80 steps, loss 1.0000",
        "lora: 20/80 (25 %), loss 0.0500",
        "lora: 40/80 (50 %), loss 0.0250",
        "lora: 60/80 (75 %), loss 0.0167",
        "lora: 80/80 done in 0.5 s, loss 0.0125",
        "inversion: 7/7 cached",
        "drag: started, 80 steps",
        "drag: 20/80 (25 %)",
        "drag: 30/80 stopped in 0.5 s",      # ended by the next stage's start
        "denoise: started, 7 steps",
        "denoise: 2/7 (28 %)",
        "denoise: 4/7 (57 %)",
        "denoise: 6/7 (85 %)",
        "denoise: 7/7 done in 0.5 s",
        "decode: 1/1 done",
        "verdict: 1/1 done, reached, shape kept: 0.4 px from the target",
    ]


def test_a_cached_stage_is_one_line_with_its_message():
    text = run_stages(io.StringIO(), [Event("lora", 80, 80, "LoRA loaded from cache", cached=True),
                                      Event("inversion", 7, 7, cached=True)])
    assert text.splitlines() == ["lora: 80/80 cached, LoRA loaded from cache", "inversion: 7/7 cached"]


def test_a_jump_past_several_quarters_is_one_line_and_a_stage_run_again_starts_again():
    events = [Event("features", 1, 4, "picture 1"), Event("features", 4, 4, "picture 2"),
              Event("features", 1, 2), Event("features", 2, 2)]
    assert run_stages(io.StringIO(), events).splitlines() == [
        "features: started, 4 steps, picture 1",
        "features: 1/4 (25 %)",
        "features: 4/4 done in 0.5 s, picture 2",
        "features: started, 2 steps",
        "features: 1/2 (50 %)",
        "features: 2/2 done in 0.5 s",
    ]


def test_a_stage_left_open_is_ended_on_close_even_when_the_run_fails():
    stream = io.StringIO()
    with pytest.raises(RuntimeError):
        with StageProgress(stream, clock=ticking()) as show:
            show(Event("drag", 0, 10))
            show(Event("drag", 3, 10))
            raise RuntimeError("cancelled")
    assert stream.getvalue().splitlines() == ["drag: started, 10 steps", "drag: 3/10 (30 %)",
                                              "drag: 3/10 stopped in 0.5 s"]


def test_on_a_terminal_the_stages_are_tqdm_bars():
    text = run_stages(Terminal(), a_drag_run())
    assert "\r" in text
    assert "lora: 100%" in text and "80/80" in text and "cached" in text and "loss 0.0125" in text


# ---------------------------------------------------------------- loops over samples and steps

def test_the_sample_counter_off_a_terminal():
    stream = io.StringIO()
    with Counter(desc="dragbench", total=10, unit="sample", stream=stream, clock=ticking()) as bar:
        for index in range(10):
            if index == 3:
                bar.write("skipped cat_3: no mask")
            else:
                bar.set_postfix_str(f"cat_{index}: 2.0 s")
            bar.update(1)
        assert bar.n == 10
    text = stream.getvalue()
    assert_plain(text)
    assert text.splitlines() == [
        "dragbench: started, 10 samples",
        "dragbench: 3/10 (30 %), cat_2: 2.0 s",
        "skipped cat_3: no mask",
        "dragbench: 5/10 (50 %), cat_4: 2.0 s",
        "dragbench: 8/10 (80 %), cat_7: 2.0 s",
        "dragbench: 10/10 done in 0.5 s, cat_9: 2.0 s",
    ]


def test_a_counter_closed_early_says_where_it_stopped_once():
    stream = io.StringIO()
    bar = Counter(desc="scoring", total=4, unit="sample", stream=stream, clock=ticking())
    bar.update()
    bar.close()
    bar.close()
    assert stream.getvalue().splitlines() == ["scoring: started, 4 samples", "scoring: 1/4 (25 %)",
                                              "scoring: 1/4 stopped in 0.5 s"]


def test_an_iterated_counter_resumes_at_its_initial_step_and_closes_at_the_end():
    stream = io.StringIO()
    seen = list(Counter(range(3, 8), desc="VAE", initial=3, total=8, stream=stream, clock=ticking()))
    assert seen == [3, 4, 5, 6, 7]
    assert stream.getvalue().splitlines() == ["VAE: started at 3/8 steps", "VAE: 4/8 (50 %)", "VAE: 6/8 (75 %)",
                                              "VAE: 8/8 done in 0.5 s"]
    stream = io.StringIO()
    assert list(Counter(range(0, 600, 200), desc="latent pool", unit="chunk", stream=stream)) == [0, 200, 400]
    assert stream.getvalue().splitlines()[0] == "latent pool: started, 3 chunks"


def test_on_a_terminal_the_counter_is_a_tqdm_bar_with_lines_above_it():
    stream = Terminal()
    with Counter(desc="dragbench", total=3, unit="sample", stream=stream) as bar:
        bar.update()
        bar.write("skipped cat_1: no mask")
        bar.set_postfix_str("cat_2: 2.0 s")
        bar.update(2)
        assert bar.n == 3
    text = stream.getvalue()
    assert "\r" in text and "skipped cat_1: no mask\n" in text and "3/3" in text and "cat_2: 2.0 s" in text


# ---------------------------------------------------------------- the libraries' bars, the import

def test_off_a_terminal_the_model_libraries_bars_are_switched_off_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    quiet_library_bars(Terminal())
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    quiet_library_bars(io.StringIO())
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    quiet_library_bars(io.StringIO())
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"


def imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            yield "." * node.level + (node.module or "")
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_it_is_the_command_lines_alone():
    package = Path(__file__).resolve().parents[1] / "src" / "dragwidget"
    assert not [name for name in imports(package / "cli_progress.py") if name.startswith((".", "dragwidget"))]
    widget = {str(path.name): found for path in (package / "widget").glob("*.py")
              if (found := [name for name in imports(path) if "cli_progress" in name])}
    assert not widget


def test_importing_it_imports_no_tqdm():
    done = subprocess.run([sys.executable, "-c", "import sys, dragwidget.cli_progress\nprint('tqdm' in sys.modules)"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False"], done.stdout + done.stderr


# ---------------------------------------------------------------- end to end

def test_an_edit_piped_prints_plain_stage_lines(image_file, tmp_path):
    env = {**os.environ, "DRAGWIDGET_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    out = tmp_path / "edited.png"
    done = subprocess.run([sys.executable, "-m", "dragwidget.cli", "edit", str(image_file(64, 48)), "--model", "toy",
                           "--points", "10,12,30,20", "--lora-steps", "4", "--drag-steps", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert_plain(done.stderr)
    lines = done.stderr.splitlines()
    for expected in ("lora: started, 4 steps", "lora: 1/4 (25 %)", "lora: 2/4 (50 %)", "lora: 3/4 (75 %)",
                     "lora: 4/4 done in", "inversion: started", "denoise: started", "decode: 1/1 done"):
        assert any(line.startswith(expected) for line in lines), (expected, done.stderr)
    assert out.is_file()
