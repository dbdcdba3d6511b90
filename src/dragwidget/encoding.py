"""Between pixels, text and latents: the VAE and the text encoder."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .image_input import validate_prompt
from .loading import DiffusionModel


def image_to_tensor(image: Image.Image, device) -> torch.Tensor:
    """RGB PIL image -> 1x3xHxW float tensor in [-1, 1]."""
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).to(device)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """1x3xHxW tensor in [-1, 1] -> RGB PIL image."""
    array = ((tensor[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)


@torch.no_grad()
def encode_image(model: DiffusionModel, pixels: torch.Tensor, generator=None, sample: bool = False) -> torch.Tensor:
    """Pixels in [-1, 1] -> scaled latents. The mean of the posterior unless `sample` is asked for."""
    posterior = model.vae.encode(pixels.to(model.device, model.dtype)).latent_dist
    latents = posterior.sample(generator) if sample else posterior.mean
    return latents.float() * model.vae.config.scaling_factor


def decode_latents(model: DiffusionModel, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> pixels in [-1, 1]."""
    latents = latents.to(model.device, model.dtype) / model.vae.config.scaling_factor
    return model.vae.decode(latents).sample.float()


@torch.no_grad()
def encode_prompt(model: DiffusionModel, prompt: str) -> torch.Tensor:
    """Prompt -> 1 x tokens x dim text embedding (float32) for the UNet's cross-attention."""
    tokens = model.tokenizer(
        [validate_prompt(prompt)], padding="max_length", max_length=model.tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids.to(model.device)
    return model.text_encoder(tokens)[0].float()
