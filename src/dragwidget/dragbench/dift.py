"""The DIFT model DragBench's mean-distance metric reads (`locating.dift_features`, with an
ensemble of 8 noise draws). The paper uses Stable Diffusion 2.1; any checkpoint the project loads
works (the embedded `toy` offline).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch

from ..api import DIFT_BLOCK, DIFT_ENSEMBLE, DIFT_TIMESTEP, InputError, ModelNotFoundError, load_model
from . import DIFT_MODEL



@dataclass
class DiftSettings:
    model: str = DIFT_MODEL
    timestep: int = DIFT_TIMESTEP
    block: int = DIFT_BLOCK
    ensemble: int = DIFT_ENSEMBLE

    def to_dict(self) -> dict:
        return asdict(self)


def load_dift(name: str = DIFT_MODEL, device=None, timestep: Optional[int] = None, block: Optional[int] = None,
              ensemble: Optional[int] = None):
    """(model in float32, as the reference runs DIFT; settings: given > the folder's file > the paper's)."""
    try:
        return _load_dift(name, device, timestep, block, ensemble)
    except ModelNotFoundError as error:
        # the loader's advice names `--model`, the editing model's option
        raise ModelNotFoundError("the DIFT model for MD (--dift-model): " + str(error).replace("`--model ", "`--dift-model ")) from None


def _load_dift(name, device, timestep, block, ensemble):
    # A checkpoint folder may say which block and timestep locate content for it (the embedded toy
    # does: the paper's block is too coarse at its size); the paper's values otherwise.
    model = load_model(name, device=device, dtype=torch.float32)
    shipped = model.locating_settings
    settings = DiftSettings(
        model=str(name),
        timestep=timestep if timestep is not None else shipped.get("timestep", DIFT_TIMESTEP),
        block=block if block is not None else shipped.get("block", DIFT_BLOCK),
        ensemble=ensemble if ensemble is not None else shipped.get("ensemble", DIFT_ENSEMBLE))
    blocks = len(model.unet.up_blocks)
    if not 0 <= settings.block < blocks:   # fail now, not at the first sample
        raise InputError(f"DIFT block {settings.block} (--dift-block) does not exist: {name} has {blocks} "
                         f"decoder blocks (0..{blocks - 1})")
    return model, settings
