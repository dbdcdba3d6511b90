"""Running long work (model loading, LoRA, inversion, the drag) in a background thread.

Comm messages from the browser are not processed while a notebook cell blocks, so the engine
runs in a `threading.Thread`; the widget updates itself from that thread (ipywidgets 8 sends
trait changes from any thread). Cancel sets a `threading.Event` whose `is_set` the engine polls
between steps.
"""

from __future__ import annotations

import threading
import traceback
from typing import Callable, Optional

from ..api import DragWidgetError

BUSY = "a run is in progress: press Cancel (or widget.cancel()) first"


class RunInProgressError(DragWidgetError, RuntimeError):
    """The image cannot change while a run works on it."""


class Runner:
    """One job at a time. `start(work, done)` runs `work(cancelled)` in a thread, then
    `done(value, error)` in the same thread (error None on success)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.cancel_event = threading.Event()
        self.value = None
        self.error: Optional[BaseException] = None
        self.error_traceback = ""

    @property
    def busy(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self, work: Callable[[Callable[[], bool]], object],
              done: Callable[[object, Optional[BaseException]], None], name: str = "dragwidget-run") -> bool:
        """Start `work`; False (and nothing started) when a job is already running."""
        with self._lock:
            if self.busy:
                return False
            self.cancel_event = threading.Event()
            self.value, self.error, self.error_traceback = None, None, ""
            cancel_event = self.cancel_event

            def target():
                value, error = None, None
                try:
                    value = work(cancel_event.is_set)
                except BaseException as caught:  # reported in the widget, never lost in a thread
                    error = caught
                    self.error_traceback = traceback.format_exc()
                self.value, self.error = value, error
                done(value, error)

            self._thread = threading.Thread(target=target, name=name, daemon=True)
            self._thread.start()
            return True

    def cancel(self) -> bool:
        if not self.busy:
            return False
        self.cancel_event.set()
        return True

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the job; True when no job is running any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.busy
