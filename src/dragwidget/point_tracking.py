"""Step 3b: point tracking.

After each update the handles have moved by an unknown amount. Each handle is re-found as the
position, within a (2 r_p + 1)^2 window around its current position, whose feature is nearest
(L1) to the feature of the *initial* handle in the *initial* feature map.
"""

from __future__ import annotations

from typing import List, Sequence

import torch

from .motion_supervision import patch_offsets


def as_points(points: Sequence[torch.Tensor]) -> torch.Tensor:
    """A sequence of (x, y) tensors (or an N x 2 tensor) -> N x 2 tensor, without leaving the device."""
    return torch.stack(list(points))


@torch.no_grad()
def track_points(
    initial_features: torch.Tensor,
    features: torch.Tensor,
    initial_handles: Sequence[torch.Tensor],
    handles: Sequence[torch.Tensor],
    radius: int,
) -> List[torch.Tensor]:
    """Return the new (x, y) handle positions (integer grid pixels).

    Every window is searched at once with index arithmetic on the features' device, so tracking
    never reads a position back to the host (that would stall a GPU every step).
    """
    _, _, height, width = features.shape
    start = as_points(initial_handles).round()
    current = as_points(handles).round()
    bounds = torch.tensor([width - 1, height - 1], device=features.device, dtype=start.dtype)
    flat_initial, flat = initial_features[0].flatten(1), features[0].flatten(1)
    start = torch.minimum(start.clamp_min(0), bounds)
    reference = flat_initial[:, (start[:, 1] * width + start[:, 0]).long()]               # C x N
    # Candidate positions in row-major window order, so that ties resolve as a window scan would.
    candidates = current[:, None, :] + patch_offsets(radius, features.device)[None]        # N x K x 2
    inside = ((candidates >= 0) & (candidates <= bounds)).all(dim=-1)
    clamped = torch.minimum(candidates.clamp_min(0), bounds)
    window = flat[:, (clamped[..., 1] * width + clamped[..., 0]).long()]                  # C x N x K
    distance = (window - reference[:, :, None]).abs().sum(dim=0).masked_fill(~inside, float("inf"))
    best = distance.argmin(dim=1)
    found = candidates[torch.arange(len(best), device=best.device), best]
    return list(found.unbind(0))
