"""Which model a widget or notebook uses, and its default settings, without loading it."""

from __future__ import annotations

import os
from typing import Tuple

from ..api import (DEFAULT_MODEL, DragConfig, DragWidgetError, default_device, embedded_model_names, recommended_settings,
                   resolve_model, shipped_stage_rates)

EMBEDDED_DEFAULT = "toy"
MODEL_ENV = "DRAGWIDGET_MODEL"


def gpu_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def default_model_name() -> str:
    """$DRAGWIDGET_MODEL, else Stable Diffusion 1.5 with a GPU, else the embedded toy model."""
    override = os.environ.get(MODEL_ENV)
    if override:
        return override
    return DEFAULT_MODEL if gpu_available() else EMBEDDED_DEFAULT


def model_settings(name) -> DragConfig:
    """The settings a model recommends (its dragwidget_settings.json), read without loading it;
    the reference settings for a hub model or when unknown."""
    try:
        where, is_local = resolve_model(name)
    except DragWidgetError:
        return DragConfig()
    try:
        return DragConfig.from_dict(recommended_settings(where, is_local))
    except (ValueError, DragWidgetError):
        return DragConfig()


def model_stage_rates(name) -> dict:
    """A model's shipped seconds per step for this machine's default device, read without loading
    it ({} for a hub model, or a folder without them)."""
    try:
        where, is_local = resolve_model(name)
    except DragWidgetError:
        return {}
    return shipped_stage_rates(where, default_device().type) if is_local else {}


def choose_editor(**editor_kwargs) -> Tuple["DragEditor", str]:
    """Load the model a notebook should use and say why.

    $DRAGWIDGET_MODEL wins; otherwise Stable Diffusion 1.5 when a GPU is present and its weights
    can be had (local cache or download); otherwise the embedded toy model, which needs neither.
    """
    from ..api import DragEditor

    override = os.environ.get(MODEL_ENV)
    if override:
        return DragEditor(override, **editor_kwargs), f"Using {override!r}, as ${MODEL_ENV} asks."
    fallback_reason = "no GPU was found"
    if gpu_available():
        try:
            editor = DragEditor(DEFAULT_MODEL, **editor_kwargs)
            return editor, f"A GPU is present: using Stable Diffusion 1.5 ({DEFAULT_MODEL})."
        except DragWidgetError as error:
            fallback_reason = f"a GPU is present but Stable Diffusion 1.5 could not be loaded ({str(error).splitlines()[0]})"
    if EMBEDDED_DEFAULT not in embedded_model_names():
        raise DragWidgetError(
            f"{fallback_reason}, and the embedded {EMBEDDED_DEFAULT!r} model is not installed; "
            f"set ${MODEL_ENV} to a model folder or hub id")
    editor = DragEditor(EMBEDDED_DEFAULT, **editor_kwargs)
    return editor, (f"Using the embedded {EMBEDDED_DEFAULT!r} model (64x64 pictures of simple shapes, "
                    f"seconds per edit on a CPU) because {fallback_reason}.")
