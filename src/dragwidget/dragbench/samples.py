"""DragBench samples: `<category>/<name>/` folders with `original_image.png` and `meta_data.pkl`.

`meta_data.pkl` holds {'prompt': str, 'points': [[x, y], ...] alternating handle and target,
'mask': HxW array, > 0 where the image may change}. It is a pickle, and unpickling runs whatever
the file names, so it is read with an unpickler that builds only plain containers, numbers,
strings and numpy arrays, and refuses anything else by name.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

from ..api import InputError

IMAGE_FILE = "original_image.png"
META_FILE = "meta_data.pkl"
ROOT_CATEGORY = "(top level)"

# What numpy arrays and scalars need to be rebuilt from a pickle (numpy 1 and 2 module names).
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("builtins", "list"), ("builtins", "dict"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "bytearray"), ("_codecs", "encode"),
}


class SampleError(InputError):
    """A sample that cannot be run or scored; the reason names the file and what is wrong."""


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a DragBench sample never needs "
                                     "(only containers, numbers, strings and numpy arrays are read)")


def read_plain_pickle(path: Path):
    try:
        return _PlainDataUnpickler(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as error:
        raise SampleError(f"{path}: not read: {error}") from None


@dataclass(frozen=True)
class DragBenchSample:
    folder: Path
    relative: PurePosixPath          # e.g. animals/JH_2023-09-14-1820-16: also where its result goes

    @property
    def name(self) -> str:
        return self.relative.as_posix()

    @property
    def category(self) -> str:
        parent = self.relative.parent.as_posix()
        return ROOT_CATEGORY if parent == "." else parent


@dataclass
class LoadedSample:
    image: Image.Image
    prompt: str
    pairs: List[dict]                # {"handle": [x, y], "target": [x, y]} in image pixels
    mask: Optional[np.ndarray]       # bool HxW, True = may change


def find_samples(data: Path) -> List[DragBenchSample]:
    """Every folder under `data` (any depth) holding either sample file, in a fixed order."""
    data = Path(data)
    if not data.is_dir():
        raise InputError(f"--data {data}: not a folder (DragBench is a folder of <category>/<sample>/ folders)")
    folders = {path.parent for pattern in (IMAGE_FILE, META_FILE) for path in data.rglob(pattern)}
    if not folders:
        raise InputError(f"--data {data}: no DragBench samples found: a sample is a folder with {IMAGE_FILE} and "
                         f"{META_FILE} (unzip DragBench from the DragDiffusion repository's releases)")
    return sorted((DragBenchSample(folder, PurePosixPath(folder.relative_to(data).as_posix())) for folder in folders),
                  key=lambda sample: sample.name)


def parse_shard(text: str) -> Tuple[int, int]:
    """'i/n' -> (i, n), 1 <= i <= n."""
    index, separator, count = text.partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        index = count = 0
    if not separator or not 1 <= index <= count:
        raise InputError(f"--shard expects i/n with 1 <= i <= n (e.g. 2/4), got {text!r}")
    return index, count


def select_shard(samples: List[DragBenchSample], index: int, count: int) -> List[DragBenchSample]:
    """Every count-th sample from the index-th on: n processes split the set with no coordination."""
    return samples[index - 1::count]


def load_sample(sample: DragBenchSample) -> LoadedSample:
    image_path, meta_path = sample.folder / IMAGE_FILE, sample.folder / META_FILE
    for path in (image_path, meta_path):
        if not path.is_file():
            raise SampleError(f"{sample.name}: {path.name} is missing")
    try:
        with Image.open(image_path) as opened:
            image = opened.convert("RGB")
    except OSError as error:
        raise SampleError(f"{sample.name}: {IMAGE_FILE} is not a readable image ({error})") from None
    meta = read_plain_pickle(meta_path)
    if not isinstance(meta, dict):
        raise SampleError(f"{sample.name}: {META_FILE} holds a {type(meta).__name__}, not a dict with prompt, points and mask")
    missing = [key for key in ("prompt", "points", "mask") if key not in meta]
    if missing:
        raise SampleError(f"{sample.name}: {META_FILE} has no {', '.join(missing)}")
    prompt = meta["prompt"]
    if not isinstance(prompt, str):
        raise SampleError(f"{sample.name}: the prompt is a {type(prompt).__name__}, not text")
    return LoadedSample(image, prompt, _pairs(sample, meta["points"]), _mask(sample, meta["mask"], image.size))


def _pairs(sample: DragBenchSample, points) -> List[dict]:
    """Points outside the image are left for the engine to refuse, with its own message."""
    try:
        array = np.asarray(points, dtype=float)
    except (TypeError, ValueError):
        array = np.zeros((0,))
    if array.ndim != 2 or array.shape[1] != 2 or len(array) < 2 or len(array) % 2 or not np.isfinite(array).all():
        raise SampleError(f"{sample.name}: points must be [x, y] pairs alternating handle and target "
                          f"(an even number, at least 2); got {np.shape(points)}")
    return [{"handle": array[i].tolist(), "target": array[i + 1].tolist()} for i in range(0, len(array), 2)]


def _mask(sample: DragBenchSample, mask, size) -> Optional[np.ndarray]:
    if mask is None:
        return None
    array = np.asarray(mask)
    if array.ndim == 3:
        array = array.max(axis=2)
    width, height = size
    if array.shape != (height, width):
        raise SampleError(f"{sample.name}: the mask is {array.shape}, the image {height}x{width} (HxW)")
    return array > 0   # the reference: any value above 0 may change
