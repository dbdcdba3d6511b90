"""Step 3a: motion supervision.

For each handle p with target t, the feature patch around p (radius r_m, detached) is made the
*target* for the patch one unit step further along d = (t - p) / |t - p|, read with bilinear
interpolation. Minimising the L1 difference moves the content at p one step toward t.
"""

from __future__ import annotations

from typing import Sequence

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
    handles: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    radius: int,
    reach_threshold: float,
) -> torch.Tensor:
    """Sum over unfinished pairs of (2r+1)^2 * L1(F[patch(p)].detach(), F[patch(p + d)]).

    `handles`/`targets` are (x, y) tensors on the feature grid. Pairs already within
    `reach_threshold` contribute nothing, as in the reference.
    """
    offsets = patch_offsets(radius, features.device)
    loss = features.new_zeros(())
    for handle, target in zip(handles, targets):
        direction = target - handle
        distance = direction.norm()
        # A weight of 0 rather than skipping the pair: deciding to skip would read the distance
        # back to the host, which stalls a GPU every step.
        unfinished = (distance >= reach_threshold).to(features.dtype)
        step = direction / distance.clamp_min(1e-6)
        here = sample_features(features, handle.round() + offsets).detach()
        ahead = sample_features(features, handle.round() + offsets + step)
        loss = loss + unfinished * (offsets.shape[0] * F.l1_loss(ahead, here))
    return loss
