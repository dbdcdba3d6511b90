"""`dragwidget bench dragbench` and `dragwidget eval dragbench`: the command-line side of DragBench.

Options, and whether the model can be had, are checked before torch is imported (a missing LPIPS
is found before the long runs).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List

from ..cli_inputs import check_output_file, check_output_folder, settings_changes, sweep_values, whole_number
from ..cli_progress import Counter
from ..api import DEFAULT_MODEL, InputError, check_model_available
from . import DIFT_MODEL, METRICS


def parse_metrics(text: str) -> List[str]:
    chosen = [name.strip().lower() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in METRICS]
    if unknown or not chosen:
        raise InputError(f"--metrics takes a comma-separated list of {', '.join(METRICS)}; got {text!r}")
    return list(dict.fromkeys(chosen))


def bench_dragbench(args) -> int:
    from .bench_run import run_dragbench
    from .samples import find_samples, parse_shard, select_shard

    changes = settings_changes(args, {})
    sweeps = sweep_values(args)
    shard = parse_shard(args.shard) if args.shard else (1, 1)
    out = Path(args.out)
    check_output_folder(out, f"--out {out}")
    every_sample = find_samples(Path(args.data))
    samples = select_shard(every_sample, *shard)
    scores_rows = bool(sweeps) and shard == (1, 1)   # a shard's sweep is scored once every shard has finished
    metrics = parse_metrics(args.metrics)
    check_model_available(args.model)

    from ..api import DragEditor

    editor = DragEditor(args.model, device=args.device)
    base = editor.config.replace_for_method(**changes)
    scorers = load_scorers(metrics, args) if scores_rows else {}
    runs = [("", None, base, out)] if not sweeps else [
        (key, value, base.replace_for_method(**{key: value}), out / f"{key}={value}") for key, values in sweeps.items() for value in values]
    rows = []
    for key, value, config, folder in runs:
        label = f"{key}={value}" if key else "dragbench"
        with Counter(desc=label, total=len(samples), unit="sample", stream=sys.stderr) as bar:
            def on_sample(sample, status, details):
                if status == "failed":
                    bar.write(f"skipped {sample.name}: {details['reason']}")
                elif status == "done":   # before the count, so that a quarter's line names its last sample
                    bar.set_postfix_str(f"{sample.name}: {details['seconds']:.1f} s")
                bar.update(1)

            try:
                summary = run_dragbench(editor, samples, folder, config, resume=args.resume, on_sample=on_sample)
            except KeyboardInterrupt:
                bar.close()
                print(f"dragwidget: interrupted after {bar.n} of {len(samples)} samples; finished ones are kept: "
                      "run the same command with --resume to go on", file=sys.stderr)
                return 130
        summary.update(shard=f"{shard[0]}/{shard[1]}", samples=len(samples), model=args.model, config=config.to_dict())
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"run_shard{shard[0]}of{shard[1]}.json").write_text(json.dumps(summary, indent=2))
        print(f"{label}: {summary['done']} edited, {summary['resumed']} already finished, {len(summary['failed'])} skipped "
              f"(shard {shard[0]}/{shard[1]}: {len(samples)} of {len(every_sample)} samples) -> {folder}")
        if scores_rows:
            from .metrics import evaluate

            report = evaluate(every_sample, folder, metrics, **scorers)
            rows.append({"setting": key, "value": value, **report["overall"], "failed": len(summary["failed"]),
                         "seconds_per_sample": summary["seconds"] / max(summary["done"], 1)})
    if sweeps and not scores_rows:
        print("a sharded sweep is scored when every shard has finished: "
              f"dragwidget eval dragbench --data {args.data} --results {out}/KEY=VALUE")
    if rows:
        dift = scorers["dift"][1].to_dict() if scorers["dift"] is not None else None
        (out / "sweep.json").write_text(json.dumps({"model": args.model, "metrics": metrics, "dift": dift, "rows": rows},
                                                   indent=2))
        for row in rows:
            print(f"{row['setting']}={row['value']}: " + ", ".join(
                f"{name.upper()} {row[name]:.3f}" for name in metrics if row.get(name) is not None))
        print(f"wrote {out / 'sweep.json'}")
    return 0


def load_scorers(metrics: List[str], args) -> dict:
    """What `dragbench.metrics.evaluate` needs for these metrics (LPIPS first: it fails fast when missing)."""
    from ..api import default_device
    from .dift import load_dift
    from .metrics import load_lpips

    device = args.device or default_device()
    return {"lpips_model": load_lpips(device) if "if" in metrics else None,
            "dift": load_dift(args.dift_model, device, timestep=args.dift_timestep, block=args.dift_block)
            if "md" in metrics else None}


def eval_dragbench(args) -> int:
    from .metrics import evaluate, format_report, plot_report, write_report
    from .samples import find_samples

    metrics = parse_metrics(args.metrics)
    results = Path(args.results)
    if not results.is_dir():
        raise InputError(f"--results {results}: not a folder (give the --out folder of `dragwidget bench dragbench`)")
    json_path = Path(args.json) if args.json else results / "eval_dragbench.json"
    plot_path = Path(args.plot) if args.plot else json_path.with_suffix(".png")
    check_output_file(json_path, "--json")
    check_output_file(plot_path, "--plot", image=True)
    samples = find_samples(Path(args.data))
    scorers = load_scorers(metrics, args)
    with Counter(desc="scoring", total=len(samples), unit="sample", stream=sys.stderr) as bar:
        report = evaluate(samples, results, metrics, on_sample=lambda sample, row: bar.update(1), **scorers)
    if not report["samples"]:
        raise InputError(f"--results {results}: none of the {len(samples)} samples has a result there "
                         f"(first: {report['missing'][0]['reason']}); run `dragwidget bench dragbench` first")
    write_report(report, json_path)
    plot_report(report, plot_path)
    print(format_report(report))
    print(f"wrote {json_path} and {plot_path}")
    return 0


def add_scoring_arguments(parser, purpose: str) -> None:
    suffix = f" {purpose}" if purpose else ""
    parser.add_argument("--metrics", default="if,md", help=f"which of if,md to compute{suffix} (default if,md; "
                                                           "md alone needs no LPIPS weights)")
    parser.add_argument("--dift-model", default=DIFT_MODEL,
                        help=f"checkpoint whose features locate the handles for MD (default {DIFT_MODEL}, as the paper; "
                             "toy works offline)")
    parser.add_argument("--dift-block", type=whole_number(0),
                        help="decoder block of the DIFT features (default: the checkpoint's dragwidget_dift.json, else 1)")
    parser.add_argument("--dift-timestep", type=whole_number(0),
                        help="noise timestep of the DIFT features (default: the checkpoint's file, else 261)")


def add_dragbench_parsers(bench_suites, commands, parser_class) -> None:
    dragbench_parser = bench_suites.add_parser(
        "dragbench", help="DragBench (the paper's benchmark): edit every sample, results where its evaluation looks")
    dragbench_parser.add_argument("--data", required=True, help="the DragBench folder (samples found at any depth)")
    dragbench_parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model to edit with (default {DEFAULT_MODEL})")
    dragbench_parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    dragbench_parser.add_argument("--out", required=True,
                                  help="results folder: OUT/<category>/<sample>/dragged_image.png and result.json")
    dragbench_parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                                  help="change a DragConfig setting, e.g. --set lora_steps=40 (repeatable)")
    dragbench_parser.add_argument("--shard", metavar="I/N",
                                  help="run only every N-th sample from the I-th: N processes (one per GPU, or a Slurm "
                                       "array) split the set with no coordination")
    dragbench_parser.add_argument("--resume", action="store_true", help="skip samples whose result is already in OUT")
    dragbench_parser.add_argument("--sweep", action="append", metavar="KEY=V1,V2,...",
                                  help="an ablation: one run per value into OUT/KEY=VALUE/, scored, one row per value "
                                       "in OUT/sweep.json (repeatable)")
    add_scoring_arguments(dragbench_parser, "for --sweep rows")
    dragbench_parser.set_defaults(run=bench_dragbench)

    eval_parser = commands.add_parser("eval", help="score benchmark results")
    eval_suites = eval_parser.add_subparsers(dest="suite", required=True, parser_class=parser_class)
    eval_dragbench_parser = eval_suites.add_parser(
        "dragbench", help="image fidelity (1 - LPIPS) and mean distance (DIFT) of DragBench results, as the paper")
    eval_dragbench_parser.add_argument("--data", required=True, help="the DragBench folder the results were made from")
    eval_dragbench_parser.add_argument("--results", required=True, help="the --out folder of `bench dragbench`")
    eval_dragbench_parser.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    eval_dragbench_parser.add_argument("--json", help="where to write the scores (default RESULTS/eval_dragbench.json)")
    eval_dragbench_parser.add_argument("--plot", help="where to write the figure (default: the JSON's name, .png)")
    add_scoring_arguments(eval_dragbench_parser, "")
    eval_dragbench_parser.set_defaults(run=eval_dragbench)
