"""The engine's public face: everything the widget, the CLI and the benchmarks use of it, and
nothing they should not. Requests and results, the editor, errors, settings, point pairs, models,
feature maps and locating content.

    from dragwidget.api import DragEditor, DragRequest

Names that need torch are imported on first use, so that reading a setting or a point pair (the
CLI's --help, the widget's checks) stays instant.
"""

from __future__ import annotations

import importlib
from .config import DEFAULT_MODEL, METHOD_SETTINGS, SHARED_SETTINGS, DragConfig, method_field, setting_info, settings_of
from .errors import DragCancelled, DragWidgetError, InputError, ModelNotFoundError
from .setting_checks import METHODS, check_setting, describe, parse_setting
from .image_input import ImageLike, load_image, load_mask, validate_prompt
from .model_source import (check_model_available, embedded_model_names, embedded_model_path, recommended_settings,
                           resolve_model)
from .points import PointPair, as_pairs, normalise_points
from .run_plan import RATES_FILE

# public name -> the engine module that defines it, imported when the name is first read
_LAZY = {
    # the editor, its requests and results
    "DragEditor": ".editor", "DragRequest": ".drag_request", "DragResult": ".drag_request", "DragPreview": ".drag_request",
    "PreparedImage": ".prepared_image", "Progress": ".progress", "RunPlan": ".run_plan",
    # models
    "DiffusionModel": ".loading", "load_model": ".loading", "default_device": ".loading",
    "shipped_stage_rates": ".loading", "choose_cpu_threads": ".cpu_threads", "use_cpu_threads": ".cpu_threads",
    "reconstruct": ".generation", "image_to_tensor": ".encoding",
    # feature maps and locating content
    "FeatureRequest": ".feature_maps", "FeatureMaps": ".feature_maps", "figure_png": ".feature_maps",
    "Match": ".locating", "best_match": ".locating", "dift_features": ".locating",
    "DIFT_TIMESTEP": ".locating", "DIFT_BLOCK": ".locating", "DIFT_ENSEMBLE": ".locating", "DIFT_SEED": ".locating",
    # the LoRA disk cache
    "cache_info": ".lora_cache", "clear_cache": ".lora_cache",
}

__all__ = ["DEFAULT_MODEL", "METHODS", "METHOD_SETTINGS", "SHARED_SETTINGS", "setting_info", "settings_of", "DragConfig", "check_setting", "describe", "method_field", "parse_setting",
           "DragCancelled", "DragWidgetError", "InputError", "ModelNotFoundError", "ImageLike", "load_image",
           "load_mask", "validate_prompt", "check_model_available", "recommended_settings",
           "embedded_model_names", "embedded_model_path", "resolve_model", "PointPair", "as_pairs",
           "normalise_points", "RATES_FILE", *_LAZY]

def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'dragwidget.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __package__), name)
    globals()[name] = value          # later reads don't come back here
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
