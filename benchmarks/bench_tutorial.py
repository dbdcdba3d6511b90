#!/usr/bin/env python3
"""How long notebooks/tutorial.ipynb (or another notebook) takes top to bottom, as a user runs it.

    python3 benchmarks/bench_tutorial.py                          # the tutorial on the toy model, CPU
    python3 benchmarks/bench_tutorial.py --notebook feature_explorer.ipynb
    DRAGWIDGET_CPU_THREADS=2 python3 benchmarks/bench_tutorial.py # a fixed thread count instead of the engine's choice

Runs a copy in a temporary folder with nbclient in a fresh python3 kernel, on the embedded `toy`
model on the CPU (as tests/test_tutorial_notebooks.py does, which checks the outputs but not the
time), and prints the total and the slowest cells. The load average is printed before and after:
on a shared machine it says how much of the time was other work.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def cell_seconds(cell) -> float:
    timing = cell.metadata.get("execution", {})
    try:
        started = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
        ended = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return float("nan")
    return (ended - started).total_seconds()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notebook", default="tutorial.ipynb", help="a notebook in notebooks/ (default tutorial.ipynb)")
    parser.add_argument("--slowest", type=int, default=5, help="how many of the slowest cells to list (default 5)")
    args = parser.parse_args(argv)
    source = NOTEBOOKS / args.notebook
    if not source.is_file():
        parser.error(f"--notebook: no {args.notebook} in {NOTEBOOKS}")

    import nbclient
    import nbformat

    os.environ.update(DRAGWIDGET_MODEL="toy", CUDA_VISIBLE_DEVICES="")  # the kernel inherits them
    os.environ.pop("DRAGWIDGET_TUTORIAL_MODEL", None)
    print(f"{args.notebook} on the toy model, CPU; {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} "
          f"usable cores; DRAGWIDGET_CPU_THREADS={os.environ.get('DRAGWIDGET_CPU_THREADS', 'unset (the engine chooses)')}")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min)", flush=True)
    with tempfile.TemporaryDirectory(prefix="dragwidget-bench-notebook-") as folder:
        shutil.copy(source, Path(folder) / source.name)
        notebook = nbformat.read(Path(folder) / source.name, as_version=4)
        started = time.perf_counter()
        nbclient.NotebookClient(notebook, timeout=3600, kernel_name="python3", record_timing=True,
                                resources={"metadata": {"path": folder}}).execute()
        seconds = time.perf_counter() - started
    print(f"load average after:  {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    code = [(index, cell) for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    print(f"\n{args.notebook}: {seconds:.0f} s top to bottom ({len(code)} code cells, kernel start included)")
    print("slowest cells:")
    for index, cell in sorted(code, key=lambda item: -cell_seconds(item[1]))[:args.slowest]:
        first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
        print(f"  cell {index:>3}: {cell_seconds(cell):7.1f} s   {first_line[:70]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
