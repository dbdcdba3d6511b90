"""What a front end asks of the engine (`DragRequest`) and what it gets back (`DragResult`), and
the one check that turns a request's points and mask into a `CheckedRequest` before any work."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from .config import DragConfig
from .drag_verdict import Verdict
from .errors import InputError
from .feature_grid import FeatureGrid
from .image_input import ImageLike, load_image, load_mask
from .points import PointPair, as_pairs, normalise_points
from .prepared_image import PreparedImage
from .progress import XY


@dataclass
class DragRequest:
    """What a front end asks for: drag `points` of `image` (or of an already prepared image).

    `points` may be given in any form `points.as_pairs` reads; the request keeps them as PointPairs."""

    image: Optional[ImageLike]
    points: Sequence[PointPair]
    mask: object = None
    prompt: str = ""
    config: Optional[DragConfig] = None
    prepared: Optional[PreparedImage] = None

    def __post_init__(self):
        self.points = as_pairs(self.points)

    def picture(self) -> Image.Image:
        if self.image is None:
            raise InputError("a request needs an image (or an already prepared image)")
        return load_image(self.image)


@dataclass(frozen=True)
class CheckedRequest:
    """A drag's points and mask, checked once against its image on the way in."""

    pairs: List[PointPair]
    editable: Optional[np.ndarray]     # True = may change, at the image's size; None = no mask
    grid: FeatureGrid


def check_drag_request(points, mask, image_size: Tuple[int, int], working_size: Tuple[int, int],
                       config: DragConfig) -> CheckedRequest:
    """Every check of a drag's input before any work: pairs on the image, long enough for the
    feature grid, and a readable mask."""
    pairs = normalise_points(points, *image_size)
    grid = FeatureGrid.for_image(image_size, working_size, config)
    check_drag_lengths(pairs, grid, config)
    return CheckedRequest(pairs, load_mask(mask, *image_size), grid)


def check_drag_lengths(pairs: List[PointPair], grid: FeatureGrid, config: DragConfig) -> None:
    """Refuse pairs that would count as reached before moving: the drag stops as soon as every
    handle is within `config.reach_threshold` feature-grid cells of its target."""
    for index, pair in enumerate(pairs, start=1):
        cells = grid.grid_distance(pair.handle, pair.target)
        if cells < config.reach_threshold:
            raise InputError(
                f"pair {index}: handle ({pair.handle[0]:g}, {pair.handle[1]:g}) -> target ({pair.target[0]:g}, "
                f"{pair.target[1]:g}) is {math.dist(pair.handle, pair.target):.1f} px long, "
                f"{cells:g} cells of the {grid.shape[1]}x{grid.shape[0]} feature grid; the drag stops "
                f"when a handle is within reach_threshold={config.reach_threshold:g} cells of its target, so this "
                f"pair would not move. Make it at least about {config.reach_threshold * grid.cell:.1f} px long "
                "(or lower reach_threshold)")


@dataclass
class DragPreview:
    """The edited picture of a drag, not judged (`DragEditor.preview`, a live preview)."""

    image: Image.Image                 # edited, at the input's size
    pairs: List[PointPair]
    handles: List[XY]                  # where the method believes the handles are, input-image pixels
    trajectory: List[List[XY]]
    tracker_reached: bool
    steps: int
    timings: Dict[str, float]          # seconds per stage
    reused: Dict[str, str]             # what came from a cache: {"lora": ..., "inversion": ...}
    kept_outside_mask: bool = False


@dataclass
class DragResult:
    image: Image.Image                 # edited, at the input's size
    original: Image.Image
    pairs: List[PointPair]
    handles: List[XY]                  # where the handles ended, input-image pixels
    trajectory: List[List[XY]]         # handle positions after every step, input-image pixels
    reached: bool                      # the verdict on the picture: every handle's content arrived, intact
    verdict: Verdict                   # per pair: where its content was found, how far from the target, intact?
    tracker_reached: bool              # what point tracking believed (it can be fooled: see drag_verdict)
    steps: int
    timings: Dict[str, float]
    config: DragConfig
    mask: Optional[np.ndarray]
    reused: Dict[str, str]             # what came from a cache: {"lora": ..., "inversion": ...}
    kept_outside_mask: bool = False    # the original's pixels were kept outside the mask (config.keep_outside_mask)

    @property
    def says(self) -> str:
        """The verdict in words, its category first, e.g. "reached, shape kept: the grabbed region
        is 1.0 px from the target, 96 % of it in place"."""
        return self.verdict.describe()

    def report(self) -> dict:
        """Everything but the pictures, as JSON-ready data."""
        return {
            "image_size": list(self.image.size),
            "pairs": [pair.to_dict() for pair in self.pairs],
            "final_handles": [list(h) for h in self.handles],
            "trajectory": [[list(h) for h in step] for step in self.trajectory],
            "reached": self.reached,
            "verdict": self.verdict.to_dict(),
            "tracker_reached": self.tracker_reached,
            "steps": self.steps,
            "timings": self.timings,
            "reused": self.reused,
            "kept_outside_mask": self.kept_outside_mask,
            "config": self.config.to_dict(),
        }
