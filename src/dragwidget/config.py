"""Every default of the method in one place.

Each field's comment gives the value of the reference implementation
(github.com/Yujun-Shi/DragDiffusion, defaults as of 2023-12-08) so that a
change away from it is always a conscious one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

from .errors import InputError

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"


@dataclass(frozen=True)
class DragConfig:
    # Working resolution: the image is resized to this width (height keeps the aspect ratio,
    # rounded to the VAE's multiple). None = the model's native size (512 for SD 1.x).
    working_width: Optional[int] = None

    # LoRA identity fine-tuning. Reference: rank 16, alpha 16, 80 steps, lr 5e-4, batch 4, seed 0.
    lora_rank: int = 16
    lora_alpha: int = 16
    lora_steps: int = 80
    lora_lr: float = 5e-4
    lora_batch_size: int = 4
    lora_seed: int = 0
    lora_target_modules: Tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")

    # DDIM. Reference: 50 steps, strength 0.7 -> invert 35 steps, optimise at timesteps[15] (t=681).
    num_inference_steps: int = 50
    inversion_strength: float = 0.7
    # Classifier-free guidance. Reference: 1.0 for real images, 7.5 for generated ones.
    guidance_scale: float = 1.0
    generation_guidance_scale: float = 7.5

    # Features. Reference: output of up_blocks[2], upsampled to half the image size.
    feature_block: int = 2
    feature_scale: float = 0.5

    # Motion supervision and point tracking. Reference: r_m = 1, r_p = 3, stop within 2 px or 80 steps.
    motion_radius: int = 1
    tracking_radius: int = 3
    reach_threshold: float = 2.0
    max_drag_steps: int = 80
    # Adam on the latent. Reference: lr 0.01.
    drag_lr: float = 0.01
    # Weight of the "keep the unmasked region" term. Reference: 0.1 (only when a mask is drawn).
    mask_weight: float = 0.1

    # Mutual self-attention. Reference: on, from denoising step 0, transformer blocks 10..15 of 16.
    mutual_attention: bool = True
    # Models with another number of transformer blocks get the same proportion.
    mutual_attention_start_step: int = 0
    mutual_attention_start_layer: int = 10
    mutual_attention_reference_layers: int = 16

    # Reference: seed 42 for the drag.
    seed: int = 42

    # How often (in optimisation steps) a preview of the predicted clean image is decoded for the
    # progress callback; 0 = never (decoding costs a VAE pass).
    preview_every: int = 0

    @property
    def inversion_steps(self) -> int:
        return int(self.num_inference_steps * self.inversion_strength)

    def replace(self, **changes) -> "DragConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise InputError(f"DragConfig has no setting(s) {sorted(unknown)}; known settings: "
                            f"{[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "DragConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise InputError(f"unknown DragConfig setting(s) {sorted(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})
