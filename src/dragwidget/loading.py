"""Step 0: load a Stable Diffusion 1.x/2.x checkpoint in the diffusers folder layout.

A model is named by a Hugging Face hub id, a local folder, or the name of a model embedded in
this package (`toy`). Only safetensors weights are read: pickled `.bin` files are never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from .config import DEFAULT_MODEL
from .errors import ModelNotFoundError

EMBEDDED_MODELS_DIR = Path(__file__).parent / "models"
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class DiffusionModel:
    """The components of a Stable Diffusion checkpoint, ready on one device.

    The UNet is kept in float32 because the latent optimisation and LoRA training take gradients
    through it (the reference does the same and runs it under autocast on CUDA); the VAE and the
    text encoder are stored in `dtype`.
    """

    name: str
    unet: "torch.nn.Module"
    vae: "torch.nn.Module"
    text_encoder: "torch.nn.Module"
    tokenizer: object
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype
    fingerprint: str
    recommended_settings: dict

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_width(self) -> int:
        return self.unet.config.sample_size * self.vae_scale_factor

    @property
    def autocast_enabled(self) -> bool:
        return self.device.type == "cuda" and self.dtype == torch.float16

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast_enabled)


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    # fp16 only where it is fast and well supported; MPS keeps fp32 because the latent
    # optimisation takes gradients, which fp16 on MPS does not do reliably.
    return torch.float16 if device.type == "cuda" else torch.float32


def embedded_model_path(name: str) -> Optional[Path]:
    path = EMBEDDED_MODELS_DIR / name
    return path if (path / "model_index.json").is_file() else None


def embedded_model_names() -> list:
    if not EMBEDDED_MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in EMBEDDED_MODELS_DIR.iterdir() if (p / "model_index.json").is_file())


def _looks_like_path(name: str) -> bool:
    # A hub id is "name" or "owner/name"; anything else is meant as a folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def resolve_model(name: Union[str, os.PathLike]) -> tuple:
    """Return (where, is_local) for a model name; raise ModelNotFoundError for a missing folder."""
    text = os.fspath(name)
    embedded = embedded_model_path(text)
    if embedded is not None:
        return str(embedded), True
    expanded = Path(text).expanduser()
    if expanded.is_dir():
        missing = [c for c in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
                   if not (expanded / c).is_dir()]
        if missing:
            raise ModelNotFoundError(
                f"{expanded} is a folder but not a Stable Diffusion checkpoint in the diffusers layout: "
                f"it lacks the subfolder(s) {', '.join(missing)}. Expected unet/, vae/, text_encoder/, "
                f"tokenizer/ and scheduler/ as written by `StableDiffusionPipeline.save_pretrained`.")
        return str(expanded), True
    if _looks_like_path(text) or expanded.exists():
        raise ModelNotFoundError(
            f"model folder {text!r} does not exist. Give an existing folder in the diffusers layout, "
            f"a Hugging Face hub id such as {DEFAULT_MODEL!r}, or an embedded model: "
            f"{', '.join(embedded_model_names()) or '(none installed)'}.")
    return text, False


def _fingerprint(where: str, is_local: bool, vae: Optional[str]) -> str:
    """A key that changes when the weights change; used for the LoRA cache."""
    digest = hashlib.sha256()
    digest.update(where.encode())
    digest.update(str(vae).encode())
    if is_local:
        for component in ("unet", "vae", "text_encoder"):
            for weights in sorted(Path(where, component).glob("*.safetensors")):
                stat = weights.stat()
                digest.update(f"{weights.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _not_found_message(name: str, vae: Optional[str], error: Exception) -> str:
    from huggingface_hub import constants

    offline = os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0")
    embedded = embedded_model_names()
    return (
        f"could not load model {name!r}"
        + (f" with VAE {vae!r}" if vae else "")
        + f": {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}\n"
        f"Tried: the Hugging Face hub id {name!r} (hub access {'disabled by HF_HUB_OFFLINE' if offline else 'attempted'}) "
        f"and the local cache at {constants.HF_HUB_CACHE}.\n"
        "To fix: check the spelling of the id; download it once on a machine with network "
        f"(`hf download {name}`) and copy the cache or the folder here; pass a local folder in the "
        "diffusers layout (`--model /path/to/folder`)"
        + (f"; or use an embedded model that needs no download: {', '.join(embedded)} (`--model {embedded[0]}`)." if embedded else ".")
    )


def load_model(
    model: Union[str, os.PathLike] = DEFAULT_MODEL,
    *,
    vae: Optional[str] = None,
    device: Union[str, torch.device, None] = None,
    dtype: Optional[torch.dtype] = None,
) -> DiffusionModel:
    """Load the UNet, VAE, text encoder, tokenizer and scheduler config of a checkpoint.

    `vae` optionally replaces the checkpoint's VAE (e.g. "stabilityai/sd-vae-ft-mse").
    `device` and `dtype` default to CUDA+fp16, else MPS+fp32, else CPU+fp32.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    where, is_local = resolve_model(model)
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    try:
        unet = UNet2DConditionModel.from_pretrained(
            where, subfolder="unet", use_safetensors=True, torch_dtype=torch.float32)
        if vae is None:
            autoencoder = AutoencoderKL.from_pretrained(
                where, subfolder="vae", use_safetensors=True, torch_dtype=dtype)
        else:
            vae_where, _ = resolve_model(vae)
            autoencoder = AutoencoderKL.from_pretrained(vae_where, use_safetensors=True, torch_dtype=dtype)
        text_encoder = CLIPTextModel.from_pretrained(
            where, subfolder="text_encoder", use_safetensors=True).to(dtype)
        tokenizer = CLIPTokenizer.from_pretrained(where, subfolder="tokenizer")
        scheduler_config = dict(DDIMScheduler.load_config(where, subfolder="scheduler"))
    except ModelNotFoundError:
        raise
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(_not_found_message(os.fspath(model), vae, error)) from error

    recommended = {}
    settings_file = Path(where, "dragwidget_settings.json") if is_local else None
    if settings_file is not None and settings_file.is_file():
        recommended = json.loads(settings_file.read_text())

    for component in (unet, autoencoder, text_encoder):
        component.to(device).requires_grad_(False).eval()
    return DiffusionModel(
        name=os.fspath(model),
        unet=unet,
        vae=autoencoder,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler_config=scheduler_config,
        device=device,
        dtype=dtype,
        fingerprint=_fingerprint(where, is_local, vae),
        recommended_settings=recommended,
    )
