"""Pictures of the edit: canvas layers (image, mask overlay, points and arrows, brush cursor) and
the same points drawn with PIL (user_drag.png, the GIF of the drag).

Display ("buffer") pixels are image pixels times `scale`; image pixel (i, j) covers display
[i*scale, (i+1)*scale) and its marker is drawn at its centre.
"""

from __future__ import annotations

import io
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from ..api import PointPair

HANDLE_COLOR = "#e0202a"
TARGET_COLOR = "#1f5bff"
ARROW_COLOR = "#ffffff"
OUTLINE_COLOR = "#101010"
# The mask overlay: diagonal hatching and an outline in chartreuse, a colour no ShapesBench object
# or background has, so the overlay cannot be mistaken for an object of the scene.
MASK_RGB = (170, 255, 0)
MASK_HATCH_ALPHA = 150
MASK_HATCH_PERIOD = 8      # display pixels between stripes
MASK_HATCH_WIDTH = 3       # display pixels of each stripe
MASK_OUTLINE_WIDTH = 2     # display pixels
HANDLE_RGB = (224, 32, 42)
TARGET_RGB = (31, 91, 255)


# ---------------------------------------------------------------------- geometry
def fit_scale(width: int, height: int, max_width: int, max_height: int) -> float:
    """Scale that fits the image in max_width x max_height (small images are enlarged)."""
    return min(max_width / width, max_height / height)


def display_size(width: int, height: int, scale: float) -> Tuple[int, int]:
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_display(xy: Sequence[float], scale: float) -> Tuple[float, float]:
    return (float(xy[0]) + 0.5) * scale, (float(xy[1]) + 0.5) * scale


def image_pixel(xy_display: Sequence[float], scale: float, size: Tuple[int, int]) -> Tuple[int, int]:
    """Display pixels -> the image pixel under them (integers, inside an image of `size`)."""
    return (min(max(int(math.floor(xy_display[0] / scale)), 0), size[0] - 1),
            min(max(int(math.floor(xy_display[1] / scale)), 0), size[1] - 1))


def event_buffer_xy(event: dict, canvas_size: Tuple[int, int]) -> Tuple[float, float]:
    """An ipyevents mouse event (CSS pixels relative to the element) -> canvas buffer pixels."""
    x, y = float(event.get("relativeX") or 0), float(event.get("relativeY") or 0)
    width, height = event.get("boundingRectWidth"), event.get("boundingRectHeight")
    if width:
        x *= canvas_size[0] / float(width)
    if height:
        y *= canvas_size[1] / float(height)
    return x, y


def marker_radius(scale: float) -> float:
    return float(min(9.0, max(5.0, 3.0 + 0.6 * scale)))


def pair_at(points: List[PointPair], xy_display: Sequence[float], scale: float, targets_only: bool = False
            ) -> Optional[int]:
    """Index of the pair whose handle or target marker (`targets_only`: target marker) is nearest to
    display point `xy_display`, within twice the marker radius (a click "on or near" it), or None."""
    reach = 2 * marker_radius(scale)
    best, nearest = None, reach
    for index, pair in enumerate(points):
        for point in (pair.target,) if targets_only else (pair.handle, pair.target):
            u, v = to_display(point, scale)
            distance = math.hypot(u - xy_display[0], v - xy_display[1])
            if distance <= nearest:
                best, nearest = index, distance
    return best


# ---------------------------------------------------------------------- rasters
def resized(image: Image.Image, size: Tuple[int, int]) -> Image.Image:
    if image.size == size:
        return image
    enlarging = size[0] >= 2 * image.width
    return image.resize(size, Image.NEAREST if enlarging else Image.LANCZOS)


def display_rgba(image: Image.Image, size: Tuple[int, int]) -> np.ndarray:
    """The image at display size as RGBA (ipycanvas sends RGBA losslessly; RGB would go as JPEG)."""
    return np.asarray(resized(image.convert("RGB"), size).convert("RGBA"))


def overlay_rgba(mask: np.ndarray, scale: float, box: Tuple[int, int, int, int]) -> np.ndarray:
    """The mask overlay for display box (u0, v0, u1, v1), end-exclusive: diagonal stripes inside
    the mask and an opaque outline along its edge (both in absolute display pixels, so boxes drawn
    separately join up)."""
    u0, v0, u1, v1 = box
    pad = MASK_OUTLINE_WIDTH
    inside = _display_mask(mask, scale, (u0 - pad, v0 - pad, u1 + pad, v1 + pad))
    interior = inside.copy()
    rows, cols = inside.shape
    for dv in range(-pad, pad + 1):      # erosion by a square: pixels that far from the outside
        for du in range(-pad, pad + 1):
            interior[pad:rows - pad, pad:cols - pad] &= inside[pad + dv:rows - pad + dv, pad + du:cols - pad + du]
    inside, interior = inside[pad:rows - pad, pad:cols - pad], interior[pad:rows - pad, pad:cols - pad]
    u, v = np.meshgrid(np.arange(u0, u1), np.arange(v0, v1))
    stripes = (u + v) % MASK_HATCH_PERIOD < MASK_HATCH_WIDTH
    out = np.zeros(inside.shape + (4,), np.uint8)
    out[inside & stripes] = (*MASK_RGB, MASK_HATCH_ALPHA)
    out[inside & ~interior] = (*MASK_RGB, 255)
    return out


def _display_mask(mask: np.ndarray, scale: float, box: Tuple[int, int, int, int]) -> np.ndarray:
    """The mask sampled at the display pixels of `box`; False beyond the image."""
    u0, v0, u1, v1 = box
    height, width = mask.shape
    ix = np.floor((np.arange(u0, u1) + 0.5) / scale).astype(int)
    iy = np.floor((np.arange(v0, v1) + 0.5) / scale).astype(int)
    valid = (iy[:, None] >= 0) & (iy[:, None] < height) & (ix[None, :] >= 0) & (ix[None, :] < width)
    return mask[np.clip(iy, 0, height - 1)[:, None], np.clip(ix, 0, width - 1)[None, :]] & valid


def display_box(box: Tuple[int, int, int, int], scale: float, size: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """Image box (x0, y0, x1, y1) -> the display box covering it."""
    x0, y0, x1, y1 = box
    return (max(0, int(math.floor(x0 * scale))), max(0, int(math.floor(y0 * scale))),
            min(size[0], int(math.ceil(x1 * scale))), min(size[1], int(math.ceil(y1 * scale))))


# ---------------------------------------------------------------------- canvas layers
def draw_picture(layer, image: Optional[Image.Image], size: Tuple[int, int]) -> None:
    """The picture at display size, or what to do when there is none."""
    layer.clear()
    if image is not None:
        layer.put_image_data(display_rgba(image, size), 0, 0)
        return
    layer.fill_style = "#f2f2f2"
    layer.fill_rect(0, 0, *size)
    layer.fill_style = "#555"
    layer.font = "16px sans-serif"
    layer.fill_text("Upload an image, or generate one (Parameters)", 20, 40)


def draw_overlay(layer, mask: Optional[np.ndarray], scale: float, size: Tuple[int, int], box=None) -> None:
    """The mask overlay (None: none shown); `box` (image pixels) limits the redraw to what a stroke touched."""
    if mask is None:
        layer.clear()
        return
    if box is None:
        layer.clear()
        if mask.any():
            layer.put_image_data(overlay_rgba(mask, scale, (0, 0, *size)), 0, 0)
        return
    # the outline of pixels next to the touched box may have become interior
    u0, v0, u1, v1 = display_box(box, scale, size)
    u0, v0 = max(0, u0 - MASK_OUTLINE_WIDTH), max(0, v0 - MASK_OUTLINE_WIDTH)
    u1, v1 = min(size[0], u1 + MASK_OUTLINE_WIDTH), min(size[1], v1 + MASK_OUTLINE_WIDTH)
    if u1 > u0 and v1 > v0:
        layer.clear_rect(u0, v0, u1 - u0, v1 - v0)
        layer.put_image_data(overlay_rgba(mask, scale, (u0, v0, u1, v1)), u0, v0)


def _arrow(layer, start, end, radius: float) -> None:
    dx, dy = end[0] - start[0], end[1] - start[1]
    length = math.hypot(dx, dy)
    if length < 1e-6:
        return
    ux, uy = dx / length, dy / length
    tip = (end[0] - ux * radius, end[1] - uy * radius)
    head = min(2.2 * radius, max(length - radius, 0))
    base = (tip[0] - ux * head, tip[1] - uy * head)
    left = (base[0] - uy * head * 0.5, base[1] + ux * head * 0.5)
    right = (base[0] + uy * head * 0.5, base[1] - ux * head * 0.5)
    tail = (start[0] + ux * radius, start[1] + uy * radius)
    for color, width in ((OUTLINE_COLOR, 4.0), (ARROW_COLOR, 2.0)):
        layer.stroke_style = color
        layer.line_width = width
        layer.stroke_line(tail[0], tail[1], base[0], base[1])
    layer.fill_style = ARROW_COLOR
    layer.stroke_style = OUTLINE_COLOR
    layer.line_width = 1.0
    layer.fill_polygon([tip, left, right])
    layer.stroke_polygon([tip, left, right])


def _marker(layer, xy, radius: float, color: str, ring: bool = False, hollow: bool = False) -> None:
    layer.line_width = 2.0
    layer.stroke_style = ARROW_COLOR
    if hollow:
        layer.stroke_style = color
        layer.stroke_circle(xy[0], xy[1], radius)
        return
    layer.fill_style = color
    layer.fill_circle(xy[0], xy[1], radius)
    layer.stroke_circle(xy[0], xy[1], radius)
    if ring:  # the pending handle: a dashed ring says "now click its target"
        layer.set_line_dash([4, 3])
        layer.stroke_style = color
        layer.stroke_circle(xy[0], xy[1], radius + 5)
        layer.set_line_dash([])


def _number(layer, xy, radius: float, number: int) -> None:
    """The pair's number beside its handle, as in the point list."""
    layer.font = f"bold {round(1.6 * radius + 4)}px sans-serif"
    layer.line_width = 3.0
    layer.stroke_style = OUTLINE_COLOR
    layer.fill_style = ARROW_COLOR
    layer.stroke_text(str(number), xy[0] + radius + 1, xy[1] - radius)
    layer.fill_text(str(number), xy[0] + radius + 1, xy[1] - radius)


def draw_points(layer, points: List[PointPair], pending, scale: float, tracked: Optional[Sequence] = None) -> None:
    """Handles red, targets blue, an arrow between, numbered; during a run `tracked` gives the current
    handles (the start handles stay as hollow rings)."""
    radius = marker_radius(scale)
    layer.clear()
    for index, pair in enumerate(points):
        handle = to_display(pair.handle, scale)
        target = to_display(pair.target, scale)
        if tracked is not None and index < len(tracked):
            _marker(layer, handle, radius, HANDLE_COLOR, hollow=True)
            handle = to_display(tracked[index], scale)
        _arrow(layer, handle, target, radius)
        _marker(layer, target, radius, TARGET_COLOR)
        _marker(layer, handle, radius, HANDLE_COLOR)
        _number(layer, handle, radius, index + 1)
    if pending is not None:
        _marker(layer, to_display(pending, scale), radius, HANDLE_COLOR, ring=True)


def draw_cursor(layer, xy_display, radius_display: float, erase: bool) -> None:
    layer.clear()
    if xy_display is None:
        return
    layer.line_width = 1.5
    for color, dash in ((OUTLINE_COLOR, []), ("#ffffff", [4, 4] if erase else [])):
        layer.stroke_style = color
        layer.set_line_dash(dash)
        layer.stroke_circle(xy_display[0], xy_display[1], max(1.0, radius_display))
    layer.set_line_dash([])


# ---------------------------------------------------------------------- PIL pictures
def draw_pairs(image: Image.Image, points: List[PointPair], handles: Optional[Sequence] = None,
               size: Optional[Tuple[int, int]] = None) -> Image.Image:
    """A copy of `image` (resized to `size`) with the arrows of `points`; `handles` replaces the
    handle positions (the tracked handles of a drag step)."""
    size = size or image.size
    scale = size[0] / image.width
    picture = resized(image.convert("RGB"), size).copy()
    draw = ImageDraw.Draw(picture)
    radius = max(2.0, min(6.0, 1.0 + 0.04 * max(size)))
    for index, pair in enumerate(points):
        handle = pair.handle if handles is None or index >= len(handles) else handles[index]
        hx, hy = to_display(handle, scale)
        tx, ty = to_display(pair.target, scale)
        draw.line([(hx, hy), (tx, ty)], fill=(255, 255, 255), width=max(1, round(radius / 2)))
        for (x, y), color in (((tx, ty), TARGET_RGB), ((hx, hy), HANDLE_RGB)):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=color, outline=(255, 255, 255))
    return picture


def gif_size(width: int, height: int, target: int = 256) -> Tuple[int, int]:
    """Frames of about `target` pixels: small images are enlarged (whole factors), large reduced."""
    if max(width, height) < target:
        factor = max(1, target // max(width, height))
        return width * factor, height * factor
    scale = target / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def drag_gif(frames: List[Tuple[Image.Image, Sequence]], points: List[PointPair], original_size: Tuple[int, int],
             frame_ms: int = 160, last_ms: int = 1500) -> bytes:
    """An animated GIF: each frame an image (any size; it is resized) with the handles at that step."""
    if not frames:
        return b""
    size = gif_size(*original_size)
    pictures = [draw_pairs(resized(image.convert("RGB"), original_size), points, handles, size)
                for image, handles in frames]
    buffer = io.BytesIO()
    durations = [frame_ms] * (len(pictures) - 1) + [last_ms]
    pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
