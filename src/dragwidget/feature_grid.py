"""Grids laid over a picture, and the one conversion of points between a picture's pixels and a
grid's cells (`GridScale`).

The drag's supervision grid (`FeatureGrid`): UNet features upsampled to `feature_scale` of the
working size (half of it in the reference, 256x256 for a 512-px image). Points arrive in the input
image's pixels and go back to them in the result. The feature maps, the verdict's locating grid and
FastDrag's latent cells convert through the same `GridScale`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

XY = Tuple[float, float]


def grid_shape(working_size: Tuple[int, int], feature_scale: float) -> Tuple[int, int]:
    """(height, width) of the feature map the drag works on, for a (width, height) working size."""
    width, height = working_size
    return max(1, round(height * feature_scale)), max(1, round(width * feature_scale))


@dataclass(frozen=True)
class GridScale:
    """A (width, height) grid stretched over a (width, height) picture. Corner-aligned: grid point
    (0, 0) is the picture's corner and the scale is the same everywhere (the reference's handle
    scaling; offsets scale the same way); `centre_*`: cell centres on pixel centres (FastDrag's
    latent cells, where a cell's index is its centre's coordinate)."""

    image_size: Tuple[int, int]
    grid_size: Tuple[int, int]

    def to_grid(self, point: Sequence[float]) -> XY:
        return tuple(float(v) * g / s for v, g, s in zip(point, self.grid_size, self.image_size))

    def to_image(self, point: Sequence[float]) -> XY:
        return tuple(float(v) * s / g for v, g, s in zip(point, self.grid_size, self.image_size))

    def centre_to_grid(self, point: Sequence[float]) -> XY:
        return tuple((float(v) + 0.5) * g / s - 0.5 for v, g, s in zip(point, self.grid_size, self.image_size))

    def centre_to_image(self, point: Sequence[float]) -> XY:
        return tuple((float(v) + 0.5) * s / g - 0.5 for v, g, s in zip(point, self.grid_size, self.image_size))


@dataclass(frozen=True)
class FeatureGrid:
    image_size: Tuple[int, int]     # (width, height) of the input image
    shape: Tuple[int, int]          # (height, width) of the grid

    @classmethod
    def for_image(cls, image_size: Tuple[int, int], working_size: Tuple[int, int], config) -> "FeatureGrid":
        return cls(tuple(image_size), grid_shape(working_size, config.feature_scale))

    @property
    def scale(self) -> GridScale:
        return GridScale(self.image_size, (self.shape[1], self.shape[0]))

    @property
    def cell(self) -> float:
        """Input pixels per grid cell (the larger of the two axes)."""
        return max(self.image_size[0] / self.shape[1], self.image_size[1] / self.shape[0])

    def to_grid(self, point: Sequence[float]) -> XY:
        """Input pixel (x, y) -> the grid cell it falls in, rounded as the reference does.

        The reference's x * grid / width sends the last column(s) one past the grid's end when the
        input is more than twice the grid's size; those are clamped onto the last cell, where their
        content is. Every other point maps as in the reference.
        """
        (x, y), (rows, columns) = self.scale.to_grid(point), self.shape
        return float(min(round(x), columns - 1)), float(min(round(y), rows - 1))

    def to_image(self, point: Sequence[float]) -> XY:
        """Grid (x, y) -> input pixels, to 2 decimals (what results and progress events report)."""
        x, y = self.scale.to_image(point)
        return round(x, 2), round(y, 2)

    def grid_distance(self, handle: Sequence[float], target: Sequence[float]) -> float:
        return math.dist(self.to_grid(handle), self.to_grid(target))
