"""The canvas's mouse, keys and wheel, decoded into calls of the canvas's handlers.

The mouse comes from ipycanvas's own events (buffer pixels), which every front end tried delivers
(JupyterLab, Notebook 7, classic Notebook with ipywidgets 7). Keys and the wheel come from ipyevents,
where its front end loads: classic Notebook's ipyevents 2.0.4 wheel enables an extension whose files
it does not ship (mwcraig/ipyevents#91), and there a missing ipyevents costs the hotkeys, not the
clicks. `keys_active` turns True at the first ipyevents event (the pointer entering the canvas), and
`describe()` says which input is active. The wheel is watched only where it sizes the brush
(elsewhere it scrolls the page).
"""

from __future__ import annotations

from typing import Callable, List

import traitlets
from ipyevents import Event

from . import drawing

# "delete" removes the pair whose handle or target is clicked
MODES = ("points", "mask", "erase", "delete")
BRUSH_MODES = ("mask", "erase")
HOTKEY_MODES = {"p": "points", "m": "mask", "e": "erase", "x": "delete"}


class CanvasInput(traitlets.HasTraits):
    keys_active = traitlets.Bool(False, help="an ipyevents event arrived: its front end is loaded")
    mouse_active = traitlets.Bool(False, help="an ipycanvas mouse event arrived")

    def __init__(self, canvas):
        super().__init__()
        self.canvas = canvas
        self.submit: List[Callable[[], None]] = []     # Enter
        self.escape: List[Callable[[], None]] = []     # Escape
        self.events = Event(source=canvas, prevent_default_action=True, ignore_modifier_key_events=True,
                            watched_events=self._watched_events("points"))
        self.events.on_dom_event(self.handle_event)
        # MultiCanvas hands its front end's events to its last layer; the canvas's own on_mouse_*
        # are its handlers, so the callbacks are registered on that layer
        layer = canvas[-1]
        layer.on_mouse_down(lambda x, y: self._mouse(canvas.on_mouse_down, x, y))
        layer.on_mouse_move(lambda x, y: self._mouse(canvas.on_mouse_move, x, y))
        layer.on_mouse_up(lambda x, y: self._mouse(canvas.on_mouse_up, x, y))
        layer.on_mouse_out(lambda x, y: self._mouse(lambda *_: canvas.on_mouse_leave(), x, y))

    def _mouse(self, handler, x: float, y: float) -> None:
        self.mouse_active = True
        handler(x, y)

    def mode_changed(self, mode: str) -> None:
        self.events.watched_events = self._watched_events(mode)

    def describe(self) -> str:
        """Which input is active, for the help line."""
        mouse = "mouse: ipycanvas events"
        if self.keys_active:
            return f"{mouse}; keys and wheel: ipyevents (working here)"
        return (f"{mouse}; keys and wheel: ipyevents (nothing received yet: move the pointer over the picture; "
                "if the hotkeys still do nothing, this front end lacks ipyevents' JavaScript: use the toolbar)")

    def handle_event(self, event: dict) -> None:
        """Dispatch an ipyevents DOM event (a dict) to the canvas's handlers (mouse events too: a
        front end or a test may send them this way)."""
        self.keys_active = True
        kind = event.get("type") or event.get("event")
        if kind == "keydown":
            self.on_key(event.get("key", ""))
        elif kind == "wheel":
            self.on_wheel(event.get("deltaY", 0))
        elif kind == "mouseenter":
            return
        elif kind == "mouseleave":
            self.canvas.on_mouse_leave()
        elif kind in ("mousedown", "mousemove", "mouseup"):
            x, y = drawing.event_buffer_xy(event, self.canvas.canvas_size)
            if kind == "mousedown":
                if event.get("button", 0) == 0:
                    self.canvas.on_mouse_down(x, y, time_stamp=event.get("timeStamp"))
            elif kind == "mousemove":
                self.canvas.on_mouse_move(x, y, buttons=event.get("buttons"), time_stamp=event.get("timeStamp"))
            else:
                self.canvas.on_mouse_up(x, y)

    def on_wheel(self, delta_y: float) -> None:
        canvas = self.canvas
        if canvas.mode in BRUSH_MODES and delta_y:
            canvas.brush_radius = min(canvas.brush_max, max(1, canvas.brush_radius + (-1 if delta_y > 0 else 1)))

    def on_key(self, key: str) -> None:
        """Hotkeys: p points, m mask brush, e eraser, x delete pairs, z undo, y redo; Enter and
        Escape go to the `on_submit` / `on_escape` callbacks."""
        lower = key.lower()
        if lower in ("enter", "return", "escape"):
            for callback in list(self.escape if lower == "escape" else self.submit):
                callback()
        elif lower in HOTKEY_MODES:
            self.canvas.mode = HOTKEY_MODES[lower]
        elif lower == "z":
            self.canvas.undo()
        elif lower == "y":
            self.canvas.redo()

    @staticmethod
    def _watched_events(mode):
        events = ["mouseenter", "keydown"]
        return events + (["wheel"] if mode in BRUSH_MODES else [])  # the wheel scrolls the page otherwise

