"""Turning what the user gives (image, points, mask) into checked, working-resolution tensors.

Coordinates are always input-image pixels, x to the right and y down, in the image as it is
displayed (after its EXIF orientation is applied).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]
Point = Tuple[float, float]


@dataclass(frozen=True)
class PointPair:
    handle: Point
    target: Point

    def to_dict(self) -> dict:
        return {"handle": [float(v) for v in self.handle], "target": [float(v) for v in self.target]}


def _open_file(source, role: str) -> Image.Image:
    """Read an image file (EXIF orientation applied); `role` names it in errors ("image", "mask")."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(f"{role} file not found: {path}")
    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{role} {path} is not an image that Pillow can read ({error})") from error
    return image


def load_image(source: ImageLike) -> Image.Image:
    """Open a path, PIL image or array as an RGB PIL image, EXIF orientation applied.

    Transparent pixels are composited on white; greyscale becomes RGB.
    """
    if isinstance(source, (str, os.PathLike)):
        image = _open_file(source, "image")
    elif isinstance(source, Image.Image):
        image = ImageOps.exif_transpose(source)
    elif isinstance(source, np.ndarray):
        image = _array_to_image(source)
    else:
        raise InputError(f"expected an image path, PIL image or numpy array, got {type(source).__name__}")
    if image.width < 8 or image.height < 8:
        raise InputError(f"image is {image.width}x{image.height}; it must be at least 8x8 pixels")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"an image array must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and array.min() >= 0 and array.max() <= 1:
            array = array * 255.0
        array = np.clip(array, 0, 255).round().astype(np.uint8)
    return Image.fromarray(array)


def working_size(width: int, height: int, working_width: int, multiple: int) -> Tuple[int, int]:
    """Reference rule: width -> working_width, height keeps the aspect ratio; both to `multiple`."""
    new_width = max(multiple, round(working_width / multiple) * multiple)
    new_height = max(multiple, round(working_width * height / width / multiple) * multiple)
    return new_width, new_height


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


def normalise_points(points: Union[str, Iterable], width: int, height: int) -> List[PointPair]:
    """Accept pairs as PointPair, {"handle": [x, y], "target": [x, y]}, ((hx, hy), (tx, ty)) or a
    flat list alternating handle, target (the DragBench layout); check them against the image."""
    if isinstance(points, str):
        pairs = parse_points_text(points)
    else:
        items = list(points)
        if items and all(_is_xy(item) for item in items):
            if len(items) % 2:
                raise InputError(f"a flat point list alternates handle and target, but has {len(items)} points")
            items = [(items[i], items[i + 1]) for i in range(0, len(items), 2)]
        pairs = [_to_pair(item, index) for index, item in enumerate(items)]
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


def _to_pair(item, index: int) -> PointPair:
    try:
        if isinstance(item, PointPair):
            return item
        if isinstance(item, dict):
            handle, target = item["handle"], item["target"]
        else:
            handle, target = item
        return PointPair((float(handle[0]), float(handle[1])), (float(target[0]), float(target[1])))
    except (KeyError, TypeError, ValueError, IndexError):
        raise InputError(
            f"point pair {index + 1} ({item!r}) is not understood; use "
            "{'handle': [x, y], 'target': [x, y]} or ((hx, hy), (tx, ty))") from None


def load_mask(source, width: int, height: int) -> Optional[np.ndarray]:
    """A boolean HxW array (True = may change) at the input image's size, or None for "no mask".

    Any size is accepted and resized with nearest neighbour; an empty mask means everything is
    editable, exactly as no mask at all.
    """
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        mask_image = _open_file(source, "mask").convert("L")
    elif isinstance(source, Image.Image):
        mask_image = source.convert("L")
    elif isinstance(source, np.ndarray):
        array = source
        if array.ndim == 3:
            array = array.max(axis=2)
        if array.ndim != 2:
            raise InputError(f"a mask array must be HxW (or HxWxC), got shape {source.shape}")
        if array.dtype == bool:
            binary = array
        elif array.size and array.max() <= 1:
            binary = array > 0.5
        else:
            binary = array > 127
        mask_image = Image.fromarray(binary.astype(np.uint8) * 255)
    else:
        raise InputError(f"expected a mask path, PIL image or numpy array, got {type(source).__name__}")
    if mask_image.size != (width, height):
        mask_image = mask_image.resize((width, height), Image.NEAREST)
    mask = np.asarray(mask_image) > 127
    return mask if mask.any() else None
