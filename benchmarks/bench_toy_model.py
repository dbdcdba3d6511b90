#!/usr/bin/env python3
"""What the embedded model (or a candidate folder) can do, apart from dragging: how faithfully it
reconstructs pictures it never saw, and how long an edit takes on this machine.

    python3 benchmarks/bench_toy_model.py                        # the embedded toy model
    python3 benchmarks/bench_toy_model.py --model PATH --scenes 12

Prints, for unseen pictures of both ShapesBench families (palette scenes, and pictures drawn with
PIL in arbitrary colours by `drawn_pictures.py`, a generator the model never trained on; seeded
apart from the training seeds):
- the VAE alone: encode + decode PSNR (the ceiling of everything else), drawn pictures at 64 px and
  at 128 px (the VAE is convolutional: a 128-px picture encodes to a 32x32 latent);
- DDIM inversion to the drag's timestep and back (no LoRA, no mutual attention) at the model's
  recommended inversion strength and at the reference's 0.7;
- the time of a first edit (LoRA, not cached, included, for the methods that train one), of a re-drag
  of the same image, and from the start of the drag stage to the first handle position a front end can
  draw (medians of `--edits`), for each method side by side in this one process, and each method's
  first edit and re-drag as a share of the paper's method's first edit.
Run it on an otherwise idle machine; the numbers go to the model card and the README.
`--write-stage-rates` stores the per-step times of those edits in the model folder's
`dragwidget_stage_rates.json`: what a front end estimates before anything ran on a user's machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from dragwidget.api import METHODS, RATES_FILE, DragEditor, DragRequest, embedded_model_path, reconstruct  # noqa: E402
from dragwidget.toy.drawn_pictures import random_drawn_picture  # noqa: E402
from dragwidget.toy.shapes import IMAGE_SIZE, random_scene  # noqa: E402
from dragwidget.toy.shapes_bench import make_cases, psnr_outside  # noqa: E402

UNSEEN_SEED = 987_654  # training draws its scenes from seed * 1_000_003 + step and seed * 7_000_001 + chunk


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr_outside(a, b, np.zeros(a.shape[:2], bool))


def reconstruction(editor: DragEditor, image: np.ndarray, caption: str, strength) -> np.ndarray:
    """Invert to the drag's timestep and denoise back (strength None: the VAE alone)."""
    config = None if strength is None else editor.config.replace(lora_steps=0, mutual_attention=False,
                                                                 inversion_strength=strength)
    return np.asarray(reconstruct(editor.model, image, caption, config))


def time_edits(editor: DragEditor, count: int, config):
    first, again, first_handle = [], [], []
    for case in make_cases(count, seed=UNSEEN_SEED):
        marks = {}

        def progress(event):
            if event.stage == "drag" and "drag" not in marks:
                marks["drag"] = time.perf_counter()
            if event.stage == "drag" and event.step >= 1 and event.handles is not None and "handle" not in marks:
                marks["handle"] = time.perf_counter()

        image = Image.fromarray(case.image)
        started = time.perf_counter()
        editor.run(DragRequest(image, case.pairs, case.mask, case.scene.caption, config), progress=progress)
        first.append(time.perf_counter() - started)
        first_handle.append(marks["handle"] - marks["drag"])
        reversed_pairs = [{"handle": p["target"], "target": p["handle"]} for p in case.pairs]
        started = time.perf_counter()
        editor.run(DragRequest(image, reversed_pairs, case.mask, case.scene.caption, config))
        again.append(time.perf_counter() - started)
    return statistics.median(first), statistics.median(again), statistics.median(first_handle)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy", help="embedded model name or diffusers folder (default toy)")
    parser.add_argument("--scenes", type=int, default=12, help="unseen scenes for the reconstruction (default 12)")
    parser.add_argument("--edits", type=int, default=3, help="edits timed (default 3)")
    parser.add_argument("--method", choices=(*METHODS, "all"), default="all",
                        help="the drag method(s) whose edits are timed (default all)")
    parser.add_argument("--write-stage-rates", action="store_true",
                        help="write the edits' seconds per step into the model folder's dragwidget_stage_rates.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as cache:  # an empty LoRA cache: every first edit trains its LoRA
        editor = DragEditor(args.model, device="cpu", cache_dir=cache)
        rng = np.random.default_rng(UNSEEN_SEED)
        families = {"palette scenes": [random_scene(rng, IMAGE_SIZE) for _ in range(args.scenes)],
                    "drawn pictures": [random_drawn_picture(rng, IMAGE_SIZE) for _ in range(args.scenes)]}
        strengths = {"VAE alone": None, f"inversion {editor.config.inversion_strength:g} (recommended)":
                     editor.config.inversion_strength, "inversion 0.7 (reference)": 0.7}
        print(f"model {args.model}, {args.scenes} unseen pictures of each kind, PSNR (mean, min..max):")
        for family, pictures in families.items():
            for label, strength in strengths.items():
                values = [psnr(reconstruction(editor, p.render(), p.caption, strength), p.render()) for p in pictures]
                print(f"  {family}, {label:34s} {np.mean(values):5.1f} dB ({min(values):.1f}..{max(values):.1f})")
        large = [random_drawn_picture(rng, 2 * IMAGE_SIZE) for _ in range(args.scenes)]
        values = [psnr(reconstruction(editor, p.render(), "", None), p.render()) for p in large]
        print(f"  drawn pictures of {2 * IMAGE_SIZE} px, {'VAE alone':34s} {np.mean(values):5.1f} dB "
              f"({min(values):.1f}..{max(values):.1f})")
        methods = METHODS if args.method == "all" else (args.method,)
        editors, times = [editor], {}
        for method in methods if args.edits else ():
            if method != methods[0]:   # a fresh cache: its first edits train their LoRAs too
                editor = DragEditor(args.model, device="cpu", cache_dir=tempfile.mkdtemp(dir=cache))
                editors.append(editor)
            config = editor.config.replace(method=method)
            first, again, handle = times[method] = time_edits(editor, args.edits, config)
            lora = f"{config.for_method().lora_steps}-step LoRA included" if config.for_method().lora_steps else "no LoRA"
            print(f"{method} edit (median of {args.edits}, {editor.cpu_threads or 'auto'} threads): first edit "
                  f"{first:.1f} s ({lora}), re-drag {again:.1f} s, first handle position {handle:.2f} s after "
                  "the drag stage starts")
        if "dragdiffusion" in times:
            paper = times["dragdiffusion"][0]
            for method, (first, again, _) in times.items():
                print(f"{method}: first edit {first / paper:.3f}, re-drag {again / paper:.3f} of the paper's "
                      f"method's first edit ({paper:.1f} s)")
        if args.write_stage_rates:
            write_stage_rates(editors, Path(embedded_model_path(args.model) or args.model))


def write_stage_rates(editors, folder: Path) -> None:
    measured = {}
    for editor in editors:   # each method's editor measured its own drag stage
        (rates,) = json.loads((editor.cache_dir / RATES_FILE).read_text()).values()
        measured.update(rates)
    config = editor.config
    (folder / "dragwidget_stage_rates.json").write_text(json.dumps({
        "measured_on": f"benchmarks/bench_toy_model.py, CPU, {editor.model.native_width}x{editor.model.native_width}, "
                       f"LoRA batch {config.lora_batch_size}",
        "seconds_per_step": {"cpu": {stage: round(rate, 4) for stage, rate in measured.items()}}}, indent=2) + "\n")
    print(f"wrote {folder / 'dragwidget_stage_rates.json'}")


if __name__ == "__main__":
    main()
