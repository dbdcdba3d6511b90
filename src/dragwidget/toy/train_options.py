"""The toy model's training settings and their command-line options.

Kept apart from the training code (which needs torch) so that `dragwidget train-toy --help`
and `python -m dragwidget.toy.train --help` share one definition and answer at once.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from pathlib import Path

DESCRIPTION = ("Train the embedded `toy` model from scratch on procedural pictures (about 1 h 50 min on 2 CPU "
               "cores).")
# The names of toy/architectures.py's ARCHITECTURES, listed here so that --help needs no torch import
# (a test checks that the two lists agree).
ARCHITECTURE_NAMES = ("v1", "v3", "v3-c4", "v3-f2", "v3-c16", "v2", "v2-wide", "v2-attn32")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "toy"


@dataclass
class TrainSettings:
    architecture: str = "v3-c4"
    pictures: str = "broad"
    seed: int = 0
    vae_steps: int = 2500
    vae_batch: int = 32
    vae_crop: int = 32
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    pool_size: int = 24000
    unet_steps: int = 4000
    unet_batch: int = 32
    unet_lr: float = 1e-3
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    decoder_steps: int = 200
    decoder_lr: float = 3e-4
    checkpoint_every: int = 250


HELP = {
    "architecture": "which architecture to train (toy/architectures.py): v3-c4 is the shipped one, the others "
                    "the design studies' candidates",
    "pictures": "training pictures: broad (any colour, eleven kinds of shape, toy/broad_scenes.py: the shipped "
                "model) or palette (ShapesBench's scenes, what version 2 was trained on)",
    "seed": "seed of the scenes, crops, noise and initial weights",
    "vae_steps": "VAE training steps (stage 1)",
    "vae_batch": "VAE batch size",
    "vae_crop": "side of the random crops the VAE trains on",
    "vae_lr": "VAE peak learning rate (cosine schedule)",
    "vae_kl_weight": "weight of the VAE's KL term",
    "pool_size": "number of captioned scenes encoded once for stage 2",
    "unet_steps": "UNet + text encoder training steps (stage 2)",
    "unet_batch": "UNet batch size",
    "unet_lr": "UNet + text encoder peak learning rate (cosine schedule)",
    "caption_dropout": "fraction of empty captions, for classifier-free guidance",
    "ema_decay": "decay of the exponential moving average of the saved weights",
    "decoder_steps": "steps of decoder-only fine-tuning on whole scenes (stage 3; 0 = none)",
    "decoder_lr": "decoder fine-tuning peak learning rate (cosine schedule)",
    "checkpoint_every": "steps between resumable checkpoints",
}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training options, on `parser` (the CLI's `train-toy` subcommand or train.py's own)."""
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the model folder "
                        "(default: the embedded toy model, src/dragwidget/models/toy)")
    parser.add_argument("--checkpoint", type=Path, default=Path("toy-checkpoint"),
                        help="folder for resumable checkpoints (rerun the same command to resume; default toy-checkpoint)")
    parser.add_argument("--device", default="cpu", help="cpu (about 1 h 50 min on 2 cores) or cuda")
    for setting in fields(TrainSettings):
        choices = {"architecture": ARCHITECTURE_NAMES, "pictures": ("broad", "palette")}.get(setting.name)
        parser.add_argument(f"--{setting.name.replace('_', '-')}", type=type(setting.default), default=setting.default,
                            choices=choices, help=f"{HELP[setting.name]} (default {setting.default})")
    return parser


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(**{name: getattr(args, name) for name in asdict(TrainSettings())})
