"""Save and load an edit session as a folder in the DragBench sample layout.

    session/
        original_image.png   the input image
        meta_data.pkl        {'prompt': str, 'points': [[x, y], ...] alternating handle, target,
                              'mask': HxW uint8 0/1 array}  (what DragBench tools read)
        meta_data.json       the same, JSON: points as pairs too, the mask in mask.png, parameters
        mask.png             the mask, 0 / 255
        user_drag.png        a picture of the points (as in DragBench)

Loading prefers meta_data.json. meta_data.pkl is read with a restricted unpickler that only
builds plain containers and numpy arrays: a pickle that asks for any other callable (os.system,
eval, ...) is refused, so a downloaded sample cannot run code.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
from PIL import Image

from ..api import InputError, PointPair, load_image, load_mask, normalise_points
from .drawing import draw_pairs
from .setting_traits import current_names

SESSION_FORMAT = "dragwidget-session/1"

# The globals a pickle of {'prompt': str, 'points': list, 'mask': ndarray} may name (numpy 1 and 2).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("builtins", "bytearray"),
    ("builtins", "frozenset"),
    ("builtins", "set"),
    ("_codecs", "encode"),   # how protocol 2 pickles store bytes
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: meta_data.pkl may only contain plain data and numpy arrays")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing persistent ids in meta_data.pkl")


def safe_load_pickle(data: bytes):
    """Unpickle DragBench metadata without running arbitrary code (see the module docstring)."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as error:
        raise InputError(f"meta_data.pkl was not loaded: {error}") from error
    except Exception as error:  # a truncated or corrupt file
        raise InputError(f"meta_data.pkl is not a readable pickle ({type(error).__name__}: {error})") from error


@dataclass
class Session:
    image: Image.Image
    prompt: str = ""
    points: List[PointPair] = field(default_factory=list)
    mask: Optional[np.ndarray] = None            # HxW bool, True = editable
    parameters: dict = field(default_factory=dict)


def flat_points(points: List[PointPair]) -> List[List[float]]:
    flat = []
    for pair in points:
        flat.append([float(v) for v in pair.handle])
        flat.append([float(v) for v in pair.target])
    return flat


def save_session(folder, image: Image.Image, prompt: str = "", points=(), mask=None,
                 parameters: Optional[dict] = None) -> Path:
    """Write a session folder (created if needed); return its path."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    image = load_image(image)
    width, height = image.size
    pairs = normalise_points(points, width, height) if len(points) else []
    editable = load_mask(mask, width, height) if mask is not None else None
    mask_u8 = np.zeros((height, width), np.uint8) if editable is None else editable.astype(np.uint8)

    image.save(folder / "original_image.png")
    Image.fromarray(mask_u8 * 255).save(folder / "mask.png")
    draw_pairs(image, pairs).save(folder / "user_drag.png")
    meta = {"prompt": str(prompt), "points": flat_points(pairs), "mask": mask_u8}
    (folder / "meta_data.pkl").write_bytes(pickle.dumps(meta, protocol=4))
    (folder / "meta_data.json").write_text(json.dumps({
        "format": SESSION_FORMAT,
        "prompt": str(prompt),
        "image": "original_image.png",
        "image_size": [width, height],
        "points": meta["points"],
        "pairs": [pair.to_dict() for pair in pairs],
        "mask": "mask.png",
        "parameters": dict(parameters or {}),
    }, indent=2))
    return folder


def load_session(folder) -> Session:
    """Read a session folder written by save_session, or a DragBench sample (pickle only).

    Only files inside the folder are read (names in meta_data.json and symbolic links that lead
    elsewhere are refused, without saying whether what they name exists), and every field is
    checked: a wrong type is an InputError naming the field."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"session folder not found: {folder}")
    root = folder.resolve()
    image_path = _inside(root, "original_image.png", "original_image.png")
    if not image_path.is_file():
        raise InputError(f"{folder} has no original_image.png: not a session / DragBench sample folder")
    image = load_image(image_path)
    width, height = image.size
    json_path = _inside(root, "meta_data.json", "meta_data.json")
    pickle_path = _inside(root, "meta_data.pkl", "meta_data.pkl")
    if json_path.is_file():
        try:
            meta = json.loads(json_path.read_text())
        except ValueError as error:
            raise InputError(f"{json_path} is not valid JSON ({error})") from error
        source = "meta_data.json"
        _expect(meta, dict, source, "the file", "an object {\"prompt\": ..., \"points\": ..., \"mask\": ...}")
        mask_name = meta.get("mask")
        _expect(mask_name, (str, type(None)), source, "mask", "the name of a mask image in the session folder")
        mask = None
        if mask_name:
            mask_path = _inside(root, mask_name, f"{source}: mask")
            if not mask_path.is_file():
                raise InputError(f"{source}: the mask file {mask_name!r} is not in the session folder")
            mask = load_mask(mask_path, width, height)
        points = meta.get("pairs") or meta.get("points") or []
        parameters = meta.get("parameters") or {}
        _expect(parameters, dict, source, "parameters", "an object of widget parameters")
        parameters = current_names(parameters, f"{source}: parameters")
    elif pickle_path.is_file():
        meta = safe_load_pickle(pickle_path.read_bytes())
        source = "meta_data.pkl"
        _expect(meta, dict, source, "the file", "a dict with prompt, points, mask")
        mask = _mask_array(meta.get("mask"), width, height, source)
        points = meta.get("points")
        points = [] if points is None else points
        parameters = {}
    else:
        raise InputError(f"{folder} has neither meta_data.json nor meta_data.pkl")
    prompt = meta.get("prompt")
    _expect(prompt, (str, type(None)), source, "prompt", "text")
    return Session(image=image, prompt=prompt or "", points=_pairs(points, width, height, source),
                   mask=mask, parameters=dict(parameters))


def _inside(root: Path, name: str, role: str) -> Path:
    """`root / name` resolved (links followed), refused unless it stays inside `root`. The error is
    the same whether or not the path exists, so a session cannot be used to probe the disk."""
    resolved = (root / name).resolve()
    if resolved != root and root in resolved.parents:
        return resolved
    raise InputError(f"{role}: {name!r} leads outside the session folder and was not read "
                     "(only files inside the folder are read, e.g. \"mask\": \"mask.png\")")


def _expect(value, kinds, source: str, field: str, wanted: str) -> None:
    if not isinstance(value, kinds):
        raise InputError(f"{source}: {field} must be {wanted}, got {type(value).__name__} {_short(value)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _pairs(points, width: int, height: int, source: str) -> List[PointPair]:
    """Handle/target pairs from a session's points (pairs or the flat DragBench list)."""
    if isinstance(points, np.ndarray):
        points = points.tolist()
    _expect(points, (list, tuple), source, "points",
            'a list of {"handle": [x, y], "target": [x, y]} pairs or of [x, y] points alternating handle, target')
    if not points:
        return []
    try:
        pairs = normalise_points(points, width, height)
    except (TypeError, ValueError, AttributeError) as error:   # InputError is a ValueError
        raise InputError(f"{source}: points: {error}") from None
    return pairs


def _mask_array(raw, width: int, height: int, source: str) -> Optional[np.ndarray]:
    if raw is None:
        return None
    array = np.asarray(raw)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"{source}: mask must be an HxW array of 0/1 (or 0/255) numbers, got {array.dtype} values")
    try:
        return load_mask(array, width, height)
    except InputError as error:
        raise InputError(f"{source}: mask: {error}") from None

