"""Progress events and cancellation, shared by every long-running call of the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from PIL import Image

from .errors import DragCancelled

XY = Tuple[float, float]


@dataclass
class Progress:
    """One progress report. `stage` is one of waiting (for another run on the same model), lora,
    inversion, generate, drag, denoise, decode, features."""

    stage: str
    step: int
    total: int
    message: str = ""
    handles: Optional[List[XY]] = None          # drag stage: current handles, input-image pixels
    preview: Optional[Image.Image] = None       # drag stage: predicted clean image, when asked for
    cached: bool = False                        # the stage's result came from a cache


ProgressCallback = Callable[[Progress], None]
CancelCheck = Callable[[], bool]


class ProgressReporter:
    """Sends progress and turns a positive cancel check into DragCancelled."""

    def __init__(self, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None):
        self.progress, self.cancel = progress, cancel

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise DragCancelled("cancelled by the user; the prepared image is unchanged and can be dragged again")

    def __call__(self, event: Progress) -> None:
        if self.progress is not None:
            self.progress(event)
        self.check()
