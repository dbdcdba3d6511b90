"""DragWidget: click handle/target points, paint the editable mask, run DragDiffusion, watch it.

    from dragwidget.widget import DragWidget
    widget = DragWidget("photo.png", model="toy")
    widget                      # in a notebook cell
    widget.points = [{"handle": [20, 30], "target": [40, 30]}]
    widget.run(wait=True).image

Every coordinate the widget stores is in image pixels, whatever the display scale. The engine is
reached only through `DragEditor.run` / `DragEditor.generate` / `DragEditor.feature_maps`, in a
background thread.

After every successful drag (unless `show_features` is off) the same thread computes the PCA grid
of the decoder-block features of original and edited (`FeatureRequest.for_result`, by default only
the drag's own block: `feature_blocks` picks others) and shows it beside the edited image; the
`FeatureMaps` are kept in `widget.feature_maps`. A failure there keeps the drag's result.
"""

from __future__ import annotations

import html
import io
import sys
import threading
import time
import traceback
from typing import Optional

import ipywidgets as widgets
import numpy as np
import traitlets
from ipycanvas import MultiCanvas, hold_canvas
from ipyevents import Event
from PIL import Image

from ..config import DragConfig
from ..editor import DragEditor, DragRequest, DragResult, PreparedImage, Progress
from ..errors import DragCancelled, InputError
from ..feature_maps import FeatureMaps, FeatureRequest, figure_png
from ..image_input import load_image, load_mask, normalise_points
from . import drawing
from .models import default_model_name, model_settings
from .result_panel import ResultPanel
from .runner import Runner
from .session import load_session, save_session
from .state import EditState, pair_dict

# ipycanvas batches drawing commands in one process-wide manager: draw from one thread at a time.
_DRAW_LOCK = threading.RLock()

MODES = ("points", "mask", "erase")
# widget trait -> DragConfig field
PARAMETERS = {
    "lora_steps": "lora_steps",
    "drag_steps": "max_drag_steps",
    "learning_rate": "drag_lr",
    "inversion_strength": "inversion_strength",
    "mask_weight": "mask_weight",
    "seed": "seed",
    "preview_every": "preview_every",
}
# other widget traits that may be passed to the constructor
OPTIONS = ("show_features", "feature_blocks")
STAGES = (("lora", "LoRA"), ("inversion", "Inversion"), ("drag", "Optimise"), ("denoise", "Denoise"),
          ("features", "Features"), ("generate", "Generate"))
RUN_STAGES = ("lora", "inversion", "drag", "denoise", "features")
HELP = ("<small>Pointer over the image: <b>p</b> points · <b>m</b> mask brush · <b>e</b> eraser · "
        "<b>z</b> undo · <b>y</b> redo · <b>Enter</b> run · <b>Esc</b> cancel · wheel: brush size. "
        "Points: click a handle (red), then its target (blue). Mask: paint the region that may change "
        "(none = everything may change).</small>")
DEFAULT_PREVIEW_EVERY = 4  # preview every N drag steps (frames of the GIF)


class _Validated(traitlets.Any):
    """Any value, None included, goes through the widget's validator (plain Any lets None by)."""

    allow_none = False


def enable_colab_widgets() -> bool:
    """In Google Colab, third-party widgets (ipycanvas, ipyevents) need the custom widget manager."""
    if "google.colab" not in sys.modules:
        return False
    try:
        from google.colab import output

        output.enable_custom_widget_manager()
        return True
    except Exception:  # an older Colab: the widget still works where the manager is on already
        return False


class DragWidget(widgets.VBox):
    """The DragDiffusion editor as a Jupyter widget (see the module docstring)."""

    image = traitlets.Any(None, allow_none=True, help="the input image (PIL RGB); set a path, PIL image or array")
    points = traitlets.Any(help='point pairs [{"handle": [x, y], "target": [x, y]}, ...] in image pixels')
    mask = _Validated(None, help="HxW bool array, True = may change (all False = no mask)")
    prompt = traitlets.Unicode("")
    model = traitlets.Unicode("")
    lora_steps = traitlets.Int(80)
    drag_steps = traitlets.Int(80)
    learning_rate = traitlets.Float(0.01)
    inversion_strength = traitlets.Float(0.7)
    mask_weight = traitlets.Float(0.1)
    seed = traitlets.Int(42)
    preview_every = traitlets.Int(DEFAULT_PREVIEW_EVERY, help="drag steps between GIF frames; 0 = no previews")
    mode = traitlets.Enum(MODES, default_value="points")
    brush_radius = traitlets.Int(4, help="mask brush radius in image pixels")
    show_mask = traitlets.Bool(True)
    show_features = traitlets.Bool(True, help="after each drag, compute and show the PCA feature grid of original and edited")
    feature_blocks = traitlets.Any(None, allow_none=True,
                                   help="decoder blocks of the feature grid; None = the drag's own (config.feature_block)")
    result = traitlets.Instance(DragResult, allow_none=True)
    running = traitlets.Bool(False)
    status = traitlets.Unicode("")
    error = traitlets.Unicode("", help="the last error's message ('' after a successful run)")

    def __init__(self, image=None, *, prompt: str = "", points=None, mask=None, editor: Optional[DragEditor] = None,
                 model: Optional[str] = None, config: Optional[DragConfig] = None, max_display_size=512,
                 **parameters):
        enable_colab_widgets()
        self._lock = threading.RLock()
        self._syncing = False
        self._state: Optional[EditState] = None
        self._editor = editor
        self._editor_model = editor.model.name if editor is not None else None
        self._base_config = config
        self._generated = None          # (image it belongs to, PreparedImage) in generated-image mode
        self._tracked = None            # current handles while a drag runs
        self._frames = []
        self._stroke_time = None
        self._hover = None
        self.last_traceback = ""
        self.feature_maps: Optional[FeatureMaps] = None   # of the last result (None: not computed)
        self.runner = Runner()
        if isinstance(max_display_size, (int, float)):
            max_display_size = (max_display_size, max_display_size)
        self.max_display_size = tuple(int(v) for v in max_display_size)
        self.scale = 1.0
        self.canvas_size = (self.max_display_size[0], self.max_display_size[1] // 2)

        self._build_ui()
        super().__init__(self._layout_children(), **{k: parameters.pop(k) for k in ("layout",) if k in parameters})
        self.add_class("dragwidget")

        model_name = editor.model.name if editor is not None else (model or default_model_name())
        defaults = config or (editor.config if editor is not None else model_settings(model_name))
        self._defaults = {}
        with self.hold_trait_notifications():
            self.model = str(model_name)
            self._apply_defaults(defaults, force=True)
            unknown = set(parameters) - set(PARAMETERS) - set(OPTIONS)
            if unknown:
                raise TypeError(f"DragWidget got unknown argument(s) {sorted(unknown)}; "
                                f"parameters: {sorted(PARAMETERS) + list(OPTIONS)}")
            for name, value in parameters.items():
                setattr(self, name, value)
        self.prompt = prompt
        self.points = []
        if image is not None:
            self.image = image
        else:
            self._redraw_all()
        if points is not None:
            self.points = points
        if mask is not None:
            self.mask = mask
        if self._state is not None:
            self._state.clear_history()
        self._update_buttons()

    # ================================================================== UI construction
    def _build_ui(self) -> None:
        W = widgets
        self.canvas = MultiCanvas(4, width=self.canvas_size[0], height=self.canvas_size[1])
        self.canvas.add_class("dragwidget-canvas")
        self.canvas.on_client_ready(self._redraw_all)
        self.image_layer, self.mask_layer, self.points_layer, self.cursor_layer = (self.canvas[i] for i in range(4))
        self._events = Event(source=self.canvas, prevent_default_action=True, ignore_modifier_key_events=True,
                             watched_events=self._watched_events("points"))
        # Pointer moves are only needed to paint and to show the brush: watched in mask modes only.
        self._moves = Event(source=self.canvas, watched_events=[], wait=25, throttle_or_debounce="throttle")
        self._events.on_dom_event(self.handle_event)
        self._moves.on_dom_event(self.handle_event)

        self.mode_buttons = W.ToggleButtons(options=[("Points (p)", "points"), ("Mask (m)", "mask"), ("Eraser (e)", "erase")],
                                            style={"button_width": "90px"})
        traitlets.link((self, "mode"), (self.mode_buttons, "value"))
        self.brush_slider = W.IntSlider(4, min=1, max=64, description="Brush", layout=W.Layout(width="220px"),
                                        style={"description_width": "45px"})
        traitlets.link((self, "brush_radius"), (self.brush_slider, "value"))
        self.show_mask_box = W.Checkbox(True, description="Show mask", indent=False, layout=W.Layout(width="100px"))
        traitlets.link((self, "show_mask"), (self.show_mask_box, "value"))
        button = lambda text, icon, tip, action, width="auto": self._button(text, icon, tip, action, width)
        self.undo_button = button("Undo", "undo", "undo the last point, stroke or clear (z)", self.undo)
        self.redo_button = button("Redo", "repeat", "redo (y)", self.redo)
        self.clear_points_button = button("Clear points", "times", "remove every point pair", self.clear_points)
        self.clear_mask_button = button("Clear mask", "eraser", "erase the whole mask", self.clear_mask)
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Upload image",
                                   layout=W.Layout(width="auto"))
        self.upload.observe(self._upload_changed, names="value")
        self.toolbar = W.HBox([self.mode_buttons, self.brush_slider, self.show_mask_box], layout=W.Layout(flex_flow="row wrap"))
        self.edit_row = W.HBox([self.undo_button, self.redo_button, self.clear_points_button, self.clear_mask_button,
                                self.upload], layout=W.Layout(flex_flow="row wrap"))

        self.run_button = button("Run", "play", "run the drag (Enter)", lambda: self.run(), "100px")
        self.run_button.button_style = "primary"
        self.cancel_button = button("Cancel", "stop", "cancel the run (Escape)", self.cancel, "100px")
        self.cancel_button.disabled = True
        self.status_html = W.HTML("")
        self.error_html = W.HTML("")
        self.readout = W.HTML("")
        self.readout.add_class("dragwidget-readout")
        self.bars, self.bar_labels, rows = {}, {}, []
        for stage, label in STAGES:
            self.bars[stage] = W.IntProgress(0, min=0, max=1, description=label, layout=W.Layout(width="300px"))
            self.bar_labels[stage] = W.HTML("")
            rows.append(W.HBox([self.bars[stage], self.bar_labels[stage]]))
        self._generate_row = rows[-1]
        self._generate_row.layout.display = "none"
        self._features_row = rows[-2]
        self.show_features_box = W.Checkbox(True, description="Feature maps", indent=False,
                                            layout=W.Layout(width="120px"),
                                            tooltip="after each drag, show the PCA grid of the decoder features")
        traitlets.link((self, "show_features"), (self.show_features_box, "value"))
        self.progress_box = W.VBox(rows)

        self.result_panel = ResultPanel(self.use_result_as_input)

        style = {"description_width": "130px"}
        wide = W.Layout(width="420px")
        self.model_text = W.Text(description="Model", continuous_update=False, layout=wide, style=style,
                                 tooltip="embedded name (toy), model folder or Hugging Face hub id; loaded at the first run")
        traitlets.link((self, "model"), (self.model_text, "value"))
        self.prompt_text = W.Text(description="Prompt", layout=wide, style=style, continuous_update=False)
        traitlets.link((self, "prompt"), (self.prompt_text, "value"))
        self.generate_button = button("Generate image from prompt", "magic",
                                      "generated-image mode: a new image from the prompt, dragged without LoRA or inversion",
                                      lambda: self.generate(), "260px")
        self.parameter_widgets = {
            "lora_steps": W.BoundedIntText(min=0, max=10000, description="LoRA steps", style=style),
            "drag_steps": W.BoundedIntText(min=1, max=10000, description="Optimisation steps", style=style),
            "learning_rate": W.BoundedFloatText(min=1e-6, max=10.0, step=0.001, description="Learning rate", style=style),
            "inversion_strength": W.BoundedFloatText(min=0.02, max=1.0, step=0.05, description="Inversion strength", style=style),
            "mask_weight": W.BoundedFloatText(min=0.0, max=100.0, step=0.05, description="Mask weight", style=style),
            "seed": W.IntText(description="Seed", style=style),
            "preview_every": W.BoundedIntText(min=0, max=10000, description="GIF frame every", style=style,
                                              tooltip="drag steps between preview frames (0 = none)"),
        }
        for name, control in self.parameter_widgets.items():
            traitlets.link((self, name), (control, "value"))
        parameters = W.VBox([self.model_text, self.prompt_text, self.generate_button, *self.parameter_widgets.values()])
        self.session_path = W.Text(value="dragwidget_session", description="Folder", layout=wide, style=style)
        self.session_message = W.HTML("")
        session = W.VBox([self.session_path, W.HBox([
            button("Save session", "save", "write the DragBench sample layout to the folder", self._save_clicked),
            button("Load session", "folder-open", "read a session / DragBench sample folder", self._load_clicked)]),
            self.session_message])
        self.accordion = W.Accordion(children=[parameters, session], titles=("Parameters", "Session"))
        self.accordion.selected_index = None
        self.help_html = W.HTML(HELP)

    def _layout_children(self):
        W = widgets
        canvas_column = W.VBox([self.canvas, self.readout])
        return [self.toolbar, self.edit_row,
                W.HBox([canvas_column, self.result_panel], layout=W.Layout(flex_flow="row wrap", align_items="flex-start")),
                self.help_html,
                W.HBox([self.run_button, self.cancel_button, self.show_features_box, self.status_html],
                       layout=W.Layout(align_items="center")),
                self.progress_box, self.error_html, self.accordion]

    def _button(self, text, icon, tooltip, action, width):
        control = widgets.Button(description=text, icon=icon, tooltip=tooltip, layout=widgets.Layout(width=width))
        control.on_click(lambda _: action())
        control.add_class("dragwidget-" + text.lower().replace(" ", "-"))   # e.g. dragwidget-run
        return control

    @staticmethod
    def _watched_events(mode):
        events = ["mousedown", "mouseup", "mouseleave", "keydown"]
        return events + (["wheel"] if mode in ("mask", "erase") else [])  # the wheel scrolls the page in points mode

    # ================================================================== trait validation
    @traitlets.validate("image")
    def _valid_image(self, proposal):
        return None if proposal["value"] is None else load_image(proposal["value"])

    @traitlets.validate("points")
    def _valid_points(self, proposal):
        value = proposal["value"]
        if value is None or (hasattr(value, "__len__") and len(value) == 0):
            return []
        if self.image is None:
            raise InputError("set an image before its points")
        width, height = self.image.size
        return [pair_dict(p.handle, p.target) for p in normalise_points(value, width, height)]

    @traitlets.validate("mask")
    def _valid_mask(self, proposal):
        if self.image is None:
            return None
        width, height = self.image.size
        mask = None if proposal["value"] is None else load_mask(proposal["value"], width, height)
        return np.zeros((height, width), bool) if mask is None else mask

    @traitlets.validate("drag_steps")
    def _valid_steps(self, proposal):
        if proposal["value"] < 1:
            raise InputError("drag_steps must be at least 1")
        return proposal["value"]

    @traitlets.validate("inversion_strength")
    def _valid_strength(self, proposal):
        if not 0 < proposal["value"] <= 1:
            raise InputError("inversion_strength must be in (0, 1]")
        return proposal["value"]

    @traitlets.validate("brush_radius")
    def _valid_radius(self, proposal):
        return max(1, int(proposal["value"]))

    # ================================================================== trait observers
    @traitlets.observe("image")
    def _image_changed(self, change):
        image = change["new"]
        with self._lock:
            if self._generated is not None and self._generated[0] is not image:
                self._generated = None
            if image is None:
                self._state = None
                self._set_synced(points=[], mask=None)
            else:
                self._state = EditState(*image.size)
                self.scale = drawing.fit_scale(image.width, image.height, *self.max_display_size)
                self.canvas_size = drawing.display_size(image.width, image.height, self.scale)
                self.brush_slider.max = max(4, max(image.size) // 4)
                self.brush_radius = max(1, round(max(image.size) / 24))
                self._set_synced(points=[], mask=self._state.mask.copy())
            self._tracked = None
            self.error = ""
        self._redraw_all()
        self._update_buttons()

    @traitlets.observe("points")
    def _points_changed(self, change):
        if self._syncing or self._state is None:
            return
        self._state.set_points(change["new"])
        self._redraw_points()
        self._update_buttons()

    @traitlets.observe("mask")
    def _mask_changed(self, change):
        if self._syncing or self._state is None or change["new"] is None:
            return
        self._state.set_mask(change["new"])
        self._redraw_overlay()
        self._update_buttons()

    @traitlets.observe("mode")
    def _mode_changed(self, change):
        self._events.watched_events = self._watched_events(change["new"])
        self._moves.watched_events = ["mousemove"] if change["new"] in ("mask", "erase") else []
        self._draw_cursor(self._hover)

    @traitlets.observe("show_mask", "brush_radius")
    def _look_changed(self, change):
        if change["name"] == "show_mask":
            self._redraw_overlay()
        else:
            self._draw_cursor(self._hover)

    @traitlets.observe("model")
    def _model_changed(self, change):
        old_defaults = getattr(self, "_defaults", None)
        if old_defaults and self._editor_model != change["new"]:
            self._apply_defaults(model_settings(change["new"]), force=False)

    @traitlets.observe("show_features")
    def _show_features_changed(self, change):
        self._features_row.layout.display = None if change["new"] else "none"

    @traitlets.observe("running")
    def _running_changed(self, change):
        self.run_button.disabled = change["new"]
        self.generate_button.disabled = change["new"]
        self.cancel_button.disabled = not change["new"]
        self.upload.disabled = change["new"]

    @traitlets.observe("status")
    def _status_changed(self, change):
        self.status_html.value = f"<span class='dragwidget-status'>{html.escape(change['new'])}</span>"

    @traitlets.observe("error")
    def _error_changed(self, change):
        text = change["new"]
        self.error_html.value = (f"<div class='dragwidget-error' style='color:#b00020;white-space:pre-wrap'>"
                                 f"<b>Error:</b> {html.escape(text)}</div>") if text else ""

    def _apply_defaults(self, config: DragConfig, force: bool) -> None:
        """Parameters take the engine config's values; with force=False only those the user left alone."""
        new = {name: getattr(config, field) for name, field in PARAMETERS.items()}
        new["preview_every"] = config.preview_every or DEFAULT_PREVIEW_EVERY
        for name, value in new.items():
            if force or getattr(self, name) == self._defaults.get(name):
                setattr(self, name, value)
        self._defaults = new

    def _set_synced(self, **values) -> None:
        """Mirror the edit state in the traits without feeding it back into the state."""
        self._syncing = True
        try:
            for name, value in values.items():
                setattr(self, name, value)
        finally:
            self._syncing = False

    def _sync_points(self) -> None:
        self._set_synced(points=list(self._state.points))

    def _sync_mask(self) -> None:
        self._set_synced(mask=self._state.mask.copy())

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
        """A press at canvas buffer pixel (x, y): a point in points mode, a stroke start otherwise."""
        if not self._editable():
            return
        with self._lock:
            if self.mode == "points":
                self._state.add_point(*self.to_image(x, y))
                self._sync_points()
                self._redraw_points()
            else:
                self._stroke_time = time_stamp
                box = self._state.begin_stroke(*self._to_image_continuous(x, y), self.brush_radius, self.mode == "erase")
                self._redraw_overlay(box)
        self._update_buttons()

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
        if self.mode in ("mask", "erase") and delta_y:
            self.brush_radius = min(self.brush_slider.max, max(1, self.brush_radius + (-1 if delta_y > 0 else 1)))

    def on_key(self, key: str) -> None:
        """Hotkeys: p points, m mask brush, e eraser, z undo, y redo, Enter run, Escape cancel."""
        lower = key.lower()
        if lower == "escape":
            self.cancel()
        elif lower in ("enter", "return"):
            if not self.running:
                self.run()
        elif lower == "p":
            self.mode = "points"
        elif lower == "m":
            self.mode = "mask"
        elif lower == "e":
            self.mode = "erase"
        elif lower == "z":
            self.undo()
        elif lower == "y":
            self.redo()

    # ================================================================== actions
    def undo(self) -> Optional[str]:
        return self._history("undo")

    def redo(self) -> Optional[str]:
        return self._history("redo")

    def _history(self, which: str) -> Optional[str]:
        if not self._editable():
            return None
        with self._lock:
            label = getattr(self._state, which)()
            if label is not None:
                self._set_synced(points=list(self._state.points), mask=self._state.mask.copy())
        if label is not None:
            self._redraw_points()
            self._redraw_overlay()
            self.status = f"{which}: {label}"
        self._update_buttons()
        return label

    def clear_points(self) -> None:
        if self._editable():
            with self._lock:
                if self._state.clear_points():
                    self._sync_points()
            self._redraw_points()
            self._update_buttons()

    def clear_mask(self) -> None:
        if self._editable():
            with self._lock:
                if self._state.clear_mask():
                    self._sync_mask()
            self._redraw_overlay()
            self._update_buttons()

    def cancel(self) -> None:
        """Cancel the running edit; when nothing runs, drop a pending handle."""
        if self.runner.cancel():
            self.status = "cancelling (at the next step)…"
        elif self._editable():
            with self._lock:
                self._state.drop_pending()
            self._redraw_points()
            self._update_buttons()

    @property
    def pending_handle(self):
        """A handle clicked whose target is still to be clicked (image pixels), or None."""
        return None if self._state is None or self._state.pending is None else list(self._state.pending)

    @property
    def parameters(self) -> dict:
        return {"model": self.model, "prompt": self.prompt, **{name: getattr(self, name) for name in PARAMETERS}}

    @property
    def editor(self) -> Optional[DragEditor]:
        return self._editor

    def use_result_as_input(self) -> None:
        """Chain edits: the edited image becomes the input (points and mask start afresh)."""
        if self.result is not None and not self.running:
            self.image = self.result.image
            self.status = "the edited image is the new input"

    def _upload_changed(self, change):
        files = change["new"]
        if not files:
            return
        upload = files[0]
        try:
            self.image = Image.open(io.BytesIO(bytes(upload["content"])))
            self.status = f"loaded {upload.get('name', 'the upload')}"
            self.upload.value = ()  # the same file can be uploaded again
        except Exception as error:
            self.error = f"could not open {upload.get('name', 'the upload')}: {error}"

    # ================================================================== sessions
    def save_session(self, folder):
        """Write image, prompt, points, mask and parameters in the DragBench sample layout."""
        if self.image is None:
            raise InputError("nothing to save: the widget has no image")
        with self._lock:
            return save_session(folder, self.image, self.prompt, list(self.points), self._state.mask.copy(),
                                parameters=self.parameters)

    def load_session(self, folder) -> None:
        session = load_session(folder)
        known = {k: v for k, v in session.parameters.items() if k in PARAMETERS or k == "model"}
        with self._lock:
            self.image = session.image
            for name, value in known.items():
                setattr(self, name, value)
            self.prompt = session.prompt
            self.points = session.points
            if session.mask is not None:
                self.mask = session.mask
            self._state.clear_history()
        self._update_buttons()

    @classmethod
    def from_session(cls, folder, **kwargs) -> "DragWidget":
        widget = cls(**kwargs)
        widget.load_session(folder)
        return widget

    def _save_clicked(self):
        try:
            folder = self.save_session(self.session_path.value)
            self.session_message.value = f"<small>saved to {html.escape(str(folder))}</small>"
        except Exception as error:
            self.session_message.value = f"<small style='color:#b00020'>not saved: {html.escape(str(error))}</small>"

    def _load_clicked(self):
        try:
            self.load_session(self.session_path.value)
            self.session_message.value = f"<small>loaded {html.escape(self.session_path.value)}</small>"
        except Exception as error:
            self.session_message.value = f"<small style='color:#b00020'>not loaded: {html.escape(str(error))}</small>"

    # ================================================================== running
    def _get_editor(self) -> DragEditor:
        if self._editor is None or self._editor_model != self.model:
            self.status = f"loading model {self.model}…"
            self._editor = DragEditor(self.model)
            self._editor_model = self.model
        return self._editor

    def _config(self, editor: DragEditor) -> DragConfig:
        base = self._base_config or editor.config
        return base.replace(**{field: getattr(self, name) for name, field in PARAMETERS.items()})

    def _reset_bars(self, stages) -> None:
        for stage, bar in self.bars.items():
            if stage in stages:
                bar.value, bar.bar_style = 0, ""
                self.bar_labels[stage].value = ""

    def run(self, wait: bool = False, timeout: Optional[float] = None) -> Optional[DragResult]:
        """Start the edit in a background thread (the notebook stays responsive).

        With wait=True, block until it ends and return the result (raising its error)."""
        with self._lock:
            if self.running:
                self.status = "already running"
                return None
            problem = None
            if self._state is None:
                problem = "no image: pass one to DragWidget, upload one or generate one from a prompt"
            else:
                self._state.end_stroke()
                if not self._state.points:
                    problem = "no point pairs: click a handle, then its target (or set widget.points)"
            if problem:
                self.error = problem
                if wait:
                    raise InputError(problem)
                return None
            image = self.image
            points = list(self._state.points)
            mask = self._state.mask.copy() if self._state.mask.any() else None
            prompt = self.prompt
            generated = self._generated[1] if self._generated is not None and self._generated[0] is image else None
            features = self.show_features
            blocks = None if self.feature_blocks is None else list(self.feature_blocks)
            self.error = ""
            self.feature_maps = None
            self._tracked, self._frames, self._run_image = None, [], image
            self._reset_bars(RUN_STAGES)
            self._generate_row.layout.display = "none"
            self.running = True
            self._started = time.perf_counter()

        def work(cancelled):
            editor = self._get_editor()
            request = DragRequest(image=None if generated else image, points=points, mask=mask, prompt=prompt,
                                  config=self._config(editor), prepared=generated)
            self.status = "running…"
            result = editor.run(request, progress=self._on_progress, cancel=cancelled)
            self._finish_run(result, image, points)          # shown now; the features follow
            if features:
                self._compute_features(editor, result, prompt, generated, blocks, cancelled)
            return result

        def done(result, error):
            try:
                if error is not None:
                    self._fail(error)
            finally:
                self._tracked = None
                self._redraw_points()
                self.running = False

        if not self.runner.start(work, done):
            self.running = False
            self.status = "already running"
            return None
        if wait:
            return self.wait(timeout)
        return None

    def wait(self, timeout: Optional[float] = None) -> Optional[DragResult]:
        """Block until the running job ends; return its value or raise its error."""
        if not self.runner.join(timeout):
            raise TimeoutError(f"the edit is still running after {timeout} s")
        if self.runner.error is not None:
            raise self.runner.error
        return self.runner.value

    def _on_progress(self, event: Progress) -> None:
        bar = self.bars.get(event.stage)
        if bar is not None:
            with bar.hold_sync():
                bar.max = max(1, int(event.total))
                bar.value = min(int(event.step), bar.max)
                bar.bar_style = "info" if event.cached else ("success" if event.step >= event.total else "")
            self.bar_labels[event.stage].value = (
                "<small>cached</small>" if event.cached else f"<small>{event.step}/{event.total}</small>")
        if event.cached and event.stage == "lora" and "reusing" in event.message:
            self.status = "reusing the LoRA and inversion of the previous run on this image"
        elif event.stage == "features":
            self.status = f"computing feature maps… {event.step}/{event.total}" + (
                f" ({event.message})" if event.message else "")
        elif event.stage in ("lora", "inversion", "drag", "denoise", "generate") and not event.cached:
            self.status = f"{dict(STAGES)[event.stage].lower()} {event.step}/{event.total}" + (
                f" ({event.message})" if event.message else "")
        if event.stage == "drag" and event.handles is not None:
            self._tracked = [tuple(h) for h in event.handles]
            if event.step == 0:
                self._frames.append((self._run_image, self._tracked))
            if event.preview is not None:
                self._frames.append((event.preview, self._tracked))
                self.result_panel.show_preview(self._run_image, event.preview, f"<small>drag step {event.step}</small>")
            self._redraw_points()

    def _finish_run(self, result: DragResult, image, points) -> None:
        seconds = time.perf_counter() - self._started
        self._frames.append((result.image, result.handles))
        gif = drawing.drag_gif(self._frames, points, image.size) if self.preview_every > 0 else b""
        reused = result.reused or {}
        if reused.get("lora") == "memory" and reused.get("inversion") == "memory":
            reuse = "LoRA and inversion reused from the previous run on this image"
        else:
            reuse = f"LoRA: {reused.get('lora', '?')}, inversion: {reused.get('inversion', '?')}"
        bar = self.bars["drag"]
        bar.value, bar.bar_style = bar.max, "success"
        self.bar_labels["drag"].value = f"<small>{result.steps} steps{' (targets reached)' if result.reached else ''}</small>"
        self.status = f"done in {seconds:.1f} s ({reuse})"
        self.result_panel.show_result(image, result.image, gif, (
            f"<small>{result.steps} drag steps, targets {'reached' if result.reached else 'not reached'}; "
            f"final handles {[tuple(round(v, 1) for v in h) for h in result.handles]}; {html.escape(reuse)}</small>"))
        self.result = result

    def _compute_features(self, editor: DragEditor, result: DragResult, prompt: str,
                          prepared: Optional[PreparedImage], blocks, cancelled) -> None:
        """The PCA feature grid of original vs edited, beside the edited image (in the run's thread).

        Only the edited picture is new work (the editor reuses the image it prepared for the drag).
        Whatever goes wrong here, the drag's result stays: the message goes to the status line."""
        done_status = self.status
        started = time.perf_counter()
        self.status = "computing feature maps…"
        self.result_panel.features_pending()
        bar = self.bars["features"]
        try:
            blocks = [result.config.feature_block] if blocks is None else blocks
            options = {"blocks": blocks} if prepared is None else {"blocks": blocks, "prepared": prepared}
            request = FeatureRequest.for_result(result, prompt=prompt, **options)
            maps = editor.feature_maps(request, progress=self._on_progress, cancel=cancelled)
            png = figure_png(maps.figure())
        except DragCancelled:
            self.status = f"{done_status}; feature maps cancelled"
            self.result_panel.features_failed("feature maps cancelled")
            bar.bar_style = "warning"
            return
        except Exception as error:  # the drag's result is kept whatever happens here
            self.last_traceback = traceback.format_exc()
            message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            self.status = f"{done_status}; feature maps failed: {message}"
            self.result_panel.features_failed(html.escape(f"feature maps failed: {message}"))
            bar.bar_style = "danger"
            return
        self.feature_maps = maps
        bar.value, bar.bar_style = bar.max, "success"
        shown = ", ".join(str(b) for b in maps.blocks)
        self.result_panel.show_features(png, (
            f"<small>PCA of decoder block{'s' if len(maps.blocks) > 1 else ''} {shown} "
            f"(rows original / edited, columns inversion steps; the drag's block and step framed)</small>"))
        self.status = f"{done_status}; feature maps in {time.perf_counter() - started:.1f} s"

    def _fail(self, error: BaseException) -> None:
        self.last_traceback = self.runner.error_traceback
        if isinstance(error, DragCancelled):
            self.status = "cancelled; points, mask and image are unchanged"
            return
        self.status = "failed; points, mask and image are unchanged"
        message = str(error) or type(error).__name__
        self.error = message if isinstance(error, InputError) else f"{type(error).__name__}: {message}"
        for bar in self.bars.values():
            if 0 < bar.value < bar.max:
                bar.bar_style = "danger"

    def generate(self, prompt: Optional[str] = None, seed: Optional[int] = None, wait: bool = False):
        """Generated-image mode: make the input from `prompt`; it is then dragged without LoRA or
        inversion (the generation's own latents are kept)."""
        if self.running:
            self.status = "already running"
            return None
        if prompt is not None:
            self.prompt = prompt
        prompt = self.prompt
        if not prompt.strip():
            self.error = "generated-image mode needs a prompt (Parameters → Prompt)"
            return None
        self.error = ""
        self._reset_bars(("generate",))
        self._generate_row.layout.display = None
        self.running = True
        self._started = time.perf_counter()

        def work(cancelled):
            editor = self._get_editor()
            self.status = "generating…"
            return editor.generate(prompt, seed=seed, config=self._config(editor), progress=self._on_progress,
                                   cancel=cancelled)

        def done(prepared: Optional[PreparedImage], error):
            try:
                if error is None:
                    self.image = prepared.image
                    self._generated = (self.image, prepared)
                    self.status = f"generated in {time.perf_counter() - self._started:.1f} s: add points and run"
                else:
                    self._fail(error)
            finally:
                self.running = False

        if not self.runner.start(work, done, name="dragwidget-generate"):
            self.running = False
            return None
        if wait:
            self.wait()
        return None

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
            u0, v0, u1, v1 = drawing.display_box(box, self.scale, self.canvas_size)
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
            if self.mode == "points" or xy is None or self._state is None:
                self.cursor_layer.clear()
            else:
                drawing.draw_cursor(self.cursor_layer, xy, self.brush_radius * self.scale, self.mode == "erase")
