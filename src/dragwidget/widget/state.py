"""The editable state of one image: point pairs, a pending handle, the mask, and undo/redo.

Pure Python and numpy (no widgets), so it can be tested and reasoned about on its own. Every
coordinate is in image pixels: x to the right, y down, pixel (i, j) centred on (i, j).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

XY = Tuple[float, float]


def pair_dict(handle: Sequence[float], target: Sequence[float]) -> dict:
    return {"handle": [_number(handle[0]), _number(handle[1])], "target": [_number(target[0]), _number(target[1])]}


def _number(value) -> float:
    value = float(value)
    return int(value) if value.is_integer() else value


@dataclass
class _Snapshot:
    label: str
    points: List[dict]
    pending: Optional[XY]
    mask: Optional[Tuple[np.ndarray, Tuple[int, int]]]   # packed bits and shape; None = unchanged


def paint_capsule(mask: np.ndarray, start: XY, end: XY, radius: float, value: bool) -> Optional[Tuple[int, int, int, int]]:
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
    if length2 > 0:
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / length2, 0.0, 1.0)
    else:
        t = 0.0
    inside = (xs - (ax + t * dx)) ** 2 + (ys - (ay + t * dy)) ** 2 <= radius * radius
    mask[y0:y1, x0:x1][inside] = value
    return x0, y0, x1, y1


class EditState:
    """Points, pending handle and mask of an image of `width` x `height`, with an undo history.

    Each action (a point, a stroke, a clear, a change from Python) is one undo step.
    Thread-safe: every method takes the state's lock.
    """

    def __init__(self, width: int, height: int, max_history: int = 200):
        self.width, self.height = int(width), int(height)
        self.points: List[dict] = []
        self.pending: Optional[XY] = None
        self.mask = np.zeros((self.height, self.width), dtype=bool)
        self.max_history = max_history
        self._undo: List[_Snapshot] = []
        self._redo: List[_Snapshot] = []
        self._stroke: Optional[_Snapshot] = None
        self._stroke_at: Optional[XY] = None
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ history
    def _snapshot(self, label: str, with_mask: bool) -> _Snapshot:
        packed = (np.packbits(self.mask), self.mask.shape) if with_mask else None
        return _Snapshot(label, [dict(handle=list(p["handle"]), target=list(p["target"])) for p in self.points],
                         self.pending, packed)

    def _record(self, snapshot: _Snapshot) -> None:
        self._undo.append(snapshot)
        del self._undo[:-self.max_history]
        self._redo.clear()

    def _restore(self, snapshot: _Snapshot) -> _Snapshot:
        """Put `snapshot` in place; return the state it replaced (for the other stack)."""
        current = self._snapshot(snapshot.label, with_mask=snapshot.mask is not None)
        self.points = snapshot.points
        self.pending = snapshot.pending
        if snapshot.mask is not None:
            packed, shape = snapshot.mask
            self.mask = np.unpackbits(packed, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        return current

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> Optional[str]:
        """Undo the last action; return its label, or None when there is nothing to undo."""
        with self.lock:
            self.end_stroke()
            if not self._undo:
                return None
            snapshot = self._undo.pop()
            self._redo.append(self._restore(snapshot))
            return snapshot.label

    def redo(self) -> Optional[str]:
        with self.lock:
            if not self._redo:
                return None
            snapshot = self._redo.pop()
            self._undo.append(self._restore(snapshot))
            return snapshot.label

    def clear_history(self) -> None:
        with self.lock:
            self._undo.clear()
            self._redo.clear()
            self._stroke = None

    # ------------------------------------------------------------------ points
    def clamp(self, x: float, y: float) -> XY:
        return min(max(x, 0), self.width - 1), min(max(y, 0), self.height - 1)

    def add_point(self, x: float, y: float) -> str:
        """A click in points mode: a new handle, or the target of the pending handle."""
        with self.lock:
            x, y = self.clamp(x, y)
            if self.pending is None:
                self._record(self._snapshot("handle", with_mask=False))
                self.pending = (x, y)
                return "handle"
            if (x, y) == tuple(self.pending):
                return "ignored"  # a target on its handle would be refused by the engine
            self._record(self._snapshot("target", with_mask=False))
            self.points = self.points + [pair_dict(self.pending, (x, y))]
            self.pending = None
            return "target"

    def drop_pending(self) -> bool:
        with self.lock:
            if self.pending is None:
                return False
            self._record(self._snapshot("drop handle", with_mask=False))
            self.pending = None
            return True

    def clear_points(self) -> bool:
        with self.lock:
            if not self.points and self.pending is None:
                return False
            self._record(self._snapshot("clear points", with_mask=False))
            self.points, self.pending = [], None
            return True

    def remove_pair(self, index: int) -> bool:
        """Remove pair `index` (one undo step); False when there is no such pair."""
        with self.lock:
            if not 0 <= index < len(self.points):
                return False
            self._record(self._snapshot("delete pair", with_mask=False))
            self.points = self.points[:index] + self.points[index + 1:]
            return True

    def set_points(self, points: List[dict], record: bool = True) -> None:
        with self.lock:
            if record:
                self._record(self._snapshot("set points", with_mask=False))
            self.points = [pair_dict(p["handle"], p["target"]) for p in points]
            self.pending = None

    # ------------------------------------------------------------------ mask
    def begin_stroke(self, x: float, y: float, radius: float, erase: bool) -> Optional[Tuple[int, int, int, int]]:
        with self.lock:
            self.end_stroke()
            self._stroke = self._snapshot("erase" if erase else "stroke", with_mask=True)
            self._stroke_erase = erase
            self._stroke_at = (x, y)
            return paint_capsule(self.mask, (x, y), (x, y), radius, not erase)

    @property
    def stroking(self) -> bool:
        return self._stroke is not None

    def continue_stroke(self, x: float, y: float, radius: float) -> Optional[Tuple[int, int, int, int]]:
        with self.lock:
            if self._stroke is None:
                return None
            box = paint_capsule(self.mask, self._stroke_at, (x, y), radius, not self._stroke_erase)
            self._stroke_at = (x, y)
            return box

    def end_stroke(self) -> bool:
        """Finish the stroke in progress; True when it changed the mask (and is now an undo step)."""
        with self.lock:
            if self._stroke is None:
                return False
            snapshot, self._stroke = self._stroke, None
            packed, _ = snapshot.mask
            if np.array_equal(packed, np.packbits(self.mask)):
                return False
            self._record(snapshot)
            return True

    def clear_mask(self) -> bool:
        with self.lock:
            self.end_stroke()
            if not self.mask.any():
                return False
            self._record(self._snapshot("clear mask", with_mask=True))
            self.mask = np.zeros_like(self.mask)
            return True

    def set_mask(self, mask: np.ndarray, record: bool = True) -> None:
        with self.lock:
            self.end_stroke()
            if record:
                self._record(self._snapshot("set mask", with_mask=True))
            self.mask = np.array(mask, dtype=bool, copy=True)
