"""DragWidget: click handle/target points, paint the editable mask, run DragDiffusion, watch it.

    from dragwidget.widget import DragWidget
    widget = DragWidget("photo.png", model="toy")
    widget                      # in a notebook cell
    widget.points = [{"handle": [20, 30], "target": [40, 30]}]
    widget.run(wait=True).image

Every coordinate the widget stores is in image pixels, whatever the display scale. The engine is
reached only through `DragEditor.run` / `.generate` / `.feature_maps`, in a background thread.

The widget is a thin container of composed parts, each with its own data:
`canvas.DragCanvas` (picture, points, mask, mode, undo), `point_list.PointList`,
`controls.Toolbar`, `run_controller.RunController` (runs; given the canvas, a
`progress_view.ProgressView` and the `result_panel.ResultPanel`). The widget's own traits are
linked to theirs; the settings of the method live here, as traits named after the DragConfig
fields they set (`max_drag_steps`, `gooddrag_lr`, ...), generated from those fields.

After every successful drag (unless `show_features` is off) the run's thread computes the PCA grid
of the decoder-block features of original and edited (by default only the drag's own block:
`feature_blocks` picks others), shown in the Feature maps tab; the `FeatureMaps` are kept in
`widget.feature_maps`. A failure there keeps the drag's result.
"""

from __future__ import annotations

import html
import io
import sys
from typing import Optional

import ipywidgets as widgets
import traitlets
from PIL import Image

from ..api import DragConfig, DragEditor, DragResult, InputError, setting_info
from .canvas import MODES, DragCanvas
from .compat import titled_tabs
from .history import Checked
from .controls import HELP, ArrayLink, ParametersPanel, SessionPanel, Toolbar
from .models import default_model_name, model_settings
from .point_list import PointList
from .progress_view import ProgressView
from .result_panel import ResultPanel
from .run_controller import RunController, RunOptions
from .runner import BUSY, RunInProgressError
from .session import load_session, save_session
from .setting_traits import WIDGET_SETTINGS, SettingTraits, current_names, renamed_trait, widget_values

# other widget traits that may be passed to the constructor
OPTIONS = ("show_features", "feature_blocks", "live_preview", "preview_steps", "preview_strength")
TABS = ("Parameters", "Feature maps", "Drag GIF", "Session", "Help")


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


class DragWidget(widgets.VBox, SettingTraits):
    """The DragDiffusion editor as a Jupyter widget (see the module docstring)."""

    image = traitlets.Any(None, allow_none=True, help="the input image (PIL RGB); set a path, PIL image or array")
    points = traitlets.Any([], help='point pairs [{"handle": [x, y], "target": [x, y]}, ...] in image pixels')
    mask = Checked(None, help="HxW bool array, True = may change (all False = no mask)")
    mode = traitlets.Enum(MODES, default_value="points", help="what a click does: points, mask, erase or delete")
    brush_radius = traitlets.Int(4, help="mask brush radius in image pixels")
    show_mask = traitlets.Bool(True, help="draw the mask overlay on the canvas")
    prompt = traitlets.Unicode("", help="the picture's caption (LoRA, inversion and drag are conditioned on it)")
    model = traitlets.Unicode("", help="embedded name (toy), model folder or hub id; loaded at the first run")
    drag_steps = renamed_trait("drag_steps")
    learning_rate = renamed_trait("learning_rate")
    live_preview = traitlets.Bool(True, help="while a pair is dragged with the pointer, show FastDrag's edit of it")
    preview_steps = traitlets.Int(setting_info("fastdrag_inference_steps").default,
                                  help="the live preview's DDIM steps (FastDrag's fastdrag_inference_steps)")
    preview_strength = traitlets.Float(setting_info("fastdrag_inversion_strength").default,
                                       help="the live preview's inversion strength (FastDrag's)")
    show_features = traitlets.Bool(True, help="after each drag, compute and show the PCA feature grid of original and edited")
    feature_blocks = traitlets.Any(None, allow_none=True,
                                   help="decoder blocks of the feature grid; None = the drag's own (config.feature_block)")
    result = traitlets.Instance(DragResult, allow_none=True, help="the last run's DragResult")
    running = traitlets.Bool(False, help="a run or a generation is in progress")
    status = traitlets.Unicode("", help="the status line: what runs, what the last run achieved (its verdict)")
    error = traitlets.Unicode("", help="the last error's message ('' after a successful run)")

    def __init__(self, image=None, *, prompt: str = "", points=None, mask=None, editor: Optional[DragEditor] = None,
                 model: Optional[str] = None, config: Optional[DragConfig] = None, max_display_size=448,
                 **parameters):
        enable_colab_widgets()
        parameters = current_names(parameters, "DragWidget()")
        if isinstance(max_display_size, (int, float)):
            max_display_size = (max_display_size, max_display_size)
        self._base_config = config
        self._defaults = {}
        self.canvas = DragCanvas(max_display_size)
        self.results = ResultPanel(self.use_result_as_input, max_display_size)
        self.progress = ProgressView()
        self.controller = RunController(self.canvas, self.progress, self.results, editor)
        self.point_list = PointList(self.canvas)
        self.toolbar = Toolbar(self.canvas, lambda: self.run(), self.cancel)
        self.tabs = self._tabs()
        super().__init__([self.toolbar,
                          widgets.HBox([self.canvas, self.results, self.point_list],
                                       layout=widgets.Layout(align_items="flex-start", margin="6px 0",
                                                             flex_flow="row wrap")),
                          self.progress, self.tabs], **{k: parameters.pop(k) for k in ("layout",) if k in parameters})
        self.add_class("dragwidget")
        for name in ("points", "mode", "brush_radius", "show_mask"):
            traitlets.link((self.canvas, name), (self, name))
        ArrayLink(self.canvas, self, "mask")
        traitlets.dlink((self.canvas, "image"), (self, "image"))
        for name in ("running", "status", "error", "result"):
            traitlets.link((self.controller, name), (self, name))
        traitlets.link((self, "method"), (self.toolbar.method_choice, "value"))
        self.canvas.on_submit(lambda: None if self.running else self.run())
        self.canvas.on_escape(self.cancel)
        self.canvas.on_live_drag(lambda pairs, released: self.controller.want_live(pairs, self._options()))
        traitlets.dlink((self.canvas, "message"), (self, "status"))
        self.canvas.observe(self._picture_changed, names="image")
        self.canvas.observe(lambda _: self.controller.prepare_live(self._options()), names="displayed")

        model_name = editor.model.name if editor is not None else (model or default_model_name())
        defaults = config or (editor.config if editor is not None else model_settings(model_name))
        unknown = set(parameters) - set(WIDGET_SETTINGS) - set(OPTIONS)
        if unknown:
            raise TypeError(f"DragWidget got unknown argument(s) {sorted(unknown)}; "
                            f"parameters: {sorted(WIDGET_SETTINGS) + list(OPTIONS)}")
        with self.hold_trait_notifications():
            self.model = str(model_name)
            # the chosen method's defaults, so that a value given for it is not taken for another's default
            self._apply_defaults(defaults.replace(method=parameters.get("method", defaults.method)), force=True)
            for name, value in parameters.items():
                setattr(self, name, value)
        self.prompt = prompt
        if image is not None:
            self.image = image
        if points is not None:
            self.points = points
        if mask is not None:
            self.mask = mask
        self.canvas.history.clear()
        self.canvas.can_undo = False

    def _tabs(self) -> widgets.Tab:
        self.parameters_panel = ParametersPanel(self, self._upload_changed, lambda: self.generate())
        self.show_features_box = widgets.Checkbox(True, description="Compute the feature maps after each drag",
                                                  indent=False, layout=widgets.Layout(width="320px"))
        traitlets.link((self, "show_features"), (self.show_features_box, "value"))
        self.session_panel = SessionPanel(self.save_session, self.load_session)
        self.help_html = widgets.HTML("")
        self._show_input_help()
        self.canvas.input.observe(lambda _: self._show_input_help(), names="keys_active")
        tabs = titled_tabs([self.parameters_panel, widgets.VBox([self.show_features_box, self.results.features]),
                            self.results.animation, self.session_panel, self.help_html], TABS)
        tabs.selected_index = None
        return tabs

    def _show_input_help(self) -> None:
        self.help_html.value = f"{HELP}<br><small>Input here: {html.escape(self.canvas.input.describe())}.</small>"

    # ================================================================== checks: the canvas's own
    @traitlets.validate("image")
    def _valid_image(self, proposal):
        if proposal["value"] is not self.canvas.image:
            self.canvas.image = proposal["value"]       # checks it, and starts its points and mask afresh
        return self.canvas.image

    @traitlets.validate("points")
    def _valid_points(self, proposal):
        return self.canvas.checked_points(proposal["value"])

    @traitlets.validate("mask")
    def _valid_mask(self, proposal):
        return self.canvas.checked_mask(proposal["value"])

    @traitlets.validate(*WIDGET_SETTINGS)
    def _valid_parameter(self, proposal):
        # DragConfig checks every setting (and their combinations); its InputError names the setting
        self._config(self.controller.editor, **{proposal["trait"].name: proposal["value"]})
        return proposal["value"]

    @traitlets.validate("preview_steps", "preview_strength")
    def _valid_preview_setting(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        try:
            self._options(**{name: value}).preview_config(self.controller.editor)
        except InputError as error:
            raise InputError(f"{name}={value!r}: {error}") from None
        return value

    # ================================================================== observers
    @traitlets.observe("prompt", "lora_steps")
    def _lora_input_changed(self, change):
        self._show_plan()

    @traitlets.observe("prompt", "live_preview", "preview_steps", "preview_strength", "model")
    def _live_input_changed(self, change):
        if self._defaults:
            self.controller.prepare_live(self._options())

    @traitlets.observe("model")
    def _model_changed(self, change):
        editor = self.controller.editor
        if self._defaults and (editor is None or editor.model.name != change["new"]):
            self._apply_defaults(model_settings(change["new"]), force=False)

    @traitlets.observe("method")
    def _method_changed(self, change):
        # the LoRA steps and inversion strength shown become the new method's own, where the user left them
        if self._defaults:
            editor = self.controller.editor
            base = self._base_config or (editor.config if editor is not None else model_settings(self.model))
            self._apply_defaults(base.replace(method=change["new"]), force=False)

    @traitlets.observe("show_features")
    def _show_features_changed(self, change):
        self.results.features.layout.display = None if change["new"] else "none"

    @traitlets.observe("running")
    def _running_changed(self, change):
        self.toolbar.show_running(change["new"])
        self.parameters_panel.show_running(change["new"])

    def _apply_defaults(self, config: DragConfig, force: bool) -> None:
        """Settings take the engine config's values (those of its method: GoodDrag's own LoRA steps,
        say); with force=False only those the user left alone."""
        new = widget_values(config)
        for name, value in new.items():
            if force or getattr(self, name) == self._defaults.get(name):
                setattr(self, name, value)
        self._defaults = new

    def _config(self, editor: Optional[DragEditor] = None, **values) -> DragConfig:
        """The engine config of the widget's settings (`values` overrides them); the shared preparation
        settings (lora_steps, ...) set the chosen method's own fields."""
        base = self._base_config or (editor.config if editor is not None else DragConfig())
        return base.replace_for_method(**{name: values.get(name, getattr(self, name)) for name in WIDGET_SETTINGS})

    def _options(self, **preview) -> RunOptions:
        """What a run (or a live preview) needs of the widget's settings; `preview` overrides
        preview_steps or preview_strength."""
        return RunOptions(model=self.model, prompt=self.prompt, config_for=self._config, lora_steps=self.lora_steps,
                          preview_every=self.preview_every, show_features=self.show_features,
                          feature_blocks=None if self.feature_blocks is None else list(self.feature_blocks),
                          live_preview=self.live_preview, preview_steps=preview.get("preview_steps", self.preview_steps),
                          preview_strength=preview.get("preview_strength", self.preview_strength))

    def _picture_changed(self, change) -> None:
        self.results.show_input(change["new"])
        self._show_plan()
        if self._defaults:
            self.controller.prepare_live(self._options())

    def _show_plan(self) -> None:
        message = self.controller.plan_message(self._options())
        if message:
            self.status = message

    # ================================================================== actions
    def run(self, wait: bool = False, timeout: Optional[float] = None) -> Optional[DragResult]:
        """Start the edit in a background thread (the notebook stays responsive).

        With wait=True, block until it ends and return the result (raising its error)."""
        return self.controller.run(self._options(), wait=wait, timeout=timeout)

    def wait(self, timeout: Optional[float] = None) -> Optional[DragResult]:
        return self.controller.wait(timeout)

    def generate(self, prompt: Optional[str] = None, seed: Optional[int] = None, wait: bool = False):
        """Generated-image mode: make the input from `prompt`; it is then dragged without LoRA or
        inversion (the generation's own latents are kept)."""
        if prompt is not None and not self.running:
            self.prompt = prompt
        return self.controller.generate(self._options(), seed=seed, wait=wait)

    def cancel(self) -> None:
        """Cancel the running edit; when nothing runs, drop a pending handle."""
        if not self.controller.cancel():
            self.canvas.drop_pending()

    def undo(self) -> Optional[str]:
        return self.canvas.undo()

    def redo(self) -> Optional[str]:
        return self.canvas.redo()

    def clear_points(self) -> None:
        self.canvas.clear_points()

    def clear_mask(self) -> None:
        self.canvas.clear_mask()

    @property
    def pending_handle(self):
        """A handle clicked whose target is still to be clicked (image pixels), or None."""
        return None if self.canvas.pending is None else list(self.canvas.pending)

    @property
    def parameters(self) -> dict:
        return {"model": self.model, "prompt": self.prompt, **{name: getattr(self, name) for name in WIDGET_SETTINGS}}

    @property
    def editor(self) -> Optional[DragEditor]:
        return self.controller.editor

    @property
    def feature_maps(self):
        """The PCA feature maps of the last result (None: not computed)."""
        return self.controller.feature_maps

    @property
    def last_traceback(self) -> str:
        return self.controller.last_traceback

    def use_result_as_input(self) -> None:
        """Chain edits: the edited image becomes the input (points and mask start afresh)."""
        if self.result is not None and not self.running:
            self.image = self.result.image
            plan = self.controller.plan_message(self._options())
            self.status = "the edited image is the new input" + (f"; {plan}" if plan else "")

    def _upload_changed(self, upload: dict) -> bool:
        """A file from the Upload button; True when it became the image."""
        name = upload.get("name", "the upload")
        if self.running:
            self.error = f"{name} was not loaded: {BUSY}"
            return False
        try:
            self.image = Image.open(io.BytesIO(bytes(upload["content"])))
        except Exception as error:
            self.error = f"could not open {name}: {error}"
            return False
        self.status = f"loaded {name}"
        return True

    # ================================================================== sessions
    def save_session(self, folder):
        """Write image, prompt, points, mask and parameters in the DragBench sample layout."""
        if self.image is None:
            raise InputError("nothing to save: the widget has no image")
        with self.canvas.lock:
            return save_session(folder, self.image, self.prompt, list(self.points), self.canvas.mask.copy(),
                                parameters=self.parameters)

    def load_session(self, folder) -> None:
        """Replace image, prompt, points, mask and parameters by a saved session's.

        Everything is read and checked first; on any error nothing of the widget changes."""
        self._refuse_while_running("load a session")
        session = load_session(folder)
        model = session.parameters.get("model", self.model)
        if not isinstance(model, str):
            raise InputError(f"session parameter 'model' must be a string (a model name, folder or hub id), "
                             f"got {type(model).__name__}")
        values = self._checked_parameters(session.parameters)
        with self.canvas.lock:
            self._refuse_while_running("load a session")
            self.model = model                   # first: a new model brings its defaults
            self.method = values.pop("method", self.method)     # then the method its defaults
            with self.hold_trait_notifications():
                for name, value in values.items():
                    setattr(self, name, value)
            self.image = session.image
            self.prompt = session.prompt
            self.points = session.points
            if session.mask is not None:
                self.mask = session.mask
            self.canvas.history.clear()
            self.canvas.can_undo = self.canvas.can_redo = False

    def _refuse_while_running(self, action: str) -> None:
        if self.running:
            raise RunInProgressError(f"cannot {action} now: {BUSY}")

    def _checked_parameters(self, parameters: dict) -> dict:
        """The widget parameters among a session's, each checked by its trait and all together by
        DragConfig; InputError naming the parameter otherwise."""
        values = {}
        for name in WIDGET_SETTINGS:
            if name in parameters:
                try:
                    values[name] = self.traits()[name].validate(self, parameters[name])
                except traitlets.TraitError:
                    raise InputError(f"session parameter {name!r} must be "
                                     f"{self.traits()[name].info()}, got {parameters[name]!r}") from None
        self._config(self.controller.editor, **values)     # raises InputError naming the bad setting
        return values

    @classmethod
    def from_session(cls, folder, **kwargs) -> "DragWidget":
        widget = cls(**kwargs)
        widget.load_session(folder)
        return widget
