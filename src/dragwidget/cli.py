"""Command line: `dragwidget edit IMAGE --points "hx,hy,tx,ty[;...]" ...`.

Bad input prints one line starting with "dragwidget: error:" and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .config import DEFAULT_MODEL
from .errors import DragCancelled, DragWidgetError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors also become one line and status 2
        raise SystemExit(_fail(message))


def _fail(message: str) -> int:
    print(f"dragwidget: error: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _progress_printer():
    from tqdm.auto import tqdm

    bars = {}

    def show(event):
        bar = bars.get(event.stage)
        if bar is None:
            bar = bars[event.stage] = tqdm(total=event.total, desc=event.stage, leave=True, file=sys.stderr)
        bar.total = event.total
        bar.n = event.step
        if event.cached:
            bar.set_postfix_str("cached")
        elif event.message:
            bar.set_postfix_str(event.message)
        bar.refresh()

    return show, bars


def edit(args) -> int:
    from .editor import DragEditor, DragRequest
    from .image_input import load_image, load_mask, normalise_points

    # Check everything the user typed before the (slow) model load.
    picture = load_image(args.image)
    pairs = normalise_points(args.points, *picture.size)
    mask = load_mask(args.mask, *picture.size)
    editor = DragEditor(args.model, vae=args.vae, device=args.device)
    changes = {"seed": args.seed} if args.seed is not None else {}
    if args.lora_steps is not None:
        changes["lora_steps"] = args.lora_steps
    if args.drag_steps is not None:
        changes["max_drag_steps"] = args.drag_steps
    config = editor.config.replace(**changes, **parse_settings(args.set))
    show, bars = _progress_printer()
    try:
        result = editor.run(DragRequest(picture, pairs, mask, args.prompt, config), progress=show)
    finally:
        for bar in bars.values():
            bar.close()
    out = Path(args.out or f"{Path(args.image).stem}_dragged.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    result.image.save(out)
    print(f"wrote {out} ({result.image.width}x{result.image.height}); handles ended at "
          f"{[list(h) for h in result.handles]} after {result.steps} steps"
          f"{'' if result.reached else ' (not all targets reached)'}")
    if args.report:
        report = Path(args.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps({"image": str(args.image), "output": str(out), "model": args.model,
                                      "prompt": args.prompt, **result.report()}, indent=2))
        print(f"wrote {report}")
    return 0


def parse_settings(assignments: List[str]) -> dict:
    """`--set key=value` pairs -> DragConfig changes (values parsed as JSON when they can be)."""
    changes = {}
    for assignment in assignments or []:
        key, separator, value = assignment.partition("=")
        if not separator:
            raise ValueError(f"--set expects key=value, got {assignment!r}")
        try:
            changes[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            changes[key.strip()] = value
    return changes


def bench_shapes(args) -> int:
    from .editor import DragEditor
    from .toy.shapes_bench import format_table, make_cases, run_bench

    editor = DragEditor(args.model, device=args.device)
    config = editor.config.replace(**parse_settings(args.set))
    cases = make_cases(args.cases, seed=args.seed)
    out = Path(args.out)

    def on_case(done, total, row):
        print(f"[{done}/{total}] {row['name']}: relative distance {row['relative_distance']:.2f}, "
              f"IoU {row['iou']:.2f}, PSNR outside {row['psnr_outside_mask']:.1f} dB, {row['seconds']:.1f} s",
              file=sys.stderr)

    report = run_bench(editor, cases, out, config=config, on_case=on_case)
    print(format_table(report))
    print(f"wrote {out / 'metrics.json'} and {out / 'contact_sheet.png'}")
    return 0


def train_toy(args) -> int:
    from .toy import train

    train.main(args.train_args)
    return 0


def features(args) -> int:
    """`dragwidget features IMAGE`: PCA of decoder-block features across inversion steps, as a PNG."""
    from .editor import DragEditor
    from .feature_maps import FeatureRequest, figure_png
    from .image_input import load_image

    picture = load_image(args.image)  # check the input before the (slow) model load
    edited = load_image(args.edited) if args.edited else None
    steps, blocks = _int_list(args.steps, "--steps"), _int_list(args.blocks, "--blocks")
    editor = DragEditor(args.model, device=args.device)
    changes = parse_settings(args.set)
    if args.lora_steps is not None:
        changes["lora_steps"] = args.lora_steps
    config = editor.config.replace(**changes)
    show, bars = _progress_printer()
    try:
        maps = editor.feature_maps(FeatureRequest(picture, args.prompt, edited=edited, steps=steps, blocks=blocks,
                                                  config=config, max_size=args.size), progress=show)
    finally:
        for bar in bars.values():
            bar.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(figure_png(maps.figure()))
    print(f"wrote {out}: blocks {maps.blocks} x steps {maps.steps} (t={maps.timesteps}), "
          f"{' and '.join(maps.labels)}; the drag reads block {maps.drag_block} at step {maps.drag_step} "
          f"(t={maps.drag_timestep})")
    return 0


def _int_list(text: Optional[str], option: str) -> Optional[List[int]]:
    if text is None:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"{option} expects comma-separated integers such as 1,2,3, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dragwidget", description="DragDiffusion point-based image editing.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    edit_parser = commands.add_parser("edit", help="drag points of an image and save the result")
    edit_parser.add_argument("image", help="the image to edit (any format Pillow reads)")
    edit_parser.add_argument("--points", required=True,
                             help='"hx,hy,tx,ty[;hx,hy,tx,ty...]": handle -> target pairs in input-image pixels, x right, y down')
    edit_parser.add_argument("--mask", help="white-is-editable image of any size (resized, nearest)")
    edit_parser.add_argument("--prompt", default="", help="text describing the image (helps LoRA and inversion)")
    edit_parser.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id, local diffusers folder or embedded model name (default {DEFAULT_MODEL})")
    edit_parser.add_argument("--vae", help="optional VAE to use instead of the checkpoint's, e.g. stabilityai/sd-vae-ft-mse")
    edit_parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    edit_parser.add_argument("--seed", type=int, help="seed of the drag (default 42)")
    edit_parser.add_argument("--lora-steps", type=int, help="LoRA fine-tuning steps (0 = no LoRA)")
    edit_parser.add_argument("--drag-steps", type=int, help="maximum optimisation steps")
    edit_parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                             help="change any DragConfig setting, e.g. --set inversion_strength=0.6 (repeatable)")
    edit_parser.add_argument("--out", help="where to write the edited image (default IMAGE_dragged.png)")
    edit_parser.add_argument("--report", help="where to write a JSON report (final handles, trajectory, timings, config)")
    edit_parser.set_defaults(run=edit)

    bench_parser = commands.add_parser("bench", help="benchmarks with ground truth")
    suites = bench_parser.add_subparsers(dest="suite", required=True, parser_class=_Parser)
    shapes_parser = suites.add_parser("shapes", help="ShapesBench: drags of generated shapes, scored against ground truth")
    shapes_parser.add_argument("--cases", type=int, default=50)
    shapes_parser.add_argument("--seed", type=int, default=0)
    shapes_parser.add_argument("--model", default="toy")
    shapes_parser.add_argument("--device")
    shapes_parser.add_argument("--out", default="shapesbench")
    shapes_parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                               help="change a DragConfig setting, e.g. --set lora_steps=0 (repeatable)")
    shapes_parser.set_defaults(run=bench_shapes)

    features_parser = commands.add_parser(
        "features", help="PCA of UNet decoder-block features across inversion steps (why block 2 at step 35)")
    features_parser.add_argument("image", help="the image to look at")
    features_parser.add_argument("--edited", help="a second image (e.g. the edited result) shown with the same PCA colours")
    features_parser.add_argument("--prompt", default="", help="text describing the image (as for `edit`)")
    features_parser.add_argument("--model", default=DEFAULT_MODEL, help=f"hub id, local folder or embedded model (default {DEFAULT_MODEL})")
    features_parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    features_parser.add_argument("--blocks", help="decoder block indices, e.g. 1,2,3 (the drag reads feature_block, 2)")
    features_parser.add_argument("--steps", help="inversion-step counts out of the DDIM steps, e.g. 10,20,30,35,40 "
                                                 "(35 of 50 = the drag's t=681); default 20/40/60/70/80 %% of them")
    features_parser.add_argument("--size", type=int, default=64, help="longest side of the feature grid (default 64)")
    features_parser.add_argument("--lora-steps", type=int, help="LoRA fine-tuning steps (0 = no LoRA)")
    features_parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="change a DragConfig setting (repeatable)")
    features_parser.add_argument("--out", default="features_pca.png", help="where to write the figure (PNG)")
    features_parser.set_defaults(run=features)

    train_parser = commands.add_parser("train-toy", help="train the embedded toy model (about 25 min on 2 CPU cores)",
                                       add_help=False)
    train_parser.add_argument("train_args", nargs=argparse.REMAINDER)
    train_parser.set_defaults(run=train_toy)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except DragCancelled as error:
        print(f"dragwidget: cancelled: {error}", file=sys.stderr)
        return 130
    except (DragWidgetError, ValueError) as error:
        return _fail(error)


if __name__ == "__main__":
    sys.exit(main())
