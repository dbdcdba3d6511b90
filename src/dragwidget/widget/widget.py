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

The class is assembled from its responsibilities: `layout.WidgetLayout` (the controls),
`canvas_interaction.CanvasInteraction` (events and drawing), `running.Running` (the engine); this
module holds the traits, their validation, the edit actions and sessions.
"""

from __future__ import annotations

import html
import io
import sys
import threading
from typing import Optional

import ipywidgets as widgets
import numpy as np
import traitlets
from PIL import Image

from ..config import DragConfig
from ..editor import DragEditor, DragResult
from ..errors import InputError
from ..feature_maps import FeatureMaps
from ..image_input import load_image, load_mask, normalise_points
from . import drawing
from .canvas_interaction import CanvasInteraction
from .layout import BRUSH_MODES, MODES, PARAMETERS, WIDGET_PARAMETERS, WidgetLayout
from .models import default_model_name, model_settings
from .runner import Runner
from .running import BUSY, Running, StageClock
from .session import load_session, save_session
from .state import EditState, pair_dict

# other widget traits that may be passed to the constructor
OPTIONS = ("show_features", "feature_blocks", *WIDGET_PARAMETERS)
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


class DragWidget(WidgetLayout, CanvasInteraction, Running, widgets.VBox):
    """The DragDiffusion editor as a Jupyter widget (see the module docstring)."""

    image = traitlets.Any(None, allow_none=True, help="the input image (PIL RGB); set a path, PIL image or array")
    points = traitlets.Any(help='point pairs [{"handle": [x, y], "target": [x, y]}, ...] in image pixels')
    mask = _Validated(None, help="HxW bool array, True = may change (all False = no mask)")
    prompt = traitlets.Unicode("")
    model = traitlets.Unicode("")
    method = traitlets.Unicode(DragConfig().method, help="dragdiffusion (the paper) or gooddrag")
    lora_steps = traitlets.Int(80)
    drag_steps = traitlets.Int(80)
    learning_rate = traitlets.Float(0.01)
    inversion_strength = traitlets.Float(0.7)
    mask_weight = traitlets.Float(0.1)
    seed = traitlets.Int(42)
    preview_every = traitlets.Int(DEFAULT_PREVIEW_EVERY, help="drag steps between GIF frames; 0 = no previews")
    keep_outside_mask = traitlets.Bool(True, help="with a mask drawn, keep the original pixels outside it exactly")
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
        self.stage_clock = StageClock()
        self._stage = None               # the stage the running job last reported
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

    # ================================================================== trait validation
    @traitlets.validate("image")
    def _valid_image(self, proposal):
        # the result panel would show an edit of a picture no longer on the canvas
        with self._lock:
            self._refuse_while_running("change the image")
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

    @traitlets.validate(*PARAMETERS, *WIDGET_PARAMETERS)
    def _valid_parameter(self, proposal):
        # DragConfig checks every setting (and their combinations); its InputError names the setting
        self._config(self._editor, **{proposal["trait"].name: proposal["value"]})
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
        self._show_plan()

    @traitlets.observe("prompt", "lora_steps")
    def _lora_input_changed(self, change):
        self._show_plan()

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
        self._moves.watched_events = ["mousemove"] if change["new"] in BRUSH_MODES else []
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
        return {"model": self.model, "prompt": self.prompt,
                **{name: getattr(self, name) for name in (*PARAMETERS, *WIDGET_PARAMETERS)}}

    @property
    def editor(self) -> Optional[DragEditor]:
        return self._editor

    def use_result_as_input(self) -> None:
        """Chain edits: the edited image becomes the input (points and mask start afresh)."""
        if self.result is not None and not self.running:
            self.image = self.result.image
            plan = self._plan_message()
            self.status = "the edited image is the new input" + (f"; {plan}" if plan else "")

    def _upload_changed(self, change):
        files = change["new"]
        if not files:
            return
        upload = files[0]
        if self.running:
            self.error = f"{upload.get('name', 'the upload')} was not loaded: {BUSY}"
            self.upload.value = ()
            return
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
        """Replace image, prompt, points, mask and parameters by a saved session's.

        Everything is read and checked first; on any error nothing of the widget changes."""
        with self._lock:
            self._refuse_while_running("load a session")
        session = load_session(folder)
        model = session.parameters.get("model", self.model)
        if not isinstance(model, str):
            raise InputError(f"session parameter 'model' must be a string (a model name, folder or hub id), "
                             f"got {type(model).__name__}")
        values = self._checked_parameters(session.parameters)
        with self._lock:
            self._refuse_while_running("load a session")
            self.model = model                   # first: a new model brings its defaults
            with self.hold_trait_notifications():
                for name, value in values.items():
                    setattr(self, name, value)
            self.image = session.image
            self.prompt = session.prompt
            self.points = session.points
            if session.mask is not None:
                self.mask = session.mask
            self._state.clear_history()
        self._update_buttons()

    def _checked_parameters(self, parameters: dict) -> dict:
        """The widget parameters among a session's, each checked by its trait and all together by
        DragConfig; InputError naming the parameter otherwise."""
        values = {}
        for name in (*PARAMETERS, *WIDGET_PARAMETERS):
            if name in parameters:
                try:
                    values[name] = self.traits()[name].validate(self, parameters[name])
                except traitlets.TraitError:
                    raise InputError(f"session parameter {name!r} must be "
                                     f"{self.traits()[name].info()}, got {parameters[name]!r}") from None
        self._config(self._editor, **values)     # raises InputError naming the bad setting
        return values

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

