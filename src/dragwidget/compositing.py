"""After the decode: keep the original pixels outside the mask, at the input's full resolution.

The drag runs at the working resolution (512 px wide for SD 1.5), so the decoded picture,
scaled back to the input's size, is softer everywhere than the input (a 1000x1000 photo came
back at about 24 dB against itself far from the edit). When a mask says what may change, the
rest can be the original itself. Not part of the reference method: `DragConfig.keep_outside_mask`
turns it on (the widget and the CLI do when a mask is drawn; benchmarks keep the paper's output).
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageFilter


def edge_feather(size: Tuple[int, int]) -> int:
    """Width in pixels of the blend at the mask's edge: 0.5 % of the longest side, at least 2
    (2 px at 400 px, 5 px at 1000 px, 20 px at 4000 px), so the seam is equally soft at any size."""
    return max(2, round(0.005 * max(size)))


def edit_weight(editable: np.ndarray, feather: int) -> np.ndarray:
    """HxW float32 weight of the edited picture: 0 outside the editable region, rising linearly
    over the `feather` pixels just inside its edge, 1 deeper inside.

    A box blur of the region (one pass of Pillow's, whatever the width; the rank filter an erosion
    needs took minutes at 50 megapixels) is exactly 1 at least `feather` + 1 pixels from the
    kept region and about 1/2 at its edge, so 2 * blur - 1 ramps from 0 to 1 across the band.
    Pillow repeats the border, so the image's own edge makes no seam.
    """
    region = Image.fromarray(editable.astype(np.uint8) * 255)
    blurred = np.asarray(region.filter(ImageFilter.BoxBlur(max(1, feather))), dtype=np.float32) / 255.0
    return np.where(editable, np.clip(2.0 * blurred - 1.0, 0.0, 1.0), 0.0).astype(np.float32)


def keep_original_outside_mask(original: Image.Image, edited: Image.Image, editable: np.ndarray,
                               feather: Optional[int] = None) -> Image.Image:
    """`edited` inside the editable region (True = may change, HxW at the input's size), `original`
    exactly outside it, blended over `feather` pixels (default `edge_feather`) just inside its edge."""
    if editable.shape != (original.height, original.width) or edited.size != original.size:
        raise ValueError(f"sizes differ: original {original.size}, edited {edited.size}, mask {editable.shape[::-1]}")
    weight = edit_weight(editable, edge_feather(original.size) if feather is None else feather)
    before = np.asarray(original.convert("RGB"))
    after = np.asarray(edited.convert("RGB"))
    combined = np.where(weight[..., None] == 1.0, after, before)
    # Only the band at the edge is blended (in float); everything else is one picture's exact pixels.
    band = (weight > 0) & (weight < 1)
    start = before[band].astype(np.float32)
    combined[band] = np.round(start + weight[band][:, None] * (after[band] - start)).astype(np.uint8)
    return Image.fromarray(combined)
