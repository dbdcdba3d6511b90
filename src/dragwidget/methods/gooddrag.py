"""Step 3, GoodDrag's way: drag and denoise alternately (Zhang et al. 2024, arXiv 2404.07206).

The paper's drag (`methods.dragdiffusion`) does all of its optimisation at one timestep and then
denoises. GoodDrag spreads the drag over the first `gooddrag_denoising_steps` denoising steps,
so the errors that each optimisation leaves are smoothed by the denoising steps after it, and it
supervises with the *original* image's features (information-preserving motion supervision).
At each of those steps:

1. the original latent (the un-dragged DDIM trajectory) goes through the UNet: its features are
   what the handles are tracked against and what the supervision pulls along, its x_{t-1} is what
   the mask term keeps;
2. rounds of: point tracking of the handles in the edited latent's features, then up to
   `gooddrag_steps_per_round` Adam steps on the edited latent (fewer once the supervision loss
   is small);
3. one DDIM step of the edited latent and of the original latent.

Dragging stops once every handle is within `reach_threshold` of its target, or after
`gooddrag_stall_rounds` rounds in a row in which no handle changed. The rest of the denoising,
with mutual self-attention, is `denoise_decode.denoise` from where this one stopped.

On a GPU the host learns the device's decisions (a round's loss is small, every handle arrived)
a step or two late (`host_readback`): the steps it queued meanwhile are undone on the device
(latent and optimizer state), so the outcome is that of deciding on time. The host waits for the
device once per denoising step, to know whether to drag at the next one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import torch

from ..config import DragConfig
from ..host_readback import HostReadback
from ..motion_supervision import mask_term, motion_supervision_loss
from ..point_tracking import track_points
from .common import DragInputs, DragOutcome, all_reached, guided_prediction, optimised, predicted_clean

# how the drag pipeline times step 3 (`run_plan`): the stage, the per-step rate it records, and
# whether its steps are optimisation steps (FastDrag's one warp counts as one step)
STAGE, RATE, OPTIMISES = "optimisation", "gooddrag", True


@dataclass
class AlternatingOutcome:
    edited: torch.Tensor                         # the edited latent at timesteps[resume_index]
    original: torch.Tensor                       # the original trajectory's latent there
    resume_index: int                            # where plain denoising (with mutual attention) goes on
    handles: torch.Tensor                        # N x 2, on the host (CPU)
    trajectory: List[List[Tuple[float, float]]]  # grid (x, y) of every handle after each tracking
    steps: int                                   # Adam steps taken on the latent
    reached: bool                                # what point tracking believed at the end


def drag(inputs: DragInputs) -> DragOutcome:
    """The method's step 3 in the drag pipeline: `drag_and_denoise` from the drag's seed."""
    inputs = inputs.with_progress(most_trackings(inputs.config))
    torch.manual_seed(inputs.config.seed)
    outcome = drag_and_denoise(inputs)
    return optimised(inputs, outcome.original, outcome.edited, outcome.resume_index, outcome.handles,
                     outcome.trajectory, outcome.steps, outcome.reached)


def most_trackings(config: DragConfig) -> int:
    """Point trackings of a drag that runs to its end: each round's, and one per DDIM step."""
    return config.gooddrag_denoising_steps * (config.gooddrag_rounds + 1)


def guarded_step(optimizer, scaler, loss: torch.Tensor, latent: torch.Tensor, idle: torch.Tensor) -> None:
    """One Adam step on `latent` that changes nothing (latent, optimizer state) where `idle` is True.

    A step the host queued before it knew it was not wanted is undone on the device: deciding on
    the host would read `idle` back and stall a GPU every step.
    """
    state = [tensor for tensor in optimizer.state[latent].values() if torch.is_tensor(tensor)]
    before = [tensor.detach().clone() for tensor in [latent, *state]]
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    # Adam's state appears at its first step; a first step can only be idle once every handle has
    # arrived, and no step follows at this timestep then, so its new state needs no undoing.
    with torch.no_grad():
        for tensor, previous in zip([latent, *state], before):
            tensor.copy_(torch.where(idle, previous, tensor))


def drag_and_denoise(inputs: DragInputs) -> AlternatingOutcome:
    """Drag the inverted latent (at timesteps[start_index]) while denoising it; `inputs.on_step`
    runs after each point tracking."""
    model, config, scheduler, keep_mask, on_step = (inputs.model, inputs.config, inputs.scheduler, inputs.keep_mask,
                                                    inputs.on_step)

    def predict(current, timestep):
        with model.autocast():
            return guided_prediction(model, current, timestep, inputs.text_embedding, inputs.guidance_scale, config,
                                     inputs.grid.shape, inputs.uncond_embedding)

    patch = (2 * config.gooddrag_motion_radius + 1) ** 2
    initial_handles = inputs.handles.float()
    targets = inputs.targets.float()
    handles = initial_handles.clone()
    finished = all_reached(handles, targets, config.reach_threshold)   # on the device, sticky
    unchanged_rounds = torch.zeros((), dtype=torch.long, device=model.device)
    applied_steps = torch.zeros((), dtype=torch.long, device=model.device)
    readback = HostReadback(model.device)
    trajectory = [[tuple(xy) for xy in initial_handles.tolist()]]
    host_handles = initial_handles.cpu()
    edited = original = inputs.latent
    timesteps = scheduler.timesteps
    start_index = inputs.start_index
    last_drag_index = min(start_index + config.gooddrag_denoising_steps, len(timesteps))
    tracking = 0
    host_finished, host_round_over = False, None

    def collect(results) -> None:
        """Record what reached the host: handles after a tracking, a round's end, every arrival."""
        nonlocal host_handles, host_finished, host_round_over
        for (kind, number), (step_handles, step_finished, *preview) in results:
            if kind == "tracking":
                host_handles = step_handles
                trajectory.append([tuple(xy) for xy in step_handles.tolist()])
                if on_step is not None:
                    on_step(number, host_handles, preview[0] if preview else None)
            elif bool(preview[0]):
                host_round_over = number
            host_finished = host_finished or bool(step_finished)

    index = start_index
    while index < last_drag_index and not host_finished:
        timestep = timesteps[index]
        scheduler_timestep = int(timestep)  # the scheduler indexes host tables with it; read once
        # 1. the original trajectory at this timestep: features to track and supervise with, x_{t-1} to keep
        with torch.no_grad():
            original_noise, original_features = predict(original, timestep)
            original_previous = scheduler.step(original_noise.float(), scheduler_timestep, original).prev_sample
        current = edited.clone().requires_grad_(True)
        optimizer = torch.optim.Adam([current], lr=config.gooddrag_lr,
                                     fused=True if model.device.type == "cuda" else None)
        scaler = torch.amp.GradScaler(model.device.type, enabled=model.autocast_enabled)

        def track(features, handles, finished, unchanged_rounds, tracking, current, noise):
            """Point tracking against the original's features at this timestep; the stop flags."""
            tracked = track_points(original_features, features.detach(), initial_handles, handles,
                                   config.gooddrag_tracking_radius)
            unchanged_rounds = torch.where((tracked == handles).all(), unchanged_rounds + 1, 0)
            handles = torch.where(finished, handles, tracked)
            finished = (finished | all_reached(handles, targets, config.reach_threshold)
                        | (unchanged_rounds >= config.gooddrag_stall_rounds))
            tracking += 1
            preview = ()
            if config.preview_every and tracking % config.preview_every == 0:
                preview = (predicted_clean(scheduler, timestep, current.detach(), noise.detach().float()),)
            readback.push(("tracking", tracking), handles, finished, keep=preview)
            return handles, finished, unchanged_rounds, tracking

        # 2. rounds of tracking and a few Adam steps
        for round_number in range(config.gooddrag_rounds):
            round_over = torch.zeros((), dtype=torch.bool, device=model.device)
            for step in range(config.gooddrag_steps_per_round):
                noise, features = predict(current, timestep)
                if step == 0:
                    handles, finished, unchanged_rounds, tracking = track(features, handles, finished,
                                                                          unchanged_rounds, tracking, current, noise)
                drag_loss = motion_supervision_loss(
                    features, handles, targets, config.gooddrag_motion_radius,
                    config.reach_threshold, reference=original_features, reference_handles=initial_handles,
                    step_length=config.gooddrag_step_length)
                loss = drag_loss
                if keep_mask is not None:
                    previous = scheduler.step(noise.float(), scheduler_timestep, current).prev_sample
                    loss = loss + mask_term(previous, original_previous, keep_mask, config.gooddrag_mask_weight)
                idle = finished | round_over
                guarded_step(optimizer, scaler, loss, current, idle)
                applied_steps += (~idle).long()
                # the round ends after a step whose supervision loss per patch element was small
                round_over = round_over | (drag_loss.detach() < config.gooddrag_round_loss * patch)
                readback.push(("round", (index, round_number)), handles, finished, round_over)
                collect(readback.ready())
                if host_finished or host_round_over == (index, round_number):
                    break
            if host_finished:
                break
        # 3. one DDIM step of both latents; the same UNet pass tracks the last round's handles
        with torch.no_grad():
            noise, features = predict(current.detach(), timestep)
            handles, finished, unchanged_rounds, tracking = track(features, handles, finished, unchanged_rounds,
                                                                  tracking, current, noise)
            edited = scheduler.step(noise.float(), scheduler_timestep, current.detach()).prev_sample
            original = original_previous
        collect(readback.drain())    # once per denoising step: does the drag go on at the next one?
        index += 1
    return AlternatingOutcome(edited, original, index, host_handles, trajectory, int(applied_steps),
                              all_reached(host_handles.float(), targets.cpu(), config.reach_threshold).item())
