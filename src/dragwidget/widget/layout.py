"""Building the widget's controls and arranging them (no behaviour beyond linking them to traits).

`WidgetLayout` is a mixin of `DragWidget`: `_build_ui` creates the canvas, toolbars, progress bars,
parameter panel and session panel and links each control to the widget trait it edits.
"""

from __future__ import annotations

import ipywidgets as widgets
import traitlets
from ipycanvas import MultiCanvas
from ipyevents import Event

from .result_panel import ResultPanel

# "delete" removes the pair whose handle or target is clicked
MODES = ("points", "mask", "erase", "delete")
BRUSH_MODES = ("mask", "erase")
# widget trait -> DragConfig field
PARAMETERS = {
    "method": "method",
    "lora_steps": "lora_steps",
    "drag_steps": "max_drag_steps",
    "learning_rate": "drag_lr",
    "inversion_strength": "inversion_strength",
    "mask_weight": "mask_weight",
    "seed": "seed",
    "preview_every": "preview_every",
}
# widget traits passed to the engine whose widget default differs from the engine's
WIDGET_PARAMETERS = {"keep_outside_mask": "keep_outside_mask"}
STAGES = (("lora", "LoRA"), ("inversion", "Inversion"), ("drag", "Optimise"), ("denoise", "Denoise"),
          ("features", "Features"), ("generate", "Generate"))
RUN_STAGES = ("lora", "inversion", "drag", "denoise", "features")
HELP = ("<small>Pointer over the image: <b>p</b> points · <b>m</b> mask brush · <b>e</b> eraser · "
        "<b>x</b> delete a pair · <b>z</b> undo · <b>y</b> redo · <b>Enter</b> run · <b>Esc</b> cancel · "
        "wheel: brush size. Points: click a handle (red), then its target (blue); in delete mode click a "
        "handle or target to remove its pair. Mask (hatched): paint the region that may change "
        "(none = everything may change).</small>")


class WidgetLayout:
    """The controls of `DragWidget` (a mixin: the traits it links live on the widget)."""

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

        self.mode_buttons = W.ToggleButtons(
            options=[("Points (p)", "points"), ("Mask (m)", "mask"), ("Eraser (e)", "erase"), ("Delete (x)", "delete")],
            tooltips=["click a handle, then its target", "paint the region that may change",
                      "erase the mask", "click a handle or target to remove its pair"],
            style={"button_width": "105px"})
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
        self.method_choice = W.Dropdown(
            options=[("DragDiffusion (paper)", "dragdiffusion"), ("GoodDrag", "gooddrag")], description="Method",
            layout=W.Layout(width="250px"), style={"description_width": "55px"},
            tooltip="DragDiffusion: optimise at one timestep, then denoise; GoodDrag: drag while denoising")
        self.method_choice.add_class("dragwidget-method")
        traitlets.link((self, "method"), (self.method_choice, "value"))
        self.toolbar = W.HBox([self.mode_buttons, self.brush_slider, self.show_mask_box, self.method_choice],
                              layout=W.Layout(flex_flow="row wrap"))
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
        self._build_panels(button)
        self.help_html = W.HTML(HELP)

    def _build_panels(self, button) -> None:
        """The collapsed Parameters and Session panels."""
        W = widgets
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
            "keep_outside_mask": W.Checkbox(description="Keep pixels outside the mask", indent=True, style=style,
                                            tooltip="with a mask drawn, the result keeps the original pixels "
                                                    "outside it exactly"),
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
        return events + (["wheel"] if mode in BRUSH_MODES else [])  # the wheel scrolls the page otherwise
