"""Exceptions with messages that say what went wrong and how to fix it."""


class DragWidgetError(Exception):
    """Base class of every error dragwidget raises on purpose."""


class InputError(DragWidgetError, ValueError):
    """The image, points, mask or prompt given by the user cannot be used as they are."""


class ModelNotFoundError(DragWidgetError, OSError):
    """Model weights could not be found locally nor downloaded."""


class DragCancelled(DragWidgetError):
    """The drag was cancelled through its callback; the prepared image stays usable."""
