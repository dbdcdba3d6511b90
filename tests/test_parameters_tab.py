"""The Parameters tab and the widget's setting traits, both made from DragConfig's fields: the
method's own settings are shown and swapped with the method, each field sets the DragConfig field
of its name, and the old trait names still work (deprecated)."""

from __future__ import annotations

import json

import ipywidgets
import pytest
import traitlets
from PIL import Image

from dragwidget import DragConfig
from dragwidget.config import setting_info
from dragwidget.errors import InputError
from dragwidget.widget import DragWidget, load_session, save_session
from widget_fakes import FakeEditor, Widget, picture

SHARED = ("lora_steps", "num_inference_steps", "inversion_strength", "seed", "preview_every", "keep_outside_mask")


def displayed(panel) -> list:
    """The names of the setting fields the tab displays now, in order."""
    names = {id(control): name for name, control in panel.fields.items()}
    return [names[id(child)] for child in panel.settings.children if id(child) in names]


def stop(request, progress, cancel):
    raise InputError("stopped before the drag")


def run_config(widget, editor) -> DragConfig:
    """The config the widget's Run hands the engine."""
    widget.points = [{"handle": [10, 10], "target": [20, 10]}]
    with pytest.raises(InputError, match="stopped before the drag"):
        widget.run(wait=True)
    return editor.requests[-1].config


# ---------------------------------------------------------------------- which fields are shown
def test_each_method_shows_its_own_settings_and_the_shared_ones():
    widget = Widget(picture(), model="fake", method="dragdiffusion")
    panel = widget.parameters_panel
    shown = displayed(panel)
    assert shown[:6] == ["max_drag_steps", "drag_lr", "mask_weight", "motion_radius", "tracking_radius",
                         "reach_threshold"]
    assert "gooddrag_lr" not in shown and shown[6:] == list(SHARED)

    widget.toolbar.method_choice.value = "gooddrag"               # the toolbar's choice swaps the fields
    shown = displayed(panel)
    assert {"gooddrag_lr", "gooddrag_rounds", "gooddrag_steps_per_round", "gooddrag_denoising_steps",
            "gooddrag_step_length", "gooddrag_motion_radius", "gooddrag_tracking_radius", "gooddrag_mask_weight",
            "gooddrag_stall_rounds"} <= set(shown)
    assert not {"drag_lr", "max_drag_steps", "mask_weight", "fastdrag_core_similarity"} & set(shown)
    assert shown[-len(SHARED):] == list(SHARED) and "<b>GoodDrag</b>" in panel.settings.children[0].value

    widget.method = "fastdrag"                                     # and so does the trait
    assert displayed(panel) == ["fastdrag_rigid_core", "fastdrag_core_similarity", "fastdrag_handle_side_wins",
                                *SHARED]
    assert tuple(displayed(panel)) == panel.shown
    assert "<b>FastDrag</b>" in panel.settings.children[0].value


def test_every_field_is_labelled_and_explained_by_its_config_field():
    panel = Widget(picture(), model="fake").parameters_panel
    kinds = {int: ipywidgets.IntText, float: ipywidgets.FloatText, bool: ipywidgets.Checkbox}
    for name, control in panel.fields.items():
        info = setting_info(name)
        assert (control.description, control.tooltip) == (info.label, info.help), name
        assert type(control) is kinds[info.kind], name
    assert panel.fields["gooddrag_lr"].description == "Learning rate"
    assert "method" not in panel.fields                            # the toolbar chooses it


def test_the_traits_are_generated_from_the_config_fields():
    traits = DragWidget.class_traits()
    assert isinstance(traits["gooddrag_lr"], traitlets.Float) and isinstance(traits["max_drag_steps"], traitlets.Int)
    assert isinstance(traits["fastdrag_rigid_core"], traitlets.Bool) and isinstance(traits["method"], traitlets.Unicode)
    assert traits["fastdrag_core_similarity"].help == setting_info("fastdrag_core_similarity").help
    assert "drag_steps" not in traits and "learning_rate" not in traits
    widget = DragWidget(model="fake", max_drag_steps=5, gooddrag_lr=0.03)
    assert (widget.max_drag_steps, widget.gooddrag_lr) == (5, 0.03)
    assert widget.parameters_panel.fields["gooddrag_lr"].value == 0.03     # the field shows the trait


# ---------------------------------------------------------------------- a field sets its config field
def test_a_shown_field_sets_the_config_field_of_its_name():
    editor = FakeEditor(stop)
    widget = Widget(picture(), editor=editor)                      # GoodDrag, the engine's default
    panel = widget.parameters_panel
    panel.fields["gooddrag_lr"].value = 0.05
    panel.fields["gooddrag_rounds"].value = 4
    config = run_config(widget, editor)
    assert (config.method, config.gooddrag_lr, config.gooddrag_rounds) == ("gooddrag", 0.05, 4)
    assert config.drag_lr == editor.config.drag_lr == 0.01         # the paper's rate is another setting

    widget.toolbar.method_choice.value = "dragdiffusion"
    panel.fields["drag_lr"].value = 0.03
    config = run_config(widget, editor)
    assert (config.method, config.drag_lr, config.gooddrag_lr) == ("dragdiffusion", 0.03, 0.05)

    widget.toolbar.method_choice.value = "fastdrag"
    panel.fields["fastdrag_core_similarity"].value = 0.3
    panel.fields["fastdrag_rigid_core"].value = False
    config = run_config(widget, editor)
    assert (config.method, config.fastdrag_core_similarity, config.fastdrag_rigid_core) == ("fastdrag", 0.3, False)


def test_the_shared_preparation_settings_set_the_chosen_methods_own_fields():
    editor = FakeEditor(stop)
    widget = Widget(picture(), editor=editor)
    panel = widget.parameters_panel
    assert panel.fields["lora_steps"].value == editor.config.gooddrag_lora_steps == 70   # GoodDrag's own
    panel.fields["lora_steps"].value = 9
    config = run_config(widget, editor)
    assert (config.gooddrag_lora_steps, config.lora_steps) == (9, editor.config.lora_steps)

    widget.method = "fastdrag"
    assert (widget.num_inference_steps, widget.lora_steps) == (10, 9)  # FastDrag's own steps; LoRA as the user set it
    panel.fields["num_inference_steps"].value = 12
    config = run_config(widget, editor)
    assert (config.fastdrag_inference_steps, config.num_inference_steps) == (12, 50)
    assert config.for_method().num_inference_steps == 12


def test_a_value_given_with_its_method_is_kept():
    """70 LoRA steps is GoodDrag's default, but given with FastDrag it is FastDrag's own choice."""
    widget = DragWidget(model="fake", method="fastdrag", lora_steps=70)
    assert (widget.method, widget.lora_steps) == ("fastdrag", 70)
    assert widget._config(None).fastdrag_lora_steps == 70


# ---------------------------------------------------------------------- refused values name the setting
def test_a_refused_value_names_the_setting_and_the_field_goes_back():
    widget = DragWidget(model="fake")
    panel = widget.parameters_panel
    panel.fields["gooddrag_lr"].value = -1.0
    assert "gooddrag_lr must be a number &gt; 0, got -1.0" in panel.message.value
    assert widget.gooddrag_lr == panel.fields["gooddrag_lr"].value == 0.02
    panel.fields["gooddrag_lr"].value = 0.04                       # a good value clears the message
    assert widget.gooddrag_lr == 0.04 and panel.message.value == ""
    widget.method = "dragdiffusion"
    panel.fields["num_inference_steps"].value = 1                  # refused in combination: 0.7 x 1 step
    assert "gives 0 DDIM inversion steps" in panel.message.value and widget.num_inference_steps == 50

    with pytest.raises(InputError, match="gooddrag_stall_rounds must be a whole number >= 1, got 0"):
        widget.gooddrag_stall_rounds = 0
    with pytest.raises(InputError, match="fastdrag_core_similarity must be a number in"):
        DragWidget(model="fake", fastdrag_core_similarity=3.0)


# ---------------------------------------------------------------------- the old names (deprecated)
def test_the_old_trait_names_warn_and_set_the_new_ones():
    with pytest.warns(DeprecationWarning, match="drag_steps is deprecated, use max_drag_steps"):
        widget = DragWidget(model="fake", drag_steps=6)
    assert widget.max_drag_steps == 6
    with pytest.warns(DeprecationWarning, match="DragWidget.learning_rate is deprecated, use DragWidget.drag_lr"):
        assert widget.learning_rate == widget.drag_lr == 0.01
    with pytest.warns(DeprecationWarning, match="use DragWidget.drag_lr"):
        widget.learning_rate = 0.04
    assert widget.drag_lr == 0.04 and widget._config(None).drag_lr == 0.04
    with pytest.warns(DeprecationWarning, match="use DragWidget.max_drag_steps"):
        widget.drag_steps = 7
    assert widget.max_drag_steps == 7 and widget.parameters_panel.fields["max_drag_steps"].value == 7
    with pytest.warns(DeprecationWarning), pytest.raises(InputError, match="max_drag_steps must be a whole number"):
        widget.drag_steps = 0
    with pytest.raises(InputError, match="drag_steps is the old name of max_drag_steps; give max_drag_steps only"):
        DragWidget(model="fake", drag_steps=6, max_drag_steps=5)


def test_a_session_saved_with_the_old_names_loads_into_the_new_ones(tmp_path):
    folder = save_session(tmp_path / "old", Image.fromarray(picture()), "a disc",
                          parameters={"model": "fake", "method": "dragdiffusion", "learning_rate": 0.05,
                                      "drag_steps": 9})
    with pytest.warns(DeprecationWarning) as caught:
        parameters = load_session(folder).parameters
    assert parameters == {"model": "fake", "method": "dragdiffusion", "drag_lr": 0.05, "max_drag_steps": 9}
    assert sorted(str(warning.message) for warning in caught) == [
        "meta_data.json: parameters: drag_steps is deprecated, use max_drag_steps",
        "meta_data.json: parameters: learning_rate is deprecated, use drag_lr"]
    widget = DragWidget(model="fake")
    with pytest.warns(DeprecationWarning):
        widget.load_session(folder)
    assert (widget.method, widget.drag_lr, widget.max_drag_steps) == ("dragdiffusion", 0.05, 9)

    both = save_session(tmp_path / "both", Image.fromarray(picture()), parameters={"drag_lr": 0.05, "learning_rate": 1})
    with pytest.raises(InputError, match="learning_rate is the old name of drag_lr"):
        load_session(both)


def test_sessions_store_the_config_field_names(tmp_path):
    widget = DragWidget(picture(), model="fake", method="fastdrag", lora_steps=70, fastdrag_core_similarity=0.4,
                        gooddrag_lr=0.03)
    folder = widget.save_session(tmp_path / "s")
    parameters = json.loads((folder / "meta_data.json").read_text())["parameters"]
    assert parameters["fastdrag_core_similarity"] == 0.4 and parameters["gooddrag_lr"] == 0.03
    assert "learning_rate" not in parameters and "drag_steps" not in parameters and "max_drag_steps" in parameters
    other = DragWidget.from_session(folder, model="fake")          # another method first: loading sets FastDrag's
    assert (other.method, other.lora_steps, other.fastdrag_core_similarity, other.gooddrag_lr) == \
        ("fastdrag", 70, 0.4, 0.03)
    assert other.parameters == widget.parameters
