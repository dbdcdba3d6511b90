"""A Stable Diffusion model folder from component configs: random-initialised UNet, VAE and CLIP
text encoder with a character tokenizer, written in the diffusers layout of a real checkpoint (so
it loads through the same code as any other model). The toy's training starts from one; the tests
build tiny ones (as diffusers' own fast tests do)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789,.-'"
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")

SCHEDULER_CONFIG = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
)


def write_tokenizer(folder: Path, words=(), max_length: int = 77) -> None:
    """Write a CLIP BPE tokenizer whose vocabulary is single characters plus whole `words`.

    The merges spell each word out of its characters, so any text can be tokenised and the given
    words become single tokens. Written as vocab.json + merges.txt, which every transformers
    version reads.
    """
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {}
    for symbol in [*CHARACTERS, *(c + "</w>" for c in CHARACTERS)]:
        vocab.setdefault(symbol, len(vocab))
    merges = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("".join(f"{line}\n" for line in ["#version: 0.2", *dict.fromkeys(merges)]))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": max_length, "tokenizer_class": "CLIPTokenizer",
        "bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[1],
        "unk_token": SPECIAL_TOKENS[1], "pad_token": SPECIAL_TOKENS[1],
    }))


def tokenizer_vocab_size(folder: Path) -> int:
    return len(json.loads((folder / "vocab.json").read_text()))


def build_model_folder(folder, *, unet_config: dict, vae_config: dict, text_config: dict,
                       words=(), seed: int = 0) -> Path:
    """Create random-init components from configs and save them in the diffusers layout."""
    folder = Path(folder)
    write_tokenizer(folder / "tokenizer", words, max_length=text_config["max_position_embeddings"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet, vae, text_encoder = create_components(unet_config, vae_config, text_config, folder / "tokenizer")
    return save_model_folder(folder, unet, vae, text_encoder)


def create_components(unet_config: dict, vae_config: dict, text_config: dict, tokenizer_folder: Path):
    """Random-init UNet, VAE and CLIP text encoder (sized to the tokenizer's vocabulary)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab_size = tokenizer_vocab_size(tokenizer_folder)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1, **text_config))
    return UNet2DConditionModel(**unet_config), AutoencoderKL(**vae_config), text_encoder


def save_model_folder(folder, unet, vae, text_encoder) -> Path:
    """Write the components (the tokenizer must already be in `folder/tokenizer`) in the diffusers layout."""
    from diffusers import DDIMScheduler

    folder = Path(folder)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    DDIMScheduler(**SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline",
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }, indent=2))
    return folder
