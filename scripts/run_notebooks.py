"""Execute the notebooks in place, so that they are committed with their outputs.

    python3 scripts/run_notebooks.py                 # every notebook in notebooks/
    python3 scripts/run_notebooks.py tutorial        # only notebooks/tutorial.ipynb

They run as a user without a GPU runs them: the embedded `toy` model on the CPU. The outputs are
what GitHub, Colab (before running) and the documentation site show; the suite executes the
notebooks again from the top (tests/test_tutorial_notebooks.py, tests/test_notebooks_quickstart.py).
Widget state is not stored (a static page cannot run the widget; the site shows its screenshot).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbclient
import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    # The cell timeout only catches a hung kernel: a loaded machine may take many times longer.
    nbclient.NotebookClient(notebook, timeout=3600, kernel_name="python3", record_timing=False,
                            store_widget_state=False, resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(notebook, path)
    print(f"{path.name}: executed in {time.perf_counter() - started:.0f} s", flush=True)


def main(names) -> None:
    os.environ["DRAGWIDGET_MODEL"] = "toy"
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    paths = [NOTEBOOKS / f"{name.removesuffix('.ipynb')}.ipynb" for name in names] or sorted(NOTEBOOKS.glob("*.ipynb"))
    for path in paths:
        run(path)


if __name__ == "__main__":
    main(sys.argv[1:])
