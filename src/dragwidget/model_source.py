"""Where a model's files are, found without torch: an embedded model, a local folder, or a Hugging
Face hub id read from the local hub cache or from the hub.

The command line asks here before it imports the engine, so that a model that cannot be had (an
unknown id while offline) is refused at once instead of after torch's and diffusers' imports
(measured: about 12 s on a busy two-core machine). `huggingface_hub` is imported on first use only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

from .config import DEFAULT_MODEL
from .errors import ModelNotFoundError

EMBEDDED_MODELS_DIR = Path(__file__).parent / "models"
HUB_CHECK_SECONDS = 1.5
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
CHECKPOINT_MARKER = "model_index.json"   # at the root of a pipeline's repository
SINGLE_MODEL_MARKER = "config.json"      # at the root of a single model's (a VAE's) repository
SETTINGS_FILE = "dragwidget_settings.json"   # a model folder's recommended DragConfig changes


@dataclass(frozen=True)
class ModelSource:
    """Where to read a model from: `where` (a folder, or a hub id) and whether to stay on disk.

    `local_files_only` is true for a folder, and for a hub id read from the cache while the hub is
    off or unreachable (the hub client would otherwise retry for 42-48 s). `folder` is the folder
    or the id's cache snapshot whose files say which weights there are; None for an id not cached.
    """

    where: str
    is_local: bool
    local_files_only: bool
    folder: Optional[Path]


def embedded_model_path(name: str) -> Optional[Path]:
    path = EMBEDDED_MODELS_DIR / name
    return path if (path / CHECKPOINT_MARKER).is_file() else None


def embedded_model_names() -> list:
    if not EMBEDDED_MODELS_DIR.is_dir():
        return []
    return sorted(p.name for p in EMBEDDED_MODELS_DIR.iterdir() if (p / CHECKPOINT_MARKER).is_file())


def recommended_settings(where: Union[str, os.PathLike], is_local: bool) -> dict:
    """The DragConfig changes a model folder recommends (its SETTINGS_FILE); {} for a hub model or
    a folder without one."""
    settings = Path(where, SETTINGS_FILE) if is_local else None
    if settings is None or not settings.is_file():
        return {}
    return json.loads(settings.read_text())


def _looks_like_path(name: str) -> bool:
    # A hub id is "name" or "owner/name"; anything else is meant as a folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def resolve_model(name: Union[str, os.PathLike]) -> tuple:
    """Return (where, is_local) for a model name; raise ModelNotFoundError for a missing folder."""
    text = os.fspath(name)
    embedded = embedded_model_path(text)
    if embedded is not None:
        return str(embedded), True
    expanded = Path(text).expanduser()
    if expanded.is_dir():
        missing = [c for c in COMPONENTS if not (expanded / c).is_dir()]
        if missing:
            raise ModelNotFoundError(
                f"{expanded} is a folder but not a Stable Diffusion checkpoint in the diffusers layout: "
                f"it lacks the subfolder(s) {', '.join(missing)}. Expected unet/, vae/, text_encoder/, "
                f"tokenizer/ and scheduler/ as written by `StableDiffusionPipeline.save_pretrained`.")
        return str(expanded), True
    if _looks_like_path(text) or expanded.exists():
        raise ModelNotFoundError(
            f"model folder {text!r} does not exist. Give an existing folder in the diffusers layout, "
            f"a Hugging Face hub id such as {DEFAULT_MODEL!r}, or an embedded model: "
            f"{', '.join(embedded_model_names()) or '(none installed)'}.")
    return text, False


def locate_model(model: Union[str, os.PathLike], vae: Optional[str] = None) -> ModelSource:
    """Where to read the checkpoint `model` from (`vae`, its replacement VAE, only names it in the
    error). Raise ModelNotFoundError at once when it is neither on disk nor reachable."""
    return _locate(model, CHECKPOINT_MARKER, os.fspath(model), vae)


def locate_vae(vae: str, model: Union[str, os.PathLike]) -> ModelSource:
    """Where to read the VAE `vae` that replaces the checkpoint `model`'s, as `locate_model`."""
    return _locate(vae, SINGLE_MODEL_MARKER, os.fspath(model), vae)


def check_model_available(model: Union[str, os.PathLike], vae: Optional[str] = None) -> None:
    """Raise ModelNotFoundError now when the model or its VAE can be had neither from disk nor from
    the hub: what the command line asks before it imports the engine."""
    locate_model(model, vae)
    if vae is not None:
        locate_vae(vae, model)


def _locate(name: Union[str, os.PathLike], marker: str, model: str, vae: Optional[str]) -> ModelSource:
    where, is_local = resolve_model(name)
    if is_local:
        return ModelSource(where, True, True, Path(where))
    snapshot = _cached_snapshot(where, marker)
    disabled = hub_offline()
    offline = disabled or not hub_reachable()
    if offline and snapshot is None:
        reason = ("the hub is offline (HF_HUB_OFFLINE is set)" if disabled
                  else f"the hub did not answer within {HUB_CHECK_SECONDS} s")
        raise ModelNotFoundError(not_found_message(model, vae, f"{where!r} is not in the local cache and {reason}", where))
    return ModelSource(where, False, offline, snapshot)


def _cached_snapshot(repo_id: str, marker: str) -> Optional[Path]:
    """The cache snapshot (of the revision `main` points to) holding the repository's `marker`, if any."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(repo_id, marker)
    except ValueError:  # not a valid hub id; the load says so
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def repository_files(source: ModelSource) -> Tuple[str, ...]:
    """The paths ("unet/diffusion_pytorch_model.fp16.safetensors") of the files at the root and
    one folder down in the source's folder or cache snapshot; for a hub id not in the cache, the
    repository's files as the hub lists them (the source is then online)."""
    if source.folder is not None:
        return tuple(sorted(path.relative_to(source.folder).as_posix()
                            for pattern in ("*", "*/*") for path in source.folder.glob(pattern) if path.is_file()))
    from huggingface_hub import list_repo_files

    try:
        return tuple(list_repo_files(source.where))
    except Exception:  # the listing only chooses a weight variant: without it the full weights are read,
        return ()      # and loading them reports the cause (a missing or gated repository, the network)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE, as huggingface_hub read it at import or as set since."""
    from huggingface_hub import constants

    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def hub_reachable() -> bool:
    """One short request to the hub (proxies and HF_ENDPOINT honoured), without the client's retries."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_CHECK_SECONDS)
    except Exception:  # no answer, whatever the cause, means: not reachable now
        return False
    return True


def not_found_message(name: str, vae: Optional[str], reason: str, repo_id: Optional[str] = None) -> str:
    """Why the model `name` (with the VAE `vae`) cannot be loaded and what to do; `repo_id` is the
    hub id that is missing (the model's, or its VAE's), `name` when not known."""
    from huggingface_hub import constants

    repo_id = repo_id or name
    offline = hub_offline()
    embedded = embedded_model_names()
    return (
        f"could not load model {name!r}"
        + (f" with VAE {vae!r}" if vae else "")
        + f": {reason}\n"
        f"Tried: the Hugging Face hub id {repo_id!r} (hub access {'disabled by HF_HUB_OFFLINE' if offline else 'attempted'}) "
        f"and the local cache at {constants.HF_HUB_CACHE}.\n"
        "To fix: check the spelling of the id; while online, download it into the cache once "
        f"(`hf download {repo_id}`), here or on a machine whose cache you then copy here; pass a local folder in the "
        "diffusers layout (`--model /path/to/folder`)"
        + (f"; or use an embedded model that needs no download: {', '.join(embedded)} (`--model {embedded[0]}`)." if embedded else ".")
    )
