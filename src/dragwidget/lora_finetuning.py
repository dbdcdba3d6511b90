"""Step 1: identity-preserving fine-tuning.

A LoRA on the UNet's attention projections is trained on the one image with the ordinary
denoising loss, so that inversion and denoising reproduce *this* image rather than a generic one.
Trained weights are cached on disk by `lora_cache`, under a key made of everything that determines
them: a second drag on the same image never retrains.
"""

from __future__ import annotations

import functools
import json
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .config import DragConfig
from .encoding import encode_image
from .host_readback import HostReadback
from .loading import DiffusionModel

ADAPTER_NAME = "dragwidget_identity"


def lora_config(config: DragConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha,
                      target_modules=list(config.lora_target_modules), init_lora_weights=True)


def install_lora(unet, weights: Optional[Dict[str, torch.Tensor]], config: DragConfig) -> None:
    """Make the UNet run with these LoRA weights, or with none (`weights=None`)."""
    from peft.utils import set_peft_model_state_dict

    present = getattr(unet, "peft_config", {}).get(ADAPTER_NAME)
    if weights is None:
        if present is not None:
            unet.disable_adapters()
        return
    if present is not None and (present.r != config.lora_rank or present.lora_alpha != config.lora_alpha
                                or set(present.target_modules) != set(config.lora_target_modules)):
        unet.delete_adapters(ADAPTER_NAME)
        present = None
    if present is None:
        unet.add_adapter(lora_config(config), adapter_name=ADAPTER_NAME)
    result = set_peft_model_state_dict(unet, weights, adapter_name=ADAPTER_NAME)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"LoRA weights do not fit this UNet; unexpected keys such as {unexpected[:3]}")
    unet.set_adapter(ADAPTER_NAME)
    unet.enable_adapters()


def expected_lora_shapes(unet, config: DragConfig) -> Dict[str, Tuple[int, ...]]:
    """Name -> shape of every tensor in a LoRA with these settings for this UNet: what a cached
    entry must hold to be installed."""
    return _fresh_adapter_shapes(type(unet), json.dumps(dict(unet.config), sort_keys=True, default=str),
                                 config.lora_rank, config.lora_alpha, tuple(config.lora_target_modules))


@functools.lru_cache(maxsize=8)
def _fresh_adapter_shapes(unet_class, unet_config: str, rank: int, alpha: int, targets: Tuple[str, ...]):
    # A fresh adapter on a weightless ("meta") copy of the UNet: exactly peft's names and shapes,
    # without touching the live UNet or allocating its weights (about a second for SD 1.5, once).
    from peft.utils import get_peft_model_state_dict

    with torch.device("meta"):
        blank = unet_class.from_config(json.loads(unet_config))
    blank.add_adapter(lora_config(DragConfig(lora_rank=rank, lora_alpha=alpha, lora_target_modules=targets)),
                      adapter_name=ADAPTER_NAME)
    return {name: tuple(tensor.shape)
            for name, tensor in get_peft_model_state_dict(blank, adapter_name=ADAPTER_NAME).items()}


def lora_weights(unet) -> Dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().float().cpu().clone()
            for k, v in get_peft_model_state_dict(unet, adapter_name=ADAPTER_NAME).items()}


def _augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view: a crop of 80-100 % of each side resized back, flipped half the time."""
    _, _, height, width = pixels.shape
    scale = 0.8 + 0.2 * torch.rand((), generator=generator).item()
    crop_h, crop_w = max(1, round(height * scale)), max(1, round(width * scale))
    top = int(torch.randint(0, height - crop_h + 1, (), generator=generator))
    left = int(torch.randint(0, width - crop_w + 1, (), generator=generator))
    view = pixels[:, :, top:top + crop_h, left:left + crop_w]
    view = F.interpolate(view, size=(height, width), mode="bilinear", align_corners=False)
    if torch.rand((), generator=generator).item() < 0.5:
        view = view.flip(-1)
    return view


def train_identity_lora(
    model: DiffusionModel,
    pixels: torch.Tensor,
    text_embedding: torch.Tensor,
    config: DragConfig,
    on_step: Optional[Callable[[int, int, float], None]] = None,
) -> Dict[str, torch.Tensor]:
    """Train a fresh LoRA on one image and return its weights (CPU tensors).

    `pixels`: 1x3xHxW in [-1, 1] at working resolution. `on_step(step, total, loss)` is called
    after each step; it may raise to cancel (the UNet is then left without the half-trained LoRA).
    """
    from diffusers import DDPMScheduler

    unet = model.unet
    noise_scheduler = DDPMScheduler.from_config(model.scheduler_config)
    if ADAPTER_NAME in getattr(unet, "peft_config", {}):
        unet.delete_adapters(ADAPTER_NAME)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.lora_seed)  # the LoRA "A" matrices are initialised from the global RNG
        unet.add_adapter(lora_config(config), adapter_name=ADAPTER_NAME)
    unet.set_adapter(ADAPTER_NAME)
    unet.enable_adapters()  # a drag without LoRA (0 steps, generated image) may have disabled them
    parameters = [p for name, p in unet.named_parameters() if "lora_" in name]
    for parameter in parameters:
        parameter.requires_grad_(True)
    if unet.dtype != torch.float32:
        # Half-precision UNet weights, float32 LoRA weights and optimizer state (as diffusers' LoRA
        # training scripts do): small updates would vanish in half precision.
        from diffusers.training_utils import cast_training_params

        cast_training_params(unet, dtype=torch.float32)
    # fused: a GPU AdamW that takes GradScaler's inf check on the device instead of reading it back
    optimizer = torch.optim.AdamW(parameters, lr=config.lora_lr, fused=True if model.device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(model.device.type, enabled=model.autocast_enabled)
    # Crops are drawn on the host (slicing needs host numbers); noise is drawn where it is used, so
    # that a GPU never waits for a host-to-device copy. On the CPU both come from one generator.
    crop_generator = torch.Generator().manual_seed(config.lora_seed)
    noise_generator = (crop_generator if model.device.type == "cpu"
                       else torch.Generator(model.device).manual_seed(config.lora_seed))
    pixels = pixels.to(model.device)
    encoder_states = text_embedding.expand(config.lora_batch_size, -1, -1)
    readback = HostReadback(model.device)

    def report(results) -> None:
        for step, (loss,) in results:
            if on_step is not None:
                on_step(step, config.lora_steps, float(loss))

    unet.train()
    try:
        for step in range(config.lora_steps):
            views = torch.cat([_augment(pixels, crop_generator) if config.lora_augment else pixels
                               for _ in range(config.lora_batch_size)])
            latents = encode_image(model, views, generator=noise_generator, sample=True)
            noise = torch.randn(latents.shape, generator=noise_generator, device=model.device)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                      generator=noise_generator, device=model.device)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            if noise_scheduler.config.prediction_type == "v_prediction":
                target = noise_scheduler.get_velocity(latents, noise, timesteps)
            else:
                target = noise
            with model.autocast():
                prediction = unet(noisy, timesteps, encoder_hidden_states=encoder_states).sample
            loss = F.mse_loss(prediction.float(), target.float())
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            readback.push(step + 1, loss)
            report(readback.ready())
        report(readback.drain())
    except BaseException:
        unet.delete_adapters(ADAPTER_NAME)
        raise
    finally:
        unet.eval()
        for parameter in parameters:
            parameter.requires_grad_(False)
    return lora_weights(unet)
