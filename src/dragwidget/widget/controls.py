"""The widget's controls: the toolbar row over the canvas, the Parameters and Session panels.

They hold no data of their own: each control is linked to the trait it edits (the canvas's mode,
brush and undo state; the widget's method and settings). The Parameters panel's fields are made
from the DragConfig fields they edit: their labels, descriptions and types.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Callable, Dict, Tuple

import ipywidgets as widgets
import traitlets

from ..api import METHOD_SETTINGS, SHARED_SETTINGS, InputError, setting_info, settings_of
from .compat import clear_upload, tip, uploaded_files
from .setting_traits import WIDGET_SETTINGS

METHOD_TITLES = {"dragdiffusion": "DragDiffusion (paper)", "gooddrag": "GoodDrag", "fastdrag": "FastDrag"}
FIELD_STYLE = {"description_width": "150px"}
HELP = ("<small>Pointer over the image: <b>p</b> points · <b>m</b> mask brush · <b>e</b> eraser · "
        "<b>x</b> delete a pair · <b>z</b> undo · <b>y</b> redo · <b>Enter</b> run · <b>Esc</b> cancel · "
        "wheel: brush size. Points: press on the picture and drag to its target (the result follows the "
        "pointer), or click a handle (red), then its target (blue); in delete mode click a "
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
            style={"button_width": "78px"})
        traitlets.link((canvas, "mode"), (self.mode_buttons, "value"))
        self.brush_slider = widgets.IntSlider(4, min=1, max=64, description="Brush", layout=widgets.Layout(width="230px"),
                                              style={"description_width": "42px"})
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
            options=[(title, method) for method, title in METHOD_TITLES.items()],
            description="Method",
            layout=widgets.Layout(width="185px"), style={"description_width": "52px"},
            **tip("DragDiffusion: optimise at one timestep, then denoise; GoodDrag: drag while denoising; "
                  "FastDrag: warp the latent once, then denoise (about a second on a CPU)"))
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


class SettingLink:
    """traitlets.link between a setting's trait and its field, where a value the setting refuses
    puts the field back and is explained in `message` (a link would raise in the kernel's log,
    where nobody sees it, and leave the field showing a value that is not the setting's)."""

    def __init__(self, owner, name: str, control: widgets.Widget, message: widgets.HTML):
        self.owner, self.name, self.control, self.message = owner, name, control, message
        control.value = getattr(owner, name)
        owner.observe(self._setting_changed, names=name)
        control.observe(self._field_changed, names="value")

    def _setting_changed(self, change) -> None:
        self.control.value = change["new"]

    def _field_changed(self, change) -> None:
        if change["new"] == getattr(self.owner, self.name):
            return
        try:
            setattr(self.owner, self.name, change["new"])
            self.message.value = ""
        except (InputError, traitlets.TraitError) as error:
            self.message.value = f"<small style='color:#b00020'>{html.escape(str(error))}</small>"
            self.control.value = getattr(self.owner, self.name)


class ParametersPanel(widgets.VBox):
    """Model, prompt, upload, generate, and the settings of `owner`'s method: a field per setting,
    linked to `owner`'s trait of the same name, swapped when `owner.method` changes.

    `fields` holds every setting's field (shown or not), `shown` the names of those shown now.
    `on_upload(file)` gets each uploaded file (a dict with name and content) and says whether it was
    taken; `on_generate()` makes a picture from the prompt."""

    def __init__(self, owner, on_upload: Callable[[dict], bool], on_generate: Callable[[], None]):
        style, wide = {"description_width": "130px"}, widgets.Layout(width="420px")
        self.model_text = widgets.Text(description="Model", continuous_update=False, layout=wide, style=style,
                                       **tip("embedded name (toy), model folder or Hugging Face hub id; loaded at the "
                                             "first run"))
        self.prompt_text = widgets.Text(description="Prompt", layout=wide, style=style, continuous_update=False)
        self.generate_button = button("Generate image from prompt", "magic",
                                      "generated-image mode: a new image from the prompt, dragged without LoRA or inversion",
                                      on_generate, "260px")
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload image")
        self.upload.observe(lambda change: self._uploaded(change["new"], on_upload), names="value")
        for name, control in {"model": self.model_text, "prompt": self.prompt_text}.items():
            traitlets.link((owner, name), (control, "value"))
        self.message = widgets.HTML("")
        self.fields = {name: setting_field(name) for name in WIDGET_SETTINGS if name != "method"}  # the toolbar has it
        for name, control in self.fields.items():
            SettingLink(owner, name, control, self.message)
        self.method_heading, self.shared_heading = widgets.HTML(), widgets.HTML("<b>Every method</b>")
        self.settings = widgets.VBox()
        self.shown: Tuple[str, ...] = ()
        self.show_settings_of(owner.method)
        owner.observe(lambda change: self.show_settings_of(change["new"]), names="method")
        self.live_fields = live_preview_fields()
        for name, control in self.live_fields.items():
            SettingLink(owner, name, control, self.message)
        live = widgets.VBox([widgets.HTML("<b>Live preview</b> <small>(FastDrag while you drag a pair; "
                                          "never a LoRA)</small>"), *self.live_fields.values()])
        super().__init__([self.model_text, self.prompt_text, widgets.HBox([self.upload, self.generate_button]),
                          self.settings, live, self.message])

    def show_settings_of(self, method: str) -> None:
        """Show `method`'s own settings under its name, then those every method has."""
        self.shown = settings_of(method)
        self.method_heading.value = f"<b>{METHOD_TITLES[method]}</b>"
        self.settings.children = [self.method_heading, *(self.fields[name] for name in METHOD_SETTINGS[method]),
                                  self.shared_heading, *(self.fields[name] for name in SHARED_SETTINGS)]

    def _uploaded(self, files, on_upload) -> None:
        files = uploaded_files(files)
        if files:
            on_upload(files[0])
            clear_upload(self.upload)

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


def live_preview_fields() -> Dict[str, widgets.Widget]:
    """The live preview's switch and its own FastDrag steps and strength (fast rather than best)."""
    fields = {
        "live_preview": widgets.Checkbox(description="Preview while dragging", indent=True, style=FIELD_STYLE,
                                         **tip("press on the picture and drag: the result follows the pointer")),
        "preview_steps": widgets.IntText(description="Preview DDIM steps", style=FIELD_STYLE,
                                         **tip("DDIM steps of the preview's FastDrag (fewer: faster, rougher)")),
        "preview_strength": widgets.FloatText(description="Preview strength", style=FIELD_STYLE,
                                              **tip("inversion strength of the preview's FastDrag")),
    }
    for name, control in fields.items():
        control.add_class("dragwidget-setting-" + name.replace("_", "-"))
    return fields


def setting_field(name: str) -> widgets.Widget:
    """The field that edits DragConfig setting `name`: a checkbox or a number box, with the setting's
    label and its description as the tooltip (DragConfig's own check decides what values it takes)."""
    info = setting_info(name)
    if info.kind is bool:
        control = widgets.Checkbox(description=info.label, indent=True, style=FIELD_STYLE, **tip(info.help))
    else:
        number_box = {int: widgets.IntText, float: widgets.FloatText}[info.kind]
        control = number_box(description=info.label, style=FIELD_STYLE, **tip(info.help))
    control.add_class("dragwidget-setting-" + name.replace("_", "-"))
    return control
