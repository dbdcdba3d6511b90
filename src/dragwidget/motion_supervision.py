"""Step 3a: motion supervision.

For each handle p with target t, the feature patch around p (radius r_m, detached) is made the
*target* for the patch one unit step further along d = (t - p) / |t - p|, read with bilinear
interpolation. Minimising the L1 difference moves the content at p one step toward t.

GoodDrag's information-preserving variant takes the target patch from the *original* image's
features at the *initial* handle instead of the current features at the current handle: what
is pulled along is always the original content, so small errors cannot pile up step after step.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def patch_offsets(radius: int, device) -> torch.Tensor:
    """(2r+1)^2 x 2 integer (x, y) offsets of a square patch."""
    span = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    dy, dx = torch.meshgrid(span, span, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=1)


def sample_features(features: torch.Tensor, points_xy: torch.Tensor) -> torch.Tensor:
    """Bilinearly read a 1xCxHxW map at N (x, y) positions (grid pixels) -> C x N.

    Positions outside the map read the nearest border value.
    """
    _, _, height, width = features.shape
    grid = torch.stack([points_xy[:, 0] * 2 / max(width - 1, 1) - 1,
                        points_xy[:, 1] * 2 / max(height - 1, 1) - 1], dim=-1)
    sampled = F.grid_sample(features, grid.view(1, 1, -1, 2).to(features.dtype), mode="bilinear",
                            padding_mode="border", align_corners=True)
    return sampled[0, :, 0, :]


def motion_supervision_loss(
    features: torch.Tensor,
    handles: torch.Tensor,
    targets: torch.Tensor,
    radius: int,
    reach_threshold: float,
    reference: Optional[torch.Tensor] = None,
    reference_handles: Optional[torch.Tensor] = None,
    step_length: Optional[float] = None,
) -> torch.Tensor:
    """Sum over unfinished pairs of (2r+1)^2 * L1(F[patch(p)].detach(), F[patch(p + d)]).

    `handles`/`targets` are N x 2 (x, y) on the feature grid. Pairs already within
    `reach_threshold` contribute nothing, as in the reference. With `reference` (the original's
    features) and `reference_handles` (the initial handles), the target patch is
    reference[patch(p0)] instead (information-preserving supervision). `step_length`: the patch
    ahead is min(step_length, |t - p|) along d instead of one unit.
    """
    offsets = patch_offsets(radius, features.device)
    loss = features.new_zeros(())
    source = features if reference is None else reference
    starts = handles if reference is None else reference_handles
    for handle, start, target in zip(handles, starts, targets):
        direction = target - handle
        distance = direction.norm()
        # A weight of 0 rather than skipping the pair: deciding to skip would read the distance
        # back to the host, which stalls a GPU every step.
        unfinished = (distance >= reach_threshold).to(features.dtype)
        step = direction / distance.clamp_min(1e-6)
        if step_length is not None:
            step = step * distance.clamp_max(step_length)
        here = sample_features(source, start.round() + offsets).detach()
        ahead = sample_features(features, handle.round() + offsets + step)
        loss = loss + unfinished * (offsets.shape[0] * F.l1_loss(ahead, here))
    return loss


def mask_term(previous: torch.Tensor, original_previous: torch.Tensor, keep_mask: torch.Tensor,
              weight: float) -> torch.Tensor:
    """weight * sum |x_{t-1}(z) - x_{t-1}(z_0)| over the region to keep (1 in `keep_mask`, at latent size)."""
    return weight * ((previous - original_previous) * keep_mask).abs().sum()
