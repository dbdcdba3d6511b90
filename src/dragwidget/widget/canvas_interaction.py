"""What happens on the canvas: mouse and key events, points, mask strokes, and drawing the layers.

`CanvasInteraction` is a mixin of `DragWidget`. Events arrive in canvas buffer pixels (ipycanvas)
or CSS pixels (ipyevents, converted here); everything stored is in image pixels.
"""

from __future__ import annotations

import threading

import numpy as np
from ipycanvas import hold_canvas

from . import drawing
from .layout import BRUSH_MODES

# ipycanvas batches drawing commands in one process-wide manager: draw from one thread at a time.
_DRAW_LOCK = threading.RLock()
HOTKEY_MODES = {"p": "points", "m": "mask", "e": "erase", "x": "delete"}


class CanvasInteraction:
    """Event handlers and canvas drawing of `DragWidget` (a mixin)."""

    # ================================================================== coordinates
    @property
    def display_scale(self) -> float:
        """Display (canvas buffer) pixels per image pixel."""
        return self.scale

    def to_image(self, x: float, y: float):
        """Canvas buffer pixels -> the image pixel under them (integers, inside the image)."""
        return self._state.clamp(int(np.floor(x / self.scale)), int(np.floor(y / self.scale)))

    def _to_image_continuous(self, x: float, y: float):
        """Canvas buffer pixels -> continuous image coordinates with pixel centres on integers."""
        return x / self.scale - 0.5, y / self.scale - 0.5

    def _event_xy(self, event: dict):
        x, y = float(event.get("relativeX") or 0), float(event.get("relativeY") or 0)
        width, height = event.get("boundingRectWidth"), event.get("boundingRectHeight")
        if width:
            x *= self.canvas_size[0] / float(width)
        if height:
            y *= self.canvas_size[1] / float(height)
        return x, y

    # ================================================================== event handlers
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
            x, y = self._event_xy(event)
            if kind == "mousedown":
                if event.get("button", 0) == 0:
                    self.on_mouse_down(x, y, time_stamp=event.get("timeStamp"))
            elif kind == "mousemove":
                self.on_mouse_move(x, y, buttons=event.get("buttons"), time_stamp=event.get("timeStamp"))
            else:
                self.on_mouse_up(x, y)

    def _editable(self) -> bool:
        return self._state is not None and not self.running

    def on_mouse_down(self, x: float, y: float, time_stamp=None) -> None:
        """A press at canvas buffer pixel (x, y): a point in points mode, a pair removed in delete
        mode, a stroke start otherwise."""
        if not self._editable():
            return
        with self._lock:
            if self.mode == "points":
                self._state.add_point(*self.to_image(x, y))
                self._sync_points()
                self._redraw_points()
            elif self.mode == "delete":
                self.delete_pair_at(x, y)
            else:
                self._stroke_time = time_stamp
                box = self._state.begin_stroke(*self._to_image_continuous(x, y), self.brush_radius, self.mode == "erase")
                self._redraw_overlay(box)
        self._update_buttons()

    def delete_pair_at(self, x: float, y: float) -> bool:
        """Remove the pair whose handle or target is at (or near) canvas buffer pixel (x, y); undoable."""
        if not self._editable():
            return False
        with self._lock:
            index = drawing.pair_at(self._state.points, (x, y), self.scale)
            removed = index is not None and self._state.remove_pair(index)
            if removed:
                self._sync_points()
        if removed:
            self._redraw_points()
            self.status = f"pair {index + 1} removed (z to undo)"
        return removed

    def on_mouse_move(self, x: float, y: float, buttons=None, time_stamp=None) -> None:
        """Pointer at (x, y); `buttons` as in the DOM (1 = left pressed; None = unknown)."""
        self._hover = (x, y)
        if self._state is None:
            return
        with self._lock:
            late = time_stamp is not None and self._stroke_time is not None and time_stamp < self._stroke_time
            if self._state.stroking and not late and (buttons is None or buttons & 1):
                box = self._state.continue_stroke(*self._to_image_continuous(x, y), self.brush_radius)
                self._redraw_overlay(box)
        self._draw_cursor(self._hover)

    def on_mouse_up(self, x: float, y: float) -> None:
        if self._state is None:
            return
        with self._lock:
            if self._state.stroking:
                box = self._state.continue_stroke(*self._to_image_continuous(x, y), self.brush_radius)
                self._redraw_overlay(box)
                self._finish_stroke()

    def on_mouse_leave(self) -> None:
        self._hover = None
        if self._state is not None:
            with self._lock:
                self._finish_stroke()
        self._draw_cursor(None)

    def _finish_stroke(self) -> None:
        self._stroke_time = None
        if self._state.end_stroke():
            self._sync_mask()
        self._update_buttons()

    def on_wheel(self, delta_y: float) -> None:
        if self.mode in BRUSH_MODES and delta_y:
            self.brush_radius = min(self.brush_slider.max, max(1, self.brush_radius + (-1 if delta_y > 0 else 1)))

    def on_key(self, key: str) -> None:
        """Hotkeys: p points, m mask brush, e eraser, x delete pairs, z undo, y redo, Enter run,
        Escape cancel."""
        lower = key.lower()
        if lower == "escape":
            self.cancel()
        elif lower in ("enter", "return"):
            if not self.running:
                self.run()
        elif lower in HOTKEY_MODES:
            self.mode = HOTKEY_MODES[lower]
        elif lower == "z":
            self.undo()
        elif lower == "y":
            self.redo()

    # ================================================================== drawing
    def _update_buttons(self) -> None:
        state = self._state
        self.undo_button.disabled = state is None or not state.can_undo
        self.redo_button.disabled = state is None or not state.can_redo
        if state is None:
            self.readout.value = "<small>no image yet: upload one, or generate one (Parameters)</small>"
            return
        pairs = "; ".join(f"({p['handle'][0]:g}, {p['handle'][1]:g})→({p['target'][0]:g}, {p['target'][1]:g})"
                          for p in state.points)
        pending = f" · pending handle ({state.pending[0]:g}, {state.pending[1]:g})" if state.pending is not None else ""
        self.readout.value = (f"<small>{self.image.width}×{self.image.height} px, shown ×{self.scale:.3g} · "
                              f"{len(state.points)} pair(s){': ' + pairs if pairs else ''}{pending} · "
                              f"mask {int(state.mask.sum())} px</small>")

    def _resize_canvas(self) -> None:
        width, height = self.canvas_size
        if (self.canvas.width, self.canvas.height) != (width, height):
            self.canvas.width, self.canvas.height = width, height
        self.canvas.layout.width, self.canvas.layout.height = f"{width}px", f"{height}px"

    def _redraw_all(self, *_) -> None:
        with _DRAW_LOCK, hold_canvas():
            self._resize_canvas()
            if self.image is None:
                self.image_layer.clear()
                self.image_layer.fill_style = "#f2f2f2"
                self.image_layer.fill_rect(0, 0, *self.canvas_size)
                self.image_layer.fill_style = "#555"
                self.image_layer.font = "16px sans-serif"
                self.image_layer.fill_text("Upload an image, or generate one from a prompt (Parameters)", 20, 40)
            else:
                self.image_layer.clear()
                self.image_layer.put_image_data(drawing.display_rgba(self.image, self.canvas_size), 0, 0)
            self._redraw_overlay()
            self._redraw_points()
            self.cursor_layer.clear()

    def _redraw_overlay(self, box=None) -> None:
        """The mask overlay; `box` (image pixels) limits the redraw to what a stroke touched."""
        if self._state is None:
            with _DRAW_LOCK:
                self.mask_layer.clear()
            return
        with _DRAW_LOCK, hold_canvas():
            if not self.show_mask:
                self.mask_layer.clear()
                return
            if box is None:
                self.mask_layer.clear()
                if self._state.mask.any():
                    self.mask_layer.put_image_data(
                        drawing.overlay_rgba(self._state.mask, self.scale, (0, 0, *self.canvas_size)), 0, 0)
                return
            # the outline of pixels next to the touched box may have become interior
            u0, v0, u1, v1 = drawing.display_box(box, self.scale, self.canvas_size)
            pad = drawing.MASK_OUTLINE_WIDTH
            u0, v0 = max(0, u0 - pad), max(0, v0 - pad)
            u1, v1 = min(self.canvas_size[0], u1 + pad), min(self.canvas_size[1], v1 + pad)
            if u1 > u0 and v1 > v0:
                self.mask_layer.clear_rect(u0, v0, u1 - u0, v1 - v0)
                self.mask_layer.put_image_data(drawing.overlay_rgba(self._state.mask, self.scale, (u0, v0, u1, v1)), u0, v0)

    def _redraw_points(self) -> None:
        with _DRAW_LOCK, hold_canvas():
            if self._state is None:
                self.points_layer.clear()
                return
            drawing.draw_points(self.points_layer, self._state.points, self._state.pending, self.scale, self._tracked)
        if not self.running:
            self._update_buttons()

    def _draw_cursor(self, xy) -> None:
        with _DRAW_LOCK, hold_canvas():
            if self.mode not in BRUSH_MODES or xy is None or self._state is None:
                self.cursor_layer.clear()
            else:
                drawing.draw_cursor(self.cursor_layer, xy, self.brush_radius * self.scale, self.mode == "erase")
