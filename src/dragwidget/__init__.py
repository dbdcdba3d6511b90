"""dragwidget: DragDiffusion point-based image editing, as a Python API, a CLI and a Jupyter widget.

The package's names are those of the public module `dragwidget.api` (and the widget); the engine
(torch, diffusers) is imported on first use of a name that needs it, so that `import dragwidget`
and `dragwidget --help` stay instant.
"""

from typing import TYPE_CHECKING

from .api import DEFAULT_MODEL, DragCancelled, DragConfig, DragWidgetError, InputError, ModelNotFoundError, PointPair

if TYPE_CHECKING:
    from .api import DiffusionModel, DragEditor, DragRequest, DragResult, PreparedImage, Progress, load_model  # noqa: F401

__all__ = [
    "DEFAULT_MODEL", "DragConfig", "DragEditor", "DragRequest", "DragResult", "PreparedImage", "Progress",
    "DragCancelled", "DragWidgetError", "InputError", "ModelNotFoundError", "PointPair", "DiffusionModel",
    "load_model",
]
__version__ = "0.1.0"


def __getattr__(name):
    if name == "DragWidget":
        from . import widget
        return widget.DragWidget
    if name in __all__:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'dragwidget' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__) | {"DragWidget"})
