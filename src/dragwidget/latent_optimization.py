"""Step 3: optimise the inverted latent, alternating motion supervision and point tracking.

Each iteration reads the UNet features of the current latent, re-finds the handles (point
tracking), stops when every handle is within `reach_threshold` of its target, and otherwise
takes one Adam step on the latent to lower the motion-supervision loss plus, when a mask was
drawn, the mask term that keeps x_{t-1} outside the mask where it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from .config import DragConfig
from .loading import DiffusionModel
from .motion_supervision import motion_supervision_loss
from .point_tracking import track_points
from .unet_features import unet_with_features

StepCallback = Callable[[int, List[torch.Tensor], torch.Tensor, torch.Tensor], None]


@dataclass
class OptimizationOutcome:
    latent: torch.Tensor
    handles: List[torch.Tensor]
    trajectory: List[List[Tuple[float, float]]]  # grid (x, y) of every handle after each step
    steps: int
    reached: bool


def guided_prediction(model, latent, timestep, text_embedding, guidance_scale, config, grid_size,
                      uncond_embedding=None):
    """Noise prediction (with classifier-free guidance when asked) and the features that drive the drag.

    With guidance the features come from the prompt-conditioned branch.
    """
    if guidance_scale > 1.0:
        noise, features = unet_with_features(
            model.unet, torch.cat([latent, latent]), timestep,
            torch.cat([uncond_embedding, text_embedding]), config.feature_block, grid_size)
        uncond, cond = noise.chunk(2)
        return uncond + guidance_scale * (cond - uncond), features[1:]
    return unet_with_features(model.unet, latent, timestep, text_embedding, config.feature_block, grid_size)


def all_reached(handles: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], threshold: float) -> bool:
    return all(float((t - h).norm()) < threshold for h, t in zip(handles, targets))


def optimize_latent(
    model: DiffusionModel,
    latent: torch.Tensor,
    timestep,
    scheduler,
    text_embedding: torch.Tensor,
    handles: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    grid_size: Tuple[int, int],
    config: DragConfig,
    keep_mask: Optional[torch.Tensor] = None,
    guidance_scale: float = 1.0,
    uncond_embedding: Optional[torch.Tensor] = None,
    on_step: Optional[StepCallback] = None,
) -> OptimizationOutcome:
    """Drag `latent` (at `timestep`) so that the content at `handles` moves to `targets`.

    `keep_mask` is 1x1xhxw at latent size, 1 where the latent must stay (outside the editable
    region), or None when no mask was drawn. `on_step(step, handles, latent, noise)` runs after
    each tracking update and may raise to cancel.
    """
    def predict(current):
        with model.autocast():
            return guided_prediction(model, current, timestep, text_embedding, guidance_scale, config,
                                     grid_size, uncond_embedding)

    initial_handles = [h.clone() for h in handles]
    handles = [h.clone() for h in handles]
    trajectory = [[(float(h[0]), float(h[1])) for h in handles]]
    latent = latent.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=config.drag_lr)
    scaler = torch.amp.GradScaler(model.device.type, enabled=model.autocast_enabled)

    steps = 0
    reached = False
    for step in range(config.max_drag_steps + 1):
        # The last pass only tracks the handles: no backward follows it, so it keeps no graph.
        with torch.set_grad_enabled(step < config.max_drag_steps):
            noise, features = predict(latent)
        if step == 0:
            # The first pass sees the untouched latent: its features are the handles' references
            # (one UNet pass fewer than a separate look before the loop).
            initial_features = features.detach()
            initial_previous = scheduler.step(noise.detach().float(), timestep, latent.detach()).prev_sample
        else:
            handles = track_points(initial_features, features, initial_handles, handles, config.tracking_radius)
            trajectory.append([(float(h[0]), float(h[1])) for h in handles])
            if on_step is not None:
                on_step(step, handles, latent.detach(), noise.detach().float())
        reached = all_reached(handles, targets, config.reach_threshold)
        if reached or step == config.max_drag_steps:
            break
        loss = motion_supervision_loss(features, handles, targets, config.motion_radius, config.reach_threshold)
        if keep_mask is not None:
            previous = scheduler.step(noise.float(), timestep, latent).prev_sample
            loss = loss + config.mask_weight * ((previous - initial_previous) * keep_mask).abs().sum()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        steps = step + 1
    return OptimizationOutcome(latent.detach(), handles, trajectory, steps, reached)
