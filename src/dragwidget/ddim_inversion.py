"""Step 2: DDIM inversion.

The clean latent of the image is run *up* the DDIM schedule (deterministically) to the
timestep where the drag happens: with 50 steps and strength 0.7, 35 inversion steps reach
timesteps[15] (t = 681 for Stable Diffusion's schedule). Denoising back from there
reconstructs the image, which is what makes an edit of that latent an edit of *this* image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .config import DragConfig
from .loading import DiffusionModel
from .mutual_self_attention import recording_self_attention


@dataclass
class InversionRecord:
    """What one inversion passed through, for FastDrag's consistency-preserving denoising: the
    latent before each inversion step (`levels[0]` the clean latent) and the inputs of the
    controlled self-attention layers at each step (their keys and values, before projection)."""

    levels: List[torch.Tensor]
    attention: Dict[str, List[torch.Tensor]]


def ddim_scheduler(model: DiffusionModel, config: DragConfig):
    """The reference DDIM settings on top of the checkpoint's own noise schedule."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(
        model.scheduler_config, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
        timestep_spacing="leading")
    scheduler.set_timesteps(config.num_inference_steps, device=model.device)
    return scheduler


def drag_timestep_index(config: DragConfig) -> int:
    """Index into the (descending) denoising timesteps at which the latent is optimised."""
    if not 0 < config.inversion_steps <= config.num_inference_steps:
        raise ValueError(
            f"inversion_strength {config.inversion_strength} with {config.num_inference_steps} steps "
            f"gives {config.inversion_steps} inversion steps; it must be between 1 and {config.num_inference_steps}")
    return config.num_inference_steps - config.inversion_steps


@torch.no_grad()
def invert(
    model: DiffusionModel,
    latents: torch.Tensor,
    text_embedding: torch.Tensor,
    config: DragConfig,
    on_step: Optional[Callable[[int, int], None]] = None,
    levels: Optional[List[torch.Tensor]] = None,
) -> torch.Tensor:
    """Return the latent at the drag timestep whose DDIM denoising gives back `latents`;
    `levels`, when given, receives the latent before each step."""
    from diffusers import DDIMInverseScheduler

    inverse = DDIMInverseScheduler.from_config(
        model.scheduler_config, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
        timestep_spacing="leading")
    inverse.set_timesteps(config.num_inference_steps, device=model.device)
    total = config.inversion_steps
    drag_timestep_index(config)  # validates the strength before any work
    # The UNet takes the device's timestep tensors, the scheduler host integers (it indexes host
    # tables with them: a device timestep there would be read back, stalling a GPU every step).
    for step, (timestep, host_timestep) in enumerate(zip(inverse.timesteps[:total], inverse.timesteps[:total].tolist())):
        if levels is not None:
            levels.append(latents)
        with model.autocast():
            noise = model.unet(latents, timestep, encoder_hidden_states=text_embedding).sample
        latents = inverse.step(noise.float(), host_timestep, latents).prev_sample
        if on_step is not None:
            on_step(step + 1, total)
    return latents


def invert_recording(model: DiffusionModel, latents: torch.Tensor, text_embedding: torch.Tensor, config: DragConfig,
                     on_step: Optional[Callable[[int, int], None]] = None) -> Tuple[torch.Tensor, InversionRecord]:
    """`invert`, keeping what the denoising of an edit of it needs to stay the original's (`InversionRecord`)."""
    levels: List[torch.Tensor] = []
    with recording_self_attention(model.unet, config) as attention:
        inverted = invert(model, latents, text_embedding, config, on_step, levels)
    return inverted, InversionRecord(levels, attention)
