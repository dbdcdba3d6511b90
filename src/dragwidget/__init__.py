"""dragwidget: DragDiffusion point-based image editing, as a Python API, a CLI and a Jupyter widget.

The engine (torch, diffusers) is imported on first use of a name that needs it, so that
`import dragwidget` and `dragwidget --help` stay instant.
"""

from typing import TYPE_CHECKING

from .config import DEFAULT_MODEL, DragConfig
from .errors import DragCancelled, DragWidgetError, InputError, ModelNotFoundError

# public name -> the module that defines it, imported when the name is first read
_LAZY = {
    "DragEditor": ".editor", "DragRequest": ".editor", "DragResult": ".editor", "PreparedImage": ".editor",
    "Progress": ".editor", "PointPair": ".image_input", "DiffusionModel": ".loading", "load_model": ".loading",
    "DragWidget": ".widget",
}

if TYPE_CHECKING:
    from .editor import DragEditor, DragRequest, DragResult, PreparedImage, Progress
    from .image_input import PointPair
    from .loading import DiffusionModel, load_model
    from .widget import DragWidget

__all__ = [
    "DEFAULT_MODEL", "DragConfig", "DragEditor", "DragRequest", "DragResult", "PreparedImage", "Progress",
    "DragCancelled", "DragWidgetError", "InputError", "ModelNotFoundError", "PointPair", "DiffusionModel",
    "load_model",
]
__version__ = "0.1.0"


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'dragwidget' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value          # later reads don't come back here
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
