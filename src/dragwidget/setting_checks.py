"""What each DragConfig setting accepts, checked in one place for every way a config is built (the
API, the CLI's `--set name=text`, the widget, saved sessions), with errors that name the setting,
the value and what it accepts."""

from __future__ import annotations

import difflib
import functools
import json
import math
import numbers
import typing
from dataclasses import dataclass

from .errors import InputError


@dataclass(frozen=True)
class Range:
    """Allowed values of a numeric setting: from `low` (excluded when `low_open`) to `high`."""

    low: float
    high: float = math.inf
    low_open: bool = False

    def __contains__(self, value) -> bool:
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"


AT_LEAST_0, AT_LEAST_1, POSITIVE, FRACTION = Range(0), Range(1), Range(0, low_open=True), Range(0, 1, low_open=True)
RANGES = {
    "working_width": Range(8),              # one latent pixel of an SD VAE
    "lora_rank": AT_LEAST_1, "lora_alpha": AT_LEAST_1, "lora_steps": AT_LEAST_0, "lora_lr": POSITIVE,
    "lora_batch_size": AT_LEAST_1, "lora_seed": AT_LEAST_0,
    "num_inference_steps": AT_LEAST_1, "inversion_strength": FRACTION,
    "guidance_scale": AT_LEAST_0, "generation_guidance_scale": AT_LEAST_0,
    "feature_block": AT_LEAST_0,            # the upper end depends on the UNet, checked when it runs
    "feature_scale": FRACTION,
    "motion_radius": AT_LEAST_0,
    "tracking_radius": AT_LEAST_1,          # 0 would pin every handle where it starts: it could never move
    "reach_threshold": POSITIVE, "max_drag_steps": AT_LEAST_1, "drag_lr": POSITIVE, "mask_weight": AT_LEAST_0,
    "mutual_attention_start_step": AT_LEAST_0, "mutual_attention_start_layer": AT_LEAST_0,
    "mutual_attention_reference_layers": AT_LEAST_1,
    "seed": AT_LEAST_0, "preview_every": AT_LEAST_0,
    "gooddrag_denoising_steps": AT_LEAST_1, "gooddrag_rounds": AT_LEAST_1, "gooddrag_steps_per_round": AT_LEAST_1,
    "gooddrag_round_loss": AT_LEAST_0, "gooddrag_step_length": POSITIVE, "gooddrag_motion_radius": AT_LEAST_0,
    "gooddrag_tracking_radius": AT_LEAST_1, "gooddrag_lr": POSITIVE, "gooddrag_mask_weight": AT_LEAST_0,
    "gooddrag_stall_rounds": AT_LEAST_1, "gooddrag_inversion_strength": FRACTION, "gooddrag_lora_steps": AT_LEAST_0,
    "fastdrag_inference_steps": AT_LEAST_1, "fastdrag_inversion_strength": FRACTION, "fastdrag_lora_steps": AT_LEAST_0,
    "fastdrag_core_similarity": Range(-1, 1),
    "verdict_tolerance": POSITIVE, "verdict_min_pixels": AT_LEAST_0, "verdict_appearance_error": POSITIVE,
    "verdict_ensemble": AT_LEAST_1, "verdict_region_similarity": Range(-1, 1), "verdict_cell_similarity": Range(-1, 1),
    "verdict_shape_kept": FRACTION, "verdict_lost_fit": Range(-1, 1),
}
METHODS = ("dragdiffusion", "gooddrag", "fastdrag")
CHOICES = {"method": METHODS}
KINDS = {int: "a whole number", float: "a number", bool: "true or false", str: "text",
         tuple: "a non-empty list of names"}
TRUE_WORDS, FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
NONE_WORDS = ("none", "null", "")


@functools.lru_cache(maxsize=None)
def field_types() -> dict:
    """Setting name -> (base type, whether None is allowed), from the declared annotations."""
    from .config import DragConfig   # the settings are its fields; it checks them with this module

    types = {}
    for name, hint in typing.get_type_hints(DragConfig).items():
        arguments = typing.get_args(hint)
        optional = type(None) in arguments
        if optional:
            hint = next(a for a in arguments if a is not type(None))
        types[name] = (typing.get_origin(hint) or hint, optional)
    return types


def reject_unknown(names) -> None:
    known = list(field_types())
    unknown = sorted(set(names) - set(known))
    if unknown:
        hints = [f"{name!r} (did you mean {' or '.join(close)}?)" if (close := difflib.get_close_matches(name, known))
                 else repr(name) for name in unknown]
        raise InputError(f"DragConfig has no setting {', '.join(hints)}; known settings: {', '.join(known)}")


def describe(name: str) -> str:
    """What a setting accepts, e.g. "a whole number >= 1" or "a number in (0, 1]"."""
    kind, optional = field_types()[name]
    if name in CHOICES:
        return "one of " + ", ".join(CHOICES[name])
    text = " ".join(filter(None, (KINDS[kind], str(RANGES.get(name, "")))))
    return f"{text} or None" if optional else text


def check_setting(name: str, value):
    """The value as the setting stores it (ints accepted for floats, lists for tuples);
    InputError naming the setting, the value and what it accepts otherwise."""
    reject_unknown([name])
    kind, optional = field_types()[name]
    if value is None and optional:
        return None
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is bool and isinstance(value, bool):
        checked = value
    elif kind is int and is_number and isinstance(value, numbers.Integral):
        checked = int(value)
    elif kind is float and is_number and math.isfinite(value):
        checked = float(value)
    elif kind is tuple and isinstance(value, (tuple, list)) and value and all(isinstance(v, str) and v for v in value):
        checked = tuple(value)
    elif kind is str and isinstance(value, str):
        checked = value
    else:
        raise InputError(f"{name} must be {describe(name)}, got {value!r}")
    if name in RANGES and checked not in RANGES[name]:
        raise InputError(f"{name} must be {describe(name)}, got {checked!r}")
    if name in CHOICES and checked not in CHOICES[name]:
        raise InputError(f"{name} must be {describe(name)}, got {checked!r}")
    return checked


def parse_setting(name: str, text: str):
    """A setting's value typed as text (the CLI's `--set name=text`), read by the setting's type."""
    reject_unknown([name])
    kind, optional = field_types()[name]
    word = text.strip().lower()
    if optional and word in NONE_WORDS:
        return None
    try:
        if kind is bool:
            value = True if word in TRUE_WORDS else False if word in FALSE_WORDS else text
        elif kind is tuple:
            value = json.loads(text) if text.strip().startswith("[") else [p.strip() for p in text.split(",")]
        else:
            value = kind(text.strip()) if kind in (int, float) else text
    except ValueError:      # int("2.5"), float("high"), a broken JSON list
        value = text
    return check_setting(name, value)
