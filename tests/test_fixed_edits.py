"""The three methods give the very results they gave before the engine's layout changed
(`fixed_edits.py` says how those were kept)."""

from __future__ import annotations

import numpy as np
import torch

from fixed_edits import KEPT, METHOD_SETTINGS, run_fixed_edits


def test_fixed_edits_are_unchanged(tmp_path):
    kept = np.load(KEPT)
    edits = run_fixed_edits(tmp_path)
    assert {key.split("_")[0] for key in edits} == set(METHOD_SETTINGS)
    same_machine = (str(kept["cpu_capability"]) == torch.backends.cpu.get_cpu_capability()
                    and str(kept["torch_version"]) == torch.__version__)
    for key, value in edits.items():
        if same_machine:
            # the same kernels: every bit the same
            assert np.array_equal(value, kept[key]), key
        else:
            # other CPU kernels round differently: the same edit, to the last few grey levels
            assert value.shape == kept[key].shape, key
            difference = np.abs(value.astype(np.float64) - kept[key])
            assert np.percentile(difference, 99) <= (3 if key.endswith("image") else 1.0), key
