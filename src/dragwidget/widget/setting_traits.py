"""The widget's settings as traits: one per DragConfig field a method shows, named, typed,
described and defaulted as that field (the widget's own default where it has one); the values they
take from an engine config; and the old names of two of them, kept one release with a warning."""

from __future__ import annotations

import warnings

import traitlets

from ..api import METHODS, DragConfig, InputError, setting_info, settings_of

# The DragConfig settings the widget has a trait (of the same name) for: the method, and every
# setting the Parameters panel shows for one method or another.
WIDGET_SETTINGS = ("method", *dict.fromkeys(name for method in METHODS for name in settings_of(method)))
# Where the widget's default differs from the engine's (used when the engine config leaves the
# engine's default): the widget shows the drag as a GIF, and keeps the pixels outside a drawn mask.
WIDGET_DEFAULTS = {"preview_every": 4, "keep_outside_mask": True}
TRAIT_TYPES = {int: traitlets.Int, float: traitlets.Float, bool: traitlets.Bool, str: traitlets.Unicode}
RENAMED_PARAMETERS = {"drag_steps": "max_drag_steps", "learning_rate": "drag_lr"}


def setting_traits() -> dict:
    """A trait per widget setting, named, typed, described and defaulted as its DragConfig field
    (the widget's own default where WIDGET_DEFAULTS has one)."""
    traits = {}
    for name in WIDGET_SETTINGS:
        info = setting_info(name)
        traits[name] = TRAIT_TYPES[info.kind](WIDGET_DEFAULTS.get(name, info.default), help=info.help)
    return traits


# The class the widget takes its setting traits from.
SettingTraits = type("SettingTraits", (traitlets.HasTraits,), setting_traits())


def renamed_trait(old_name: str) -> property:
    """A deprecated name of a setting trait, read and written as the trait (with a DeprecationWarning)."""
    new_name = RENAMED_PARAMETERS[old_name]

    def warn() -> None:
        warnings.warn(f"DragWidget.{old_name} is deprecated, use DragWidget.{new_name}", DeprecationWarning,
                      stacklevel=3)

    def read(widget):
        warn()
        return getattr(widget, new_name)

    def write(widget, value) -> None:
        warn()
        setattr(widget, new_name, value)

    return property(read, write, doc=f"Deprecated: {new_name}.")


def current_names(parameters: dict, where: str, stacklevel: int = 2) -> dict:
    """`parameters` with each renamed one under its new name (a DeprecationWarning naming it, attributed
    `stacklevel` frames up from the caller); InputError when a setting is given under both names."""
    current = {}
    for name, value in parameters.items():
        new_name = RENAMED_PARAMETERS.get(name, name)
        if new_name != name:
            if new_name in parameters:
                raise InputError(f"{where}: {name} is the old name of {new_name}; give {new_name} only")
            warnings.warn(f"{where}: {name} is deprecated, use {new_name}", DeprecationWarning,
                          stacklevel=stacklevel + 1)
        current[new_name] = value
    return current


def widget_values(config: DragConfig) -> dict:
    """The widget's settings for an engine config: its chosen method's values of the shared ones, and
    the widget's own defaults where the config has the engine's."""
    resolved, engine = config.for_method(), DragConfig()
    values = {name: getattr(resolved, name) for name in WIDGET_SETTINGS}
    # the live preview is FastDrag as the model's settings run it
    values.update(preview_steps=config.fastdrag_inference_steps, preview_strength=config.fastdrag_inversion_strength)
    for name, widget_default in WIDGET_DEFAULTS.items():
        if getattr(config, name) == getattr(engine, name):
            values[name] = widget_default
    return values
