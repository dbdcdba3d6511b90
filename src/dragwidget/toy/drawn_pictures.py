"""Pictures as a user draws them with a paint tool: ShapesBench's second family.

Written apart from the training pictures (`broad_scenes.py`: signed distance fields) and drawn
the way a user's own picture usually is, with PIL's ImageDraw: arbitrary colours, rectangles,
ellipses, rounded rectangles, rings, stars, triangles and regular polygons, on plain or linear
gradient backgrounds, with PIL's hard edges or anti-aliased by drawing four times larger. An
object is kept as its drawing parameters, so it can be drawn again anywhere: the ground truth of
a drag. Measuring the toy on these says how it does outside what it was trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw

KINDS = ("rectangle", "ellipse", "rounded", "ring", "star", "triangle", "polygon")
ANTIALIAS_SCALE = 4
MIN_CONTRAST = 90.0  # RGB distance of an object from every background colour and every other object


@dataclass(frozen=True)
class DrawnObject:
    kind: str
    rgb: Tuple[int, int, int]
    center: Tuple[float, float]   # (x, y) in pixels
    half_size: Tuple[float, float]  # half width and half height of its box, pixels
    detail: float                 # ring thickness, star inner radius or corner radius, as a fraction
    corners: int                  # star points or polygon sides

    def moved(self, dx: float, dy: float) -> "DrawnObject":
        return replace(self, center=(self.center[0] + dx, self.center[1] + dy))

    @property
    def radius(self) -> float:
        return max(self.half_size)

    def draw(self, pen: ImageDraw.ImageDraw, scale: float, fill) -> None:
        cx, cy = self.center[0] * scale, self.center[1] * scale
        hw, hh = self.half_size[0] * scale, self.half_size[1] * scale
        box = [cx - hw, cy - hh, cx + hw, cy + hh]
        if self.kind == "rectangle":
            pen.rectangle(box, fill=fill)
        elif self.kind == "ellipse":
            pen.ellipse(box, fill=fill)
        elif self.kind == "rounded":
            pen.rounded_rectangle(box, radius=self.detail * min(hw, hh), fill=fill)
        elif self.kind == "ring":
            pen.ellipse(box, outline=fill, width=max(1, round(self.detail * min(hw, hh))))
        elif self.kind == "star":
            points = []
            for k in range(2 * self.corners):
                r = hw if k % 2 == 0 else hw * self.detail
                angle = -math.pi / 2 + k * math.pi / self.corners
                points.append((cx + r * math.cos(angle), cy + r * math.sin(angle)))
            pen.polygon(points, fill=fill)
        elif self.kind == "triangle":
            pen.polygon([(cx, cy - hh), (cx + hw, cy + hh), (cx - hw, cy + hh)], fill=fill)
        elif self.kind == "polygon":
            pen.regular_polygon((cx, cy, hw), self.corners, fill=fill)
        else:
            raise ValueError(f"unknown kind {self.kind!r}")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "color": list(self.rgb), "center": list(self.center),
                "half_size": list(self.half_size), "detail": self.detail, "corners": self.corners}


@dataclass(frozen=True)
class DrawnPicture:
    size: int
    background: Tuple[Tuple[int, int, int], ...]  # one colour, or the two ends of a gradient
    gradient_angle: float
    antialiased: bool
    objects: Tuple[DrawnObject, ...]

    @property
    def caption(self) -> str:
        return ""  # a user's own picture usually comes without a description

    def with_object(self, index: int, obj: DrawnObject) -> "DrawnPicture":
        objects = list(self.objects)
        objects[index] = obj
        return replace(self, objects=tuple(objects))

    def coverage(self, obj: DrawnObject) -> np.ndarray:
        """Coverage (0..1) of one object, with this picture's kind of edge."""
        scale = ANTIALIAS_SCALE if self.antialiased else 1
        canvas = Image.new("L", (self.size * scale, self.size * scale), 0)
        obj.draw(ImageDraw.Draw(canvas), scale, 255)
        if scale > 1:
            canvas = canvas.resize((self.size, self.size), Image.BOX)
        return np.asarray(canvas, dtype=np.float32) / 255

    def render_background(self) -> np.ndarray:
        first = np.array(self.background[0], dtype=np.float32)
        if len(self.background) == 1:
            return np.broadcast_to(first, (self.size, self.size, 3)).copy()
        ys, xs = (np.mgrid[0:self.size, 0:self.size] + 0.5) / self.size - 0.5
        ramp = np.clip((math.cos(self.gradient_angle) * xs + math.sin(self.gradient_angle) * ys) * math.sqrt(2) + 0.5, 0, 1)
        return first * (1 - ramp[..., None]) + np.array(self.background[1], dtype=np.float32) * ramp[..., None]

    def render(self) -> np.ndarray:
        image = self.render_background()
        for obj in self.objects:
            alpha = self.coverage(obj)[..., None]
            image = image * (1 - alpha) + np.array(obj.rgb, dtype=np.float32) * alpha
        return np.clip(image.round(), 0, 255).astype(np.uint8)

    def object_masks(self) -> List[np.ndarray]:
        """Visible region of each object (later objects occlude earlier ones)."""
        masks = [self.coverage(obj) >= 0.5 for obj in self.objects]
        for i in range(len(masks)):
            for later in masks[i + 1:]:
                masks[i] = masks[i] & ~later
        return masks

    @property
    def palette(self) -> List[tuple]:
        return [o.rgb for o in self.objects] + background_colors(self.background)


def background_colors(background) -> List[tuple]:
    """The colours a background shows: its one colour, or five steps along its gradient."""
    if len(background) == 1:
        return [tuple(background[0])]
    first, second = (np.array(c, dtype=np.float32) for c in background)
    return [tuple(float(v) for v in first * (1 - t) + second * t) for t in np.linspace(0, 1, 5)]


def _color(rng: np.random.Generator, avoid: List[tuple]) -> Tuple[int, int, int]:
    for _ in range(200):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        if all(math.dist(color, other) >= MIN_CONTRAST for other in avoid):
            return color
    raise RuntimeError("no colour far enough from the others")


def _object(rng: np.random.Generator, size: int, rgb, placed: List[DrawnObject], margin: float) -> Optional[DrawnObject]:
    for _ in range(200):
        kind = str(rng.choice(KINDS))
        half = rng.uniform(0.06, 0.17) * size
        aspect = 1.0 if kind in ("star", "polygon", "ring") and rng.random() < 0.7 else rng.uniform(0.55, 1.0)
        half_size = (half, half * aspect) if rng.random() < 0.5 else (half * aspect, half)
        if kind in ("star", "polygon"):
            half_size = (half, half)
        lo, hi = half + margin, size - 1 - half - margin
        if lo >= hi:
            continue
        center = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
        if all(math.dist(center, o.center) > half + o.radius + 2 for o in placed):
            detail = {"ring": rng.uniform(0.3, 0.55), "star": rng.uniform(0.4, 0.6),
                      "rounded": rng.uniform(0.3, 0.7)}.get(kind, 0.0)
            return DrawnObject(kind, rgb, center, (float(half_size[0]), float(half_size[1])), float(detail),
                               int(rng.integers(5, 8)))
    return None


def random_drawn_picture(rng: np.random.Generator, size: int, max_objects: int = 3) -> DrawnPicture:
    gradient = rng.random() < 0.5
    background = [_color(rng, [])]
    if gradient:
        background.append(tuple(int(v) for v in rng.integers(0, 256, 3)))
    objects: List[DrawnObject] = []
    colors: List[tuple] = background_colors(background)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        rgb = _color(rng, colors)
        obj = _object(rng, size, rgb, objects, margin=1.0)
        if obj is not None:
            objects.append(obj)
            colors.append(rgb)
    return DrawnPicture(size, tuple(background), float(rng.uniform(0, 2 * math.pi)), bool(rng.random() < 0.5),
                        tuple(objects))
