"""Step 6: the verdict, read from the final image rather than from what point tracking believed.

Point tracking can be fooled: it may report a handle at its target while the object stayed where
it was, smeared, split or lost its colour. So after decoding, for each pair, with the editing
model's own UNet features of the original and of the result at a small timestep (DIFT, as
DragBench's mean distance reads them; `DiffusionModel.locating_settings` names the block and
timestep; never colours, so it works on photographs):

1. the handle's region: the cells around the handle whose features resemble the handle's (cosine
   similarity above `verdict_region_similarity`, connected to it): the object or part the user grabbed;
2. where it went: the offset, from no move to the whole drag and `verdict_tolerance` beyond, at
   which the region's features fit the result best on average (its *fit*), and the centre of what
   it became there (the result's cells like the handle's feature, grown from that place). It
   **arrived** when its centre or its best fit puts the handle within `verdict_tolerance` of the
   drag length (at least `verdict_min_pixels`) of the target;
3. its shape: the share of its cells whose feature at their moved place in the result is at least
   `verdict_cell_similarity` similar to their own (*arrived share*): a squashed, split or smeared
   object leaves cells on background. Kept when the share is at least `verdict_shape_kept`, the
   centre arrived, the best fit lies within that tolerance of it, and the point check below passed; *deformation* is the mean
   distance, against the drag, from each cell's moved place to the nearest place where it fits
   about as well as anywhere;
4. lost: the region fits nowhere better than `verdict_lost_fit`, or less than `LOST_SHARE` of it
   arrived (recoloured, erased), or it did not arrive and the point check says so: the position in
   the result most similar to the handle's feature, and the original's pixels around the handle
   against the result's around that point (mean absolute difference above
   `verdict_appearance_error` grey levels, as GoodDrag's DAI compares patches).

Each pair falls in one category: *reached, shape kept*; *reached, but deformed*; *moved part of
the way*; *not moved*; *lost*. `reached` means the first for every pair. What it cannot see: a
region whose features look like its surroundings (a thin ring on a plain ground) is found with
its surroundings; changes of colour that the features ignore; moves of less than a feature cell.
Cost: one VAE encode and one UNet pass of `verdict_ensemble` rows for the result (the original's
features are computed once per prepared image); the region check is matrix products on the
locating grid.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import DragConfig
from .feature_grid import GridScale
from .loading import DiffusionModel
from .locating import best_match, connected_to, content_features, nearest_cell, object_cores
from .points import PointPair

XY = Tuple[float, float]


@dataclass
class RegionMatch:
    """Where the handle's region (found on the locating grid) went in the result, and in what shape."""
    cells: int                 # its size, locating-grid cells
    offset: XY                 # where it fits best, relative to its place in the original, input pixels
    centre_offset: XY          # from its centre in the original to the centre of what it grew into there
    fit: float                 # mean cosine similarity of its features there
    arrived_share: float       # share of its cells at least verdict_cell_similarity similar at their moved places
    deformation: float         # mean distance from the cells' moved places to their nearest best matches, / drag


CATEGORIES = ("reached, shape kept", "reached, but deformed", "moved part of the way", "not moved", "lost")


@dataclass
class PairVerdict:
    found: XY                  # the point check: where the handle's feature is best matched in the result
    distance: float            # from there to the target, input pixels
    drag_length: float         # handle to target, input pixels
    appearance_error: float    # the point check's patches: mean absolute difference, grey levels (0-255)
    region: RegionMatch        # the region check
    region_distance: float     # from the handle moved with the region's centre to the target, input pixels
    fit_distance: float        # from the handle moved with the region's best fit to the target, input pixels
    category: str              # one of CATEGORIES
    why: str                   # what decided a damaged category: "share", "patch", "apart" or "nowhere"

    @property
    def reached(self) -> bool:
        return self.category == CATEGORIES[0]

    @property
    def progress(self) -> float:
        """How much of the drag the region travelled, 0 to 1."""
        return max(0.0, 1 - self.region_distance / self.drag_length) if self.drag_length else 1.0

    def describe(self) -> str:
        share = f"{100 * self.region.arrived_share:.0f} % of the region arrived"
        where = f"{self.region_distance:.1f} px from the target"
        changed = f"the content at the handle changed (patch differs by {self.appearance_error:.0f} grey levels)"
        if self.category == "lost":
            if self.why == "patch":
                return f"lost: {changed}; the grabbed region's centre is {where}"
            return (f"lost: the grabbed region is nowhere on its path ({share}; its features fit "
                    f"{self.region.fit:.2f} at best)")
        if self.category == "reached, shape kept":
            return f"reached, shape kept: the grabbed region is {where}, {100 * self.region.arrived_share:.0f} % of it in place"
        if self.category == "reached, but deformed":
            if self.why == "patch":
                return f"reached, but deformed: {changed} ({where})"
            if self.why == "apart":
                return (f"reached, but deformed: its features fit best {self.fit_distance:.1f} px from the "
                        f"target, but its centre is {where}")
            return f"reached, but deformed: {share} ({where})"
        if self.category == "moved part of the way":
            return f"moved part of the way ({100 * self.progress:.0f} %): the grabbed region is {where}"
        return f"not moved: the grabbed region is {where}"

    def to_dict(self) -> dict:
        return {**asdict(self), "found": list(self.found), "reached": self.reached, "says": self.describe(),
                "region": {**asdict(self.region), "offset": list(self.region.offset),
                           "centre_offset": list(self.region.centre_offset)}}


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


# A region of which less than this share is found anywhere on its path is lost (recoloured, erased).
LOST_SHARE = 0.1
# Regions larger than this many cells are judged on an even sample of them (memory: cells x grid).
REGION_SAMPLE = 1024
# A cell matches "about as well" elsewhere within this cosine similarity of its best match there.
DEFORMATION_MARGIN = 0.02


def match_region(source: torch.Tensor, result: torch.Tensor, handle: Sequence[float], drag: Sequence[float],
                 config: DragConfig) -> RegionMatch:
    """The region check of one pair on the locating grid (`handle` and `drag` in its cells; the
    returned offset too): steps 1-3 of this module's list."""
    height, width = source.shape[-2:]
    everywhere = torch.ones((height, width), dtype=torch.bool, device=source.device)
    region = object_cores(source, torch.tensor([list(handle)], dtype=torch.float32), everywhere,
                          config.verdict_region_similarity)[0].cpu()
    rows, columns = region.nonzero(as_tuple=True)
    if len(rows) > REGION_SAMPLE:
        keep = torch.linspace(0, len(rows) - 1, REGION_SAMPLE).round().long()
        rows, columns = rows[keep], columns[keep]
    wanted = F.normalize(source[0, :, rows, columns].float().cpu(), dim=0)             # C x N
    found = F.normalize(result[0].float().cpu().flatten(1), dim=0)                      # C x HW
    similarity = wanted.T @ found                                                        # N x HW

    dx, dy = float(drag[0]), float(drag[1])
    reach = max(config.verdict_tolerance * math.hypot(dx, dy), 1.0)
    xs = torch.arange(math.floor(min(0.0, dx) - reach), math.ceil(max(0.0, dx) + reach) + 1)
    ys = torch.arange(math.floor(min(0.0, dy) - reach), math.ceil(max(0.0, dy) + reach) + 1)
    offsets = torch.cartesian_prod(ys, xs)                                               # O x (y, x)
    to_rows, to_columns = rows[None] + offsets[:, :1], columns[None] + offsets[:, 1:]    # O x N
    inside = (to_rows >= 0) & (to_rows < height) & (to_columns >= 0) & (to_columns < width)
    at = to_rows.clamp(0, height - 1) * width + to_columns.clamp(0, width - 1)
    # a cell moved out of the picture fits nothing
    placed = torch.where(inside, similarity.gather(1, at.T).T, torch.zeros(()))         # O x N
    fits = placed.mean(dim=1)
    best = int(fits.argmax())
    refined = subcell_peak(fits.view(len(ys), len(xs)), divmod(best, len(xs)))
    at_best = placed[best]
    near_best = placed >= placed.max(dim=0, keepdim=True).values - DEFORMATION_MARGIN
    spread = torch.where(near_best, (offsets - offsets[best]).float().norm(dim=1, keepdim=True),
                         torch.full(near_best.shape, float("inf"))).min(dim=0).values
    length = max(math.hypot(dx, dy), 1e-6)
    offset = (float(offsets[best, 1]) + refined[1], float(offsets[best, 0]) + refined[0])
    # where the region is as a whole: the cells of the result like the handle's feature, grown from
    # the handle's place there (an object that arrived as a larger or smaller blob moves its centre)
    seed = torch.zeros_like(region)
    seed_x, seed_y = nearest_cell((handle[0] + offset[0], handle[1] + offset[1]), width, height)
    seed[seed_y, seed_x] = True
    handle_x, handle_y = nearest_cell(handle, width, height)
    handle_feature = source[0, :, handle_y, handle_x]
    alike = F.cosine_similarity(handle_feature.float().cpu()[:, None, None], result[0].float().cpu(), dim=0)
    there = connected_to(seed, alike > config.verdict_region_similarity)
    centre_offset = offset
    if there.any():
        (x0, y0), (x1, y1) = centre(region), centre(there)
        centre_offset = (x1 - x0, y1 - y0)
    return RegionMatch(cells=int(region.sum()), offset=offset, centre_offset=centre_offset,
                       fit=round(float(fits[best]), 4),
                       arrived_share=round(float((at_best >= config.verdict_cell_similarity).float().mean()), 4),
                       deformation=round(float(spread.mean()) / length, 4))


def centre(cells: torch.Tensor) -> XY:
    """The mean (x, y) of a bool map's True cells."""
    rows, columns = cells.nonzero(as_tuple=True)
    return float(columns.float().mean()), float(rows.float().mean())


def subcell_peak(scores: torch.Tensor, peak: Tuple[int, int]) -> Tuple[float, float]:
    """(dy, dx) within half a cell: the vertex of the parabola through the peak and its neighbours,
    along each axis (0 at an edge or where the scores are not curved down)."""
    row, column = peak

    def vertex(before: float, at: float, after: float) -> float:
        curvature = before - 2 * at + after
        return float(min(max(0.5 * (before - after) / curvature, -0.5), 0.5)) if curvature < 0 else 0.0

    dy = vertex(*scores[row - 1:row + 2, column].tolist()) if 0 < row < scores.shape[0] - 1 else 0.0
    dx = vertex(*scores[row, column - 1:column + 2].tolist()) if 0 < column < scores.shape[1] - 1 else 0.0
    return dy, dx


def categorise(centre_distance: float, fit_distance: float, fit_apart: float, length: float, fit: float,
               arrived_share: float, patch_changed: bool, config: DragConfig) -> Tuple[str, str]:
    """The pair's category (CATEGORIES) and what decided it ("share", "patch", "apart", "nowhere" or
    ""), from what was measured: the distances to the target of the region's centre in the result
    and of its best fit, and between the two, input pixels."""
    if fit < config.verdict_lost_fit or arrived_share < LOST_SHARE:
        return "lost", "nowhere"
    tolerance = max(config.verdict_tolerance * length, config.verdict_min_pixels)
    if centre_distance <= tolerance or fit_distance <= tolerance:
        # arrived, but damaged: too few of its cells in place, a changed patch at the handle's match,
        # or its centre away from the target or from its best fit (split, or another shape)
        if arrived_share < config.verdict_shape_kept:
            return "reached, but deformed", "share"
        if patch_changed:
            return "reached, but deformed", "patch"
        if centre_distance > tolerance or fit_apart > tolerance:
            return "reached, but deformed", "apart"
        return "reached, shape kept", ""
    if patch_changed:
        return "lost", "patch"
    return ("moved part of the way" if length and centre_distance < 0.8 * length else "not moved"), ""


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
    scale = GridScale(original.size, (original_features.shape[-1], original_features.shape[-2]))
    for pair in pairs:
        handle = scale.to_grid(pair.handle)
        found = scale.to_image(best_match(original_features[0], result_features[0], handle).best)
        length = math.dist(pair.handle, pair.target)
        error = appearance_error(before, after, pair.handle, found, radius)
        drag = scale.to_grid([t - h for t, h in zip(pair.target, pair.handle)])
        region = match_region(original_features, result_features, handle, drag, config)
        region = dataclasses.replace(region, offset=scale.to_image(region.offset),
                                     centre_offset=scale.to_image(region.centre_offset))
        fit_distance, region_distance = (math.dist((pair.handle[0] + x, pair.handle[1] + y), pair.target)
                                         for x, y in (region.offset, region.centre_offset))
        fit_apart = math.dist(region.offset, region.centre_offset)
        category, why = categorise(region_distance, fit_distance, fit_apart, length, region.fit, region.arrived_share,
                                   error > config.verdict_appearance_error, config)
        verdicts.append(PairVerdict(
            found=found, distance=round(math.dist(found, pair.target), 2), drag_length=round(length, 2),
            appearance_error=round(error, 2), region=region, region_distance=round(region_distance, 2),
            fit_distance=round(fit_distance, 2),
            category=category, why=why))
    return Verdict(verdicts, time.perf_counter() - started, passes), original_features
