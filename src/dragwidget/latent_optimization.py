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
from .denoise_decode import classifier_free_guidance
from .host_readback import HostReadback
from .loading import DiffusionModel
from .motion_supervision import mask_term, motion_supervision_loss
from .point_tracking import as_points, track_points
from .unet_features import unet_with_features

# on_step(step, handles, clean): handles as host (CPU) tensors; clean, the predicted clean latent,
# only on the steps a preview was asked for (config.preview_every), else None.
StepCallback = Callable[[int, List[torch.Tensor], Optional[torch.Tensor]], None]


@dataclass
class OptimizationOutcome:
    latent: torch.Tensor
    handles: List[torch.Tensor]                      # host (CPU) tensors
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
        return classifier_free_guidance(uncond, cond, guidance_scale), features[1:]
    return unet_with_features(model.unet, latent, timestep, text_embedding, config.feature_block, grid_size)


def predicted_clean(scheduler, timestep, latent: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The clean latent x_0 that `latent` at `timestep` with predicted `noise` points to (a preview)."""
    alpha = scheduler.alphas_cumprod[int(timestep)].to(latent)
    return (latent - (1 - alpha).sqrt() * noise) / alpha.sqrt()


def all_reached(handles: torch.Tensor, targets: torch.Tensor, threshold: float) -> torch.Tensor:
    """A boolean tensor on the handles' device (deciding on the host would wait for the device)."""
    return ((targets - handles).norm(dim=-1) < threshold).all()


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
    region), or None when no mask was drawn. `on_step` runs for each step once its handles are
    known on the host and may raise to cancel.

    On a GPU the host learns each step's handles a step or two late (`host_readback`), so it may
    queue steps past the one where every handle arrived; an "arrived" flag kept on the device
    makes those steps change nothing, so the outcome is the one of stopping on time.
    """
    def predict(current):
        with model.autocast():
            return guided_prediction(model, current, timestep, text_embedding, guidance_scale, config,
                                     grid_size, uncond_embedding)

    scheduler_timestep = int(timestep)  # the scheduler indexes host tables with it; read once
    initial_handles = as_points(handles).float()
    targets = as_points(targets).float()
    handles = initial_handles.clone()
    arrived = all_reached(handles, targets, config.reach_threshold)
    readback = HostReadback(model.device)
    trajectory = [[tuple(xy) for xy in initial_handles.tolist()]]
    host_handles = list(initial_handles.cpu().unbind(0))
    latent = latent.clone().requires_grad_(True)
    # fused: a GPU Adam that takes GradScaler's inf check on the device instead of reading it back
    optimizer = torch.optim.Adam([latent], lr=config.drag_lr, fused=True if model.device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(model.device.type, enabled=model.autocast_enabled)

    def collect(results) -> Optional[int]:
        """Record the steps whose handles reached the host; the first step where all had arrived."""
        nonlocal host_handles
        for step, (step_handles, step_arrived, *preview) in results:
            if step > 0:
                host_handles = list(step_handles.unbind(0))
                trajectory.append([tuple(xy) for xy in step_handles.tolist()])
                if on_step is not None:
                    on_step(step, host_handles, preview[0] if preview else None)
            if bool(step_arrived):
                return step
        return None

    stop_step = None
    for step in range(config.max_drag_steps + 1):
        # The last pass only tracks the handles: no backward follows it, so it keeps no graph.
        with torch.set_grad_enabled(step < config.max_drag_steps):
            noise, features = predict(latent)
        if step == 0:
            # The first pass sees the untouched latent: its features are the handles' references
            # (one UNet pass fewer than a separate look before the loop).
            initial_features = features.detach()
            initial_previous = scheduler.step(noise.detach().float(), scheduler_timestep, latent.detach()).prev_sample
        else:
            handles = as_points(track_points(initial_features, features, initial_handles, handles,
                                             config.tracking_radius))
            arrived = arrived | all_reached(handles, targets, config.reach_threshold)
        preview = ()
        if step > 0 and config.preview_every and step % config.preview_every == 0:
            preview = (predicted_clean(scheduler, timestep, latent.detach(), noise.detach().float()),)
        readback.push(step, handles, arrived, keep=preview)
        stop_step = collect(readback.ready())
        if stop_step is not None or step == config.max_drag_steps:
            break
        loss = motion_supervision_loss(features, handles.unbind(0), targets.unbind(0), config.motion_radius,
                                       config.reach_threshold)
        if keep_mask is not None:
            previous = scheduler.step(noise.float(), scheduler_timestep, latent).prev_sample
            loss = loss + mask_term(previous, initial_previous, keep_mask, config.mask_weight)
        before = latent.detach().clone()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            latent.copy_(torch.where(arrived, before, latent))  # steps queued after arrival change nothing
    if stop_step is None:
        stop_step = collect(readback.drain())
    reached = stop_step is not None
    steps = stop_step if reached else config.max_drag_steps
    return OptimizationOutcome(latent.detach(), host_handles, trajectory[:steps + 1], steps, reached)
