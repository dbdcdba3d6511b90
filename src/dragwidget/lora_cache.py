"""The disk cache of identity LoRAs: one safetensors file per key, checked before use, bounded in size.

An entry is only a shortcut: whatever is wrong with it (unreadable, truncated, written for other
settings or another model, NaN) costs one warning and a retraining that replaces it, and a cache
folder that cannot be written costs a warning and no caching. Neither may cost the user's edit.
Entries are written under a unique temporary name and renamed into place, so concurrent writers of
one key never see each other's half files. The least recently used entries are evicted once the
folder holds more than `max_cache_bytes()` (DRAGWIDGET_CACHE_MAX_BYTES, default 2 GB).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Sequence, Union

import numpy as np
from safetensors import SafetensorError, safe_open

from .config import DragConfig
from .errors import InputError

if TYPE_CHECKING:
    import torch

CACHE_FORMAT = 2            # in the key and the metadata: entries of older formats are never read
ENTRY_SUFFIX = ".safetensors"
MAX_BYTES_VARIABLE = "DRAGWIDGET_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 2 * 1000**3
# Trained LoRA weights are of order 1 (A starts at about 1/sqrt(features), B grows from 0 at a small
# learning rate); far larger values only come from a damaged file and would overflow half precision.
MAX_WEIGHT_MAGNITUDE = 1e4

_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}

SizeLike = Union[int, str, None]


class CacheWarning(UserWarning):
    """A cache entry or folder could not be used; the run goes on without it."""


def default_cache_dir() -> Path:
    root = os.environ.get("DRAGWIDGET_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dragwidget"
    return Path(root)


def max_cache_bytes(limit: SizeLike = None) -> int:
    """The size limit in bytes: `limit` (bytes, or text such as "500MB", "2GiB"), else the
    DRAGWIDGET_CACHE_MAX_BYTES variable, else 2 GB. 0 turns the cache off."""
    where = "cache_max_bytes"
    if limit is None:
        limit, where = os.environ.get(MAX_BYTES_VARIABLE) or DEFAULT_MAX_BYTES, MAX_BYTES_VARIABLE
    if isinstance(limit, int) and not isinstance(limit, bool):
        number, unit = limit, ""
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]*)\s*", str(limit))
        number, unit = (float(match.group(1)), match.group(2).lower()) if match else (None, None)
    if number is None or number < 0 or unit not in _UNITS:
        raise InputError(f"{where}={limit!r} is not a size: give a number of bytes (0 or more) or a number "
                         f"with a unit, such as 500MB or 2GB (units: {', '.join(u for u in _UNITS if u)}); "
                         "0 turns the LoRA cache off")
    return int(number * _UNITS[unit])


def lora_cache_key(model, image: np.ndarray, prompt: str, config: DragConfig) -> str:
    """Everything that determines the trained weights, hashed."""
    digest = hashlib.sha256()
    settings = {
        "format": CACHE_FORMAT, "model": model.fingerprint, "prompt": prompt, "shape": list(image.shape),
        "rank": config.lora_rank, "alpha": config.lora_alpha, "steps": config.lora_steps, "lr": config.lora_lr,
        "batch": config.lora_batch_size, "seed": config.lora_seed, "targets": list(config.lora_target_modules),
        "augment": config.lora_augment,
        "device": model.device.type, "dtype": str(model.dtype),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    digest.update(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
    return digest.hexdigest()[:32]


def lora_folder(cache_dir: Union[str, Path, None] = None) -> Path:
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / "lora"


def entry_path(cache_dir: Union[str, Path], key: str) -> Path:
    return lora_folder(cache_dir) / f"{key}{ENTRY_SUFFIX}"


def entry_metadata(model, config: DragConfig, key_count: int) -> Dict[str, str]:
    """What an entry records about itself, checked on load (safetensors metadata is text only)."""
    return {"format": str(CACHE_FORMAT), "model": model.fingerprint, "rank": str(config.lora_rank),
            "alpha": str(config.lora_alpha), "targets": ",".join(config.lora_target_modules),
            "keys": str(key_count)}


def load_lora(path: Path, model, config: DragConfig,
              expected_shapes: Mapping[str, Sequence[int]]) -> Optional[Dict[str, torch.Tensor]]:
    """The weights of the entry at `path`, or None when there is none or it is not fit for use.

    `expected_shapes`: name -> shape of every tensor a LoRA with these settings has on this UNet.
    An unfit entry is reported in one CacheWarning; the caller retrains and saves over it.
    """
    try:
        with safe_open(str(path), framework="pt") as entry:
            metadata = entry.metadata() or {}
            weights = {name: entry.get_tensor(name) for name in entry.keys()}
    except FileNotFoundError:
        return None
    except (OSError, SafetensorError) as error:
        _warn(f"the cached LoRA {path} cannot be read ({type(error).__name__}: {error}); "
              "training it again and replacing the file")
        return None
    problem = _entry_problem(weights, metadata, entry_metadata(model, config, len(expected_shapes)), expected_shapes)
    if problem:
        _warn(f"the cached LoRA {path} is not usable ({problem}); training it again and replacing the file")
        return None
    _touch(path)  # a hit makes the entry the most recently used
    return weights


def save_lora(weights: Dict[str, torch.Tensor], path: Path, model, config: DragConfig,
              max_bytes: SizeLike = None) -> bool:
    """Store `weights` as the entry at `path`, then evict old entries. False when the cache is off
    (limit 0) or, with a CacheWarning, when the folder cannot be written: the caller has its weights
    and carries on without the cache."""
    from safetensors.torch import save_file  # torch only here: `dragwidget cache info` stays instant

    limit = max_cache_bytes(max_bytes)
    if limit == 0:
        return False
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        os.close(handle)
        save_file({k: v.contiguous() for k, v in weights.items()}, temporary,
                  metadata=entry_metadata(model, config, len(weights)))
        os.replace(temporary, path)  # atomic: a reader sees the old entry or the new one, never half a file
    except (OSError, SafetensorError) as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        _warn(f"cannot write the LoRA cache in {path.parent} ({type(error).__name__}: {error}); "
              "going on without caching. Set DRAGWIDGET_CACHE (or cache_dir) to a writable folder")
        return False
    _evict(path.parent, limit)
    return True


def cache_info(folder: Union[str, Path, None] = None) -> dict:
    """The cache folder (the editor's `cache_dir`), its LoRA entries, their bytes and the size limit."""
    root = Path(folder) if folder is not None else default_cache_dir()
    entries = list(_entries(lora_folder(root)))
    return {"folder": str(root), "entries": len(entries), "bytes": sum(stat.st_size for _, stat in entries),
            "max_bytes": max_cache_bytes()}


def clear_cache(folder: Union[str, Path, None] = None) -> int:
    """Delete every LoRA entry (and temporary files left by interrupted writers); returns the entries removed."""
    lora = lora_folder(folder)
    for leftover in lora.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
    entries = list(_entries(lora))
    for entry, _ in entries:
        entry.unlink(missing_ok=True)
    return len(entries)


def _entry_problem(weights, metadata, wanted_metadata, expected_shapes) -> Optional[str]:
    """Why these weights cannot be this entry's LoRA, or None when they can."""
    import torch

    differing = sorted(name for name, value in wanted_metadata.items() if metadata.get(name) != value)
    if differing:
        return f"written for other settings or another model: {', '.join(differing)} differ"
    if weights.keys() != expected_shapes.keys():
        missing, extra = expected_shapes.keys() - weights.keys(), weights.keys() - expected_shapes.keys()
        return f"{len(missing)} tensors missing and {len(extra)} unexpected for this UNet"
    for name, tensor in weights.items():
        if tuple(tensor.shape) != tuple(expected_shapes[name]):
            return f"{name} has shape {tuple(tensor.shape)}, this UNet needs {tuple(expected_shapes[name])}"
        if tensor.dtype != torch.float32:  # what `lora_finetuning.lora_weights` always stores
            return f"{name} holds {tensor.dtype}, not float32"
        if not tensor.isfinite().all():
            return f"{name} holds NaN or infinite values"
        if tensor.numel() and tensor.abs().max() > MAX_WEIGHT_MAGNITUDE:
            return f"{name} holds values up to {tensor.abs().max().item():.3g}, far beyond a trained LoRA's"
    return None


def _evict(lora: Path, limit: int) -> None:
    """Delete the least recently used entries until the rest fit in `limit` bytes."""
    kept, full = 0, False
    for entry, stat in sorted(_entries(lora), key=lambda item: item[1].st_mtime_ns, reverse=True):
        full = full or kept + stat.st_size > limit
        if full:
            entry.unlink(missing_ok=True)  # another process may have evicted it already
        else:
            kept += stat.st_size


def _entries(lora: Path):
    """(path, stat) of each entry in the folder; entries removed meanwhile by others are skipped."""
    for entry in lora.glob(f"*{ENTRY_SUFFIX}"):
        try:
            yield entry, entry.stat()
        except FileNotFoundError:
            continue


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass  # a read-only cache still serves hits; it only forgets their order


def _warn(message: str) -> None:
    warnings.warn(message, CacheWarning, stacklevel=3)
