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

from ..errors import InputError
from ..image_input import load_image, load_mask, normalise_points
from .drawing import draw_pairs
from .state import pair_dict

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
    points: List[dict] = field(default_factory=list)
    mask: Optional[np.ndarray] = None            # HxW bool, True = editable
    parameters: dict = field(default_factory=dict)


def flat_points(points: List[dict]) -> List[List[float]]:
    flat = []
    for pair in points:
        flat.append([float(v) for v in pair["handle"]])
        flat.append([float(v) for v in pair["target"]])
    return flat


def save_session(folder, image: Image.Image, prompt: str = "", points=(), mask=None,
                 parameters: Optional[dict] = None) -> Path:
    """Write a session folder (created if needed); return its path."""
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    image = load_image(image)
    width, height = image.size
    pairs = [p.to_dict() for p in normalise_points(points, width, height)] if len(points) else []
    pairs = [pair_dict(p["handle"], p["target"]) for p in pairs]
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
        "pairs": pairs,
        "mask": "mask.png",
        "parameters": dict(parameters or {}),
    }, indent=2))
    return folder


def load_session(folder) -> Session:
    """Read a session folder written by save_session, or a DragBench sample (pickle only)."""
    folder = Path(folder).expanduser()
    image_path = folder / "original_image.png"
    if not folder.is_dir():
        raise InputError(f"session folder not found: {folder}")
    if not image_path.is_file():
        raise InputError(f"{folder} has no original_image.png: not a session / DragBench sample folder")
    image = load_image(image_path)
    width, height = image.size
    json_path, pickle_path = folder / "meta_data.json", folder / "meta_data.pkl"
    if json_path.is_file():
        try:
            meta = json.loads(json_path.read_text())
        except ValueError as error:
            raise InputError(f"{json_path} is not valid JSON ({error})") from error
        mask_name = meta.get("mask")
        mask = load_mask(folder / mask_name, width, height) if mask_name else None
        points = meta.get("pairs") or meta.get("points") or []
        parameters = meta.get("parameters") or {}
    elif pickle_path.is_file():
        meta = safe_load_pickle(pickle_path.read_bytes())
        if not isinstance(meta, dict):
            raise InputError(f"{pickle_path} holds a {type(meta).__name__}, expected a dict with prompt, points, mask")
        raw_mask = meta.get("mask")
        mask = load_mask(np.asarray(raw_mask), width, height) if raw_mask is not None else None
        points = [[float(v) for v in xy] for xy in (meta.get("points") or [])]
        parameters = {}
    else:
        raise InputError(f"{folder} has neither meta_data.json nor meta_data.pkl")
    pairs = [p.to_dict() for p in normalise_points(points, width, height)] if len(points) else []
    return Session(image=image, prompt=str(meta.get("prompt") or ""),
                   points=[pair_dict(p["handle"], p["target"]) for p in pairs],
                   mask=mask, parameters=dict(parameters))
