"""Step 4: denoise the dragged latent back to t = 0 and decode it.

With mutual self-attention on, the original latent is denoised alongside as the reference
branch: batch = [original, edited] (each doubled to [unconditional, conditional] under
classifier-free guidance), and the edited rows read the original rows' keys and values.
With `keep`, the edited latent takes the original's wherever `keep` is 1 after every step, so
nothing outside the editable region drifts.

With `reference` (an `ddim_inversion.InversionRecord`, FastDrag's consistency-preserving way) the
edited latent is denoised alone: its self-attention reads the keys and values recorded while the
original was inverted, and `keep` takes the original's latents from the same recording.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, Optional

import torch

from .config import DragConfig
from .encoding import decode_latents
from .loading import DiffusionModel
from .mutual_self_attention import mutual_self_attention, stored_self_attention

if TYPE_CHECKING:
    from .ddim_inversion import InversionRecord


def classifier_free_guidance(uncond: torch.Tensor, cond: torch.Tensor, scale: float) -> torch.Tensor:
    """The guided noise: the unconditional prediction moved `scale` times toward the prompt's."""
    return uncond + scale * (cond - uncond)


def predict_noise(model, latents, timestep, text_embedding, uncond_embedding, guidance_scale):
    """Noise for each row of `latents`, with classifier-free guidance when guidance_scale > 1."""
    rows = latents.shape[0]
    if guidance_scale <= 1.0:
        return model.unet(latents, timestep, encoder_hidden_states=text_embedding.expand(rows, -1, -1)).sample
    # Rows stay grouped by branch ([o_u, o_c, e_u, e_c]) so that the first half is still the original.
    doubled = latents.repeat_interleave(2, dim=0)
    embeddings = torch.cat([uncond_embedding, text_embedding]).repeat(rows, 1, 1)
    noise = model.unet(doubled, timestep, encoder_hidden_states=embeddings).sample
    uncond, cond = noise.view(rows, 2, *noise.shape[1:]).unbind(1)
    return classifier_free_guidance(uncond, cond, guidance_scale)


@torch.no_grad()
def denoise(
    model: DiffusionModel,
    scheduler,
    start_index: int,
    original_latent: torch.Tensor,
    edited_latent: torch.Tensor,
    text_embedding: torch.Tensor,
    config: DragConfig,
    guidance_scale: float = 1.0,
    uncond_embedding: Optional[torch.Tensor] = None,
    on_step: Optional[Callable[[int, int], None]] = None,
    keep: Optional[torch.Tensor] = None,
    reference: Optional["InversionRecord"] = None,
    on_clean: Optional[Callable[[int, int, torch.Tensor], None]] = None,
) -> torch.Tensor:
    """Run DDIM from timesteps[start_index] to the end; return the edited clean latent.
    `on_clean(step, count, clean)` sees the edit's predicted clean latent after each step (previews)."""
    timesteps = scheduler.timesteps[start_index:]
    if reference is not None and len(reference.levels) != len(timesteps):
        raise ValueError(f"the recording has {len(reference.levels)} inversion steps; denoising from index "
                         f"{start_index} takes {len(timesteps)}")
    with_original = reference is None and (config.mutual_attention or keep is not None)
    latents = torch.cat([original_latent, edited_latent]) if with_original else edited_latent
    if not config.mutual_attention:
        control = contextlib.nullcontext()
    elif reference is not None:
        control = stored_self_attention(model.unet, config, reference.attention)
    else:
        control = mutual_self_attention(model.unet, config)
    with control as denoising_step:
        # device timesteps for the UNet, host integers for the scheduler (see ddim_inversion.invert)
        for index, (timestep, host_timestep) in enumerate(zip(timesteps, timesteps.tolist())):
            if denoising_step is not None:
                denoising_step.index = index
            with model.autocast():
                noise = predict_noise(model, latents, timestep, text_embedding, uncond_embedding, guidance_scale)
            stepped = scheduler.step(noise.float(), host_timestep, latents)
            latents = stepped.prev_sample
            if on_clean is not None:
                on_clean(index + 1, len(timesteps), stepped.pred_original_sample[-1:])
            if keep is not None and reference is not None:
                latents = torch.lerp(latents, reference.levels[len(timesteps) - 1 - index], keep)
            elif keep is not None:
                latents = torch.cat([latents[:1], torch.lerp(latents[1:], latents[:1], keep)])
            if on_step is not None:
                on_step(index + 1, len(timesteps))
    return latents[-1:]


@torch.no_grad()
def decode(model: DiffusionModel, latent: torch.Tensor) -> torch.Tensor:
    return decode_latents(model, latent)
