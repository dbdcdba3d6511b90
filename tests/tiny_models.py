"""Tiny random-initialised models for plumbing tests and CPU benchmarks, and Stable Diffusion
1.5's architecture with random weights for GPU benchmarks, as model folders
(`dragwidget.toy.model_folder`)."""

from __future__ import annotations

from pathlib import Path

from dragwidget.toy.model_folder import build_model_folder


def build_tiny_model(folder, seed: int = 0) -> Path:
    """A Stable Diffusion look-alike of a few hundred thousand parameters.

    Four UNet levels and a transformer block in each of the first three, so that `up_blocks[2]`
    (the reference feature block) and the mutual self-attention layers exist as in SD 1.5.
    The VAE downsamples by 2 so that a 64x64 image gives a 32x32 latent.
    """
    return build_model_folder(
        folder,
        unet_config=dict(
            sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(16, 16, 32, 32), norm_num_groups=8, cross_attention_dim=32,
            attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        ),
        vae_config=dict(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
            norm_num_groups=8, sample_size=64,
        ),
        text_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                         num_hidden_layers=2, max_position_embeddings=77),
        seed=seed,
    )


def build_sd15_architecture_model(folder, seed: int = 0) -> Path:
    """Stable Diffusion 1.5's exact architecture with random weights (for GPU benchmarks)."""
    return build_model_folder(
        folder,
        unet_config=dict(
            sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        ),
        vae_config=dict(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2, sample_size=512,
        ),
        text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                         num_hidden_layers=12, max_position_embeddings=77),
        seed=seed,
    )
