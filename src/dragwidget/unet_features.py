"""Reading intermediate UNet features: the "3rd decoder block" the paper drags with.

The feature map is the output of `unet.up_blocks[block]`, upsampled bilinearly to a fixed
supervision grid (half the image size in the reference); handle and target points live on
that grid during the optimisation.
"""

from __future__ import annotations

from typing import Tuple

import torch.nn.functional as F


def decoder_block(unet, block: int):
    blocks = unet.up_blocks
    if not -len(blocks) <= block < len(blocks):
        raise ValueError(f"feature_block {block} does not exist: this UNet has {len(blocks)} decoder blocks (0..{len(blocks) - 1})")
    return blocks[block]


def unet_with_block_output(unet, latents, timestep, text_embedding, block: int):
    """Run the UNet once; return (noise prediction, output of `up_blocks[block]` at its own size)."""
    captured = []
    hook = decoder_block(unet, block).register_forward_hook(lambda module, inputs, output: captured.append(output))
    try:
        noise = unet(latents, timestep, encoder_hidden_states=text_embedding).sample
    finally:
        hook.remove()
    return noise, captured[0]


def unet_with_features(unet, latents, timestep, text_embedding, block: int, size: Tuple[int, int]):
    """Run the UNet once; return (noise prediction, features of `up_blocks[block]` at `size`)."""
    noise, features = unet_with_block_output(unet, latents, timestep, text_embedding, block)
    return noise, F.interpolate(features.float(), size=size, mode="bilinear", align_corners=False)
