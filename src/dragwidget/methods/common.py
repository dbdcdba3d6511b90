"""What every drag method is given (`DragInputs`) and gives back (`DragOutcome`), and the steps the
two optimising methods share: the guided UNet prediction that yields the drag's features, the
predicted clean latent of a preview, the test of arrival."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

from ..config import DragConfig
from ..denoise_decode import classifier_free_guidance, decode
from ..encoding import tensor_to_image
from ..feature_grid import FeatureGrid
from ..loading import DiffusionModel
from ..points import PointPair
from ..progress import XY, Progress, ProgressReporter
from ..unet_features import unet_with_features

# on_step(step, handles, clean): handles an N x 2 host (CPU) tensor on the supervision grid; clean,
# the predicted clean latent, only on the steps a preview was asked for (config.preview_every), else None.
StepCallback = Callable[[int, torch.Tensor, Optional[torch.Tensor]], None]


@dataclass
class DragInputs:
    """One drag's inputs, the same for every method."""

    model: DiffusionModel
    latent: torch.Tensor                   # the inverted latent, at scheduler.timesteps[start_index]
    scheduler: object                      # the DDIM schedule of the inversion
    start_index: int
    text_embedding: torch.Tensor
    handles: torch.Tensor                  # N x 2 (x, y) on the supervision grid
    targets: torch.Tensor
    grid: FeatureGrid                      # the supervision grid and the input image's size
    config: DragConfig
    keep_mask: Optional[torch.Tensor] = None         # 1x1xhxw at latent size: 1 where the latent must stay
    guidance_scale: float = 1.0
    uncond_embedding: Optional[torch.Tensor] = None
    on_step: Optional[StepCallback] = None           # None: progress events through `report`
    report: ProgressReporter = field(default_factory=ProgressReporter)
    # What FastDrag reads instead of the grid: the pairs and mask at the input's size, and the
    # original's locating features (computed on first use: only its rigid core needs them).
    pairs: Sequence[PointPair] = ()
    editable: Optional[np.ndarray] = None
    locating_features: Optional[Callable[[], torch.Tensor]] = None

    def with_progress(self, total: int) -> "DragInputs":
        """These inputs with an `on_step` that reports the drag's steps out of `total` (handles in
        input pixels, previews decoded), after a first event at step 0."""
        if self.on_step is not None:
            return self

        def on_step(step, handles, clean):
            preview = None if clean is None else tensor_to_image(decode(self.model, clean))
            self.report(Progress("drag", step, total, handles=[self.grid.to_image(h) for h in handles],
                                 preview=preview))

        self.report(Progress("drag", 0, total, handles=[self.grid.to_image(h) for h in self.handles]))
        return dataclasses.replace(self, on_step=on_step)


@dataclass
class DragOutcome:
    """One drag's result, the same for every method, before the rest of the denoising."""

    original: torch.Tensor                 # the original trajectory's latent at timesteps[resume_index]
    edited: torch.Tensor                   # the edited latent there
    resume_index: int                      # where plain denoising goes on
    handles: List[XY]                      # where the method believes the handles are, input-image pixels
    trajectory: List[List[XY]]             # the handles after every step, input-image pixels
    steps: int                             # optimisation steps taken (0 for a warp)
    tracker_reached: bool                  # what the method believes: every handle arrived
    keep: Optional[torch.Tensor] = None    # FastDrag: 1 where the denoising keeps the original (latent size)
    on_denoised: Optional[Callable[[int, int, torch.Tensor], None]] = None   # FastDrag's frames while denoising


def optimised(inputs: DragInputs, original: torch.Tensor, edited: torch.Tensor, resume_index: int,
              handles: torch.Tensor, trajectory, steps: int, reached: bool) -> DragOutcome:
    """The outcome of an optimising method, its grid handles and trajectory in input pixels."""
    grid = inputs.grid
    return DragOutcome(original, edited, resume_index, [grid.to_image(h) for h in handles],
                       [[grid.to_image(h) for h in step] for step in trajectory], steps, reached)


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
