"""DIFT features (Tang et al., 2023), as DragBench's mean-distance metric reads them.

The image is encoded, noised to t = 261 with fresh noise, and run once through the UNet with the
sample's prompt; the output of decoder block 1 is the feature map. This is repeated for an
ensemble of 8 noise draws (and VAE samples) in one batch and averaged. The paper uses Stable
Diffusion 2.1; any checkpoint the project loads works (the embedded `toy` offline).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch

from ..encoding import encode_image, encode_prompt
from ..errors import InputError, ModelNotFoundError
from ..loading import DiffusionModel, load_model
from ..unet_features import unet_with_block_output
from . import DIFT_MODEL

DIFT_TIMESTEP = 261
DIFT_BLOCK = 1
DIFT_ENSEMBLE = 8
DIFT_SEED = 42


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


@torch.no_grad()
def dift_features(model: DiffusionModel, pixels: torch.Tensor, prompt: str, generator: torch.Generator,
                  timestep: int = DIFT_TIMESTEP, block: int = DIFT_BLOCK, ensemble: int = DIFT_ENSEMBLE) -> torch.Tensor:
    """1x3xHxW pixels in [-1, 1] (any size the VAE takes) -> 1xCxhxw features, the ensemble's mean."""
    from diffusers import DDIMScheduler

    batch = pixels.expand(ensemble, -1, -1, -1)
    latents = encode_image(model, batch, generator=generator, sample=True)
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    step = torch.tensor(timestep, device=latents.device)
    noisy = DDIMScheduler.from_config(model.scheduler_config).add_noise(latents, noise, step)
    text = encode_prompt(model, prompt).expand(ensemble, -1, -1)
    with model.autocast():
        _, features = unet_with_block_output(model.unet, noisy, step, text, block)
    return features.float().mean(dim=0, keepdim=True)
