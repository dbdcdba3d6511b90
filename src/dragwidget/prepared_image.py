"""An image made ready for dragging (`PreparedImage`): its LoRA, its inverted latents and the
original's features, each computed once and kept with it."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch
from PIL import Image

from .config import DragConfig
from .ddim_inversion import InversionRecord, invert, invert_recording
from .errors import InputError
from .host_readback import synchronize
from .loading import DiffusionModel
from .locating import content_features
from .progress import Progress, ProgressReporter

# record_rate(stage, seconds, steps): how long a stage's steps took, for later time estimates
RateRecorder = Callable[[str, float, int], None]


@dataclass
class OriginalFeatures:
    """The prepared original's features, computed once and kept with it."""

    # verdict_ensemble -> its locating features (`locating.content_features`): the verdict's and
    # FastDrag's rigid core's
    locating: Dict[int, torch.Tensor] = field(default_factory=dict)
    # (DDIM steps, steps, blocks, grid) -> block -> features (`feature_maps`), the latest few
    maps: Dict[tuple, Dict[int, torch.Tensor]] = field(default_factory=dict)

    def locating_for(self, model: DiffusionModel, image: Image.Image, prompt: str, config: DragConfig) -> torch.Tensor:
        if config.verdict_ensemble not in self.locating:
            self.locating[config.verdict_ensemble] = content_features(model, image, prompt, config)
        return self.locating[config.verdict_ensemble]


@dataclass
class PreparedImage:
    """An image made ready for dragging: keep it and drag it again without repeating the work."""

    image: Image.Image                 # the input as given (RGB, EXIF orientation applied)
    prompt: str
    config: DragConfig                 # the LoRA and inversion settings it was prepared with
    working_size: Tuple[int, int]
    pixels: torch.Tensor
    text_embedding: torch.Tensor
    uncond_embedding: torch.Tensor
    lora_weights: Optional[Dict[str, torch.Tensor]]
    lora_source: str                   # "trained", "disk cache" or "none" (generated image, 0 steps)
    clean_latent: Optional[torch.Tensor]
    guidance_scale: float
    generated: bool = False
    timings: Dict[str, float] = field(default_factory=dict)
    inverted: Dict[Tuple[int, int], torch.Tensor] = field(default_factory=dict)
    recorded: Dict[Tuple[int, int], InversionRecord] = field(default_factory=dict)  # FastDrag's, by the same key
    dragged: bool = False
    original_features: OriginalFeatures = field(default_factory=OriginalFeatures, repr=False)

    @property
    def size(self) -> Tuple[int, int]:
        return self.image.size

    def inverted_latent(self, model: DiffusionModel, config: DragConfig, report: ProgressReporter,
                        record_rate: RateRecorder) -> Tuple[torch.Tensor, bool]:
        """The inverted latent for `config`'s steps, and whether it was kept from before; computed
        once, for FastDrag with its record (`InversionRecord`) beside it in `recorded`."""
        key = inversion_key(config)
        records = config.method == "fastdrag"
        if key in self.inverted and (key in self.recorded or not records):
            report(Progress("inversion", config.inversion_steps, config.inversion_steps, cached=True))
            return self.inverted[key], True
        if self.generated:
            raise InputError("a generated image can only be dragged with the step count and strength it was generated with"
                             + (" and by the methods that optimise (FastDrag needs an inversion)" if records else ""))
        started = time.perf_counter()
        on_step = lambda step, total: report(Progress("inversion", step, total))
        if records:
            latent, self.recorded[key] = invert_recording(model, self.clean_latent, self.text_embedding, config, on_step)
        else:
            latent = invert(model, self.clean_latent, self.text_embedding, config, on_step=on_step)
        synchronize(model.device)
        self.timings["inversion"] = time.perf_counter() - started
        record_rate("inversion", self.timings["inversion"], config.inversion_steps)
        self.inverted[key] = latent
        return latent, False


def inversion_key(config: DragConfig) -> Tuple[int, int]:
    """What an inverted latent depends on beyond the prepared image: its schedule and depth."""
    return config.num_inference_steps, config.inversion_steps


def prepared_key(picture: Image.Image, prompt: str, config: DragConfig) -> str:
    """What a prepared image depends on: the picture, its prompt and the LoRA settings."""
    digest = hashlib.sha256(picture.tobytes())
    digest.update(repr((picture.size, prompt, config.working_width, config.lora_rank, config.lora_alpha,
                        config.lora_steps, config.lora_lr, config.lora_batch_size, config.lora_seed,
                        config.lora_target_modules, config.lora_augment)).encode())
    return digest.hexdigest()
