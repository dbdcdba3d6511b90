"""A press, moves and a release in points mode: a click (what the press did stays) or, once the
pointer has moved `DRAG_START` display pixels with the button held, a live drag whose target
follows the pointer until the release commits it.

What the press did decides what the drag moves: a press that set a new handle drags that pair's
target out of it; one that set the pending handle's target moves that target; a press on an
existing target (with no handle pending) picks that target up. Pure Python: the canvas applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..api import PointPair

DRAG_START = 4.0   # display pixels: less is a click that wobbled

XY = Tuple[float, float]


@dataclass
class LiveDrag:
    start: XY                       # the press, display pixels
    made: str                       # what the press did: "handle" (a new pending handle) or "target" (a pair)
    grabbed: Optional[int] = None   # the pair whose target the press was on (with no handle pending)
    target: Optional[XY] = None     # where the pointer has the target now (image pixels); None: not a drag yet

    def follow(self, xy_display: Sequence[float], xy_image: XY) -> bool:
        """The pointer is at `xy_display` (`xy_image` in the picture) with the button held; True
        when that changed the live pair."""
        if self.target is None and math.dist(self.start, xy_display) < DRAG_START:
            return False
        changed = self.target != tuple(xy_image)
        self.target = tuple(xy_image)
        return changed

    @property
    def dragging(self) -> bool:
        return self.target is not None

    @property
    def label(self) -> str:
        """The undo step's name once committed."""
        return "drag pair" if self.made == "handle" and self.grabbed is None else "move target"

    def pairs(self, points: Sequence[PointPair], pending: Optional[Sequence[float]]) -> List[PointPair]:
        """`points` with the live pair in place: the new pair from the pending handle, or the
        moved target. A target on its own handle is left where it was (the engine would refuse it)."""
        points = list(points)
        if not self.dragging:
            return points
        if self.made == "handle" and self.grabbed is None:
            return points + ([PointPair(pending, self.target)] if tuple(pending) != self.target else [])
        index = self.grabbed if self.grabbed is not None else len(points) - 1
        if points[index].handle != tuple(map(float, self.target)):
            points[index] = PointPair(points[index].handle, self.target)
        return points
