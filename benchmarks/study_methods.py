#!/usr/bin/env python3
"""The held-out study that chooses a model's default method: every method on both ShapesBench
families and on seeds the settings were not tuned on.

    python3 benchmarks/study_methods.py --seeds 202,203 --drawn-seeds 301,302 --out study.json

One row per method x family x seed: the drags that worked (the object arrived and kept its shape,
IoU of the moved silhouette >= 0.5), those that arrived by position alone, mean IoU, mean relative
distance, objects lost and seconds per edit (LoRA training included where a method trains one and
its LoRA was not yet in the disk cache: the methods run in the order given, so a later method that
uses the same LoRA settings finds it there; `--fresh-cache` gives each method a cache of its own),
and how the verdict agreed: among the drags that worked, how many it said reached, and among
those that failed (by position or shape), how many it wrongly said reached.
Each method runs with the model's own settings (its `dragwidget_settings.json`), `--set` on top.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

from dragwidget import DragEditor  # noqa: E402
from dragwidget.cli_inputs import settings_changes  # noqa: E402
from dragwidget.api import METHODS  # noqa: E402
from dragwidget.toy.shapes_bench import make_cases, run_sweep  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    parser.add_argument("--seeds", default="202,203", help="palette-scene seeds (default 202,203)")
    parser.add_argument("--drawn-seeds", default="301,302", help="drawn-picture seeds (default 301,302)")
    parser.add_argument("--scene-cases", type=int, default=30)
    parser.add_argument("--drawn-cases", type=int, default=16)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="a DragConfig change for every method")
    parser.add_argument("--fresh-cache", action="store_true", help="an empty LoRA cache for each method")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    plan = [("scenes", int(s), args.scene_cases) for s in args.seeds.split(",") if s.strip()]
    plan += [("drawn", int(s), args.drawn_cases) for s in args.drawn_seeds.split(",") if s.strip()]
    editor = DragEditor(args.model)
    base = editor.config.replace_for_method(**settings_changes(args, {}))
    rows = []
    print(f"{'method':14s} {'family':7s} {'seed':>5s} {'worked':>7s} {'arrived':>8s} {'IoU':>6s} {'rel':>6s} "
          f"{'lost':>6s} {'s/edit':>7s}  verdict: reached|worked reached|failed", flush=True)
    for family, seed, count in plan:
        cases = make_cases(count, seed=seed, family=family)
        for method in methods:
            if args.fresh_cache:
                editor = DragEditor(editor.model, config=editor.config, cache_dir=tempfile.mkdtemp())
            table = run_sweep(editor, cases, {"method": [method]}, config=base)
            result = table["rows"][0]
            row = {"method": method, "family": family, "seed": seed, **{k: v for k, v in result.items()
                                                                         if k not in ("setting", "value")}}
            rows.append(row)
            print(f"{method:14s} {family:7s} {seed:>5d} {row['worked']:>3d}/{row['cases']:<3d} "
                  f"{row['arrived']:>4d}/{row['cases']:<3d} {row['iou']:6.3f} {row['relative_distance']:6.3f} "
                  f"{row['lost_objects']:>2d}/{row['dragged_objects']:<3d} {row['seconds']:7.2f}  "
                  f"{row['said_reached_worked']:>8d}/{row['worked']:<6d} "
                  f"{row['said_reached_failed']:>7d}/{row['cases'] - row['worked']:<3d}", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"model": args.model, "config": base.to_dict(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
