"""The paper's drag (DragDiffusion, Shi et al. 2024): optimise the inverted latent at one
timestep, alternating motion supervision and point tracking, then denoise.

Each iteration reads the UNet features of the current latent, re-finds the handles (point
tracking), stops when every handle is within `reach_threshold` of its target, and otherwise
takes one Adam step on the latent to lower the motion-supervision loss plus, when a mask was
drawn, the mask term that keeps x_{t-1} outside the mask where it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from ..host_readback import HostReadback
from ..motion_supervision import mask_term, motion_supervision_loss
from ..point_tracking import track_points
from .common import DragInputs, DragOutcome, all_reached, guided_prediction, optimised, predicted_clean

# how the drag pipeline times step 3 (`run_plan`): the stage, the per-step rate it records, and
# whether its steps are optimisation steps (FastDrag's one warp counts as one step)
STAGE, RATE, OPTIMISES = "optimisation", "drag", True


@dataclass
class OptimizationOutcome:
    latent: torch.Tensor
    handles: torch.Tensor                        # N x 2, on the host (CPU)
    trajectory: List[List[Tuple[float, float]]]  # grid (x, y) of every handle after each step
    steps: int
    reached: bool


def drag(inputs: DragInputs) -> DragOutcome:
    """The method's step 3 in the drag pipeline: `optimize_latent` from the drag's seed."""
    inputs = inputs.with_progress(inputs.config.max_drag_steps)
    torch.manual_seed(inputs.config.seed)
    outcome = optimize_latent(inputs)
    return optimised(inputs, inputs.latent, outcome.latent, inputs.start_index, outcome.handles, outcome.trajectory,
                     outcome.steps, outcome.reached)


def optimize_latent(inputs: DragInputs) -> OptimizationOutcome:
    """Drag `inputs.latent` (at its timestep) so that the content at the handles moves to the targets.

    `inputs.on_step` runs for each step once its handles are known on the host and may raise to cancel.

    On a GPU the host learns each step's handles a step or two late (`host_readback`), so it may
    queue steps past the one where every handle arrived; an "arrived" flag kept on the device
    makes those steps change nothing, so the outcome is the one of stopping on time.
    """
    model, config, scheduler, keep_mask, on_step = (inputs.model, inputs.config, inputs.scheduler, inputs.keep_mask,
                                                    inputs.on_step)
    timestep = scheduler.timesteps[inputs.start_index]

    def predict(current):
        with model.autocast():
            return guided_prediction(model, current, timestep, inputs.text_embedding, inputs.guidance_scale, config,
                                     inputs.grid.shape, inputs.uncond_embedding)

    scheduler_timestep = int(timestep)  # the scheduler indexes host tables with it; read once
    initial_handles = inputs.handles.float()
    targets = inputs.targets.float()
    handles = initial_handles.clone()
    arrived = all_reached(handles, targets, config.reach_threshold)
    readback = HostReadback(model.device)
    trajectory = [[tuple(xy) for xy in initial_handles.tolist()]]
    host_handles = initial_handles.cpu()
    latent = inputs.latent.clone().requires_grad_(True)
    # fused: a GPU Adam that takes GradScaler's inf check on the device instead of reading it back
    optimizer = torch.optim.Adam([latent], lr=config.drag_lr, fused=True if model.device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(model.device.type, enabled=model.autocast_enabled)

    def collect(results) -> Optional[int]:
        """Record the steps whose handles reached the host; the first step where all had arrived."""
        nonlocal host_handles
        for step, (step_handles, step_arrived, *preview) in results:
            if step > 0:
                host_handles = step_handles
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
            handles = track_points(initial_features, features, initial_handles, handles, config.tracking_radius)
            arrived = arrived | all_reached(handles, targets, config.reach_threshold)
        preview = ()
        if step > 0 and config.preview_every and step % config.preview_every == 0:
            preview = (predicted_clean(scheduler, timestep, latent.detach(), noise.detach().float()),)
        readback.push(step, handles, arrived, keep=preview)
        stop_step = collect(readback.ready())
        if stop_step is not None or step == config.max_drag_steps:
            break
        loss = motion_supervision_loss(features, handles, targets, config.motion_radius, config.reach_threshold)
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
