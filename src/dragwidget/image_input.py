"""Turning what the user gives (image, mask, prompt) into checked pictures, masks and text
(the points: `points`).

Size policy: images above `DEFAULT_MAX_PIXELS` (50 megapixels) are refused before they are decoded.
The edit runs at the working resolution (512 px wide for SD 1.5) whatever the input's size, so a
larger input only costs memory and time (a 12000x12000 input took 2.75 GB and 90 s on the toy
model). Opt in to larger inputs with `load_image(..., max_pixels=N)` or the environment variable
DRAGWIDGET_MAX_PIXELS=N.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]

DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "DRAGWIDGET_MAX_PIXELS"


def max_pixels_allowed(max_pixels: Optional[int] = None) -> int:
    """The size limit in pixels: `max_pixels` if given, else $DRAGWIDGET_MAX_PIXELS, else 50 megapixels."""
    if max_pixels is not None:
        return int(max_pixels)
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 1):
        raise InputError(f"{MAX_PIXELS_ENV}={text!r} is not a pixel count; use a positive number such as 100000000")
    return int(value)


def _size_refusal(what: str, detail: str, limit: int) -> InputError:
    return InputError(
        f"{what} {detail}, above the limit of {limit / 1e6:g} megapixels. The edit runs at the working "
        "resolution anyway, so a larger input only costs memory and time: downscale it, or allow larger "
        f"inputs with load_image(..., max_pixels=N) or the environment variable {MAX_PIXELS_ENV}=N")


def _check_pixel_count(size: Tuple[int, int], what: str, limit: int) -> None:
    width, height = size
    if width * height > limit:
        raise _size_refusal(what, f"is {width}x{height} = {width * height / 1e6:.1f} megapixels", limit)


def _open_file(source, role: str, max_pixels: Optional[int] = None) -> Image.Image:
    """Read an image file (EXIF orientation applied); `role` names it in errors ("image", "mask").

    The size is checked from the header, before the pixels are decoded.
    """
    path = Path(source).expanduser()
    if not path.is_file():
        raise InputError(f"{role} file not found: {path}")
    limit = max_pixels_allowed(max_pixels)
    try:
        with warnings.catch_warnings():
            # Pillow's own decompression-bomb warning: our limit (checked next) is the policy.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            _check_pixel_count(opened.size, f"{role} {path}", limit)
            image = ImageOps.exif_transpose(opened)
            image.load()
    except Image.DecompressionBombError:
        pillow_limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        error = _size_refusal(f"{role} {path}", f"has more than {pillow_limit / 1e6:.0f} megapixels", limit)
        if limit > pillow_limit:
            error = InputError(f"{error}; above {pillow_limit / 1e6:.0f} megapixels Pillow refuses it as a "
                               "possible decompression bomb too: raise PIL.Image.MAX_IMAGE_PIXELS as well")
        raise error from None
    except (UnidentifiedImageError, OSError) as error:
        raise InputError(f"{role} {path} is not an image that Pillow can read ({error})") from error
    return image


def load_image(source: ImageLike, *, max_pixels: Optional[int] = None) -> Image.Image:
    """Open a path, PIL image or array as an 8-bit RGB PIL image, EXIF orientation applied.

    Every Pillow mode is converted (16-bit and 32-bit integer, float, 1-bit, palette, CMYK, YCbCr,
    LAB, HSV; deep modes are scaled, not clipped, see `scale_to_8bit`); transparent pixels are
    composited on white; greyscale becomes RGB. Images above `max_pixels` (default: see
    `max_pixels_allowed`) are refused.
    """
    if isinstance(source, (str, os.PathLike)):
        image = _open_file(source, "image", max_pixels)
    elif isinstance(source, Image.Image):
        _check_pixel_count(source.size, "image", max_pixels_allowed(max_pixels))
        image = ImageOps.exif_transpose(source)
    elif isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _check_pixel_count(source.shape[1::-1], "image array", max_pixels_allowed(max_pixels))
        image = _array_to_image(source)
    else:
        raise InputError(f"expected an image path, PIL image or numpy array, got {type(source).__name__}")
    if image.width < 8 or image.height < 8:
        raise InputError(f"image is {image.width}x{image.height}; it must be at least 8x8 pixels")
    return _to_rgb(image)


def _deep_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float images -> mode L, scaled: Pillow's own conversion clips them
    to 0..255 (16-bit PNGs came out white, float images black)."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return Image.fromarray(scale_to_8bit(np.asarray(image), f"a mode {image.mode} image"))
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    image = _deep_to_8bit(image)
    if image.mode == "La":  # premultiplied alpha: Pillow converts it only to LA
        image = image.convert("LA")
    try:
        if image.mode in ("RGBA", "RGBa", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except ValueError as error:
        raise InputError(f"image mode {image.mode!r} cannot be converted to RGB ({error}); "
                         "save it as an 8-bit RGB or greyscale PNG first") from None


def _array_to_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise InputError(f"an image array must be HxW, HxWx2 (grey, alpha), HxWx3 or HxWx4, got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"the image array is empty (shape {array.shape})")
    return Image.fromarray(scale_to_8bit(array, "the image array"))


def scale_to_8bit(array: np.ndarray, what: str = "the image") -> np.ndarray:
    """Pixel values of any real type -> uint8 by scaling, never by clipping. The rule:

    * bool: False -> 0, True -> 255;
    * uint8 as it is; uint16 (16-bit PNG/TIFF, Pillow's I;16): the full 0..65535 range, / 257;
    * other integers (Pillow's 32-bit `I`, numpy's default int64) by their values: within 0..255
      they are 8-bit values, within 0..65535 16-bit ones (/ 257), otherwise min..max is stretched
      to 0..255;
    * floats (Pillow's `F`): within [0, 1] times 255; within [-1, 1] (some negative) the diffusion
      convention, (x + 1) * 127.5; within [0, 255] 8-bit values; otherwise min..max is stretched.

    The range is read over all channels (alpha included); NaN, infinity and non-numbers are refused.
    """
    kind = array.dtype.kind
    if kind == "b":
        return array.astype(np.uint8) * 255
    if kind not in "uif":
        raise InputError(f"{what} has values of type {array.dtype}; give numbers (uint8, uint16, int or float) or bool")
    if kind == "u" and array.dtype.itemsize == 1:
        return array
    if kind == "u" and array.dtype.itemsize == 2:
        return np.round(array / 257.0).astype(np.uint8)
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise InputError(f"{what} has NaN or infinite values; replace them (e.g. with np.nan_to_num) first")
    low, high = float(values.min()), float(values.max())
    if kind == "f" and low >= 0 and high <= 1:
        scaled = values * 255.0
    elif kind == "f" and low >= -1 and high <= 1:
        scaled = (values + 1.0) * 127.5
    elif low >= 0 and high <= 255:
        scaled = values
    elif kind in "ui" and low >= 0 and high <= 65535:
        scaled = values / 257.0
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.round(scaled).astype(np.uint8)


def validate_prompt(prompt) -> str:
    """The prompt as the tokenizer needs it: a str that UTF-8 can encode."""
    if not isinstance(prompt, str):
        hint = " (decode it first, e.g. prompt.decode('utf-8'))" if isinstance(prompt, (bytes, bytearray)) else ""
        raise InputError(f"the prompt must be text (str), got {type(prompt).__name__}{hint}")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InputError(
            f"the prompt must be text encodable as UTF-8; the character at position {error.start} "
            f"({prompt[error.start]!r}) is not (a lone surrogate, typical of a command-line argument "
            "in a non-UTF-8 locale): retype it or set a UTF-8 locale, e.g. LANG=C.UTF-8") from None
    return prompt


def working_size(width: int, height: int, working_width: int, multiple: int) -> Tuple[int, int]:
    """Reference rule: width -> working_width, height keeps the aspect ratio; both to `multiple`."""
    new_width = max(multiple, round(working_width / multiple) * multiple)
    new_height = max(multiple, round(working_width * height / width / multiple) * multiple)
    return new_width, new_height


def load_mask(source, width: int, height: int) -> Optional[np.ndarray]:
    """A boolean HxW array (True = may change) at the input image's size, or None for "no mask".

    Any size is accepted and resized with nearest neighbour; an empty mask means everything is
    editable, exactly as no mask at all.
    """
    if source is None:
        return None
    if isinstance(source, (str, os.PathLike)):
        mask_image = _deep_to_8bit(_open_file(source, "mask")).convert("L")
    elif isinstance(source, Image.Image):
        mask_image = _deep_to_8bit(source).convert("L")
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
