"""A fixed set of toy edits, one per method and case, whose outputs are kept in
`tests/data/fixed_edits.npz` to prove that a change of the code's shape changed no result.

    python tests/fixed_edits.py            # write the file from the code as it is now

Written from the code before the engine's layout changed (the commit that added this file), so
`test_fixed_edits.py` compares every later layout with that one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

KEPT = Path(__file__).parent / "data" / "fixed_edits.npz"
CASE_SEED = 11
CASE_COUNT = 2
# Short runs of each method, LoRA included where the method trains one.
METHOD_SETTINGS = {
    "dragdiffusion": {"method": "dragdiffusion", "lora_steps": 3, "max_drag_steps": 8},
    "gooddrag": {"method": "gooddrag", "gooddrag_lora_steps": 3, "gooddrag_denoising_steps": 2,
                 "gooddrag_rounds": 2},
    "fastdrag": {"method": "fastdrag"},
}


def run_fixed_edits(cache_dir) -> dict:
    """Every method on every case: name -> the edited image (uint8) and where the handles ended."""
    from dragwidget import DragEditor, DragRequest
    from dragwidget.toy.shapes_bench import make_cases

    editor = DragEditor("toy", device="cpu", cache_dir=cache_dir, cpu_threads=1)
    outputs = {}
    for method, changes in METHOD_SETTINGS.items():
        config = editor.config.replace(**changes)
        for number, case in enumerate(make_cases(CASE_COUNT, seed=CASE_SEED)):
            torch.manual_seed(0)
            result = editor.run(DragRequest(Image.fromarray(case.image), case.pairs, case.mask, case.scene.caption,
                                            config))
            outputs[f"{method}_{number}_image"] = np.asarray(result.image)
            outputs[f"{method}_{number}_handles"] = np.asarray(result.handles, dtype=np.float64)
            outputs[f"{method}_{number}_trajectory"] = np.asarray(result.trajectory, dtype=np.float64)
    return outputs


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        edits = run_fixed_edits(cache)
    KEPT.parent.mkdir(exist_ok=True)
    np.savez_compressed(KEPT, cpu_capability=np.array(torch.backends.cpu.get_cpu_capability()),
                        torch_version=np.array(torch.__version__), **edits)
    print(f"wrote {len(edits)} arrays to {KEPT}", file=sys.stderr)
