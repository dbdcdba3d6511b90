"""Step 6: the verdict, read from the final image rather than from what point tracking believed.

Point tracking can be fooled: it may report a handle at its target while the object stayed where
it was, smeared, or lost its colour. So after decoding, for each pair:

1. where is the handle's content in the result? The editing model's own UNet features of the
   original and of the result at a small timestep (DIFT, as DragBench's mean distance reads
   them; `DiffusionModel.locating_settings` names the block and timestep), and the position in
   the result most cosine-similar to the original's feature at the handle;
2. how far is that from the target, against the drag's length;
3. did its appearance survive? The original's pixels around the handle against the result's
   pixels around the found point (mean absolute difference, as GoodDrag's DAI compares patches).

A pair is reached when its content was found within `verdict_tolerance` of the drag length
(at least `verdict_min_pixels`) from the target and its patch differs by at most
`verdict_appearance_error` grey levels. Cost: one VAE encode and one UNet pass of
`verdict_ensemble` rows for the result (the original's features are computed once per prepared image).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import DragConfig
from .dragbench.dift import dift_features
from .encoding import image_to_tensor
from .image_input import PointPair, working_size
from .loading import DiffusionModel

XY = Tuple[float, float]
LOCATING_TIMESTEP = 261     # DIFT's
LOCATING_BLOCK = 1          # DIFT's, for Stable Diffusion
LOCATING_SEED = 42
# Content is located on a grid of at most this many pixels on its longest side (the toy's 64-px
# pictures at full size, a 512-px picture in 4-px steps): Stable Diffusion's 1280-channel block-1
# map upsampled to 512x512 would be 1.3 GB per picture.
LOCATING_MAX_SIDE = 128


@dataclass
class PairVerdict:
    found: XY                  # where the handle's content is in the result, input pixels
    distance: float            # from there to the target, input pixels
    drag_length: float         # handle to target, input pixels
    appearance_error: float    # mean absolute difference of the two patches, grey levels (0-255)
    moved: bool                # found close enough to the target
    kept: bool                 # its appearance survived

    @property
    def reached(self) -> bool:
        return self.moved and self.kept

    def describe(self) -> str:
        where = f"the content was found {self.distance:.1f} px from the target"
        if not self.kept:
            return (f"lost: the content at the handle changed (patch differs by {self.appearance_error:.0f} "
                    f"grey levels); the best match is {self.distance:.1f} px from the target")
        if self.moved:
            return f"moved to {self.distance:.1f} px of the target, appearance kept"
        progress = 1 - self.distance / self.drag_length if self.drag_length else 0.0
        if progress < 0.2:
            return f"not moved: {where}"
        return f"moved {100 * progress:.0f} % of the way: {where}"

    def to_dict(self) -> dict:
        return {**asdict(self), "found": list(self.found), "reached": self.reached, "says": self.describe()}


@dataclass
class Verdict:
    pairs: List[PairVerdict]
    seconds: float
    unet_passes: int

    @property
    def reached(self) -> bool:
        return all(pair.reached for pair in self.pairs)

    def describe(self) -> str:
        if len(self.pairs) == 1:
            return self.pairs[0].describe()
        return "; ".join(f"pair {number}: {pair.describe()}" for number, pair in enumerate(self.pairs, start=1))

    def to_dict(self) -> dict:
        return {"reached": self.reached, "says": self.describe(), "seconds": round(self.seconds, 4),
                "unet_passes": self.unet_passes, "pairs": [pair.to_dict() for pair in self.pairs]}


def locating_size(size: Tuple[int, int]) -> Tuple[int, int]:
    """(width, height) of the grid content is located on: the picture's, shrunk to LOCATING_MAX_SIDE."""
    shrink = min(1.0, LOCATING_MAX_SIDE / max(size))
    return max(1, round(size[0] * shrink)), max(1, round(size[1] * shrink))


@torch.no_grad()
def content_features(model: DiffusionModel, image: Image.Image, prompt: str, config: DragConfig) -> torch.Tensor:
    """1xCxhxw features of `image` on its `locating_size` grid (DIFT with the model's settings).

    The UNet sees the picture at the drag's working size, as the drag did: a 512-px picture for
    the 64-px toy would otherwise cost a 128x128-latent UNet pass per ensemble row."""
    settings = model.locating_settings
    generator = torch.Generator().manual_seed(LOCATING_SEED)
    working = working_size(*image.size, config.working_width or model.native_width, model.vae_scale_factor)
    pixels = image_to_tensor(image.resize(working, Image.LANCZOS), model.device)
    features = dift_features(model, pixels, prompt, generator,
                             timestep=settings.get("timestep", LOCATING_TIMESTEP),
                             block=settings.get("block", LOCATING_BLOCK), ensemble=config.verdict_ensemble)
    width, height = locating_size(image.size)
    return F.interpolate(features, (height, width), mode="bilinear")


def find_content(source: torch.Tensor, result: torch.Tensor, point: Sequence[float]) -> XY:
    """(x, y) in `result` (1xCxHxW) most cosine-similar to `source`'s feature at `point` (map pixels)."""
    height, width = source.shape[-2:]
    x, y = (min(max(int(round(v)), 0), limit - 1) for v, limit in zip(point, (width, height)))
    similarity = F.cosine_similarity(source[0, :, y, x][None, :, None, None], result, dim=1)[0]
    row, column = divmod(int(similarity.argmax()), width)
    return float(column), float(row)


def patch_radius(size: Tuple[int, int]) -> int:
    """The appearance patch's radius: 5 % of the shorter side (3 px at 64 px, 26 px at 512 px)."""
    return max(1, round(0.05 * min(size)))


def appearance_error(original: np.ndarray, result: np.ndarray, at: Sequence[float], found: Sequence[float],
                     radius: int) -> float:
    """Mean absolute RGB difference between original[patch(at)] and result[patch(found)], grey levels.

    Both patches are cut to the same offsets where either would leave the picture."""
    height, width = original.shape[:2]
    (ax, ay), (fx, fy) = ((int(round(v)) for v in point) for point in (at, found))
    left, right = min(radius, ax, fx), min(radius, width - 1 - ax, width - 1 - fx)
    top, bottom = min(radius, ay, fy), min(radius, height - 1 - ay, height - 1 - fy)
    before = original[ay - top:ay + bottom + 1, ax - left:ax + right + 1].astype(np.float32)
    after = result[fy - top:fy + bottom + 1, fx - left:fx + right + 1].astype(np.float32)
    return float(np.abs(before - after).mean())


def judge(model: DiffusionModel, original: Image.Image, result: Image.Image, pairs: Sequence[PointPair], prompt: str,
          config: DragConfig, original_features: Optional[torch.Tensor] = None) -> Tuple[Verdict, torch.Tensor]:
    """The verdict on `result` (same size as `original`); also the original's features, for reuse."""
    started = time.perf_counter()
    passes = 1
    if original_features is None:
        original_features = content_features(model, original, prompt, config)
        passes += 1
    result_features = content_features(model, result, prompt, config)
    before, after = np.asarray(original.convert("RGB")), np.asarray(result.convert("RGB"))
    radius = patch_radius(original.size)
    verdicts = []
    scale = original.width / original_features.shape[-1], original.height / original_features.shape[-2]
    for pair in pairs:
        on_grid = find_content(original_features, result_features, [v / s for v, s in zip(pair.handle, scale)])
        found = (on_grid[0] * scale[0], on_grid[1] * scale[1])
        length = math.dist(pair.handle, pair.target)
        distance = math.dist(found, pair.target)
        error = appearance_error(before, after, pair.handle, found, radius)
        verdicts.append(PairVerdict(
            found=found, distance=round(distance, 2), drag_length=round(length, 2), appearance_error=round(error, 2),
            moved=distance <= max(config.verdict_tolerance * length, config.verdict_min_pixels),
            kept=error <= config.verdict_appearance_error))
    return Verdict(verdicts, time.perf_counter() - started, passes), original_features
