"""Command line: `dragwidget edit IMAGE --points "hx,hy,tx,ty[;...]" ...`.

Bad input prints one line starting with "dragwidget: error:" and exits with status 2, before any
slow work: options, settings, output paths and whether the model can be had at all (a hub id
offline must be in the local cache) are checked before the engine (torch) is imported.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from .cli_inputs import check_output_file, check_output_folder, settings_changes, sweep_values, whole_number
from .cli_progress import StageProgress, quiet_library_bars
from .dragbench.commands import add_dragbench_parsers
from .api import DEFAULT_MODEL, DragCancelled, DragWidgetError, InputError, check_model_available
from .toy.train_options import DESCRIPTION as TRAIN_DESCRIPTION
from .toy.train_options import add_arguments as add_training_arguments

EXIT_BAD_INPUT = 2
# options that are shorthands for a DragConfig setting: argparse dest -> setting
EDIT_OPTIONS = {"seed": "seed", "lora_steps": "lora_steps", "drag_steps": "max_drag_steps"}
FEATURES_OPTIONS = {"lora_steps": "lora_steps"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors also become one line and status 2
        raise SystemExit(_fail(message))


def _fail(message: str) -> int:
    print(f"dragwidget: error: {' '.join(str(message).split())}", file=sys.stderr)
    return EXIT_BAD_INPUT


def edit(args) -> int:
    # Check everything the user typed before the (slow) model load, LoRA and drag.
    changes = settings_changes(args, EDIT_OPTIONS)
    out = Path(args.out or f"{Path(args.image).stem}_dragged.png")
    check_output_file(out, "--out", image=True)
    if args.report:
        check_output_file(Path(args.report), "--report")
        if Path(args.report).resolve() == out.resolve():
            raise InputError(f"--report {args.report} is the edited image's own path (--out); give another file")
    check_model_available(args.model, args.vae)

    from .api import DragEditor, DragRequest, load_image, load_mask, normalise_points, validate_prompt

    validate_prompt(args.prompt)
    picture = load_image(args.image)
    pairs = normalise_points(args.points, *picture.size)
    mask = load_mask(args.mask, *picture.size)
    if mask is not None:  # a drawn mask keeps the original outside it, unless `--set keep_outside_mask=false`
        changes.setdefault("keep_outside_mask", True)
    editor = DragEditor(args.model, vae=args.vae, device=args.device)
    # The model's recommended settings are known now; the user's changes go on top of them.
    config = editor.config.replace_for_method(**changes)
    with StageProgress(sys.stderr) as show:
        result = editor.run(DragRequest(picture, pairs, mask, args.prompt, config), progress=show)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.image.save(out)
    print(f"wrote {out} ({result.image.width}x{result.image.height}) after {result.steps} drag steps "
          f"({result.config.method})")
    if args.report:
        report = Path(args.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps({"image": str(args.image), "output": str(out), "model": args.model,
                                      "prompt": args.prompt, **result.report()}, indent=2))
        print(f"wrote {report}")
    # last, so that it is what a user reads: what the picture shows, not what the tracker believed
    print(result.says)   # the verdict's category first: "reached, shape kept: ...", "lost: ..."
    return 0


def bench_shapes(args) -> int:
    changes = settings_changes(args, {})
    sweeps = sweep_values(args)
    out = Path(args.out)
    check_output_folder(out, f"--out {out}")
    check_model_available(args.model)

    from .api import DragEditor
    from .toy.bench_report import format_sweep, format_table
    from .toy.shapes_bench import make_cases, run_bench, run_sweep

    editor = DragEditor(args.model, device=args.device)
    config = editor.config.replace_for_method(**changes)
    cases = make_cases(args.cases, seed=args.seed, family=args.family)

    def on_case(done, total, row):
        print(f"[{done}/{total}] {row['name']}: relative distance {row['relative_distance']:.2f}, "
              f"IoU {row['iou']:.2f}, PSNR outside {row['psnr_outside_mask']:.1f} dB, background off by "
              f"{row['background_error_outside']:.1f} / {row['background_error_path']:.1f} grey levels "
              f"(outside the mask / along the path), {row['seconds']:.1f} s",
              file=sys.stderr)

    if sweeps:
        def on_row(row):
            print(f"{row['setting']}={row['value']}: relative distance {row['relative_distance']:.3f}, "
                  f"IoU {row['iou']:.3f}, lost {row['lost_objects']}/{row['dragged_objects']}", file=sys.stderr)

        table = {"model": args.model, "seed": args.seed,
                 **run_sweep(editor, cases, sweeps, config=config, on_case=on_case, on_row=on_row)}
        out.mkdir(parents=True, exist_ok=True)
        (out / "sweep.json").write_text(json.dumps(table, indent=2))
        print(format_sweep(table))
        print(f"wrote {out / 'sweep.json'}")
        return 0
    report = run_bench(editor, cases, out, config=config, on_case=on_case)
    print(format_table(report))
    print(f"wrote {out / 'metrics.json'} and {out / 'contact_sheet.png'}")
    return 0


def train_toy(args) -> int:
    from .toy import train

    train.run(args)
    return 0


def cache(args) -> int:
    """`dragwidget cache info|clear`: the LoRA disk cache's size, or empty it."""
    from .api import cache_info, clear_cache

    removed = clear_cache(args.folder) if args.action == "clear" else None
    info = cache_info(args.folder)
    limit = "no limit" if info["max_bytes"] is None else f"limit {info['max_bytes'] / 1e6:.0f} MB"
    if removed is not None:
        print(f"removed {removed} cached LoRA adapter(s) from {info['folder']}")
    print(f"LoRA cache {info['folder']}: {info['entries']} entries, {info['bytes'] / 1e6:.1f} MB ({limit})")
    return 0


def features(args) -> int:
    """`dragwidget features IMAGE`: PCA of decoder-block features across inversion steps, as a PNG."""
    # Check the input before the (slow) model load.
    changes = settings_changes(args, FEATURES_OPTIONS)
    steps, blocks = _int_list(args.steps, "--steps"), _int_list(args.blocks, "--blocks")
    check_output_file(Path(args.out), "--out")
    check_model_available(args.model)

    from .api import DragEditor, FeatureRequest, figure_png, load_image

    picture = load_image(args.image)
    edited = load_image(args.edited) if args.edited else None
    editor = DragEditor(args.model, device=args.device)
    config = editor.config.replace_for_method(**changes)
    with StageProgress(sys.stderr) as show:
        maps = editor.feature_maps(FeatureRequest(picture, args.prompt, edited=edited, steps=steps, blocks=blocks,
                                                  config=config, max_size=args.size), progress=show)
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
    shapes_parser.add_argument("--cases", type=whole_number(1), default=50, help="number of drag cases (default 50)")
    shapes_parser.add_argument("--seed", type=whole_number(0), default=0,
                               help="seed of the generated cases: the same seed gives the same cases (default 0)")
    shapes_parser.add_argument("--family", choices=("scenes", "drawn"), default="scenes",
                               help="scenes: the palette scenes, some with two objects or two handles; drawn: "
                                    "pictures drawn in arbitrary colours with PIL, 64 and 128 px (default scenes)")
    shapes_parser.add_argument("--model", default="toy",
                               help="model to edit with (default toy, the embedded model trained on these shapes)")
    shapes_parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    shapes_parser.add_argument("--out", default="shapesbench",
                               help="folder for metrics.json and contact_sheet.png (default shapesbench)")
    shapes_parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                               help="change a DragConfig setting, e.g. --set lora_steps=0 (repeatable)")
    shapes_parser.add_argument("--sweep", action="append", metavar="KEY=V1,V2,...",
                               help="an ablation: run every case once per value of this setting, the others as set, "
                                    "and write one row per value to OUT/sweep.json, e.g. --sweep inversion_strength=0.4,0.5,0.7 "
                                    "(repeatable: each sweep varies its own setting)")
    shapes_parser.set_defaults(run=bench_shapes)
    add_dragbench_parsers(suites, commands, _Parser)

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
    features_parser.add_argument("--size", type=whole_number(1), default=64,
                                 help="longest side of the feature grid (default 64)")
    features_parser.add_argument("--lora-steps", type=int, help="LoRA fine-tuning steps (0 = no LoRA)")
    features_parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="change a DragConfig setting (repeatable)")
    features_parser.add_argument("--out", default="features_pca.png", help="where to write the figure (PNG)")
    features_parser.set_defaults(run=features)

    train_parser = commands.add_parser("train-toy", help="train the embedded toy model (about 1 h 50 min on 2 CPU cores)",
                                       description=TRAIN_DESCRIPTION)
    add_training_arguments(train_parser)
    train_parser.set_defaults(run=train_toy)

    cache_parser = commands.add_parser("cache", help="the disk cache of fine-tuned LoRA adapters: its size, or empty it")
    actions = cache_parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for action, text in (("info", "show the cache's folder, entries, size and size limit"),
                         ("clear", "delete every cached LoRA adapter")):
        action_parser = actions.add_parser(action, help=text, description=text)
        action_parser.add_argument("--folder", help="the cache folder (default: $DRAGWIDGET_CACHE, else "
                                                    "$XDG_CACHE_HOME/dragwidget or ~/.cache/dragwidget)")
    cache_parser.set_defaults(run=cache)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None:   # run as the program: a caller's own process (a notebook, tests) keeps its environment
        quiet_library_bars(sys.stderr)
    try:
        return args.run(args)
    except DragCancelled as error:
        print(f"dragwidget: cancelled: {error}", file=sys.stderr)
        return 130
    except (DragWidgetError, ValueError) as error:
        return _fail(error)


if __name__ == "__main__":
    sys.exit(main())
