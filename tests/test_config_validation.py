"""DragConfig checks its own settings when built: one check for the API, the CLI, the widget and sessions."""

import dataclasses
import math

import pytest

from dragwidget import DragConfig, InputError
from dragwidget.config import METHOD_OWN, setting_info, settings_of
from dragwidget.setting_checks import METHODS, parse_setting


@pytest.mark.parametrize("name,value,allowed", [
    ("num_inference_steps", 0, "a whole number >= 1"),
    ("num_inference_steps", "abc", "a whole number >= 1"),
    ("max_drag_steps", 2.5, "a whole number >= 1"),
    ("max_drag_steps", True, "a whole number >= 1"),          # a bool is not a count
    ("max_drag_steps", -5, "a whole number >= 1"),
    ("lora_steps", -3, "a whole number >= 0"),
    ("guidance_scale", "high", "a number >= 0"),
    ("guidance_scale", math.inf, "a number >= 0"),
    ("drag_lr", 0, "a number > 0"),
    ("drag_lr", math.nan, "a number > 0"),
    ("lora_lr", -1e-4, "a number > 0"),
    ("inversion_strength", 1.5, "a number in (0, 1]"),
    ("inversion_strength", 0, "a number in (0, 1]"),
    ("feature_scale", 0, "a number in (0, 1]"),
    ("tracking_radius", -1, "a whole number >= 1"),
    ("tracking_radius", 0, "a whole number >= 1"),
    ("motion_radius", -1, "a whole number >= 0"),
    ("reach_threshold", 0, "a number > 0"),
    ("mask_weight", -0.1, "a number >= 0"),
    ("working_width", 4, "a whole number >= 8 or None"),
    ("seed", -1, "a whole number >= 0"),
    ("preview_every", -2, "a whole number >= 0"),
    ("lora_rank", 0, "a whole number >= 1"),
    ("lora_batch_size", 0, "a whole number >= 1"),
    ("feature_block", -1, "a whole number >= 0"),
    ("mutual_attention", 1, "true or false"),
    ("lora_target_modules", (), "a non-empty list of names"),
    ("lora_target_modules", "to_q", "a non-empty list of names"),
])
def test_a_bad_setting_names_the_field_the_value_and_the_allowed_range(name, value, allowed):
    with pytest.raises(InputError) as error:
        DragConfig(**{name: value})
    message = str(error.value)
    assert message.startswith(f"{name} must be {allowed}, got "), message
    assert repr(value) in message


def test_replace_and_from_dict_check_as_the_constructor_does():
    with pytest.raises(InputError, match="max_drag_steps must be a whole number >= 1, got 0"):
        DragConfig().replace(max_drag_steps=0)
    with pytest.raises(InputError, match="drag_lr must be a number > 0"):
        DragConfig.from_dict({"drag_lr": "0.01"})             # e.g. a hand-edited session file


def test_values_are_stored_in_the_declared_type():
    config = DragConfig(drag_lr=1, guidance_scale=2, lora_target_modules=["to_q", "to_k"], working_width=None)
    assert config.drag_lr == 1.0 and type(config.drag_lr) is float and type(config.guidance_scale) is float
    assert config.lora_target_modules == ("to_q", "to_k")
    assert DragConfig.from_dict(config.to_dict()) == config


def test_strength_too_small_for_the_step_count_is_caught_when_built():
    with pytest.raises(InputError, match=r"gives 0 DDIM inversion steps.*inversion_strength >= 0.1 for 10 steps"):
        DragConfig(num_inference_steps=10, inversion_strength=0.05)
    assert DragConfig(num_inference_steps=100, inversion_strength=0.01).inversion_steps == 1


def test_unknown_setting_suggests_the_close_names():
    with pytest.raises(InputError, match=r"no setting 'max_drag_step' \(did you mean max_drag_steps"):
        DragConfig().replace(max_drag_step=3)


@pytest.mark.parametrize("name,text,value", [
    ("max_drag_steps", "7", 7),
    ("drag_lr", "0.02", 0.02),
    ("guidance_scale", "3", 3.0),
    ("mutual_attention", "off", False),
    ("mutual_attention", "True", True),
    ("working_width", "none", None),
    ("working_width", "256", 256),
    ("lora_target_modules", "to_q, to_v", ("to_q", "to_v")),
    ("lora_target_modules", '["to_k"]', ("to_k",)),
])
def test_text_is_read_by_the_settings_type(name, text, value):
    assert parse_setting(name, text) == value


@pytest.mark.parametrize("name,text,message", [
    ("max_drag_steps", "2.5", "max_drag_steps must be a whole number >= 1, got '2.5'"),
    ("num_inference_steps", "abc", "num_inference_steps must be a whole number >= 1, got 'abc'"),
    ("guidance_scale", "high", "guidance_scale must be a number >= 0, got 'high'"),
    ("mutual_attention", "maybe", "mutual_attention must be true or false, got 'maybe'"),
])
def test_text_of_the_wrong_type_is_one_clear_error(name, text, message):
    with pytest.raises(InputError) as error:
        parse_setting(name, text)
    assert str(error.value) == message


def test_every_setting_has_a_label_and_a_one_line_description():
    for field in dataclasses.fields(DragConfig):
        info = setting_info(field.name)
        assert info.label and info.help and "\n" not in info.help, field.name
        assert info.default == getattr(DragConfig(), field.name), field.name
    assert setting_info("gooddrag_lr").kind is float and setting_info("fastdrag_rigid_core").kind is bool
    with pytest.raises(InputError, match="no setting 'learning_rate'"):
        setting_info("learning_rate")


def test_each_method_tunes_its_own_settings_and_the_shared_ones():
    assert settings_of("dragdiffusion")[:2] == ("max_drag_steps", "drag_lr")
    assert "gooddrag_lr" in settings_of("gooddrag") and "drag_lr" not in settings_of("gooddrag")
    assert "fastdrag_core_similarity" in settings_of("fastdrag") and "max_drag_steps" not in settings_of("fastdrag")
    for method in METHODS:
        assert {"lora_steps", "inversion_strength", "num_inference_steps", "seed"} <= set(settings_of(method))
        # a method's own preparation field is set through the shared one (replace_for_method), never shown beside it
        assert not set(settings_of(method)) & set(METHOD_OWN.get(method, {}).values()), method
    with pytest.raises(InputError, match="method must be one of dragdiffusion, gooddrag, fastdrag"):
        settings_of("stylegan")
