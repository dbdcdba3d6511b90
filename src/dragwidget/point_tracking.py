"""Step 3b: point tracking.

After each update the handles have moved by an unknown amount. Each handle is re-found as the
position, within a (2 r_p + 1)^2 window around its current position, whose feature is nearest
(L1) to the feature of the *initial* handle in the *initial* feature map.
"""

from __future__ import annotations

from typing import List, Sequence

import torch


@torch.no_grad()
def track_points(
    initial_features: torch.Tensor,
    features: torch.Tensor,
    initial_handles: Sequence[torch.Tensor],
    handles: Sequence[torch.Tensor],
    radius: int,
) -> List[torch.Tensor]:
    """Return the new (x, y) handle positions (integer grid pixels)."""
    _, _, height, width = features.shape
    tracked = []
    for start, current in zip(initial_handles, handles):
        x0 = int(start[0].round().clamp(0, width - 1))
        y0 = int(start[1].round().clamp(0, height - 1))
        reference = initial_features[0, :, y0, x0]
        cx, cy = int(current[0].round()), int(current[1].round())
        top, bottom = max(0, cy - radius), min(height, cy + radius + 1)
        left, right = max(0, cx - radius), min(width, cx + radius + 1)
        window = features[0, :, top:bottom, left:right]
        distance = (window - reference[:, None, None]).abs().sum(dim=0)
        row, col = divmod(int(distance.argmin()), distance.shape[1])
        tracked.append(torch.tensor([left + col, top + row], dtype=torch.float32, device=current.device))
    return tracked
