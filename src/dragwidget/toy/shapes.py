"""Procedural scenes of simple shapes, with captions and exact ground truth.

A scene is one to three objects (disc, square, triangle and the non-convex cross) of distinct
saturated colours on a plain, gradient or lightly textured background of a desaturated colour,
so that every object can be found again by its colour. Scenes are parametric: an object can be
re-rendered anywhere, which gives the ground truth of a drag.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import List, Tuple

import numpy as np
from PIL import Image

OBJECT_COLORS = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 205, 40),
    "magenta": (205, 50, 185), "cyan": (40, 195, 205), "orange": (245, 135, 30), "purple": (120, 60, 185),
}
BACKGROUND_COLORS = {
    "grey": (128, 128, 128), "white": (236, 236, 232), "black": (28, 28, 30), "beige": (214, 200, 170),
    "brown": (105, 78, 58),
}
SHAPES = ("disc", "square", "triangle", "cross")
BACKGROUND_KINDS = ("plain", "gradient", "textured")
SUPERSAMPLING = 3
IMAGE_SIZE = 64  # the toy model's resolution: a full edit takes seconds on two CPU cores


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    center: Tuple[float, float]   # (x, y) in pixels
    radius: float                 # circumradius in pixels
    angle: float                  # radians

    @property
    def rgb(self) -> Tuple[int, int, int]:
        return OBJECT_COLORS[self.color]

    def moved(self, dx: float, dy: float) -> "SceneObject":
        return replace(self, center=(self.center[0] + dx, self.center[1] + dy))

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color_name": self.color, "color": list(self.rgb),
                "center": list(self.center), "radius": self.radius, "angle": self.angle}


@dataclass(frozen=True)
class Scene:
    size: int
    background: str                       # plain | gradient | textured
    background_colors: Tuple[str, ...]    # one, or two for a gradient
    texture_seed: int
    objects: Tuple[SceneObject, ...] = field(default_factory=tuple)

    @property
    def caption(self) -> str:
        names = [f"a {o.color} {o.shape}" for o in self.objects]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        if self.background == "gradient":
            where = f"on a {self.background_colors[0]} to {self.background_colors[1]} gradient background"
        elif self.background == "textured":
            where = f"on a textured {self.background_colors[0]} background"
        else:
            where = f"on a {self.background_colors[0]} background"
        return f"{listed} {where}"

    def with_object(self, index: int, obj: SceneObject) -> "Scene":
        objects = list(self.objects)
        objects[index] = obj
        return replace(self, objects=tuple(objects))

    # The picture interface ShapesBench scores against (shared with drawn_pictures.DrawnPicture).
    def render(self) -> np.ndarray:
        return render(self)

    def object_masks(self) -> List[np.ndarray]:
        return object_masks(self)

    def coverage(self, obj: SceneObject) -> np.ndarray:
        return coverage(obj, self.size)

    @property
    def palette(self) -> List[tuple]:
        """Every colour the scene was drawn with: its objects' and its background's."""
        return [o.rgb for o in self.objects] + [BACKGROUND_COLORS[c] for c in self.background_colors]


def caption_vocabulary() -> List[str]:
    words = {"a", "and", "on", "to", "gradient", "textured", "background", *SHAPES, *OBJECT_COLORS, *BACKGROUND_COLORS}
    return sorted(words)


def _inside(obj: SceneObject, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    dx, dy = xs - obj.center[0], ys - obj.center[1]
    cos, sin = math.cos(obj.angle), math.sin(obj.angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    r = obj.radius
    if obj.shape == "disc":
        return dx * dx + dy * dy <= r * r
    if obj.shape == "square":
        half = r / math.sqrt(2)
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if obj.shape == "triangle":
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):  # three half-planes at distance r/2 from the centre
            normal = -math.pi / 2 + k * 2 * math.pi / 3 + math.pi
            inside &= u * math.cos(normal) + v * math.sin(normal) <= r / 2
        return inside
    if obj.shape == "cross":
        arm = r * 0.36
        return ((np.abs(u) <= r) & (np.abs(v) <= arm)) | ((np.abs(u) <= arm) & (np.abs(v) <= r))
    raise ValueError(f"unknown shape {obj.shape!r}")


def _grid(size: int):
    fine = (np.arange(size * SUPERSAMPLING) + 0.5) / SUPERSAMPLING - 0.5
    return np.meshgrid(fine, fine)


def coverage(obj: SceneObject, size: int) -> np.ndarray:
    """Fraction (0..1) of each pixel covered by the object, anti-aliased by supersampling."""
    xs, ys = _grid(size)
    fine = _inside(obj, xs, ys).astype(np.float32)
    return fine.reshape(size, SUPERSAMPLING, size, SUPERSAMPLING).mean(axis=(1, 3))


def render_background(scene: Scene) -> np.ndarray:
    size = scene.size
    first = np.array(BACKGROUND_COLORS[scene.background_colors[0]], dtype=np.float32)
    if scene.background == "gradient":
        second = np.array(BACKGROUND_COLORS[scene.background_colors[1]], dtype=np.float32)
        rng = np.random.default_rng(scene.texture_seed)
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:size, 0:size] / max(size - 1, 1)
        ramp = (math.cos(angle) * (xs - 0.5) + math.sin(angle) * (ys - 0.5)) / math.sqrt(0.5) + 0.5
        ramp = np.clip(ramp, 0, 1)[..., None]
        return first * (1 - ramp) + second * ramp
    image = np.broadcast_to(first, (size, size, 3)).copy()
    if scene.background == "textured":
        rng = np.random.default_rng(scene.texture_seed)
        coarse = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1)).astype(np.float32)
        texture = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR))
        image += (7 * texture + rng.normal(0, 2, (size, size)))[..., None]
    return image


def render(scene: Scene) -> np.ndarray:
    """The scene as an HxWx3 uint8 image."""
    image = render_background(scene)
    for obj in scene.objects:
        alpha = coverage(obj, scene.size)[..., None]
        image = image * (1 - alpha) + np.array(obj.rgb, dtype=np.float32) * alpha
    return np.clip(image.round(), 0, 255).astype(np.uint8)


def object_masks(scene: Scene) -> List[np.ndarray]:
    """Visible region of each object (later objects occlude earlier ones)."""
    masks = [coverage(obj, scene.size) >= 0.5 for obj in scene.objects]
    for i in range(len(masks)):
        for later in masks[i + 1:]:
            masks[i] = masks[i] & ~later
    return masks


def random_object(rng: np.random.Generator, size: int, color: str, placed: List[SceneObject],
                  margin: float = 0.0) -> SceneObject:
    """An object that overlaps none of `placed`, at least `margin` pixels inside the image."""
    for _ in range(200):
        radius = rng.uniform(0.11, 0.2) * size
        lo, hi = radius + margin, size - 1 - radius - margin
        if lo >= hi:
            continue
        center = (rng.uniform(lo, hi), rng.uniform(lo, hi))
        if all(math.dist(center, o.center) > radius + o.radius + 2 for o in placed):
            return SceneObject(str(rng.choice(SHAPES)), color, center, float(radius), float(rng.uniform(0, math.pi)))
    raise RuntimeError("could not place an object; use fewer objects or a larger image")


def random_scene(rng: np.random.Generator, size: int, max_objects: int = 3) -> Scene:
    kind = str(rng.choice(BACKGROUND_KINDS))
    backgrounds = tuple(str(c) for c in rng.choice(list(BACKGROUND_COLORS), size=2 if kind == "gradient" else 1, replace=False))
    colors = rng.choice(list(OBJECT_COLORS), size=int(rng.integers(1, max_objects + 1)), replace=False)
    objects: List[SceneObject] = []
    for color in colors:
        objects.append(random_object(rng, size, str(color), objects))
    return Scene(size, kind, backgrounds, int(rng.integers(0, 2**31)), tuple(objects))
