"""The drag canvas: the image with its point pairs and mask, the mouse and keys that edit them.

`DragCanvas` is an ipycanvas `MultiCanvas` that owns its layers (image, mask overlay, points,
brush cursor), its drawing and its edit data; its input (`canvas_input.CanvasInput`) calls the
handlers here in canvas buffer pixels. The traits `points`, `pending`, `mask` and `mode` are the
only copy of that data; the undo history keeps earlier values of them. Everything stored is in
image pixels.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, List, Optional

import numpy as np
import traitlets
from ipycanvas import MultiCanvas, hold_canvas

from ..api import InputError, PointPair, load_image, load_mask, normalise_points
from . import drawing
from .canvas_input import BRUSH_MODES, MODES, CanvasInput
from .gestures import LiveDrag
from .history import Checked, EditHistory, Snapshot, Stroke
from .runner import BUSY, RunInProgressError

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
    displayed = traitlets.Bool(False, help="a front end has shown the canvas (live previews wait for one)")
    dragging = traitlets.Bool(False, help="a pair's target follows the pointer (pressed, not yet released)")

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
        self._cursor_drawn = False
        self._live: Optional[LiveDrag] = None     # a press in points mode, perhaps becoming a drag
        self._live_listeners: List[Callable[[List[PointPair], bool], None]] = []
        self.image_layer, self.mask_layer, self.points_layer, self.cursor_layer = (self[i] for i in range(4))
        self.input = CanvasInput(self)
        self.on_client_ready(self.redraw)
        self.on_client_ready(lambda *_: setattr(self, "displayed", True))
        self.redraw()

    def on_submit(self, callback: Callable[[], None]) -> None:
        """Call `callback` when Enter is pressed over the canvas."""
        self.input.submit.append(callback)

    def on_escape(self, callback: Callable[[], None]) -> None:
        self.input.escape.append(callback)

    def on_live_drag(self, callback: Callable[[List[PointPair], bool], None]) -> None:
        """Call `callback(pairs, released)` while a pair is dragged with the pointer: the pairs as
        they would be with the pointer here, and once more when the release commits them."""
        self._live_listeners.append(callback)

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

    # ================================================================== the pointer (keys and the wheel: `CanvasInput`)
    def handle_event(self, event: dict) -> None:
        self.input.handle_event(event)

    def on_key(self, key: str) -> None:
        self.input.on_key(key)

    def on_wheel(self, delta_y: float) -> None:
        self.input.on_wheel(delta_y)

    def on_mouse_down(self, x: float, y: float, time_stamp=None) -> None:
        """A press at canvas buffer pixel (x, y): a point in points mode (and perhaps the start of
        a live drag), a pair removed in delete mode, a stroke start otherwise."""
        with self.lock:
            if not self.editable:
                return
            if self.mode == "points":
                grabbed = drawing.pair_at(self.points, (x, y), self.scale, targets_only=True) \
                    if self.pending is None else None
                made = self.add_point(*self.to_image(x, y))
                if made != "ignored":
                    self._live = LiveDrag((x, y), made, grabbed)
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
            live = self._live
            if live is not None:
                if buttons is not None and not buttons & 1:      # released where the canvas did not see it
                    self._end_live()
                elif self.editable and live.follow((x, y), self.to_image(x, y)):
                    self.dragging = True
                    self._redraw_points()
                    self._tell_live(False)
                return
            stroke = self._stroke
            late = time_stamp is not None and self._stroke_time is not None and time_stamp < self._stroke_time
            if stroke is not None and not late and (buttons is None or buttons & 1):
                self._redraw_overlay(stroke.extend(*self._to_image_continuous(x, y), self.brush_radius))
        self._draw_cursor(self._hover)

    def on_mouse_up(self, x: float, y: float) -> None:
        with self.lock:
            if self._live is not None:
                self.on_mouse_move(x, y)
                self._end_live()
            if self._stroke is not None:
                self._redraw_overlay(self._stroke.extend(*self._to_image_continuous(x, y), self.brush_radius))
                self.end_stroke()

    def on_mouse_leave(self) -> None:
        self._hover = None
        self._end_live()   # a release outside the canvas is not seen: the drag ends where it left
        self.end_stroke()
        self._draw_cursor(None)

    @traitlets.observe("mode")
    def _mode_changed(self, change):
        self.input.mode_changed(change["new"])
        self._draw_cursor(self._hover)

    @traitlets.observe("show_mask", "brush_radius", "tracked")
    def _look_changed(self, change):
        if change["name"] == "show_mask":
            self._redraw_overlay()
        elif change["name"] == "tracked":
            self._redraw_points()
        else:
            self._draw_cursor(self._hover)

    # ================================================================== live drag
    def _end_live(self) -> None:
        """The press is over: a drag commits its pair, as the press's undo step; a click stays."""
        with self.lock:
            live, self._live = self._live, None
            self.dragging = False
            if live is None or not live.dragging:
                return
            pairs = live.pairs(self.points, self.pending)
            if self.editable:
                with self._applying(live.label):
                    self.points, self.pending = pairs, None
                self.history.relabel(live.label)
        self._redraw_points()
        self.say(f"{live.label}: {len(self.points)} pair{'s' if len(self.points) != 1 else ''} (z to undo)")
        self._tell_live(True)

    def _tell_live(self, released: bool) -> None:
        live = self._live
        pairs = live.pairs(self.points, self.pending) if live is not None else list(self.points)
        for callback in list(self._live_listeners):
            callback(pairs, released)

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
            self._cursor_drawn = False

    def _redraw_overlay(self, box=None) -> None:
        """The mask overlay; `box` (image pixels) limits the redraw to what a stroke touched."""
        mask = self._stroke.mask if self._stroke is not None else self.mask
        with _DRAW_LOCK, hold_canvas():
            drawing.draw_overlay(self.mask_layer, mask if self.show_mask else None, self.scale, self.canvas_size, box)

    def _redraw_points(self) -> None:
        live = self._live if self._live is not None and self._live.dragging else None
        points = [] if self.image is None else live.pairs(self.points, self.pending) if live else self.points
        pending = None if live is not None and live.made == "handle" else self.pending
        with _DRAW_LOCK, hold_canvas():
            drawing.draw_points(self.points_layer, points, pending, self.scale, self.tracked)

    def _draw_cursor(self, xy) -> None:
        shown = self.mode in BRUSH_MODES and xy is not None and self.image is not None
        if not shown and not self._cursor_drawn:
            return      # every pointer move over the canvas comes here: no message when nothing changes
        with _DRAW_LOCK, hold_canvas():
            if shown:
                drawing.draw_cursor(self.cursor_layer, xy, self.brush_radius * self.scale, self.mode == "erase")
            else:
                self.cursor_layer.clear()
        self._cursor_drawn = shown
