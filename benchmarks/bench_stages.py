#!/usr/bin/env python3
"""Per-stage time, UNet passes and peak memory of one edit, for each drag method, through DragEditor.

    python3 benchmarks/bench_stages.py                 # tiny random model on CPU (the default without CUDA)
    python3 benchmarks/bench_stages.py --sd15          # SD 1.5 architecture, random weights, 512x512
    python3 benchmarks/bench_stages.py --lora-steps 10 --drag-steps 10 --repeats 3 --method gooddrag

With CUDA available the SD 1.5-architecture model is the default (pass --tiny for the tiny one).
Both models are built from configs with random weights (dragwidget.tiny_model) into a folder in
the diffusers layout and loaded with dragwidget.load_model, exactly as a real checkpoint. Random
weights cost the same FLOPs as trained ones, so the timings hold for the real SD 1.5 (but the
number of drag steps does not: point tracking on random features decides when the handles
"arrive", so look at drag steps per second rather than the optimisation total).

Each repeat times a first edit (a fresh LoRA cache: the LoRA is trained and the image inverted)
and a re-drag of the same image (LoRA and inversion reused), for the paper's method, GoodDrag and
FastDrag (`--method`; FastDrag's warp has no UNet pass and no floor). Every UNet pass is counted per stage, with and without gradients. The
floor of a stage is its passes, each kind timed alone in plain PyTorch (the model's weights and
dtype, eager): a LoRA step of batch lora_batch_size (forward, backward to the LoRA weights,
AdamW), a forward of batch 1 (inversion; GoodDrag's passes of the original and its DDIM steps), a
forward and backward to the latent of batch 1 (a drag step), a forward of batch 2 (denoising:
original and edited rows). A stage's ratio to its floor is what it spends beyond the UNet work it
cannot avoid. (Without a mask the drag's loss reads only the features of one decoder block, so
its backward skips the UNet's last blocks and its ratio can be below 1.) The verdict's passes
(its ensemble, once for the original and once for the result) are counted, not floored.

The settings are the reference defaults (dragwidget.DragConfig: 80 LoRA steps of batch 4, 50 DDIM
steps at strength 0.7, at most 80 drag steps; GoodDrag's and FastDrag's published settings for
theirs: 70 LoRA steps and strength 0.75; no LoRA and 10 steps at 0.7) unless changed with the
options (`--lora-steps` sets the LoRA steps of whichever method runs). Every repeat trains its LoRA from scratch (a fresh cache folder) and
inverts again. Timings are those DragResult.timings reports. Peak memory: on CUDA
torch.cuda.max_memory_allocated, reset at each stage; on CPU the process's peak resident set size
(resource.getrusage maxrss), which only grows, so a stage's figure is the high-water mark reached
by the end of that stage.

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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' random-weight models

from dragwidget.api import METHODS, DragConfig, DragEditor, DragRequest, load_model, method_field  # noqa: E402
from tiny_models import build_sd15_architecture_model, build_tiny_model  # noqa: E402

STAGES = ("lora", "inversion", "optimisation", "warp", "denoise", "decode", "verdict")
FLOOR_STAGES = ("lora", "inversion", "optimisation", "denoise")
FLOOR_PASSES = {"lora": "LoRA step", "inversion": "forward, batch 1", "optimisation": "forward+backward to the latent",
                "denoise": "forward, batch 2"}
PASS_STAGES = {"optimisation": "drag", "warp": "drag"}    # DragResult.timings' name -> the progress events' name


def method_stages(method: str):
    """The stages a method runs: FastDrag warps where the others optimise."""
    return tuple(stage for stage in STAGES if stage != ("optimisation" if method == "fastdrag" else "warp"))


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


class PassesByStage:
    """Progress callback and UNet hook: how many UNet passes each stage made (with/without gradients).

    Stages report after their steps, so a pass belongs to the stage of the first event after it."""

    def __init__(self, unet):
        self.passes, self.events = [], []
        self.hook = unet.register_forward_pre_hook(lambda module, args: self.passes.append(torch.is_grad_enabled()))

    def __call__(self, event) -> None:
        self.events.append((len(self.passes), event.stage))

    def finish(self) -> dict:
        self.hook.remove()
        counts, start = {}, 0
        for seen, stage in self.events:
            grads = self.passes[start:seen]
            if grads:
                entry = counts.setdefault(stage, {"with_grad": 0, "without": 0})
                entry["with_grad"] += sum(grads)
                entry["without"] += len(grads) - sum(grads)
            start = max(start, seen)
        return counts


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(work, device: torch.device, calls: int = 5) -> float:
    """Median seconds of one call of `work` after two warm-up calls."""
    for _ in range(2):
        work()
    times = []
    for _ in range(calls):
        synchronize(device)
        started = time.perf_counter()
        work()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def unet_pass_seconds(model, config: DragConfig, width: int, height: int) -> dict:
    """Seconds of one UNet pass of each kind a stage makes, the UNet alone (see the module docstring)."""
    from diffusers.training_utils import cast_training_params

    unet, device = model.unet, model.device
    factor = model.vae_scale_factor
    shape = (unet.config.in_channels, height // factor, width // factor)
    text = torch.zeros(1, model.tokenizer.model_max_length, unet.config.cross_attention_dim, device=device)
    timestep = torch.tensor(500, device=device)
    latent = torch.randn(1, *shape, device=device)

    def forward(batch):
        with torch.no_grad(), model.autocast():
            unet(latent.expand(batch, *shape), timestep, encoder_hidden_states=text.expand(batch, -1, -1))

    def drag_pass():
        variable = latent.clone().requires_grad_(True)
        with model.autocast():
            output = unet(variable, timestep, encoder_hidden_states=text).sample
        output.float().square().mean().backward()

    seconds = {"inversion": seconds_per_call(lambda: forward(1), device),
               "optimisation": seconds_per_call(drag_pass, device),
               "denoise": seconds_per_call(lambda: forward(2), device)}

    # The LoRA step trains the adapter the edits left installed (the stages ran with it active too).
    parameters = [p for name, p in unet.named_parameters() if "lora_" in name]
    if not parameters:
        return seconds          # no LoRA steps were asked for
    for parameter in parameters:
        parameter.requires_grad_(True)
    cast_training_params(unet, dtype=torch.float32)   # as lora_finetuning trains them
    optimizer = torch.optim.AdamW(parameters, lr=config.lora_lr, fused=True if device.type == "cuda" else None)
    batch = config.lora_batch_size
    latents = torch.randn(batch, *shape, device=device)

    def lora_step():
        with model.autocast():
            output = unet(latents, timestep, encoder_hidden_states=text.expand(batch, -1, -1)).sample
        output.float().square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    unet.train()
    try:
        seconds["lora"] = seconds_per_call(lora_step, device)
    finally:
        unet.eval()
        for parameter in parameters:
            parameter.requires_grad_(False)
    return seconds


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
    parser.add_argument("--method", choices=(*METHODS, "all"), default="all",
                        help="the drag method(s) to time (default all, one table each)")
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
        methods = METHODS if args.method == "all" else (args.method,)
        for method in methods:
            # the reference settings (GoodDrag's and FastDrag's published ones for theirs), whatever the model ships
            config = DragConfig(method=method).replace(**{method_field(method, k): v for k, v in changes.items()})
            config = config.for_method()
            width, height = args.size or (model.native_width, model.native_width)
            time_method(model, config.replace(working_width=width), width, height, args.repeats,
                        label=f"{label}; built in {built:.1f} s, loaded in {loaded:.1f} s")
    return 0


def time_method(model, config: DragConfig, width: int, height: int, repeats: int, label: str) -> None:
    """First edits and re-drags with `config`, then the table of stages against their floors."""
    picture = test_image(width, height)
    points = [{"handle": [round(0.35 * width), round(0.5 * height)],
               "target": [round(0.6 * width), round(0.5 * height)]}]

    print(f"\nmethod: {config.method}\nmodel: {label}")
    print(f"device: {model.device} ({torch.cuda.get_device_name(model.device) if model.device.type == 'cuda' else platform.processor() or platform.machine()}), "
          f"dtype {model.dtype}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"image {width}x{height}; LoRA {config.lora_steps} steps x batch {config.lora_batch_size}; "
          f"DDIM {config.num_inference_steps} steps, {config.inversion_steps} inverted; "
          f"at most {config.max_drag_steps} drag steps")

    if model.device.type != "cuda":
        print(f"peak RSS before the first edit (imports, model build and load): {peak_rss_mib():.0f} MiB")
    rows = []
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory(prefix="dragwidget-bench-cache-") as cache:
            editor = DragEditor(model, config=config, cache_dir=cache)   # fresh cache: the LoRA is trained
            row = {}
            for kind in ("first edit", "re-drag"):
                memory, passes = MemoryByStage(model.device), PassesByStage(model.unet)
                started = time.perf_counter()
                result = editor.run(DragRequest(picture, points, prompt="a red disc", config=config),
                                    progress=lambda event: (memory(event), passes(event)))
                total = time.perf_counter() - started
                row[kind] = {stage: result.timings.get(stage, 0.0) for stage in method_stages(config.method)}
                row[kind].update(steps=result.steps, total=total, memory=memory.finish(), passes=passes.finish(),
                                 steps_per_second=result.timings.get("optimisation_steps_per_second", 0.0))
        rows.append(row)
        print(f"\nrun {repeat + 1}/{repeats}: first edit: {format_row(row['first edit'])}\n"
              f"{'':>{len(f'run {repeat + 1}/{repeats}: ')}}re-drag:    {format_row(row['re-drag'])}")

    pass_seconds = unet_pass_seconds(model, config, width, height)
    passes = rows[0]["first edit"]["passes"]

    def floor(stage: str, kind: str = "first edit") -> float:
        """The UNet work of the stage's passes (counted in the first run), each timed alone."""
        counted = rows[0][kind]["passes"].get(PASS_STAGES.get(stage, stage), {"with_grad": 0, "without": 0})
        if not counted["with_grad"] and not counted["without"]:
            return 0.0          # e.g. FastDrag's LoRA stage: no LoRA, so no LoRA pass was timed either
        with_grad = pass_seconds["lora" if stage == "lora" else "optimisation"]
        # FastDrag denoises the edit alone (batch 1, the original's keys and values recorded)
        batch_two = stage == "denoise" and config.method != "fastdrag"
        without = pass_seconds["denoise" if batch_two else "inversion"]
        return counted["with_grad"] * with_grad + counted["without"] * without

    memory_kind = "CUDA max_memory_allocated" if model.device.type == "cuda" else "peak RSS (maxrss, cumulative)"
    median = lambda kind, stage: statistics.median(row[kind][stage] for row in rows)
    print(f"\nmedians of {len(rows)} run(s); floor = the stage's UNet passes, each kind timed alone; "
          f"peak memory in MiB ({memory_kind})")
    print(f"{'stage':<14}{'first edit s':>14}{'re-drag s':>11}{'floor s':>10}{'ratio':>7}{'peak MiB':>10}"
          f"   UNet passes (with gradients + without)")
    for stage in method_stages(config.method):
        first, again = median("first edit", stage), median("re-drag", stage)
        stage_floor = floor(stage) if stage in FLOOR_STAGES else None
        memory_stage = PASS_STAGES.get(stage, stage)
        peak = max(row[kind]["memory"].get(memory_stage, 0.0) for row in rows for kind in row)
        ratio = f"{first / stage_floor:>7.2f}" if stage_floor else f"{'':>7}"
        floor_text = f"{stage_floor:>10.3f}" if stage_floor else f"{'':>10}"
        counted = passes.get(memory_stage)
        how = f"{counted['with_grad']} + {counted['without']}" if counted else ""
        print(f"{stage:<14}{first:>14.3f}{again:>11.3f}{floor_text}{ratio}{peak:>10.0f}   {how}")
    print("UNet pass kinds alone: " + "; ".join(f"{FLOOR_PASSES[kind]} {seconds * 1000:.1f} ms"
                                                for kind, seconds in pass_seconds.items()))
    first_total, again_total = median("first edit", "total"), median("re-drag", "total")
    first_floor = sum(floor(stage) for stage in FLOOR_STAGES)   # no LoRA floor when lora_steps is 0
    again_floor = sum(floor(stage, "re-drag") for stage in FLOOR_STAGES)
    print(f"{'total':<14}{first_total:>14.3f}{again_total:>11.3f}{first_floor:>10.3f}{first_total / first_floor:>7.2f}"
          f"            re-drag: floor {again_floor:.3f} s, ratio {again_total / again_floor:.2f}")
    rates = [row["first edit"]["steps_per_second"] for row in rows]
    if config.method != "fastdrag":
        print(f"drag steps / second: {statistics.median(rates):.2f} ({rows[0]['first edit']['steps']} steps per run)")
    overall = torch.cuda.max_memory_allocated() / 2 ** 20 if model.device.type == "cuda" else peak_rss_mib()
    print(f"peak memory of the whole process: {overall:.0f} MiB"
          + (f"; peak RSS {peak_rss_mib():.0f} MiB" if model.device.type == "cuda" else ""))


def format_row(row: dict) -> str:
    stages = ", ".join(f"{stage} {row[stage]:.2f} s" for stage in STAGES if stage in row)
    if "warp" in row:
        return f"{stages}; total {row['total']:.2f} s"
    return f"{stages}; {row['steps']} drag steps at {row['steps_per_second']:.2f}/s; total {row['total']:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
