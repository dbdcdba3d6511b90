"""Train the embedded `toy` model from scratch on procedural pictures (see DESCRIPTION for the time).

    python -m dragwidget.toy.train --out src/dragwidget/models/toy     # or: dragwidget train-toy

Three stages, each seeded and resumable from the checkpoint folder:
1. the VAE (a KL autoencoder, factor 4 in the shipped architecture) on random 32x32 crops of 64x64
   pictures: `--pictures broad` (`broad_scenes.py`: any colour, eleven kinds of shape, four kinds of
   background; the shipped model) or ShapesBench's palette scenes (`shapes.py`, version 2);
2. the UNet and the CLIP text encoder together, on VAE latents of a fixed pool of captioned
   pictures, with 10 % empty captions so that classifier-free guidance works;
3. the VAE's decoder alone, on whole pictures (the encoder, and so the latents, unchanged).
The UNet and text encoder saved are exponential moving averages of the trained weights.
The defaults train the shipped version 3; `--architecture v1 --pictures palette` with version 2's
steps trains version 2 (model card: design study of version 3).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..cli_progress import Counter
from .model_folder import SCHEDULER_CONFIG, create_components, save_model_folder, write_tokenizer
from .architectures import ARCHITECTURES, CAPTION_TOKENS
from .broad_scenes import as_pixels, picture_batch, vocabulary
from .shapes import IMAGE_SIZE, caption_vocabulary, random_scene, render
from .train_options import DESCRIPTION, TrainSettings, add_arguments, settings_from_args


def scene_batch(settings: TrainSettings, seed: int, count: int):
    """`count` seeded training pictures in [-1, 1] and their captions, of the chosen distribution."""
    if settings.pictures == "broad":
        return picture_batch(seed, count, IMAGE_SIZE)
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, IMAGE_SIZE) for _ in range(count)]
    return [s.caption for s in scenes], as_pixels([render(s) for s in scenes])


def cosine_lr(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def follow_schedule(optimizer: torch.optim.Optimizer, step: int, total: int, peak: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = cosine_lr(step, total, peak)


def psnr_label(mse: torch.Tensor) -> str:
    """Reconstruction quality for the progress bar; pixels are in [-1, 1], a range of 2."""
    return f"{10 * math.log10(4 / max(mse.item(), 1e-10)):.1f}dB"


class Checkpoint:
    """Weights and optimiser state as safetensors, counters as JSON: no pickle anywhere."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def state(self) -> dict:
        path = self.folder / "state.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def save(self, state: dict, **modules_and_optimizers) -> None:
        for name, thing in modules_and_optimizers.items():
            tensors = thing.state_dict()
            if isinstance(thing, torch.optim.Optimizer):
                tensors = {f"{index}.{key}": value for index, entry in tensors["state"].items()
                           for key, value in entry.items()}
            save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(self.folder / f"{name}.safetensors"))
        (self.folder / "state.json").write_text(json.dumps(state))

    def load(self, **modules_and_optimizers) -> None:
        for name, thing in modules_and_optimizers.items():
            tensors = load_file(str(self.folder / f"{name}.safetensors"))
            if isinstance(thing, torch.optim.Optimizer):
                state = {}
                for key, value in tensors.items():
                    index, field = key.split(".", 1)
                    state.setdefault(int(index), {})[field] = value
                current = thing.state_dict()
                current["state"] = state
                thing.load_state_dict(current)
            else:
                thing.load_state_dict(tensors)


def train_vae(vae, settings: TrainSettings, checkpoint: Checkpoint, device: torch.device) -> None:
    state = checkpoint.state()
    optimizer = torch.optim.Adam(vae.parameters(), lr=settings.vae_lr)
    start = state.get("vae_step", 0)
    if start:
        checkpoint.load(vae=vae, vae_optimizer=optimizer)
    vae.train()
    bar = Counter(range(start, settings.vae_steps), desc="VAE", initial=start, total=settings.vae_steps)
    for step in bar:
        _, pixels = scene_batch(settings, settings.seed * 1_000_003 + step, settings.vae_batch)
        generator = torch.Generator().manual_seed(step)
        top, left = (int(v) for v in torch.randint(0, IMAGE_SIZE - settings.vae_crop + 1, (2,), generator=generator))
        crops = pixels[:, :, top:top + settings.vae_crop, left:left + settings.vae_crop].to(device)
        follow_schedule(optimizer, step, settings.vae_steps, settings.vae_lr)
        posterior = vae.encode(crops).latent_dist
        reconstruction = vae.decode(posterior.sample(generator)).sample
        mse = F.mse_loss(reconstruction, crops)
        loss = mse + settings.vae_kl_weight * posterior.kl().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix_str(f"psnr={psnr_label(mse)}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.vae_steps:
            checkpoint.save({**state, "vae_step": step + 1}, vae=vae, vae_optimizer=optimizer)
    vae.eval()


def finetune_decoder(vae, settings: TrainSettings, checkpoint: Checkpoint, device: torch.device) -> None:
    """Stage 3: the decoder alone, on whole scenes, as Stable Diffusion's ft-MSE VAE was made. The
    encoder stays as it was, so the latents the UNet learnt keep their meaning; only the way back
    to pixels (the ceiling of every reconstruction and edit) gets sharper."""
    if settings.decoder_steps == 0:
        return
    state = checkpoint.state()
    parameters = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    optimizer = torch.optim.Adam(parameters, lr=settings.decoder_lr)
    start = state.get("decoder_step", 0)
    if start:
        checkpoint.load(finetuned_vae=vae, decoder_optimizer=optimizer)
    vae.train()
    bar = Counter(range(start, settings.decoder_steps), desc="decoder", initial=start, total=settings.decoder_steps)
    for step in bar:
        _, pixels = scene_batch(settings, settings.seed * 3_000_017 + step, settings.vae_batch)
        pixels = pixels.to(device)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.mean  # what an edit decodes from: the posterior mean
        follow_schedule(optimizer, step, settings.decoder_steps, settings.decoder_lr)
        mse = F.mse_loss(vae.decode(latents).sample, pixels)
        mse.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix_str(f"psnr={psnr_label(mse)}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.decoder_steps:
            state = {**checkpoint.state(), "decoder_step": step + 1}
            checkpoint.save(state, finetuned_vae=vae, decoder_optimizer=optimizer)
    vae.eval()


@torch.no_grad()
def latent_pool(vae, tokenizer, settings: TrainSettings, checkpoint: Checkpoint, device: torch.device):
    path = checkpoint.folder / "pool.safetensors"
    if path.is_file():
        pool = load_file(str(path))
        return pool["latents"], pool["tokens"], float(pool["scaling_factor"])
    latents, tokens = [], []
    for chunk in Counter(range(0, settings.pool_size, 200), desc="latent pool", unit="chunk"):
        captions, pixels = scene_batch(settings, settings.seed * 7_000_001 + chunk, min(200, settings.pool_size - chunk))
        latents.append(vae.encode(pixels.to(device)).latent_dist.mean.cpu())
        tokens.append(tokenizer(captions, padding="max_length", max_length=CAPTION_TOKENS,
                                truncation=True, return_tensors="pt").input_ids)
    latents, tokens = torch.cat(latents), torch.cat(tokens)
    scaling_factor = 1.0 / latents.std()  # as SD does: unit-variance latents for the UNet
    save_file({"latents": latents.contiguous(), "tokens": tokens.contiguous(),
               "scaling_factor": scaling_factor}, str(path))
    # The float32 value, as a resumed run reads it back: a resumed run trains on the same numbers.
    return latents, tokens, float(scaling_factor)


def train_denoiser(unet, text_encoder, latents, tokens, empty_tokens, settings: TrainSettings, checkpoint: Checkpoint,
                   device: torch.device):
    from diffusers import DDPMScheduler

    noise_scheduler = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items() if k != "set_alpha_to_one"})
    parameters = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=settings.unet_lr, weight_decay=1e-2)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    state = checkpoint.state()
    start = state.get("unet_step", 0)
    if start:
        checkpoint.load(unet=unet, text_encoder=text_encoder, ema_unet=ema_unet, ema_text=ema_text,
                        denoiser_optimizer=optimizer)
    unet.train()
    text_encoder.train()
    bar = Counter(range(start, settings.unet_steps), desc="UNet+text", initial=start, total=settings.unet_steps)
    for step in bar:
        generator = torch.Generator().manual_seed(settings.seed * 1_000_033 + step)
        index = torch.randint(0, latents.shape[0], (settings.unet_batch,), generator=generator)
        batch = latents[index]
        flip = torch.rand(settings.unet_batch, generator=generator) < 0.5
        batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
        batch_tokens = tokens[index].clone()
        drop = torch.rand(settings.unet_batch, generator=generator) < settings.caption_dropout
        batch_tokens[drop] = empty_tokens
        noise = torch.randn(batch.shape, generator=generator)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (settings.unet_batch,), generator=generator)
        follow_schedule(optimizer, step, settings.unet_steps, settings.unet_lr)
        # Random draws stay on the CPU: the same seed gives the same batches and noise on any device.
        noisy, noise, timesteps, batch_tokens = (t.to(device) for t in (
            noise_scheduler.add_noise(batch, noise, timesteps), noise, timesteps, batch_tokens))
        prediction = unet(noisy, timesteps, encoder_hidden_states=text_encoder(batch_tokens)[0]).sample
        loss = F.mse_loss(prediction, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        decay = min(settings.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_text, text_encoder)):
                torch._foreach_lerp_(list(ema.parameters()), list(live.parameters()), 1 - decay)
        bar.set_postfix_str(f"loss={loss.item():.4f}")
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.unet_steps:
            checkpoint.save({**state, "unet_step": step + 1}, unet=unet, text_encoder=text_encoder,
                            ema_unet=ema_unet, ema_text=ema_text, denoiser_optimizer=optimizer)
    return ema_unet.eval().cpu(), ema_text.eval().cpu()


def train(out: Path, checkpoint_dir: Path, settings: TrainSettings, device: str = "cpu") -> Path:
    from transformers import CLIPTokenizer

    started = time.time()
    checkpoint = Checkpoint(checkpoint_dir)
    saved = checkpoint.state().get("settings")
    if saved is not None and saved != asdict(settings):
        raise SystemExit(f"{checkpoint_dir} holds a run with other settings ({saved}); use another --checkpoint folder")
    checkpoint.save({**checkpoint.state(), "settings": asdict(settings)})
    words = vocabulary() if settings.pictures == "broad" else caption_vocabulary()
    write_tokenizer(out / "tokenizer", words, max_length=CAPTION_TOKENS)
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    torch.manual_seed(settings.seed)
    architecture = ARCHITECTURES[settings.architecture]
    unet, vae, text_encoder = create_components(architecture.unet, architecture.vae, architecture.text, out / "tokenizer")
    device = torch.device(device)
    unet, vae, text_encoder = unet.to(device), vae.to(device), text_encoder.to(device)

    train_vae(vae, settings, checkpoint, device)
    latents, tokens, scaling_factor = latent_pool(vae, tokenizer, settings, checkpoint, device)
    vae.register_to_config(scaling_factor=scaling_factor)
    empty = tokenizer([""], padding="max_length", max_length=CAPTION_TOKENS, return_tensors="pt").input_ids[0]
    unet, text_encoder = train_denoiser(unet, text_encoder, latents * scaling_factor, tokens, empty, settings, checkpoint,
                                       device)
    finetune_decoder(vae, settings, checkpoint, device)

    save_model_folder(out, unet, vae.cpu(), text_encoder)
    minutes = (time.time() - started) / 60
    (out / "training.json").write_text(json.dumps({
        "settings": asdict(settings), "image_size": IMAGE_SIZE, "minutes_this_run": round(minutes, 1),
        "device": device.type, "torch_threads": torch.get_num_threads()}, indent=2))
    print(f"saved the toy model to {out} ({minutes:.1f} min in this run)")
    return out


def run(args: argparse.Namespace) -> Path:
    """Train with parsed options (those of `train_options.add_arguments`)."""
    return train(args.out, args.checkpoint, settings_from_args(args), args.device)


def main(argv=None) -> None:
    run(add_arguments(argparse.ArgumentParser(prog="python -m dragwidget.toy.train", description=DESCRIPTION))
        .parse_args(argv))


if __name__ == "__main__":
    main()
