"""dragwidget: DragDiffusion point-based image editing, as a Python API, a CLI and a Jupyter widget."""

from .config import DEFAULT_MODEL, DragConfig
from .editor import DragEditor, DragRequest, DragResult, PreparedImage, Progress
from .errors import DragCancelled, DragWidgetError, InputError, ModelNotFoundError
from .image_input import PointPair
from .loading import DiffusionModel, load_model

__all__ = [
    "DEFAULT_MODEL", "DragConfig", "DragEditor", "DragRequest", "DragResult", "PreparedImage", "Progress",
    "DragCancelled", "DragWidgetError", "InputError", "ModelNotFoundError", "PointPair", "DiffusionModel",
    "load_model",
]
__version__ = "0.1.0"


def __getattr__(name):
    # The widget is imported on first use, so `import dragwidget` does not load ipywidgets.
    if name == "DragWidget":
        from .widget import DragWidget

        return DragWidget
    raise AttributeError(f"module 'dragwidget' has no attribute {name!r}")
