"""Step 3, FastDrag's way: warp the inverted latent once instead of optimising it (Zhao et al.,
NeurIPS 2024, arXiv 2405.15769).

No latent optimisation and no point tracking: every cell of the editable region is moved, in one
step, by a field made from all the pairs, and the denoising that follows (with the original's keys
and values, `denoise_decode.denoise`) turns the moved latent into a picture. On the latent grid
(points divided by the VAE's factor):

1. the editable region: the drawn mask's cells (a cell counts when at least half of it is
   editable); without a mask, the box around the pairs grown by the longest drag;
2. the field (`warp_field`). FastDrag's latent warpage: O and R are the centre of the region's
   bounding box and the distance to its corner; for a cell C and a pair A -> B, P is where the ray
   from A through C leaves that circle, and C moves by (B - A) |PC| / |AP|: the whole drag at the
   handle, nothing at the circle. Several pairs: the moves weighted by 1 / |C - A|. Not in FastDrag:
   the cells of the handle's object (`object_cores`) move the whole drag, rigidly; the elastic
   stretch only applies outside them (FastDrag alone stretches objects toward the target);
3. the move (`move_cells`): each cell's latent is written at C + move, rounded half up, when that lies in the
   region (nothing is written outside it). Where several land on one cell, the one that moves the
   larger share of its drag wins (the handle's side), or FastDrag's first in raster order;
4. the holes (`fill_holes`): every region cell nothing landed on takes the nearest written (or
   outside-the-region) cells to its left, right, above and below, weighted by 1 / distance, looking
   past the moved object's cells (what an object uncovers is background).

All of it is vectorised in torch on the latent's device: the warp costs nothing next to a UNet pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..config import DragConfig
from ..denoise_decode import decode
from ..encoding import tensor_to_image
from ..feature_grid import GridScale
from ..locating import nearest_cell, object_cores
from ..progress import Progress
from .common import DragInputs, DragOutcome

# how the drag pipeline times step 3 (`run_plan`): the stage, the per-step rate it records, and
# whether its steps are optimisation steps (FastDrag's one warp counts as one step)
STAGE, RATE, OPTIMISES = "warp", "warp", False

XY = Tuple[float, float]


@dataclass
class WarpOutcome:
    latent: torch.Tensor          # 1xCxhxw, the warped latent
    region: torch.Tensor          # hxw bool: the editable cells
    moves: torch.Tensor           # hxwx2 (dx, dy) in cells: where each region cell was sent (0 outside)
    cores: torch.Tensor           # pairs x h x w bool: each handle's rigid object core (all False without)
    holes: torch.Tensor           # hxw bool: region cells nothing landed on, filled from their neighbours


def editable_region(editable: Optional[np.ndarray], latent_size: Tuple[int, int], handles: torch.Tensor,
                    targets: torch.Tensor) -> torch.Tensor:
    """hxw bool on the latent grid: the mask's cells that are at least half editable; without a mask,
    the box around all handles and targets grown on every side by the longest drag (at least one
    cell), inside the picture."""
    height, width = latent_size
    device = handles.device
    if editable is not None:
        share = F.interpolate(torch.from_numpy(editable).float()[None, None], size=(height, width), mode="area")
        return (share[0, 0] >= 0.5).to(device)
    points = torch.cat([handles, targets])
    grow = max(1.0, float((targets - handles).norm(dim=-1).max()))
    low = (points.min(dim=0).values - grow).floor().clamp(min=0)
    high = (points.max(dim=0).values + grow).ceil()
    ys, xs = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return (xs >= low[0]) & (xs <= high[0]) & (ys >= low[1]) & (ys <= high[1])


def warp_field(region: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor,
               cores: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(moves hxwx2, share hxw): each region cell's move in cells and the share of its drag it moves
    (1 at a handle and in its core, falling to 0 at the circle around the region's box). Cells
    outside the region do not move."""
    height, width = region.shape
    device = region.device
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32),
                            torch.arange(width, device=device, dtype=torch.float32), indexing="ij")
    cells = torch.stack([xs, ys], dim=-1)                                  # h x w x 2
    rows, columns = region.nonzero(as_tuple=True)
    box_low = torch.stack([columns.min(), rows.min()]).float()
    box_high = torch.stack([columns.max(), rows.max()]).float()
    centre, radius = (box_low + box_high) / 2, max(float((box_high - box_low).norm() / 2), 1.0)

    starts = handles.float()[:, None, None, :]                             # pairs x 1 x 1 x 2
    drags = (targets.float() - handles.float())[:, None, None, :]
    away = cells[None] - starts                                            # A -> C, pairs x h x w x 2
    distance = away.norm(dim=-1)
    # P = A + s (C - A) on the circle |P - O| = R, the root s > 0; the cell moves (s - 1) / s of the drag
    offset = starts - centre
    a = (away * away).sum(-1)
    b = 2 * (offset * away).sum(-1)
    c = (offset * offset).sum(-1) - radius ** 2
    root = (b * b - 4 * a * c).clamp(min=0).sqrt()
    s = (-b + root) / (2 * a).clamp(min=1e-12)
    share = torch.where(a > 0, (1 - 1 / s.clamp(min=1e-12)).clamp(0, 1), torch.ones_like(s))
    share = torch.where(c < 0, share, torch.where(a > 0, torch.zeros_like(s), share))  # a handle outside the circle
    weight = 1 / distance.clamp(min=1e-6)
    if cores is not None and cores.any():
        share = torch.where(cores, torch.ones_like(share), share)
        in_a_core = cores.any(dim=0, keepdim=True)
        weight = torch.where(in_a_core & ~cores, torch.zeros_like(weight), weight)
    weight = weight / weight.sum(dim=0, keepdim=True)
    moves = (weight[..., None] * share[..., None] * drags).sum(dim=0)
    total_share = (weight * share).sum(dim=0)
    moves = torch.where(region[..., None], moves, torch.zeros_like(moves))
    return moves, torch.where(region, total_share, torch.zeros_like(total_share))


def move_cells(latent: torch.Tensor, region: torch.Tensor, moves: torch.Tensor, share: torch.Tensor,
               handle_side_wins: bool, core: Optional[torch.Tensor] = None
               ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(moved latent, holes, moved core): the region cleared (holes hold zeros), then every region
    cell's latent written at cell + move (rounded half up) where that is a region cell; outside the region the
    latent stays. The moved core marks the cells where a cell of `core` (hxw bool) was written."""
    height, width = region.shape
    flat_region = region.flatten()
    sources = flat_region.nonzero(as_tuple=True)[0]                         # raster order
    xs, ys = sources % width, sources // width
    # half-cells round up, never to even: torch.round's banker's rounding would send the cells of a
    # rigid core moved by n + 0.5 to alternate columns, tearing the object into stripes
    to_x = (xs + moves[..., 0].flatten()[sources] + 0.5).floor().long()
    to_y = (ys + moves[..., 1].flatten()[sources] + 0.5).floor().long()
    inside = (to_x >= 0) & (to_x < width) & (to_y >= 0) & (to_y < height)
    sources, to_x, to_y = sources[inside], to_x[inside], to_y[inside]
    destinations = to_y * width + to_x
    landed = flat_region[destinations]
    sources, destinations = sources[landed], destinations[landed]
    # Rank the candidates so that the better one ranks higher: the larger share of its drag (when
    # the handle's side wins), then the earlier in raster order.
    order = torch.arange(len(sources) - 1, -1, -1, device=latent.device)     # later raster first
    if handle_side_wins:
        order = order[torch.sort(share.flatten()[sources][order], stable=True).indices]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=latent.device)
    best = torch.full((height * width,), -1, dtype=torch.long, device=latent.device)
    best = best.scatter_reduce(0, destinations, rank, reduce="amax")
    written = best >= 0
    winners = sources[order[best[written]]]
    flat = latent.flatten(2).clone()
    flat[:, :, flat_region] = 0
    flat[:, :, written.nonzero(as_tuple=True)[0]] = latent.flatten(2)[:, :, winners]
    holes = flat_region & ~written
    moved_core = torch.zeros_like(flat_region)
    if core is not None:
        moved_core[written] = core.flatten()[winners]
    return flat.view_as(latent), holes.view(height, width), moved_core.view(height, width)


def fill_holes(latent: torch.Tensor, holes: torch.Tensor, fallback: torch.Tensor,
               moved_object: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Every hole takes the nearest filled cells to its left, right, above and below (those that
    exist), weighted by 1 / distance. Cells of `moved_object` (where a rigid core landed) are looked
    past where possible: what the object uncovers is background, and filling it from the object
    would leave a trail. A hole with no filled cell in its row and column takes `fallback`'s value."""
    if not holes.any():
        return latent
    height, width = holes.shape
    ys, xs = torch.meshgrid(torch.arange(height, device=latent.device), torch.arange(width, device=latent.device),
                            indexing="ij")

    def nearest(valid: torch.Tensor, axis: int, backwards: bool) -> torch.Tensor:
        """Index along `axis` of the nearest valid cell before each cell (after it when `backwards`); -1: none."""
        index = (ys if axis == 0 else xs)
        if backwards:
            length = valid.shape[axis]
            flipped = torch.where(valid.flip(axis), index, -1).cummax(dim=axis).values
            return torch.where(flipped >= 0, length - 1 - flipped, -1).flip(axis)
        return torch.where(valid, index, -1).cummax(dim=axis).values

    def from_cells(valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The 1 / distance-weighted mean of the nearest `valid` cells in the four directions, and the weights' sum."""
        filled = torch.zeros_like(latent)
        total = torch.zeros((height, width), device=latent.device, dtype=latent.dtype)
        for axis in (0, 1):
            for backwards in (False, True):
                found = nearest(valid, axis, backwards)
                exists = found >= 0
                distance = ((ys if axis == 0 else xs) - found).abs().clamp(min=1).to(latent.dtype)
                weight = torch.where(exists, 1 / distance, torch.zeros_like(distance))
                source_y = torch.where(exists, found, 0) if axis == 0 else ys
                source_x = xs if axis == 0 else torch.where(exists, found, 0)
                filled += weight * latent[:, :, source_y, source_x]
                total += weight
        return filled / total.clamp(min=1e-12), total > 0

    filled, found = from_cells(~holes)
    if moved_object is not None and moved_object.any():
        background, found_background = from_cells(~holes & ~moved_object)
        filled = torch.where(found_background, background, filled)
    filled = torch.where(found, filled, fallback)
    return torch.where(holes, filled, latent)


def warp(latent: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor, config: DragConfig,
         editable: Optional[np.ndarray] = None, features: Optional[torch.Tensor] = None) -> WarpOutcome:
    """FastDrag's one-step warp of the inverted `latent` (1xCxhxw) for pairs `handles` -> `targets`
    (pairs x 2, latent cells, x then y). `features` (1xCxHxW of the original picture) locate the
    handles' objects for the rigid core; without them, or with `fastdrag_rigid_core` off, every
    cell follows FastDrag's elastic field."""
    height, width = latent.shape[-2:]
    handles, targets = handles.float().to(latent.device), targets.float().to(latent.device)
    region = editable_region(editable, (height, width), handles, targets)
    if not region.any():
        region = editable_region(None, (height, width), handles, targets)
    cores = torch.zeros((len(handles), height, width), dtype=torch.bool, device=latent.device)
    if config.fastdrag_rigid_core and features is not None:
        cores = object_cores(features, handles, region, config.fastdrag_core_similarity)
    moves, share = warp_field(region, handles, targets, cores)
    moved, holes, moved_core = move_cells(latent, region, moves, share, config.fastdrag_handle_side_wins,
                                          cores.any(dim=0))
    return WarpOutcome(fill_holes(moved, holes, latent, moved_core), region, moves, cores, holes)


def latent_points(points: Sequence[XY], image_size: Tuple[int, int], latent_size: Tuple[int, int]) -> torch.Tensor:
    """Input-image pixels (x, y) -> latent cells, continuous: pixel centres to cell centres (a cell's
    index is its centre's coordinate)."""
    scale = GridScale(image_size, latent_size[::-1])
    return torch.tensor([scale.centre_to_grid(point) for point in points], dtype=torch.float32)


def image_points(cells: torch.Tensor, image_size: Tuple[int, int], latent_size: Tuple[int, int]) -> List[XY]:
    """Latent cells -> input-image pixels, the inverse of `latent_points`, to 2 decimals."""
    scale = GridScale(image_size, latent_size[::-1])
    return [tuple(round(v, 2) for v in scale.centre_to_image(cell)) for cell in cells.tolist()]


def drag(inputs: DragInputs) -> DragOutcome:
    """The method's step 3 in the drag pipeline: the inverted latent warped once (no optimisation,
    no tracking); what the denoising keeps of the original (1 outside the editable region) and
    the frames of the picture taking shape while it denoises."""
    config, latent, report, image_size = inputs.config, inputs.latent, inputs.report, inputs.grid.image_size
    latent_size = tuple(latent.shape[-2:])
    handles = latent_points([p.handle for p in inputs.pairs], image_size, latent_size)
    targets = latent_points([p.target for p in inputs.pairs], image_size, latent_size)
    to_image = lambda cells: image_points(torch.as_tensor(cells)[None], image_size, latent_size)[0]
    report(Progress("drag", 0, 1, handles=[p.handle for p in inputs.pairs]))
    # the handle's object is found with the verdict's locating features of the original
    features = inputs.locating_features() if config.fastdrag_rigid_core else None
    warped = warp(latent, handles, targets, config, inputs.editable, features)
    columns, rows = zip(*(nearest_cell(h, latent_size[1], latent_size[0]) for h in handles.tolist()))
    arrived = handles + warped.moves[list(rows), list(columns)].cpu()   # where the field sends each handle
    arrived_pixels = [to_image(h) for h in arrived]
    report(Progress("drag", 1, 1, handles=arrived_pixels))

    def on_denoised(step, count, clean):
        if step % config.preview_every == 0 or step == count:
            report(Progress("denoise", step, count, handles=arrived_pixels,
                            preview=tensor_to_image(decode(inputs.model, clean))))

    return DragOutcome(
        original=latent, edited=warped.latent, resume_index=inputs.start_index, handles=arrived_pixels,
        trajectory=[[to_image(h) for h in step] for step in (handles.tolist(), arrived.tolist())], steps=0,
        tracker_reached=bool(((arrived - targets).norm(dim=-1) < 1.0).all()),
        keep=(~warped.region).to(latent.dtype)[None, None], on_denoised=on_denoised if config.preview_every else None)
