"""Live previews while the pointer drags: the FastDrag edit of the pairs as they are now, recomputed
for the latest pointer position in one background thread.

Only the latest wish is kept: a new one replaces a wish not yet started and cancels the preview
being computed (at its next denoising step), so a preview is never queued behind an older one and
the pointer never waits for the engine. A preview never trains a LoRA (its settings have none).
Preparing the picture (inversion and the keys and values it records) is a job of the same thread,
which previews do not cancel: the first drag then previews at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..api import DragCancelled, DragEditor, DragPreview, DragRequest, DragWidgetError


@dataclass
class Shown:
    """A preview put on screen: what it was asked for, when, and what the engine spent on it."""

    preview: DragPreview
    request: DragRequest
    asked_at: float          # time.time() when the pointer event that asked for it arrived (a wall clock:
    shown_at: float          # a browser's can be compared with it)
    engine_seconds: float


class LivePreview:
    """`want(request)` asks for the preview of `request`; `show(shown)` puts each finished one on
    screen (in the worker thread); `say(message)` tells the status line what it does."""

    def __init__(self, editor: Callable[[], DragEditor], show: Callable[[Shown], None], say: Callable[[str], None]):
        self._editor, self._show, self._say = editor, show, say
        self._condition = threading.Condition()
        self._wanted: Optional[tuple] = None          # (kind, request, asked_at): the latest wish only
        self._wish = 0                                # counts wishes; a preview of an older one is overtaken
        self._drops = 0                               # counts drops; a preparation is cancelled by one
        self._thread: Optional[threading.Thread] = None
        self._stopped = False
        self.busy = False                             # a job is running now

    # ================================================================== wishes
    def want(self, request: DragRequest) -> None:
        """Preview `request` as soon as possible, instead of anything asked before."""
        self._put(("preview", request, time.time()))

    def prepare(self, request: DragRequest) -> None:
        """Prepare `request`'s picture for previews (its points are not used)."""
        self._put(("prepare", request, time.time()))

    def drop(self) -> None:
        """Forget the wish not yet started and cancel a preview being computed (a Run starts)."""
        with self._condition:
            self._wanted = None
            self._wish += 1
            self._drops += 1
            self._condition.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no job is running or waiting; False on timeout (tests, scripted use)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._wanted is not None or self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._condition.wait(left)
        return True

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self.drop()

    def _put(self, wish: tuple) -> None:
        with self._condition:
            self._wanted = wish
            self._wish += 1
            self._condition.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="dragwidget-live-preview", daemon=True)
                self._thread.start()

    # ================================================================== the worker
    def _work(self) -> None:
        while True:
            with self._condition:
                while self._wanted is None and not self._stopped:
                    self._condition.wait()
                if self._stopped:
                    return
                (kind, request, asked_at), wish, drops = self._wanted, self._wish, self._drops
                self._wanted, self.busy = None, True
            try:
                if kind == "prepare":
                    self._prepare(request, drops)
                else:
                    self._preview(request, asked_at, wish)
            except Exception as error:   # a live preview never breaks the widget: it says why it stopped
                self._say(f"no live preview: {type(error).__name__}: {error}")
            finally:
                with self._condition:
                    self.busy = False
                    self._condition.notify_all()

    def _overtaken(self, wish: int) -> bool:
        return self._stopped or self._wish != wish

    def _prepare(self, request: DragRequest, drops: int) -> None:
        try:
            self._say("preparing live previews (loading the model, inverting the picture)…")
            self._editor().ready(request.image, request.prompt, request.config,
                                 cancel=lambda: self._stopped or self._drops != drops)
            self._say("live preview ready: press on the picture and drag")
        except DragCancelled:
            self._say("")
        except DragWidgetError as error:
            self._say(f"no live preview: {error}")

    def _preview(self, request: DragRequest, asked_at: float, wish: int) -> None:
        started = time.perf_counter()
        try:
            preview = self._editor().preview(request, cancel=lambda: self._overtaken(wish))
        except DragCancelled:
            return
        except DragWidgetError as error:     # e.g. a pair too short to drag yet: say so, keep going
            self._say(f"live preview: {error}")
            return
        if not self._overtaken(wish):
            self._show(Shown(preview, request, asked_at, time.time(), time.perf_counter() - started))
