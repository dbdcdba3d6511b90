#!/usr/bin/env python3
"""How many CPU threads should torch use here? One thread vs all cores, idle vs a busy core.

    python3 benchmarks/bench_threads.py            # UNet passes of two models, and whole toy edits (~5 min idle)
    python3 benchmarks/bench_threads.py --quick    # fewer repeats, no whole edit (~1-2 min)
    python3 benchmarks/bench_threads.py --busy 2   # two competing busy processes instead of one

The unit of work is what a LoRA step or a drag step costs: one UNet forward and backward pass
(gradient with respect to the latent). Two models: the embedded `toy` model (64x64 pictures) and a
"mid" model built from a config with random weights (about 10x the toy's FLOPs, 35M parameters;
random weights cost the same FLOPs as trained ones). `--quick` leaves out the whole edit: the toy
model through `DragEditor.run` with a short LoRA and drag, with the thread count given explicitly.

"busy" means the script itself runs `--busy` processes spinning `while True: pass` beside the
measurement (each bounded in time, and killed when the script ends, however it ends). On a machine
that other work shares, "idle" is not truly idle: the configurations are run interleaved, several
times, and the table gives medians, with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from dragwidget import DragConfig, DragEditor, DragRequest, load_model  # noqa: E402
from dragwidget.api import choose_cpu_threads  # noqa: E402

BUSY_LOOP = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass\n"


class BusyProcesses:
    """`count` processes that each keep one core busy for at most `seconds`, killed on exit."""

    def __init__(self, count: int, seconds: float):
        self.count, self.seconds, self.processes = count, seconds, []

    def __enter__(self):
        code = BUSY_LOOP.format(seconds=self.seconds)
        self.processes = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(self.count)]
        time.sleep(0.3)  # let them reach the loop before timing starts
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            process.kill()
            process.wait()
        self.processes = []


def mid_unet():
    """A UNet about 10x the toy's FLOPs per pass: SD 1.5's layout, narrower (35M parameters)."""
    from diffusers import UNet2DConditionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(64, 128, 256, 256), cross_attention_dim=256, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    return unet.requires_grad_(False).eval()


def unet_case(unet, latent_size: int):
    """A closure running one forward + backward pass (gradient w.r.t. the latent), and its GFLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    latent = torch.randn(1, 4, latent_size, latent_size)
    context = torch.randn(1, 77, unet.config.cross_attention_dim)

    def one_pass():
        x = latent.clone().requires_grad_(True)
        unet(x, 500, context).sample.square().mean().backward()

    with FlopCounterMode(display=False) as counter:
        one_pass()
    return one_pass, counter.get_total_flops() / 1e9


def seconds_per_pass(one_pass, threads: int, budget: float) -> float:
    torch.set_num_threads(threads)
    one_pass()  # warm-up: allocator, thread pool
    passes, started = 0, time.perf_counter()
    while passes < 2 or time.perf_counter() - started < budget:
        one_pass()
        passes += 1
    return (time.perf_counter() - started) / passes


def toy_edit(model, threads: int, lora_steps: int, drag_steps: int) -> float:
    """Seconds for a whole edit (LoRA trained from scratch, inversion, drag, denoise, decode)."""
    config = DragConfig.from_dict(model.recommended_settings).replace(lora_steps=lora_steps, max_drag_steps=drag_steps)
    ys, xs = np.mgrid[0:64, 0:64]
    picture = np.full((64, 64, 3), 40, np.uint8)
    picture[(xs - 24) ** 2 + (ys - 32) ** 2 < 100] = (230, 40, 40)
    with tempfile.TemporaryDirectory(prefix="dragwidget-bench-cache-") as cache:
        editor = DragEditor(model, config=config, cache_dir=cache, cpu_threads=threads)
        started = time.perf_counter()
        editor.run(DragRequest(picture, [{"handle": [24, 32], "target": [40, 32]}], prompt="a red disc"))
        return time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats and no whole edit (about 1-2 minutes)")
    parser.add_argument("--repeats", type=int, help="interleaved rounds per configuration (default 3, 2 with --quick)")
    parser.add_argument("--busy", type=int, default=1, help="competing busy processes in the 'busy' rows (default 1)")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds of passes per measurement (default 1.5)")
    parser.add_argument("--lora-steps", type=int, default=10, help="LoRA steps of the whole edit (default 10)")
    parser.add_argument("--drag-steps", type=int, default=20, help="maximum drag steps of the whole edit (default 20)")
    args = parser.parse_args(argv)
    if args.busy < 1 or (args.repeats is not None and args.repeats < 1):
        parser.error("--busy and --repeats must be at least 1")
    repeats = args.repeats or (2 if args.quick else 3)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    thread_counts = sorted({1, cores})
    torch_default = torch.get_num_threads()
    print(f"torch {torch.__version__}; {cores} usable cores (sched_getaffinity), torch's default "
          f"{torch_default} threads, {os.cpu_count()} CPUs in the machine")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min)")

    toy = load_model("toy", device="cpu")
    toy_latent = toy.native_width // toy.vae_scale_factor
    cases = {"toy": unet_case(toy.unet, toy_latent), "mid": unet_case(mid_unet(), 16)}
    for name, (_, gflops) in cases.items():
        print(f"{name}: {gflops:.2f} GFLOP per UNet forward+backward pass")

    results = {}   # (what, load, threads) -> [seconds]
    loads = []
    # Only a safety bound should the script itself be killed: they are killed when a round ends.
    busy_seconds = 3600
    for repeat in range(repeats):
        for load in ("idle", "busy"):
            with BusyProcesses(args.busy if load == "busy" else 0, busy_seconds):
                loads.append(os.getloadavg()[0])
                for name, (one_pass, _) in cases.items():
                    for threads in thread_counts:
                        results.setdefault((name, load, threads), []).append(
                            seconds_per_pass(one_pass, threads, args.budget))
                if not args.quick:
                    for threads in thread_counts:
                        results.setdefault(("toy edit", load, threads), []).append(
                            toy_edit(toy, threads, args.lora_steps, args.drag_steps))
        print(f"round {repeat + 1}/{repeats} done, load average {os.getloadavg()[0]:.2f}", flush=True)

    print(f"\nmedians of {repeats} interleaved rounds; 'busy' = {args.busy} competing busy process(es); "
          f"1-min load average during the rounds {min(loads):.2f}-{max(loads):.2f}")
    print(f"toy edit = DragEditor.run, LoRA {args.lora_steps} steps, at most {args.drag_steps} drag steps\n")
    header = f"{'work':<10}{'load':<6}" + "".join(f"{f'{t} thread' + ('s' if t > 1 else ''):>14}" for t in thread_counts)
    print(header + f"{'best':>10}")
    for what in ("toy", "mid", "toy edit"):
        for load in ("idle", "busy"):
            medians = {t: statistics.median(results[(what, load, t)]) for t in thread_counts if (what, load, t) in results}
            if not medians:
                continue
            unit = " s/pass" if what != "toy edit" else " s"
            cells = "".join(f"{medians[t]:>{14 - len(unit)}.3f}{unit}" for t in thread_counts)
            best = min(medians, key=medians.get)
            worst = max(medians.values())
            print(f"{what:<10}{load:<6}{cells}{best:>6} thr ({worst / medians[best]:.1f}x)")
    print(f"\nthe engine's choice: toy {choose_cpu_threads(toy.unet)}, mid {choose_cpu_threads(mid_unet())} thread(s) "
          f"(DRAGWIDGET_CPU_THREADS={os.environ.get('DRAGWIDGET_CPU_THREADS', 'unset')})")
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
