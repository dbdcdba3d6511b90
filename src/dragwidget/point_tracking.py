"""Step 3b: point tracking.

After each update the handles have moved by an unknown amount. Each handle is re-found as the
position, within a (2 r_p + 1)^2 window around its current position, whose feature is nearest
(L1) to the feature of the *initial* handle in the *initial* feature map.
"""

from __future__ import annotations

import torch

from .motion_supervision import patch_offsets


@torch.no_grad()
def track_points(
    initial_features: torch.Tensor,
    features: torch.Tensor,
    initial_handles: torch.Tensor,
    handles: torch.Tensor,
    radius: int,
) -> torch.Tensor:
    """Return the new N x 2 (x, y) handle positions (integer grid pixels) from N x 2 initial and
    current ones.

    Every window is searched at once with index arithmetic on the features' device, so tracking
    never reads a position back to the host (that would stall a GPU every step).
    """
    _, _, height, width = features.shape

    def flat_index(points):   # (x, y) -> index into a flattened map, clamped to the map
        return (points[..., 1].clamp(0, height - 1) * width + points[..., 0].clamp(0, width - 1)).long()

    start = initial_handles.round()
    current = handles.round()
    reference = initial_features[0].flatten(1)[:, flat_index(start)]                      # C x N
    # Candidate positions in row-major window order, so that ties resolve as a window scan would.
    candidates = current[:, None, :] + patch_offsets(radius, features.device)[None]        # N x K x 2
    x, y = candidates.unbind(-1)
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    window = features[0].flatten(1)[:, flat_index(candidates)]                            # C x N x K
    distance = (window - reference[:, :, None]).abs().sum(dim=0).masked_fill(~inside, float("inf"))
    best = distance.argmin(dim=1)
    return candidates[torch.arange(len(best), device=best.device), best]
