"""Point pairs: the one form a handle -> target pair takes from a click (or a file, or the
command line) to the drag.

Coordinates are input-image pixels, x to the right and y down, in the image as it is displayed
(after its EXIF orientation is applied).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Iterable, List, Sequence, Tuple, Union

import numpy as np

from .errors import InputError

Point = Tuple[float, float]


class PointPair(dict):
    """A handle -> target pair. It *is* its JSON form, {"handle": [x, y], "target": [x, y]} (so
    `json.dumps` writes it and it compares equal to the dict or tuple form a user typed), read-only,
    with `handle` and `target` as (x, y) floats."""

    __slots__ = ()

    def __init__(self, handle: Sequence[float], target: Sequence[float]):
        super().__init__(handle=(_number(handle[0]), _number(handle[1])), target=(_number(target[0]), _number(target[1])))

    @classmethod
    def of(cls, item, index: int = 0) -> "PointPair":
        """A pair from a PointPair, {"handle": [x, y], "target": [x, y]} or ((hx, hy), (tx, ty));
        `index` (from 0) names it in the error."""
        if isinstance(item, PointPair):
            return item
        try:
            handle, target = (item["handle"], item["target"]) if isinstance(item, Mapping) else item
            return cls((float(handle[0]), float(handle[1])), (float(target[0]), float(target[1])))
        except (KeyError, TypeError, ValueError, IndexError):
            raise InputError(
                f"point pair {index + 1} ({item!r}) is not understood; use "
                "{'handle': [x, y], 'target': [x, y]} or ((hx, hy), (tx, ty))") from None

    @property
    def handle(self) -> Point:
        return tuple(map(float, self["handle"]))

    @property
    def target(self) -> Point:
        return tuple(map(float, self["target"]))

    def to_dict(self) -> dict:
        """A plain dict with lists, whole numbers staying whole, as a user typed them."""
        return {"handle": list(self["handle"]), "target": list(self["target"])}

    def __eq__(self, other) -> bool:
        if not isinstance(other, PointPair):
            try:
                other = PointPair.of(other)
            except InputError:
                return NotImplemented
        return (self.handle, self.target) == (other.handle, other.target)

    def __ne__(self, other) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash((self.handle, self.target))

    def __repr__(self) -> str:
        return f"PointPair(handle={self['handle']}, target={self['target']})"

    def __reduce__(self):
        return PointPair, (self["handle"], self["target"])

    def _read_only(self, *args, **kwargs):
        raise TypeError("a PointPair is read-only: make a new one (PointPair(handle, target))")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only


def _number(value) -> float:
    value = float(value)
    return int(value) if value.is_integer() else value


def parse_points_text(text: str) -> List[PointPair]:
    """Parse the CLI form "hx,hy,tx,ty[;hx,hy,tx,ty...]"."""
    numbers = []
    for chunk in text.replace(";", ",").split(","):
        chunk = chunk.strip()
        if not chunk:
            continue
        try:
            numbers.append(float(chunk))
        except ValueError:
            raise InputError(f"--points: {chunk!r} is not a number; expected \"hx,hy,tx,ty[;hx,hy,tx,ty...]\"") from None
    if len(numbers) % 4:
        raise InputError(
            f"--points: got {len(numbers)} numbers; each pair needs 4 (handle x,y then target x,y), "
            f"e.g. \"10,20,30,20;40,40,40,60\"")
    return [PointPair((numbers[i], numbers[i + 1]), (numbers[i + 2], numbers[i + 3]))
            for i in range(0, len(numbers), 4)]


def as_pairs(points: Union[str, Iterable]) -> List[PointPair]:
    """Pairs in any accepted form -> PointPairs: PointPair, {"handle": [x, y], "target": [x, y]},
    ((hx, hy), (tx, ty)), a flat list alternating handle and target (the DragBench layout) or the
    CLI's text. Not yet checked against an image (`normalise_points` does that)."""
    if isinstance(points, str):
        return parse_points_text(points)
    items = list(points)
    if items and all(_is_xy(item) for item in items):
        if len(items) % 2:
            raise InputError(f"a flat point list alternates handle and target, but has {len(items)} points")
        items = [(items[i], items[i + 1]) for i in range(0, len(items), 2)]
    return [PointPair.of(item, index) for index, item in enumerate(items)]


def normalise_points(points: Union[str, Iterable], width: int, height: int) -> List[PointPair]:
    """`as_pairs`, checked against a width x height image: at least one pair, every point finite
    and on the image, no handle on its own target."""
    pairs = as_pairs(points)
    if not pairs:
        raise InputError("no point pairs given: add at least one handle -> target pair")
    for index, pair in enumerate(pairs, start=1):
        for role, (x, y) in (("handle", pair.handle), ("target", pair.target)):
            if not (math.isfinite(x) and math.isfinite(y)):
                raise InputError(f"pair {index}: {role} ({x}, {y}) is not a finite point")
            if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
                raise InputError(
                    f"pair {index}: {role} ({x:g}, {y:g}) is outside the {width}x{height} image "
                    f"(x must be in 0..{width - 1}, y in 0..{height - 1})")
        if pair.handle == pair.target:
            raise InputError(
                f"pair {index}: handle and target are the same point ({pair.handle[0]:g}, {pair.handle[1]:g}); "
                "move the target or remove the pair")
    return pairs


def _is_xy(item) -> bool:
    return isinstance(item, (list, tuple, np.ndarray)) and len(item) == 2 and all(
        isinstance(v, (int, float, np.integer, np.floating)) for v in item)
