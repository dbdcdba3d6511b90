"""The Jupyter widget: `from dragwidget.widget import DragWidget`."""

from .models import choose_editor, default_model_name
from .session import Session, load_session, save_session
from .widget import DragWidget, enable_colab_widgets

__all__ = ["DragWidget", "Session", "choose_editor", "default_model_name", "enable_colab_widgets",
           "load_session", "save_session"]
