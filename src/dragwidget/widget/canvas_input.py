"""The canvas's keys, wheel and DOM events: ipyevents `Event`s on the canvas, decoded into calls
of the canvas's handlers. Which events are watched follows the mode: the wheel only where it sizes
the brush (elsewhere it scrolls the page), pointer moves only while they paint, show the brush or
drag a pair (no idle traffic)."""

from __future__ import annotations

from typing import Callable, List

from ipyevents import Event

from . import drawing

# "delete" removes the pair whose handle or target is clicked
MODES = ("points", "mask", "erase", "delete")
BRUSH_MODES = ("mask", "erase")
HOTKEY_MODES = {"p": "points", "m": "mask", "e": "erase", "x": "delete"}


class CanvasInput:
    def __init__(self, canvas):
        self.canvas = canvas
        self.submit: List[Callable[[], None]] = []     # Enter
        self.escape: List[Callable[[], None]] = []     # Escape
        self.events = Event(source=canvas, prevent_default_action=True, ignore_modifier_key_events=True,
                            watched_events=self._watched_events("points"))
        self.moves = Event(source=canvas, watched_events=[], wait=25, throttle_or_debounce="throttle")
        self.events.on_dom_event(self.handle_event)
        self.moves.on_dom_event(self.handle_event)
        self._pressed = False

    def mode_changed(self, mode: str) -> None:
        self.events.watched_events = self._watched_events(mode)
        self.watch_moves(self._pressed)

    def watch_moves(self, pressed: bool) -> None:
        """Pointer moves are watched in the brush modes, and while a press may drag a pair."""
        self._pressed = pressed
        self.moves.watched_events = ["mousemove"] if pressed or self.canvas.mode in BRUSH_MODES else []

    def handle_event(self, event: dict) -> None:
        """Dispatch an ipyevents DOM event (a dict) to the canvas's handlers."""
        kind = event.get("type") or event.get("event")
        if kind == "keydown":
            self.on_key(event.get("key", ""))
        elif kind == "wheel":
            self.on_wheel(event.get("deltaY", 0))
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
        events = ["mousedown", "mouseup", "mouseleave", "keydown"]
        return events + (["wheel"] if mode in BRUSH_MODES else [])  # the wheel scrolls the page otherwise

