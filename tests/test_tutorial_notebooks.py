"""notebooks/tutorial.ipynb and notebooks/feature_explorer.ipynb run top to bottom in a real kernel.

Both run on the embedded toy model on the CPU (as a user without a GPU gets them). They are skipped
only where that model is not installed (a checkout without its weights): the tutorial's plots and
ablations are about what a *trained* model does. Select them with `pytest -m notebook` or
`pytest tests/test_tutorial_notebooks.py`. How long the tutorial takes is a benchmark, not a test:
`python3 benchmarks/bench_tutorial.py`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest

from dragwidget.model_source import embedded_model_path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

pytestmark = [
    pytest.mark.notebook,
    pytest.mark.skipif(embedded_model_path("toy") is None,
                       reason="the embedded toy model (src/dragwidget/models/toy) is not installed; "
                              "the notebooks are written for it"),
]


def execute(name: str, tmp_path: Path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("DRAGWIDGET_MODEL", "toy")            # the embedded model ...
    monkeypatch.delenv("DRAGWIDGET_TUTORIAL_MODEL", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")          # ... on the CPU, even on a GPU machine
    shutil.copy(NOTEBOOKS / name, tmp_path / name)
    notebook = nbformat.read(tmp_path / name, as_version=4)
    assert notebook.metadata.kernelspec.name == "python3"
    # The cell timeout only catches a hung kernel: a loaded machine may take many times longer.
    nbclient.NotebookClient(notebook, timeout=3600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    text += "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    return re.sub(r"\x1b\[[0-9;]*m", "", text), pictures, outputs, notebook


def test_tutorial_runs_top_to_bottom(tmp_path, monkeypatch):
    text, pictures, _, notebook = execute("tutorial.ipynb", tmp_path, monkeypatch)
    for section in ("model 'toy'", "LoRA: trained", "mean error (px) at the drag's step, per block",
                    "reached:", "mutual self-attention:", "reconstruction PSNR", "20 cases of seed 1"):
        assert section in text, f"missing output of a section: {section!r}"
    # one sentence per ablation saying whether it agrees with the paper
    for ablation in ("inversion steps", "LoRA steps", "feature block"):
        assert re.search(rf"{ablation}: best here .*(Agrees|Does not agree)", text), ablation
    # and the live case: the default and the changed setting, each scored
    assert re.search(r"default +relative distance [0-9.]+, IoU [0-9.]+, lost \d+/\d+", text)
    assert re.search(r"inversion_strength=0.7 +relative distance", text)
    # both methods on the one prepared image, each with the verdict read from its picture
    for method in ("DragDiffusion (paper)", "GoodDrag"):
        assert re.search(rf"{re.escape(method)} +\d+ Adam steps.*reused {{'lora': 'memory', 'inversion': 'memory'}}", text), method
    assert len(re.findall(r"verdict: (reached, shape kept|reached, but deformed|moved part of the way|not moved|lost)", text)) == 2
    assert_three_methods(text, notebook)
    assert len(pictures) >= 15, "figures are missing"


def assert_three_methods(text, notebook):
    """Section 10: FastDrag's warp field drawn, and the three methods' times and verdicts in one table."""
    cells, core, holes = map(int, re.search(
        r"warp field: (\d+) editable cells of \d+x\d+, (\d+) in the rigid core, (\d+) holes", text).groups())
    assert 0 < core <= cells and holes < cells
    arrow, drag = map(json.loads, re.search(r"the arrow at the handle's cell: (\[.*?\]) px; the drag: (\[.*?\]) px",
                                            text).groups())
    # the grabbed cell is sent (about) the whole drag: arrows in latent cells, or scaled wrong, would not be
    assert math.dist(arrow, drag) <= 0.25 * math.hypot(*drag), (arrow, drag)
    warp_cell = next(cell for cell in notebook.cells if cell.cell_type == "code" and ".quiver(" in cell.source)
    assert any("image/png" in o.get("data", {}) for o in warp_cell.outputs), "the warp field was not drawn"

    stages = re.search(r"^seconds +(.+?) +total +verdict$", text, re.M).group(1).split()
    assert "lora" not in stages
    times = {}
    for method in ("DragDiffusion (paper)", "GoodDrag", "FastDrag"):
        row = re.search(rf"^{re.escape(method)} +((?:(?:\d+\.\d\d|-) +){{{len(stages)}}})(\d+\.\d\d) +"
                        r"(reached, shape kept|reached, but deformed|moved part of the way|not moved|lost)\b", text, re.M)
        assert row, f"no times and verdict for {method}"
        times[method] = dict(zip(stages, row.group(1).split()))
        assert abs(float(row.group(2)) - sum(float(t) for t in times[method].values() if t != "-")) < 0.05, method
    # each ran its own drag stage: FastDrag warped, the other two optimised, and the warp was the quicker
    assert times["FastDrag"]["optimisation"] == "-" and times["FastDrag"]["warp"] != "-"
    for method in ("DragDiffusion (paper)", "GoodDrag"):
        assert times[method]["warp"] == "-"
        assert float(times["FastDrag"]["warp"]) < float(times[method]["optimisation"]), method


def test_feature_explorer_runs_top_to_bottom(tmp_path, monkeypatch):
    text, pictures, outputs, _ = execute("feature_explorer.ipynb", tmp_path, monkeypatch)
    assert "embedded 'toy' model" in text or "'toy'" in text
    assert "best match in the edited picture" in text
    # the drag's own block and step as the figure frames them, and whether the drag got there
    assert re.search(r"the drag's features: decoder block \d after \d+ of \d+ inversion steps, t = \d+", text)
    assert re.search(r"the verdict: (reached, shape kept|reached, but deformed|moved part of the way|not moved|lost)", text)
    assert pictures, "the PCA grid was not shown"
    views = [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert views, "the explorer widget was not displayed"
