"""The widget's controls: the toolbar row over the canvas, the Parameters and Session panels.

They hold no data of their own: each control is linked to the trait it edits (the canvas's mode,
brush and undo state; the widget's method and parameters).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable, Dict

import ipywidgets as widgets
import traitlets


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
HELP = ("<small>Pointer over the image: <b>p</b> points · <b>m</b> mask brush · <b>e</b> eraser · "
        "<b>x</b> delete a pair · <b>z</b> undo · <b>y</b> redo · <b>Enter</b> run · <b>Esc</b> cancel · "
        "wheel: brush size. Points: click a handle (red), then its target (blue); in delete mode click a "
        "handle or target to remove its pair (or use the list beside the pictures). Mask (hatched): paint "
        "the region that may change (none = everything may change).</small>")


def button(text: str, icon: str, tooltip: str, action: Callable[[], None], width: str = "auto",
           label: bool = True) -> widgets.Button:
    """A button that calls `action()`, with the class dragwidget-<text> (e.g. dragwidget-run)."""
    control = widgets.Button(description=text if label else "", icon=icon, tooltip=tooltip,
                             layout=widgets.Layout(width=width))
    control.on_click(lambda _: action())
    control.add_class("dragwidget-" + text.lower().replace(" ", "-"))
    return control


class Toolbar(widgets.HBox):
    """Modes, brush, undo/redo and clearing (linked to the canvas), the method, Run and Cancel."""

    def __init__(self, canvas, on_run: Callable[[], None], on_cancel: Callable[[], None]):
        self.mode_buttons = widgets.ToggleButtons(
            options=[("Points", "points"), ("Mask", "mask"), ("Eraser", "erase"), ("Delete", "delete")],
            tooltips=["click a handle, then its target (p)", "paint the region that may change (m)",
                      "erase the mask (e)", "click a handle or target to remove its pair (x)"],
            style={"button_width": "62px"})
        traitlets.link((canvas, "mode"), (self.mode_buttons, "value"))
        self.brush_slider = widgets.IntSlider(4, min=1, max=64, description="Brush", layout=widgets.Layout(width="140px"),
                                              style={"description_width": "38px"})
        traitlets.link((canvas, "brush_radius"), (self.brush_slider, "value"))
        traitlets.dlink((canvas, "brush_max"), (self.brush_slider, "max"))
        self.show_mask_box = widgets.Checkbox(True, description="Show mask", indent=False,
                                              layout=widgets.Layout(width="100px"))
        traitlets.link((canvas, "show_mask"), (self.show_mask_box, "value"))
        self.undo_button = button("Undo", "undo", "undo the last point, stroke or clear (z)", canvas.undo, "40px", False)
        self.redo_button = button("Redo", "repeat", "redo (y)", canvas.redo, "40px", False)
        self.clear_points_button = button("Clear points", "times", "remove every point pair", canvas.clear_points,
                                          "40px", False)
        self.clear_mask_button = button("Clear mask", "eraser", "erase the whole mask", canvas.clear_mask, "40px", False)
        traitlets.dlink((canvas, "can_undo"), (self.undo_button, "disabled"), lambda can: not can)
        traitlets.dlink((canvas, "can_redo"), (self.redo_button, "disabled"), lambda can: not can)
        self.method_choice = widgets.Dropdown(
            options=[("DragDiffusion (paper)", "dragdiffusion"), ("GoodDrag", "gooddrag"), ("FastDrag", "fastdrag")],
            description="Method",
            layout=widgets.Layout(width="185px"), style={"description_width": "52px"},
            tooltip="DragDiffusion: optimise at one timestep, then denoise; GoodDrag: drag while denoising; "
                    "FastDrag: warp the latent once, then denoise (about a second on a CPU)")
        self.method_choice.add_class("dragwidget-method")
        self.run_button = button("Run", "play", "run the drag (Enter)", on_run, "80px")
        self.run_button.button_style = "primary"
        self.cancel_button = button("Cancel", "stop", "cancel the run (Escape)", on_cancel, "80px")
        self.cancel_button.disabled = True
        super().__init__([self.mode_buttons, self.brush_slider, self.show_mask_box, self.undo_button, self.redo_button,
                          self.clear_points_button, self.clear_mask_button, self.method_choice, self.run_button,
                          self.cancel_button], layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
        self.add_class("dragwidget-toolbar")

    def show_running(self, running: bool) -> None:
        self.run_button.disabled = running
        self.cancel_button.disabled = not running


class ArrayLink:
    """traitlets.link for traits holding numpy arrays (link compares with !=, which an array
    answers elementwise): a change on either side is set on the other."""

    def __init__(self, source, target, name: str):
        self.updating = False
        target.set_trait(name, getattr(source, name))
        source.observe(lambda change: self._set(target, change), names=name)
        target.observe(lambda change: self._set(source, change), names=name)

    def _set(self, other, change) -> None:
        if self.updating:
            return
        self.updating = True
        try:
            setattr(other, change["name"], change["new"])
        finally:
            self.updating = False


class ParametersPanel(widgets.VBox):
    """Model, prompt, upload, generate, and one field per engine parameter, linked to `owner`'s traits.

    `on_upload(file)` gets each uploaded file (a dict with name and content) and says whether it was
    taken; `on_generate()` makes a picture from the prompt."""

    def __init__(self, owner, on_upload: Callable[[dict], bool], on_generate: Callable[[], None]):
        style, wide = {"description_width": "130px"}, widgets.Layout(width="420px")
        self.model_text = widgets.Text(description="Model", continuous_update=False, layout=wide, style=style,
                                       tooltip="embedded name (toy), model folder or Hugging Face hub id; loaded at the first run")
        self.prompt_text = widgets.Text(description="Prompt", layout=wide, style=style, continuous_update=False)
        self.generate_button = button("Generate image from prompt", "magic",
                                      "generated-image mode: a new image from the prompt, dragged without LoRA or inversion",
                                      on_generate, "260px")
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload image")
        self.upload.observe(lambda change: self._uploaded(change["new"], on_upload), names="value")
        self.fields = parameter_fields()
        for name, control in {"model": self.model_text, "prompt": self.prompt_text, **self.fields}.items():
            traitlets.link((owner, name), (control, "value"))
        super().__init__([self.model_text, self.prompt_text, widgets.HBox([self.upload, self.generate_button]),
                          *self.fields.values()])

    def _uploaded(self, files, on_upload) -> None:
        if files:
            on_upload(files[0])
            self.upload.value = ()  # the same file can be uploaded again

    def show_running(self, running: bool) -> None:
        self.generate_button.disabled = self.upload.disabled = running


class SessionPanel(widgets.VBox):
    """A folder name and Save / Load buttons; `save(folder)` and `load(folder)` do the work."""

    def __init__(self, save: Callable[[str], Path], load: Callable[[str], None]):
        self.save, self.load = save, load
        self.path = widgets.Text(value="dragwidget_session", description="Folder", layout=widgets.Layout(width="420px"),
                                 style={"description_width": "130px"})
        self.message = widgets.HTML("")
        buttons = widgets.HBox([
            button("Save session", "save", "write the DragBench sample layout to the folder", self.save_clicked),
            button("Load session", "folder-open", "read a session / DragBench sample folder", self.load_clicked)])
        super().__init__([self.path, buttons, self.message])

    def save_clicked(self) -> None:
        try:
            folder = self.save(self.path.value)
            self.message.value = f"<small>saved to {html.escape(str(folder))}</small>"
        except Exception as error:
            self.message.value = f"<small style='color:#b00020'>not saved: {html.escape(str(error))}</small>"

    def load_clicked(self) -> None:
        try:
            self.load(self.path.value)
            self.message.value = f"<small>loaded {html.escape(self.path.value)}</small>"
        except Exception as error:
            self.message.value = f"<small style='color:#b00020'>not loaded: {html.escape(str(error))}</small>"


def parameter_fields() -> Dict[str, widgets.Widget]:
    """One field per engine parameter the widget exposes."""
    style = {"description_width": "130px"}
    return {
        "lora_steps": widgets.BoundedIntText(min=0, max=10000, description="LoRA steps", style=style),
        "drag_steps": widgets.BoundedIntText(min=1, max=10000, description="Optimisation steps", style=style),
        "learning_rate": widgets.BoundedFloatText(min=1e-6, max=10.0, step=0.001, description="Learning rate",
                                                  style=style),
        "inversion_strength": widgets.BoundedFloatText(min=0.02, max=1.0, step=0.05, description="Inversion strength",
                                                       style=style),
        "mask_weight": widgets.BoundedFloatText(min=0.0, max=100.0, step=0.05, description="Mask weight", style=style),
        "seed": widgets.IntText(description="Seed", style=style),
        "preview_every": widgets.BoundedIntText(min=0, max=10000, description="GIF frame every", style=style,
                                                tooltip="drag steps between preview frames (0 = none)"),
        "keep_outside_mask": widgets.Checkbox(description="Keep pixels outside the mask", indent=True, style=style,
                                              tooltip="with a mask drawn, the result keeps the original pixels "
                                                      "outside it exactly"),
    }
