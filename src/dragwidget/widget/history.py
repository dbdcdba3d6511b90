"""Undo and redo of an image's edits, the brush that paints the mask, and the trait that holds it.

Pure Python, numpy and traitlets (no widgets). The edit data itself (points, pending handle, mask) lives in
the canvas's traits; the history only keeps earlier values of them. Every coordinate is in image
pixels: x to the right, y down, pixel (i, j) centred on (i, j).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import traitlets

from ..api import PointPair

XY = Tuple[float, float]
Box = Tuple[int, int, int, int]


class Checked(traitlets.Any):
    """Any value, None included, goes through the owner's validator (plain Any lets None by)."""

    allow_none = False


def paint_capsule(mask: np.ndarray, start: XY, end: XY, radius: float, value: bool) -> Optional[Box]:
    """Set every pixel whose centre lies within `radius` of the segment start-end to `value`.

    Returns the touched box (x0, y0, x1, y1), end-exclusive, or None when it misses the image.
    """
    height, width = mask.shape
    radius = max(0.5, float(radius))
    x0 = max(0, int(np.floor(min(start[0], end[0]) - radius)))
    y0 = max(0, int(np.floor(min(start[1], end[1]) - radius)))
    x1 = min(width, int(np.ceil(max(start[0], end[0]) + radius)) + 1)
    y1 = min(height, int(np.ceil(max(start[1], end[1]) + radius)) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    ax, ay = float(start[0]), float(start[1])
    dx, dy = float(end[0]) - ax, float(end[1]) - ay
    length2 = dx * dx + dy * dy
    t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
    inside = (xs - (ax + t * dx)) ** 2 + (ys - (ay + t * dy)) ** 2 <= radius * radius
    mask[y0:y1, x0:x1][inside] = value
    return x0, y0, x1, y1


class Stroke:
    """A mask stroke in progress: painted on a copy of the mask, which becomes the mask when it ends."""

    def __init__(self, mask: np.ndarray, x: float, y: float, radius: float, erase: bool):
        self.mask = mask.copy()
        self.erase = erase
        self.at = (x, y)
        self.first_box = paint_capsule(self.mask, self.at, self.at, radius, not erase)

    def extend(self, x: float, y: float, radius: float) -> Optional[Box]:
        box = paint_capsule(self.mask, self.at, (x, y), radius, not self.erase)
        self.at = (x, y)
        return box


@dataclass(frozen=True)
class Snapshot:
    """The edit data at one moment; `mask` packed (bits, shape)."""

    label: str
    points: Tuple[PointPair, ...]
    pending: Optional[XY]
    mask: Tuple[np.ndarray, Tuple[int, int]]

    @classmethod
    def of(cls, label: str, points: List[PointPair], pending: Optional[Sequence[float]], mask: np.ndarray
           ) -> "Snapshot":
        return cls(label, tuple(points),
                   None if pending is None else tuple(pending), (np.packbits(mask), mask.shape))

    def unpacked_mask(self) -> np.ndarray:
        packed, shape = self.mask
        return np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)


class EditHistory:
    """Earlier and undone states of the edit data; each action is one step."""

    def __init__(self, max_history: int = 200):
        self.max_history = max_history
        self._undo: List[Snapshot] = []
        self._redo: List[Snapshot] = []

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def record(self, before: Snapshot) -> None:
        """An action is about to change the data, which is `before` now."""
        self._undo.append(before)
        del self._undo[:-self.max_history]
        self._redo.clear()

    def undo(self, current: Snapshot) -> Optional[Snapshot]:
        """The state to go back to (`current` is kept for redo), or None when there is none."""
        return self._move(self._undo, self._redo, current)

    def redo(self, current: Snapshot) -> Optional[Snapshot]:
        return self._move(self._redo, self._undo, current)

    @staticmethod
    def _move(source: List[Snapshot], destination: List[Snapshot], current: Snapshot) -> Optional[Snapshot]:
        if not source:
            return None
        snapshot = source.pop()
        destination.append(Snapshot(snapshot.label, current.points, current.pending, current.mask))
        return snapshot

    def relabel(self, label: str) -> None:
        """The last step stands for a longer action now (a press that became a drag)."""
        if self._undo:
            self._undo[-1] = dataclasses.replace(self._undo[-1], label=label)

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()
