#!/usr/bin/env python3
"""Per-stage time and peak memory of one DragDiffusion edit, through the public DragEditor API.

    python3 benchmarks/bench_stages.py                 # tiny random model on CPU (the default without CUDA)
    python3 benchmarks/bench_stages.py --sd15          # SD 1.5 architecture, random weights, 512x512
    python3 benchmarks/bench_stages.py --lora-steps 10 --drag-steps 10 --repeats 3

With CUDA available the SD 1.5-architecture model is the default (pass --tiny for the tiny one).
Both models are built from configs with random weights (dragwidget.tiny_model) into a folder in
the diffusers layout and loaded with dragwidget.load_model, exactly as a real checkpoint. Random
weights cost the same FLOPs as trained ones, so the timings hold for the real SD 1.5 (but the
number of drag steps does not: point tracking on random features decides when the handles
"arrive", so look at drag steps per second rather than the optimisation total).

The settings are the reference defaults (dragwidget.DragConfig: 80 LoRA steps of batch 4, 50 DDIM
steps at strength 0.7, at most 80 drag steps) unless changed with the options. Every repeat
trains its LoRA from scratch (a fresh cache folder) and inverts again. Timings are those
DragResult.timings reports. Peak memory: on CUDA torch.cuda.max_memory_allocated, reset at each
stage; on CPU the process's peak resident set size (resource.getrusage maxrss), which only grows,
so a stage's figure is the high-water mark reached by the end of that stage.

On a CPU shared with other work, torch's intra-op threads can spin against each other and make
the tiny model many times slower; `--threads 1` measures the work rather than the contention.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from dragwidget import DragConfig, DragEditor, DragRequest, load_model  # noqa: E402
from dragwidget.tiny_model import build_sd15_architecture_model, build_tiny_model  # noqa: E402

STAGES = ("lora", "inversion", "optimisation", "denoise", "decode")
MEMORY_STAGES = ("lora", "inversion", "drag", "denoise", "decode")


def parse_size(text: str):
    width, _, height = text.lower().partition("x")
    return int(width), int(height or width)


def test_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth colour bands and a red disc (the content that gets dragged)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    scale = max(width, height) / 64
    phases = rng.uniform(0, 2 * np.pi, size=3)
    picture = np.stack([128 + 90 * np.sin((xs / (5 + 2 * i) + ys / (7 + i)) / scale + phases[i]) for i in range(3)], -1)
    disc = (xs - 0.35 * width) ** 2 + (ys - 0.5 * height) ** 2 < (min(width, height) / 6) ** 2
    picture[disc] = (230, 40, 40)
    return np.clip(picture, 0, 255).astype(np.uint8)


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class MemoryByStage:
    """Progress callback recording peak memory per stage (stages arrive in order)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.stage = None
        self.peaks = {}

    def _close(self):
        if self.stage is None:
            return
        if self.cuda:
            torch.cuda.synchronize()
            value = torch.cuda.max_memory_allocated() / 2 ** 20
        else:
            value = peak_rss_mib()
        self.peaks[self.stage] = max(value, self.peaks.get(self.stage, 0.0))

    def __call__(self, event) -> None:
        if event.stage != self.stage:
            self._close()
            self.stage = event.stage
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()

    def finish(self) -> dict:
        self._close()
        self.stage = None
        return self.peaks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sd15", action="store_true", help="SD 1.5 architecture with random weights (default with CUDA)")
    which.add_argument("--tiny", action="store_true", help="the tiny random model (default without CUDA)")
    parser.add_argument("--lora-steps", type=int, help="LoRA steps (default: the reference's 80)")
    parser.add_argument("--drag-steps", type=int, help="maximum drag steps (default: the reference's 80)")
    parser.add_argument("--size", type=parse_size, help="image size, N or WxH (default: the model's native width, square)")
    parser.add_argument("--repeats", type=int, default=1, help="full edits to time (default 1); the median is printed too")
    parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads on CPU (default: torch's choice)")
    parser.add_argument("--model-dir", type=Path, help="where to build the model (reused if it is already there)")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    sd15 = args.sd15 or (not args.tiny and torch.cuda.is_available())
    builder = build_sd15_architecture_model if sd15 else build_tiny_model
    label = "SD 1.5 architecture (random weights)" if sd15 else "tiny random model"

    with tempfile.TemporaryDirectory(prefix="dragwidget-bench-") as scratch:
        folder = args.model_dir or Path(scratch) / "model"
        started = time.perf_counter()
        if not (folder / "model_index.json").is_file():
            builder(folder)
        built = time.perf_counter() - started
        started = time.perf_counter()
        model = load_model(folder, device=args.device)
        loaded = time.perf_counter() - started

        changes = {}
        if args.lora_steps is not None:
            changes["lora_steps"] = args.lora_steps
        if args.drag_steps is not None:
            changes["max_drag_steps"] = args.drag_steps
        config = DragConfig().replace(**changes)      # the reference settings, whatever the model ships
        width, height = args.size or (model.native_width, model.native_width)
        config = config.replace(working_width=width)
        picture = test_image(width, height)
        points = [{"handle": [round(0.35 * width), round(0.5 * height)],
                   "target": [round(0.6 * width), round(0.5 * height)]}]

        print(f"model: {label}; built in {built:.1f} s, loaded in {loaded:.1f} s")
        print(f"device: {model.device} ({torch.cuda.get_device_name(model.device) if model.device.type == 'cuda' else platform.processor() or platform.machine()}), "
              f"dtype {model.dtype}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
        print(f"image {width}x{height}; LoRA {config.lora_steps} steps x batch {config.lora_batch_size}; "
              f"DDIM {config.num_inference_steps} steps, {config.inversion_steps} inverted; "
              f"at most {config.max_drag_steps} drag steps")

        if model.device.type != "cuda":
            print(f"peak RSS before the first edit (imports, model build and load): {peak_rss_mib():.0f} MiB")
        rows = []
        for repeat in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="dragwidget-bench-cache-") as cache:
                editor = DragEditor(model, config=config, cache_dir=cache)   # fresh cache: the LoRA is trained
                memory = MemoryByStage(model.device)
                started = time.perf_counter()
                result = editor.run(DragRequest(picture, points, prompt="a red disc", config=config), progress=memory)
                total = time.perf_counter() - started
                peaks = memory.finish()
            row = {stage: result.timings.get(stage, 0.0) for stage in STAGES}
            row["steps"] = result.steps
            row["steps_per_second"] = result.timings.get("optimisation_steps_per_second", 0.0)
            row["total"] = total
            row["memory"] = peaks
            rows.append(row)
            print(f"\nrun {repeat + 1}/{args.repeats}: {format_row(row)}")

        memory_kind = "CUDA max_memory_allocated" if model.device.type == "cuda" else "peak RSS (maxrss, cumulative)"
        print(f"\n{'stage':<22}{'seconds (median)':>18}{'min':>10}{'max':>10}   peak memory, MiB ({memory_kind})")
        for stage in STAGES:
            values = [row[stage] for row in rows]
            memory_stage = "drag" if stage == "optimisation" else stage
            peak = max(row["memory"].get(memory_stage, 0.0) for row in rows)
            print(f"{stage:<22}{statistics.median(values):>18.3f}{min(values):>10.3f}{max(values):>10.3f}   {peak:10.0f}")
        rates = [row["steps_per_second"] for row in rows]
        print(f"{'drag steps / second':<22}{statistics.median(rates):>18.2f}{min(rates):>10.2f}{max(rates):>10.2f}"
              f"   ({rows[0]['steps']} steps per run)")
        totals = [row["total"] for row in rows]
        print(f"{'total edit':<22}{statistics.median(totals):>18.3f}{min(totals):>10.3f}{max(totals):>10.3f}")
        overall = torch.cuda.max_memory_allocated() / 2 ** 20 if model.device.type == "cuda" else peak_rss_mib()
        print(f"peak memory of the whole process: {overall:.0f} MiB"
              + (f"; peak RSS {peak_rss_mib():.0f} MiB" if model.device.type == "cuda" else ""))
    return 0


def format_row(row: dict) -> str:
    stages = ", ".join(f"{stage} {row[stage]:.2f} s" for stage in STAGES)
    return f"{stages}; {row['steps']} drag steps at {row['steps_per_second']:.2f}/s; total {row['total']:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
