"""The toy model's architectures: the shipped one (v3-c4), version 2's (v1) and the candidates of its
design studies.

Every candidate keeps Stable Diffusion's shape (a KL VAE, a 4-level UNet whose `up_blocks[2]`
ends at latent resolution, a CLIP text encoder) so the engine treats it as any SD checkpoint.
Version 3's candidates vary the number of latent channels (4, 8, 16) and, with 4, the latent
resolution; the earlier ones latent resolution (the VAE's downsampling factor), the UNet's width
and where it has self-attention.
What the studies measured is in the model card, src/dragwidget/models/toy/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from .shapes import IMAGE_SIZE

CAPTION_TOKENS = 32

TEXT_CONFIG = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2,
                   max_position_embeddings=CAPTION_TOKENS)


@dataclass(frozen=True)
class Architecture:
    summary: str
    unet: dict
    vae: dict
    text: dict


def _vae(channels, latent_channels: int = 4, norm_groups: int = 8) -> dict:
    """A KL VAE with one downsampling per level after the first: factor 2 ** (levels - 1)."""
    levels = len(channels)
    return dict(in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=tuple(channels),
                layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * levels,
                up_block_types=("UpDecoderBlock2D",) * levels, norm_num_groups=norm_groups, sample_size=IMAGE_SIZE)


def _unet(latent_size: int, channels, attention, heads, latent_channels: int = 4) -> dict:
    """A 4-level UNet; `attention[i]` says whether level i has transformer blocks (down and up)."""
    return dict(
        sample_size=latent_size, in_channels=latent_channels, out_channels=latent_channels, layers_per_block=1,
        block_out_channels=tuple(channels), norm_num_groups=8, cross_attention_dim=TEXT_CONFIG["hidden_size"],
        attention_head_dim=tuple(heads),  # diffusers reads this as the number of heads per level
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
    )


V2_UNET = ((16, 32, 64, 64), (False, True, True, False), (2, 4, 8, 8))
V3_UNET = ((32, 64, 64, 64), (True, True, True, False), (8, 8, 8, 8))

ARCHITECTURES: Dict[str, Architecture] = {
    "v1": Architecture(
        "version 2 of the toy: 16x16x4 latents (VAE factor 4, 16/32/64), UNet 32/64/64/64 with attention "
        "at 16, 8 and 4",
        _unet(IMAGE_SIZE // 4, (32, 64, 64, 64), (True, True, True, False), (8, 8, 8, 8)),
        _vae((16, 32, 64)), TEXT_CONFIG),
    "v3": Architecture(
        "the candidate for drawn pictures (train with --pictures broad): 16x16x8 latents (VAE factor 4, "
        "32/64/64: twice v1's channels at full resolution, where colours are first encoded and last "
        "decoded), v1's UNet",
        _unet(IMAGE_SIZE // 4, *V3_UNET, latent_channels=8), _vae((32, 64, 64), 8, norm_groups=2), TEXT_CONFIG),
    "v3-c4": Architecture(
        "the shipped one (version 3, train with --pictures broad): v3 with Stable Diffusion's 4 latent "
        "channels, 16x16x4 latents",
        _unet(IMAGE_SIZE // 4, *V3_UNET, latent_channels=4), _vae((32, 64, 64), 4, norm_groups=2), TEXT_CONFIG),
    "v3-f2": Architecture(
        "v3-c4's first two levels as a factor-2 VAE (32x32x4 latents: a small object covers four times "
        "the cells) with v2's UNet",
        _unet(IMAGE_SIZE // 2, *V2_UNET),
        _vae((32, 64), 4, norm_groups=2), TEXT_CONFIG),
    "v3-c16": Architecture(
        "v3 with 16 latent channels",
        _unet(IMAGE_SIZE // 4, *V3_UNET, latent_channels=16), _vae((32, 64, 64), 16, norm_groups=2), TEXT_CONFIG),
    "v2": Architecture(
        "32x32 latents (VAE factor 2), UNet 16/32/64/64 with attention at 16 and 8 (not at 32x32: "
        "1024-token attention would triple the time of an edit)",
        _unet(IMAGE_SIZE // 2, *V2_UNET),
        _vae((16, 32)), TEXT_CONFIG),
    "v2-wide": Architecture(
        "v2 with a wider UNet, 16/64/128/128 (3.8x the parameters, about twice the time per step)",
        _unet(IMAGE_SIZE // 2, (16, 64, 128, 128), (False, True, True, False), (2, 8, 16, 16)),
        _vae((16, 32)), TEXT_CONFIG),
    "v2-attn32": Architecture(
        "v2 with attention at the latent's own 32x32 resolution too",
        _unet(IMAGE_SIZE // 2, (16, 32, 64, 64), (True, True, True, False), (2, 4, 8, 8)),
        _vae((16, 32)), TEXT_CONFIG),
}
