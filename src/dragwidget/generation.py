"""Generated-image mode: make an image from a prompt and keep its latents for dragging.

As in the reference's second case, a generated image needs neither LoRA nor inversion: the
latent at the drag timestep is kept from the generation itself, and the drag denoises with the
same classifier-free guidance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from PIL import Image

from .config import DragConfig
from .ddim_inversion import ddim_scheduler, drag_timestep_index, invert
from .denoise_decode import decode, denoise, predict_noise
from .encoding import decode_latents, encode_image, encode_prompt, image_to_tensor, tensor_to_image
from .loading import DiffusionModel


@dataclass
class Generated:
    pixels: torch.Tensor          # 1x3xHxW in [-1, 1]
    drag_latent: torch.Tensor     # latent at timesteps[drag index]
    text_embedding: torch.Tensor
    uncond_embedding: torch.Tensor


@torch.no_grad()
def generate_keeping_latents(
    model: DiffusionModel,
    prompt: str,
    config: DragConfig,
    width: int,
    height: int,
    seed: int,
    on_step: Optional[Callable[[int, int], None]] = None,
) -> Generated:
    """`prompt`'s picture by DDIM with classifier-free guidance, seeded, and the latent it passed
    through at the drag's timestep (what a drag of it starts from: no LoRA, no inversion)."""
    scheduler = ddim_scheduler(model, config)
    keep_at = drag_timestep_index(config)
    text_embedding = encode_prompt(model, prompt)
    uncond_embedding = encode_prompt(model, "")
    shape = (1, model.unet.config.in_channels, height // model.vae_scale_factor, width // model.vae_scale_factor)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(model.device)
    latents = latents * scheduler.init_noise_sigma
    drag_latent = None
    for index, timestep in enumerate(scheduler.timesteps):
        if index == keep_at:
            drag_latent = latents.clone()
        with model.autocast():
            noise = predict_noise(model, latents, timestep, text_embedding, uncond_embedding,
                                      config.generation_guidance_scale)
        latents = scheduler.step(noise.float(), timestep, latents).prev_sample
        if on_step is not None:
            on_step(index + 1, len(scheduler.timesteps))
    return Generated(decode_latents(model, latents), drag_latent, text_embedding, uncond_embedding)


@torch.no_grad()
def reconstruct(model: DiffusionModel, image, prompt: str, config: Optional[DragConfig]):
    """`image` inverted to the drag's timestep and denoised back without a drag (config None: through
    the VAE alone): what an edit that moved nothing would give, the model's own loss of detail."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    latent = encode_image(model, image_to_tensor(picture, model.device))
    if config is not None:
        text = encode_prompt(model, prompt)
        inverted = invert(model, latent, text, config)
        latent = denoise(model, ddim_scheduler(model, config), drag_timestep_index(config), inverted, inverted, text,
                         config)
    return tensor_to_image(decode(model, latent))
