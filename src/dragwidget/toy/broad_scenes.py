"""Training pictures for what people draw, not a palette (`train-toy --pictures broad`).

Continuous random colours for backgrounds and objects; plain, gradient, textured and noisy
backgrounds; eleven kinds of shape (rectangles of any aspect, squares, discs, ellipses, rounded
rectangles, rings, stars, polygons, triangles, crosses, thick lines); one to four objects that may
overlap, 8-40 % of the picture across; edges anti-aliased or hard as a paint program leaves them.
A share of ShapesBench's own palette scenes (`shapes.random_scene`) is mixed in so that the
bench's first family stays inside the distribution.

Shapes are signed distance fields over the pixel grid (negative inside, in pixels), so one
function draws any of them with either kind of edge. Captions name colours by the nearest word of
`COLOR_WORDS`; the training code blanks a share of them for classifier-free guidance.

This module only trains the model; the pictures it is measured on come from `drawn_pictures.py`,
written separately so that the measurement is not of the training distribution.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
from PIL import Image

from .shapes import caption_vocabulary, random_scene, render

COLOR_WORDS = {
    "red": (220, 40, 40), "maroon": (120, 20, 30), "orange": (245, 135, 30), "peach": (250, 190, 150),
    "yellow": (235, 205, 40), "gold": (210, 170, 50), "khaki": (190, 180, 120), "olive": (110, 110, 30),
    "lime": (150, 230, 40), "green": (40, 170, 60), "mint": (160, 230, 190), "teal": (20, 120, 120),
    "cyan": (40, 195, 205), "sky": (120, 190, 240), "blue": (40, 80, 220), "navy": (20, 30, 100),
    "indigo": (70, 40, 140), "purple": (120, 60, 185), "violet": (170, 110, 230), "lavender": (200, 190, 240),
    "magenta": (205, 50, 185), "pink": (245, 150, 190), "salmon": (240, 120, 100), "brown": (105, 78, 58),
    "tan": (200, 160, 110), "beige": (214, 200, 170), "cream": (250, 245, 220), "white": (236, 236, 232),
    "silver": (190, 190, 195), "grey": (128, 128, 128), "charcoal": (60, 62, 66), "black": (28, 28, 30),
}
SHAPE_WORDS = ("rectangle", "square", "disc", "ellipse", "rounded", "ring", "star", "polygon", "triangle",
               "cross", "line")
BACKGROUND_KINDS = ("plain", "gradient", "textured", "noisy")
PALETTE_SCENE_SHARE = 0.15
MIN_CONTRAST = 60.0  # RGB distance between an object and the background behind its centre


def color_word(rgb) -> str:
    """The nearest colour word, by RGB distance weighted as the eye weighs the channels."""
    rgb = np.asarray(rgb, dtype=np.float32)
    weights = np.array([0.3, 0.59, 0.11], dtype=np.float32) ** 0.5
    names = list(COLOR_WORDS)
    distances = [np.linalg.norm((rgb - np.array(COLOR_WORDS[n], dtype=np.float32)) * weights) for n in names]
    return names[int(np.argmin(distances))]


def vocabulary() -> List[str]:
    """Every word a caption of either generator (this one, `shapes.py`) can contain."""
    return sorted({*caption_vocabulary(), "noisy", *COLOR_WORDS, *SHAPE_WORDS})


def _rotated(xs, ys, center, angle):
    dx, dy = xs - center[0], ys - center[1]
    cos, sin = math.cos(angle), math.sin(angle)
    return cos * dx + sin * dy, -sin * dx + cos * dy


def _box(u, v, half_w, half_h, rounding=0.0):
    qx, qy = np.abs(u) - half_w + rounding, np.abs(v) - half_h + rounding
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0) - rounding


def _polygon(u, v, vertices):
    """Signed distance to a closed polygon (any, convex or not): distance to the nearest edge,
    negative where the even-odd rule says inside."""
    distance = np.full(u.shape, np.inf, dtype=np.float32)
    inside = np.zeros(u.shape, dtype=bool)
    for (ax, ay), (bx, by) in zip(vertices, np.roll(vertices, -1, axis=0)):
        ex, ey = bx - ax, by - ay
        t = np.clip(((u - ax) * ex + (v - ay) * ey) / max(ex * ex + ey * ey, 1e-9), 0, 1)
        distance = np.minimum(distance, np.hypot(u - ax - t * ex, v - ay - t * ey))
        crosses = ((ay > v) != (by > v)) & (u < (bx - ax) * (v - ay) / (by - ay + 1e-12) + ax)
        inside ^= crosses
    return np.where(inside, -distance, distance)


def _star_vertices(points: int, outer: float, inner: float) -> np.ndarray:
    angles = np.arange(2 * points) * math.pi / points - math.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def shape_distance(rng: np.random.Generator, kind: str, xs, ys, center, radius: float):
    """A random shape of `kind` around `center`, about `radius` pixels from centre to edge."""
    u, v = _rotated(xs, ys, center, rng.uniform(0, math.pi))
    if kind == "disc":
        return np.hypot(u, v) - radius
    if kind == "ellipse":
        ratio = rng.uniform(0.35, 0.8)
        return (np.hypot(u / radius, v / (radius * ratio)) - 1) * radius * ratio
    if kind in ("rectangle", "square", "rounded"):
        aspect = 1.0 if kind == "square" else rng.uniform(0.25, 1.0)
        half_w, half_h = radius * 0.85, radius * 0.85 * aspect
        rounding = rng.uniform(0.2, 0.5) * min(half_w, half_h) if kind == "rounded" else 0.0
        return _box(u, v, half_w, half_h, rounding)
    if kind == "ring":
        thickness = rng.uniform(0.18, 0.45) * radius
        return np.abs(np.hypot(u, v) - (radius - thickness / 2)) - thickness / 2
    if kind == "star":
        return _polygon(u, v, _star_vertices(int(rng.integers(4, 9)), radius, radius * rng.uniform(0.35, 0.6)))
    if kind in ("polygon", "triangle"):
        sides = 3 if kind == "triangle" else int(rng.integers(4, 9))
        # regular, or irregular with random corners (sometimes a sliver, like a thin line)
        angles = np.sort(rng.uniform(0, 2 * math.pi, sides)) if rng.random() < 0.4 else \
            np.arange(sides) * 2 * math.pi / sides
        return _polygon(u, v, np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1))
    if kind == "cross":
        arm = radius * rng.uniform(0.2, 0.4)
        return np.minimum(_box(u, v, radius, arm), _box(u, v, arm, radius))
    if kind == "line":
        half_length, half_width = radius, rng.uniform(0.08, 0.25) * radius
        return np.hypot(u - np.clip(u, -half_length, half_length), v) - half_width
    raise ValueError(f"unknown shape kind {kind!r}")


def random_color(rng: np.random.Generator) -> np.ndarray:
    """Any colour: uniform in RGB most of the time, near-greys and pastels the rest."""
    roll = rng.random()
    if roll < 0.7:
        return rng.uniform(0, 255, 3)
    if roll < 0.85:
        return np.full(3, rng.uniform(0, 255)) + rng.normal(0, 6, 3)
    return 255 - rng.uniform(0, 90, 3)


def _contrasting(rng: np.random.Generator, behind: np.ndarray) -> np.ndarray:
    for _ in range(50):
        color = random_color(rng)
        if np.linalg.norm(color - behind) >= MIN_CONTRAST:
            return color
    return 255 - behind


def _background(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, str]:
    kind = str(rng.choice(BACKGROUND_KINDS, p=[0.4, 0.3, 0.15, 0.15]))
    first = random_color(rng)
    if kind == "gradient":
        second = random_color(rng)
        ys, xs = (np.mgrid[0:size, 0:size] + 0.5) / size
        if rng.random() < 0.75:
            angle = rng.uniform(0, 2 * math.pi)
            ramp = np.clip((math.cos(angle) * (xs - 0.5) + math.sin(angle) * (ys - 0.5)) / math.sqrt(0.5) + 0.5, 0, 1)
        else:  # radial
            cx, cy = rng.uniform(0.2, 0.8, 2)
            ramp = np.clip(np.hypot(xs - cx, ys - cy) / rng.uniform(0.5, 1.0), 0, 1)
        image = first * (1 - ramp[..., None]) + second * ramp[..., None]
        return image, f"on a {color_word(first)} to {color_word(second)} gradient background"
    image = np.broadcast_to(first, (size, size, 3)).astype(np.float32)
    if kind == "textured":
        cells = int(rng.integers(3, 12))
        coarse = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
        smooth = np.stack([np.asarray(Image.fromarray(coarse[..., c]).resize((size, size), Image.BICUBIC))
                           for c in range(3)], axis=-1)
        if rng.random() < 0.6:
            smooth = smooth.mean(axis=-1, keepdims=True)
        image = image + rng.uniform(4, 25) * smooth
        return image, f"on a textured {color_word(first)} background"
    if kind == "noisy":
        image = image + rng.normal(0, rng.uniform(2, 14), (size, size, 1 if rng.random() < 0.5 else 3))
        return image, f"on a noisy {color_word(first)} background"
    return image, f"on a {color_word(first)} background"


def broad_picture(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, str]:
    """One training picture (HxWx3 uint8) and its caption."""
    if rng.random() < PALETTE_SCENE_SHARE:
        scene = random_scene(rng, size)
        return render(scene), scene.caption
    image, where = _background(rng, size)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    names = []
    for _ in range(int(rng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15]))):
        kind = str(rng.choice(SHAPE_WORDS))
        radius = rng.uniform(0.04, 0.20) * size
        center = rng.uniform(radius * 0.5, size - radius * 0.5, 2)
        distance = shape_distance(rng, kind, xs, ys, center, radius)
        cx, cy = (int(np.clip(c, 0, size - 1)) for c in center)
        color = np.clip(_contrasting(rng, image[cy, cx]), 0, 255)
        # Half anti-aliased, half with the hard edges a paint program or PIL's ImageDraw leaves.
        alpha = np.clip(0.5 - distance, 0, 1) if rng.random() < 0.5 else (distance <= 0).astype(np.float32)
        image = image * (1 - alpha[..., None]) + color * alpha[..., None]
        names.append(f"a {color_word(color)} {kind}")
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return np.clip(image.round(), 0, 255).astype(np.uint8), f"{listed} {where}"


def picture_batch(seed: int, count: int, size: int):
    """`count` seeded pictures as a tensor in [-1, 1] (N, 3, H, W), and their captions."""
    rng = np.random.default_rng(seed)
    pictures, captions = zip(*(broad_picture(rng, size) for _ in range(count)))
    return list(captions), as_pixels(pictures)


def as_pixels(pictures):
    """HxWx3 uint8 pictures as one (N, 3, H, W) float tensor in [-1, 1]."""
    import torch

    return torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 127.5 - 1
