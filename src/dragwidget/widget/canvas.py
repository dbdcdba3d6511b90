"""The drag canvas: the image with its point pairs and mask, the mouse and keys that edit them.

`DragCanvas` is an ipycanvas `MultiCanvas` that owns its layers (image, mask overlay, points,
brush cursor), its ipyevents, its drawing and its edit data. The traits `points`, `pending`,
`mask` and `mode` are the only copy of that data; the undo history keeps earlier values of them.
Events arrive in canvas buffer pixels (ipycanvas) or CSS pixels (ipyevents, converted here);
everything stored is in image pixels.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, List, Optional

import numpy as np
import traitlets
from ipycanvas import MultiCanvas, hold_canvas
from ipyevents import Event

from ..api import InputError, PointPair, load_image, load_mask, normalise_points
from . import drawing
from .history import Checked, EditHistory, Snapshot, Stroke
from .runner import BUSY, RunInProgressError

# "delete" removes the pair whose handle or target is clicked
MODES = ("points", "mask", "erase", "delete")
BRUSH_MODES = ("mask", "erase")
HOTKEY_MODES = {"p": "points", "m": "mask", "e": "erase", "x": "delete"}
# ipycanvas batches drawing commands in one process-wide manager: draw from one thread at a time.
_DRAW_LOCK = threading.RLock()


class DragCanvas(MultiCanvas):
    """Click handle -> target pairs, paint the region that may change; undo and redo."""

    image = traitlets.Any(None, allow_none=True, help="the picture (PIL RGB) or None")
    points = traitlets.Any([], help="the PointPairs, in image pixels (set them in any form `PointPair.of` reads)")
    pending = traitlets.Any(None, allow_none=True, help="a handle whose target is still to be clicked")
    mask = Checked(None, help="HxW bool array, True = may change; None without an image")
    mode = traitlets.Enum(MODES, default_value="points")
    brush_radius = traitlets.Int(4, help="mask brush radius in image pixels")
    brush_max = traitlets.Int(64)
    show_mask = traitlets.Bool(True)
    tracked = traitlets.Any(None, allow_none=True, help="the handles where point tracking has them during a run")
    locked = traitlets.Bool(False, help="a run works on the current picture: clicks and strokes are ignored")
    can_undo = traitlets.Bool(False)
    can_redo = traitlets.Bool(False)
    message = traitlets.Unicode("", help="what the last action did, for a status line")

    def __init__(self, max_display_size=(448, 448)):
        self.max_display_size = tuple(int(v) for v in max_display_size)
        self.scale = 1.0
        self.canvas_size = (self.max_display_size[0], self.max_display_size[1] // 2)
        super().__init__(4, width=self.canvas_size[0], height=self.canvas_size[1])
        self.add_class("dragwidget-canvas")
        self.lock = threading.RLock()
        self.history = EditHistory()
        self._action: Optional[str] = None        # label of the action changing the data right now
        self._stroke: Optional[Stroke] = None
        self._stroke_time = None
        self._hover = None
        self._submit: List[Callable[[], None]] = []
        self._escape: List[Callable[[], None]] = []
        self.image_layer, self.mask_layer, self.points_layer, self.cursor_layer = (self[i] for i in range(4))
        self._events = Event(source=self, prevent_default_action=True, ignore_modifier_key_events=True,
                             watched_events=self._watched_events("points"))
        # Pointer moves are only needed to paint and to show the brush: watched in mask modes only.
        self._moves = Event(source=self, watched_events=[], wait=25, throttle_or_debounce="throttle")
        self._events.on_dom_event(self.handle_event)
        self._moves.on_dom_event(self.handle_event)
        self.on_client_ready(self.redraw)
        self.redraw()

    def on_submit(self, callback: Callable[[], None]) -> None:
        """Call `callback` when Enter is pressed over the canvas."""
        self._submit.append(callback)

    def on_escape(self, callback: Callable[[], None]) -> None:
        self._escape.append(callback)

    # ================================================================== checks
    @traitlets.validate("image")
    def _valid_image(self, proposal):
        if self.locked:
            raise RunInProgressError(f"cannot change the image now: {BUSY}")
        return None if proposal["value"] is None else load_image(proposal["value"])

    @traitlets.validate("points")
    def _valid_points(self, proposal):
        return self.checked_points(proposal["value"])

    def checked_points(self, value) -> List[PointPair]:
        if value is None or (hasattr(value, "__len__") and len(value) == 0):
            return []
        if self.image is None:
            raise InputError("set an image before its points")
        return normalise_points(value, *self.image.size)

    @traitlets.validate("mask")
    def _valid_mask(self, proposal):
        return self.checked_mask(proposal["value"])

    def checked_mask(self, value) -> Optional[np.ndarray]:
        if self.image is None:
            return None
        width, height = self.image.size
        mask = None if value is None else load_mask(value, width, height)
        return np.zeros((height, width), bool) if mask is None else mask

    @traitlets.validate("brush_radius")
    def _valid_radius(self, proposal):
        return max(1, int(proposal["value"]))

    # ================================================================== the edit data and its history
    def snapshot(self, label: str = "") -> Snapshot:
        return Snapshot.of(label, self.points, self.pending, self.mask)

    @contextlib.contextmanager
    def _applying(self, label: str):
        """Changes of the data inside are the action `label` (no undo step of their own)."""
        self._action = label
        try:
            with self.hold_trait_notifications():
                yield
        finally:
            self._action = None

    @contextlib.contextmanager
    def _edit(self, label: str):
        """One undo step for every change of the data inside."""
        with self.lock:
            self.history.record(self.snapshot(label))
            with self._applying(label):
                yield
            self._history_changed()

    @traitlets.observe("points", "pending", "mask")
    def _data_changed(self, change):
        if self._action is None and self.image is not None and change["name"] != "pending":
            self._record_outside_change(change)
        if change["name"] == "mask":
            self._redraw_overlay()
        else:
            self._redraw_points()

    def _record_outside_change(self, change) -> None:
        with self.lock:
            # set from Python (widget.points = ...): an undo step too, and no handle left waiting
            before = {"points": self.points, "pending": self.pending, "mask": self.mask, change["name"]: change["old"]}
            if before["mask"] is not None:
                self.history.record(Snapshot.of(f"set {change['name']}", **before))
                self._history_changed()
            if change["name"] == "points" and self.pending is not None:
                with self._applying("set points"):
                    self.pending = None

    def _history_changed(self) -> None:
        self.can_undo, self.can_redo = self.history.can_undo, self.history.can_redo

    def _restore(self, snapshot: Snapshot) -> None:
        with self._applying(snapshot.label):
            self.points = list(snapshot.points)
            self.pending = None if snapshot.pending is None else list(snapshot.pending)
            self.mask = snapshot.unpacked_mask()
        self._history_changed()

    def undo(self) -> Optional[str]:
        return self._step_history(self.history.undo, "undo")

    def redo(self) -> Optional[str]:
        return self._step_history(self.history.redo, "redo")

    def _step_history(self, step, name: str) -> Optional[str]:
        with self.lock:
            if not self.editable:
                return None
            self.end_stroke()
            snapshot = step(self.snapshot())
            if snapshot is None:
                return None
            self._restore(snapshot)
        self.say(f"{name}: {snapshot.label}")
        return snapshot.label

    def say(self, message: str) -> None:
        self.message = ""          # the same message again is news too
        self.message = message

    @traitlets.observe("image")
    def _image_changed(self, change):
        image = change["new"]
        with self.lock:
            self._stroke = None
            self.tracked = None
            with self._applying("new image"):
                self.points, self.pending = [], None
                self.mask = None if image is None else np.zeros((image.height, image.width), bool)
            self.history.clear()
            self._history_changed()
            if image is not None:
                self.scale = drawing.fit_scale(image.width, image.height, *self.max_display_size)
                self.canvas_size = drawing.display_size(image.width, image.height, self.scale)
                self.brush_max = max(4, max(image.size) // 4)
                self.brush_radius = max(1, round(max(image.size) / 24))
        self.redraw()

    @property
    def editable(self) -> bool:
        return self.image is not None and not self.locked

    def add_point(self, x: float, y: float) -> str:
        """A click in points mode at image pixel (x, y): a new handle, or the pending handle's target."""
        with self.lock:
            if not self.editable:
                return "ignored"
            if self.pending is None:
                with self._edit("handle"):
                    self.pending = [x, y]
                return "handle"
            if [x, y] == list(self.pending):
                return "ignored"  # a target on its handle would be refused by the engine
            with self._edit("target"):
                self.points = self.points + [PointPair.of((self.pending, (x, y)))]
                self.pending = None
            return "target"

    def remove_pair(self, index: int) -> bool:
        """Remove pair `index` (one undo step); False when there is no such pair."""
        with self.lock:
            if not self.editable or not 0 <= index < len(self.points):
                return False
            with self._edit("delete pair"):
                self.points = self.points[:index] + self.points[index + 1:]
            return True

    def drop_pending(self) -> bool:
        with self.lock:
            if not self.editable or self.pending is None:
                return False
            with self._edit("drop handle"):
                self.pending = None
            return True

    def clear_points(self) -> bool:
        with self.lock:
            if not self.editable or (not self.points and self.pending is None):
                return False
            with self._edit("clear points"):
                self.points, self.pending = [], None
            return True

    def clear_mask(self) -> bool:
        with self.lock:
            self.end_stroke()
            if not self.editable or not self.mask.any():
                return False
            with self._edit("clear mask"):
                self.mask = np.zeros_like(self.mask)
            return True

    def end_stroke(self) -> bool:
        """Finish the stroke in progress; True when it changed the mask (one undo step)."""
        with self.lock:
            stroke, self._stroke, self._stroke_time = self._stroke, None, None
            if stroke is None or np.array_equal(stroke.mask, self.mask):
                return False
            with self._edit("erase" if stroke.erase else "stroke"):
                self.mask = stroke.mask
            return True

    # ================================================================== coordinates
    def to_image(self, x: float, y: float):
        """Canvas buffer pixels -> the image pixel under them (integers, inside the image)."""
        return drawing.image_pixel((x, y), self.scale, self.image.size)

    def _to_image_continuous(self, x: float, y: float):
        """Canvas buffer pixels -> continuous image coordinates with pixel centres on integers."""
        return x / self.scale - 0.5, y / self.scale - 0.5

    # ================================================================== events
    def handle_event(self, event: dict) -> None:
        """Dispatch an ipyevents DOM event (a dict) to the handlers below."""
        kind = event.get("type") or event.get("event")
        if kind == "keydown":
            self.on_key(event.get("key", ""))
        elif kind == "wheel":
            self.on_wheel(event.get("deltaY", 0))
        elif kind == "mouseleave":
            self.on_mouse_leave()
        elif kind in ("mousedown", "mousemove", "mouseup"):
            x, y = drawing.event_buffer_xy(event, self.canvas_size)
            if kind == "mousedown":
                if event.get("button", 0) == 0:
                    self.on_mouse_down(x, y, time_stamp=event.get("timeStamp"))
            elif kind == "mousemove":
                self.on_mouse_move(x, y, buttons=event.get("buttons"), time_stamp=event.get("timeStamp"))
            else:
                self.on_mouse_up(x, y)

    def on_mouse_down(self, x: float, y: float, time_stamp=None) -> None:
        """A press at canvas buffer pixel (x, y): a point in points mode, a pair removed in delete
        mode, a stroke start otherwise."""
        with self.lock:
            if not self.editable:
                return
            if self.mode == "points":
                self.add_point(*self.to_image(x, y))
            elif self.mode == "delete":
                self.delete_pair_at(x, y)
            else:
                self.end_stroke()
                self._stroke_time = time_stamp
                self._stroke = Stroke(self.mask, *self._to_image_continuous(x, y), self.brush_radius,
                                      self.mode == "erase")
                self._redraw_overlay(self._stroke.first_box)

    def delete_pair_at(self, x: float, y: float) -> Optional[int]:
        """Remove the pair whose handle or target is at (or near) canvas buffer pixel (x, y); its index."""
        with self.lock:
            index = drawing.pair_at(self.points, (x, y), self.scale) if self.editable else None
            removed = index is not None and self.remove_pair(index)
        if removed:
            self.say(f"pair {index + 1} removed (z to undo)")
        return index if removed else None

    def on_mouse_move(self, x: float, y: float, buttons=None, time_stamp=None) -> None:
        """Pointer at (x, y); `buttons` as in the DOM (1 = left pressed; None = unknown)."""
        self._hover = (x, y)
        with self.lock:
            stroke = self._stroke
            late = time_stamp is not None and self._stroke_time is not None and time_stamp < self._stroke_time
            if stroke is not None and not late and (buttons is None or buttons & 1):
                self._redraw_overlay(stroke.extend(*self._to_image_continuous(x, y), self.brush_radius))
        self._draw_cursor(self._hover)

    def on_mouse_up(self, x: float, y: float) -> None:
        with self.lock:
            if self._stroke is not None:
                self._redraw_overlay(self._stroke.extend(*self._to_image_continuous(x, y), self.brush_radius))
                self.end_stroke()

    def on_mouse_leave(self) -> None:
        self._hover = None
        self.end_stroke()
        self._draw_cursor(None)

    def on_wheel(self, delta_y: float) -> None:
        if self.mode in BRUSH_MODES and delta_y:
            self.brush_radius = min(self.brush_max, max(1, self.brush_radius + (-1 if delta_y > 0 else 1)))

    def on_key(self, key: str) -> None:
        """Hotkeys: p points, m mask brush, e eraser, x delete pairs, z undo, y redo; Enter and
        Escape go to the `on_submit` / `on_escape` callbacks."""
        lower = key.lower()
        if lower in ("enter", "return", "escape"):
            for callback in list(self._escape if lower == "escape" else self._submit):
                callback()
        elif lower in HOTKEY_MODES:
            self.mode = HOTKEY_MODES[lower]
        elif lower == "z":
            self.undo()
        elif lower == "y":
            self.redo()

    @traitlets.observe("mode")
    def _mode_changed(self, change):
        self._events.watched_events = self._watched_events(change["new"])
        self._moves.watched_events = ["mousemove"] if change["new"] in BRUSH_MODES else []
        self._draw_cursor(self._hover)

    @traitlets.observe("show_mask", "brush_radius", "tracked")
    def _look_changed(self, change):
        if change["name"] == "show_mask":
            self._redraw_overlay()
        elif change["name"] == "tracked":
            self._redraw_points()
        else:
            self._draw_cursor(self._hover)

    @staticmethod
    def _watched_events(mode):
        events = ["mousedown", "mouseup", "mouseleave", "keydown"]
        return events + (["wheel"] if mode in BRUSH_MODES else [])  # the wheel scrolls the page otherwise

    # ================================================================== drawing
    def redraw(self, *_) -> None:
        with _DRAW_LOCK, hold_canvas():
            width, height = self.canvas_size
            if (self.width, self.height) != (width, height):
                self.width, self.height = width, height
            self.layout.width, self.layout.height = f"{width}px", f"{height}px"
            drawing.draw_picture(self.image_layer, self.image, self.canvas_size)
            self._redraw_overlay()
            self._redraw_points()
            self.cursor_layer.clear()

    def _redraw_overlay(self, box=None) -> None:
        """The mask overlay; `box` (image pixels) limits the redraw to what a stroke touched."""
        mask = self._stroke.mask if self._stroke is not None else self.mask
        with _DRAW_LOCK, hold_canvas():
            drawing.draw_overlay(self.mask_layer, mask if self.show_mask else None, self.scale, self.canvas_size, box)

    def _redraw_points(self) -> None:
        with _DRAW_LOCK, hold_canvas():
            drawing.draw_points(self.points_layer, self.points if self.image is not None else [], self.pending,
                                self.scale, self.tracked)

    def _draw_cursor(self, xy) -> None:
        with _DRAW_LOCK, hold_canvas():
            if self.mode not in BRUSH_MODES or xy is None or self.image is None:
                self.cursor_layer.clear()
            else:
                drawing.draw_cursor(self.cursor_layer, xy, self.brush_radius * self.scale, self.mode == "erase")
