"""DragWidget without a browser: its handlers are called directly (as ipyannotations' tests do)."""

from __future__ import annotations

import html
import io
from datetime import datetime, timezone
import json
import re
import subprocess
import sys
import threading
import types
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from dragwidget import Progress
from dragwidget.errors import DragCancelled, InputError
from dragwidget.run_plan import RunPlan
from dragwidget.widget import DragWidget, drawing
from dragwidget.widget.history import EditHistory, Snapshot, paint_capsule
from dragwidget.widget.progress_view import StageClock
from widget_fakes import FakeEditor, Widget, click, dom, picture


# ---------------------------------------------------------------------- coordinates and clicks
def test_clicks_at_display_scale_8_store_image_pixels():
    widget = Widget(picture(64, 64), model="fake")
    assert widget.canvas.scale == 8 and widget.canvas.canvas_size == (512, 512)
    click(widget, 100, 50)                       # buffer pixels -> image pixel (12, 6)
    assert widget.pending_handle == [12, 6] and widget.points == []
    click(widget, 200, 52)
    assert widget.points == [{"handle": [12, 6], "target": [25, 6]}]
    assert widget.pending_handle is None


def test_dom_events_with_css_scaling_and_downscaled_display():
    widget = Widget(picture(1000, 800), model="fake")   # shown reduced to fit 512x512
    assert widget.canvas.scale == pytest.approx(0.512)
    assert widget.canvas.canvas_size == (512, 410)
    # The canvas element is shown at 256 CSS px wide (half its buffer): CSS (128, 100) is the
    # buffer's (256, 200).
    widget.canvas.handle_event(dom("mousedown", 128, 100, 256, 205, widget))
    widget.canvas.handle_event(dom("mouseup", 128, 100, 256, 205, widget))
    widget.canvas.handle_event(dom("mousedown", 200, 50, 256, 205, widget))
    # buffer (256, 200) and (400, 100) are image (256 / 0.512, 200 / 0.512) = (500, 390.6) and (781.3, 195.3)
    assert widget.points == [{"handle": [500, 390], "target": [781, 195]}]


def test_right_button_and_clicks_while_running_are_ignored():
    widget = Widget(picture(), model="fake")
    widget.canvas.handle_event({"type": "mousedown", "relativeX": 10, "relativeY": 10, "button": 2})
    assert widget.pending_handle is None
    widget.running = True
    click(widget, 10, 10)
    assert widget.pending_handle is None


# ---------------------------------------------------------------------- mask strokes
def test_stroke_at_scale_paints_image_pixels_and_eraser_removes():
    widget = Widget(picture(64, 64), model="fake")
    widget.mode = "mask"
    widget.brush_radius = 2
    # a horizontal stroke from image (10, 20) to (30, 20): buffer x = (i + 0.5) * 8
    widget.canvas.on_mouse_down(10.5 * 8, 20.5 * 8)
    widget.canvas.on_mouse_move(20.5 * 8, 20.5 * 8, buttons=1)
    widget.canvas.on_mouse_move(25.5 * 8, 20.5 * 8, buttons=0)   # a late move from before the press: ignored
    widget.canvas.on_mouse_up(30.5 * 8, 20.5 * 8)
    mask = widget.mask
    assert mask.shape == (64, 64) and mask.dtype == bool
    assert mask[20, 10:31].all() and mask[18, 20] and mask[22, 20]
    assert not mask[17, 20] and not mask[20, 7] and not mask[20, 34]
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (18, 22, 8, 32)
    widget.mode = "erase"
    widget.canvas.on_mouse_down(20.5 * 8, 20.5 * 8)
    widget.canvas.on_mouse_leave()                       # leaving the canvas ends the stroke
    assert not widget.mask[20, 20] and widget.mask[20, 10]


def test_stroke_at_downscaled_display_and_dom_throttled_moves():
    widget = Widget(picture(1024, 512), model="fake")   # scale 0.5
    widget.mode = "mask"
    widget.brush_radius = 10
    widget.canvas.handle_event(dom("mousedown", 100, 100, 512, 256, widget, timeStamp=10.0))
    widget.canvas.handle_event(dom("mousemove", 140, 100, 512, 256, widget, buttons=0, timeStamp=5.0))  # before the press
    widget.canvas.handle_event(dom("mousemove", 150, 100, 512, 256, widget, buttons=1, timeStamp=20.0))
    widget.canvas.handle_event(dom("mouseup", 150, 100, 512, 256, widget))
    mask = widget.mask
    assert mask[200, 200] and mask[200, 300] and mask[209, 250]
    assert not mask[200, 185] and not mask[200, 315] and not mask[215, 250]


def test_wheel_changes_brush_radius_in_mask_mode_only():
    widget = Widget(picture(), model="fake")
    radius = widget.brush_radius
    widget.canvas.on_wheel(-100)
    assert widget.brush_radius == radius              # points mode: wheel left to the page
    assert "wheel" not in widget.canvas.input.events.watched_events
    widget.mode = "mask"
    assert "wheel" in widget.canvas.input.events.watched_events
    widget.canvas.handle_event({"type": "wheel", "deltaY": -100})
    widget.canvas.on_wheel(-3)
    assert widget.brush_radius == radius + 2
    widget.canvas.on_wheel(5)
    assert widget.brush_radius == radius + 1


def test_paint_capsule_edges():
    mask = np.zeros((10, 10), bool)
    assert paint_capsule(mask, (-50, -50), (-40, -40), 2, True) is None
    assert paint_capsule(mask, (0, 0), (0, 0), 1, True) == (0, 0, 2, 2)
    assert mask.sum() == 3


# ---------------------------------------------------------------------- undo / redo / clear
def test_undo_redo_each_action():
    widget = Widget(picture(), model="fake")
    click(widget, 80, 80)
    click(widget, 160, 80)
    widget.mode = "mask"
    widget.canvas.on_mouse_down(300, 300)
    widget.canvas.on_mouse_up(300, 300)
    painted = widget.mask.copy()
    widget.clear_points()
    widget.clear_mask()
    assert widget.points == [] and not widget.mask.any()
    assert widget.undo() == "clear mask" and np.array_equal(widget.mask, painted)
    assert widget.undo() == "clear points" and len(widget.points) == 1
    assert widget.undo() == "stroke" and not widget.mask.any()
    assert widget.undo() == "target" and widget.points == [] and widget.pending_handle == [10, 10]
    assert widget.undo() == "handle" and widget.pending_handle is None
    assert widget.undo() is None and widget.toolbar.undo_button.disabled
    assert widget.redo() == "handle" and widget.redo() == "target"
    assert widget.points == [{"handle": [10, 10], "target": [20, 10]}]
    assert widget.redo() == "stroke" and np.array_equal(widget.mask, painted)
    assert not widget.toolbar.redo_button.disabled
    widget.mode = "points"
    click(widget, 0, 0)                            # a new action empties the redo stack
    assert widget.redo() is None


def test_python_changes_are_undoable_too():
    widget = Widget(picture(), model="fake")
    widget.points = [((1, 2), (3, 4))]
    widget.points = [[1, 2], [5, 6], [7, 8], [9, 10]]      # flat DragBench layout
    assert len(widget.points) == 2
    widget.undo()
    assert widget.points == [{"handle": [1, 2], "target": [3, 4]}]


def test_escape_drops_a_pending_handle_when_idle():
    widget = Widget(picture(), model="fake")
    click(widget, 40, 40)
    widget.canvas.on_key("Escape")
    assert widget.pending_handle is None
    widget.canvas.on_key("z")
    assert widget.pending_handle == [5, 5]


# ---------------------------------------------------------------------- hotkeys
def test_hotkeys_switch_modes_undo_redo_and_run():
    done = threading.Event()

    def behave(request, progress, cancel):
        done.set()
        raise RuntimeError("stop here")

    widget = Widget(picture(), editor=FakeEditor(behave))
    for key, mode in (("m", "mask"), ("e", "erase"), ("p", "points"), ("M", "mask")):
        widget.canvas.handle_event({"type": "keydown", "key": key})
        assert widget.mode == mode
    widget.canvas.on_key("p")
    click(widget, 8, 8)
    widget.canvas.on_key("z")
    assert widget.pending_handle is None
    widget.canvas.on_key("y")
    assert widget.pending_handle == [1, 1]
    click(widget, 80, 8)
    widget.canvas.on_key("Enter")
    assert done.wait(10)
    widget.controller.runner.join(10)
    assert widget.error == "RuntimeError: stop here"
    assert "p</b> points" in widget.help_html.value and "Esc" in widget.help_html.value


# ---------------------------------------------------------------------- traits
def test_trait_round_trips_and_validation():
    image = Image.fromarray(picture(40, 30))
    widget = Widget(image, prompt="a red disc", model="fake", lora_steps=7, seed=3)
    assert widget.image.size == (40, 30) and widget.mask.shape == (30, 40)
    assert widget.parameters_panel.prompt_text.value == "a red disc"
    assert widget.parameters_panel.fields["lora_steps"].value == 7 and widget.seed == 3
    widget.parameters_panel.fields["max_drag_steps"].value = 12   # the panel changes the trait
    assert widget.drag_steps == 12
    widget.points = [{"handle": (1.5, 2), "target": [10, 20]}]
    assert widget.points == [{"handle": [1.5, 2], "target": [10, 20]}]
    with pytest.raises(InputError, match="outside"):
        widget.points = [{"handle": [100, 2], "target": [10, 20]}]
    assert widget.points == [{"handle": [1.5, 2], "target": [10, 20]}]
    small = np.zeros((15, 20), np.uint8)
    small[:5, :10] = 255
    widget.mask = small                                       # resized (nearest) to the image
    assert widget.mask.shape == (30, 40) and widget.mask[:10, :20].all() and widget.mask.sum() == 200
    widget.mask = None
    assert not widget.mask.any()
    seen = []
    widget.observe(lambda change: seen.append(change["name"]), names=["points", "mask", "image"])
    widget.image = picture(64, 48)
    assert widget.points == [] and widget.mask.shape == (48, 64) and "image" in seen
    assert widget.result is None
    with pytest.raises(TypeError, match="unknown"):
        Widget(image, model="fake", lora_step=3)


def test_defaults_come_from_the_engine_config(editor):
    widget = Widget(picture(), editor=editor)
    assert widget.model == editor.model.name
    assert widget.lora_steps == editor.config.lora_steps
    assert widget.drag_steps == editor.config.max_drag_steps
    assert widget.inversion_strength == editor.config.inversion_strength
    assert widget.tabs.selected_index is None                   # the tabs start collapsed
    # keep_outside_mask: off in the API, on in the widget (a checkbox of the Parameters panel)
    assert widget._config(editor) == editor.config.replace(preview_every=widget.preview_every, keep_outside_mask=True)
    assert editor.config.keep_outside_mask is False and widget.parameters_panel.fields["keep_outside_mask"].value is True
    widget.parameters_panel.fields["keep_outside_mask"].value = False
    assert widget._config(editor).keep_outside_mask is False and widget.parameters["keep_outside_mask"] is False


def test_model_defaults_without_loading(tmp_path):
    folder = tmp_path / "m"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (folder / part).mkdir(parents=True)
    (folder / "dragwidget_settings.json").write_text(json.dumps({"gooddrag_lora_steps": 11, "max_drag_steps": 9}))
    widget = Widget(picture(), model=str(folder))
    assert (widget.lora_steps, widget.drag_steps, widget.editor) == (11, 9, None)


def test_upload_button_sets_the_image():
    widget = Widget(model="fake")
    buffer = io.BytesIO()
    Image.fromarray(picture(30, 20)).save(buffer, format="PNG")
    widget.parameters_panel.upload.value = ({"name": "mine.png", "type": "image/png", "size": len(buffer.getvalue()),
                            "content": memoryview(buffer.getvalue()), "last_modified": datetime.now(timezone.utc)},)
    assert widget.image.size == (30, 20) and "mine.png" in widget.status
    widget.parameters_panel.upload.value = ({"name": "bad.png", "type": "image/png", "size": 3, "content": memoryview(b"abc"),
                            "last_modified": datetime.now(timezone.utc)},)
    assert "could not open bad.png" in widget.error and widget.image.size == (30, 20)


def test_show_mask_hides_the_overlay_only():
    widget = Widget(picture(), model="fake", mask=np.ones((64, 64), bool))
    widget.toolbar.show_mask_box.value = False
    assert widget.show_mask is False and widget.mask.all()


# ---------------------------------------------------------------------- running
def test_run_on_tiny_model_in_a_thread(editor, tmp_path):
    image = picture(64, 64, seed=2)
    widget = Widget(image, editor=editor, prompt="a red disc", preview_every=1)
    widget.points = [{"handle": [20, 30], "target": [28, 30]}]
    mask = np.zeros((64, 64), bool)
    mask[20:40, 10:40] = True
    widget.mask = mask
    main = threading.current_thread()
    seen_threads = []
    widget.observe(lambda change: seen_threads.append(threading.current_thread()), names="result")
    stages, timings = [], []
    widget.progress.stage.observe(lambda change: stages.append(change["new"]), names="value")
    widget.progress.timing.observe(lambda change: timings.append(change["new"]), names="value")
    widget.run()
    assert widget.running and widget.toolbar.run_button.disabled and not widget.toolbar.cancel_button.disabled
    result = widget.wait(120)
    assert result is widget.result and widget.result is not None
    assert seen_threads and seen_threads[0] is not main
    assert not widget.running and not widget.toolbar.run_button.disabled and widget.toolbar.cancel_button.disabled
    assert result.image.size == (64, 64) and widget.error == ""
    assert {"<small><b>LoRA</b></small>", "<small><b>Denoise</b></small>"} <= set(stages)
    assert widget.results.compare.layout.display is None and widget.results.edited_view.value[:4] == b"\x89PNG"
    assert widget.results.gif[:6] == b"GIF89a"
    assert len(widget.controller.frames) == 2 + result.steps               # start, a preview per step, the result
    assert Image.open(widget.results.save_gif(tmp_path / "drag.gif")).n_frames >= 2
    assert Image.open(widget.results.save_png(tmp_path / "edited.png")).size == (64, 64)
    assert "LoRA: trained" in widget.status
    # the PCA feature grid of original vs edited, computed in the same thread, beside the edited image
    maps = widget.feature_maps
    assert maps is not None and maps.labels == ["original", "edited"]
    assert maps.blocks == [result.config.feature_block] and maps.drag_block == result.config.feature_block
    assert widget.results.features.view.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert widget.results.features.png == widget.results.features.view.value
    assert widget.results.features.view.layout.display is None
    assert "feature maps in" in widget.status and widget.progress.bar.bar_style == "success"
    # points, mask and image are the user's; the handles drawn during the run came from tracking
    assert widget.points == [{"handle": [20, 30], "target": [28, 30]}] and np.array_equal(widget.mask, mask)

    timings.clear()
    widget.run(wait=True)                                          # same image: cached LoRA and inversion
    assert "reused from the previous run" in widget.status
    assert "<small>cached</small>" in timings

    widget.use_result_as_input()
    assert np.array_equal(np.asarray(widget.image), np.asarray(widget.result.image)) and widget.points == []


def test_a_fastdrag_run_says_it_warped_once_and_trained_no_lora(editor):
    widget = Widget(picture(64, 64, seed=2), editor=editor, prompt="a red disc", show_features=False)
    widget.method = "fastdrag"
    widget.points = [{"handle": [20, 30], "target": [28, 30]}]
    widget.run(wait=True)
    caption = widget.results.info.value
    assert "one warp of the latent" in caption and "drag steps" not in caption and "point tracking" not in caption
    assert "LoRA: none, inversion: computed" in widget.status
    widget.run(wait=True)
    assert "(inversion reused from the previous run on this image)" in widget.status


def test_show_features_off_computes_no_feature_maps(editor, monkeypatch):
    calls = []
    monkeypatch.setattr(editor, "feature_maps", lambda *args, **kwargs: calls.append(args))
    widget = Widget(picture(64, 64, seed=3), editor=editor, preview_every=0, show_features=False)
    assert not widget.show_features_box.value and widget.results.features.layout.display == "none"
    widget.points = [{"handle": [20, 30], "target": [26, 30]}]
    result = widget.run(wait=True)
    assert result is widget.result and calls == [] and widget.feature_maps is None
    assert widget.results.features.view.value == b"" and widget.results.features.view.layout.display == "none"
    assert "feature maps" not in widget.status


def test_a_feature_maps_failure_keeps_the_drag_result(editor, monkeypatch):
    requests = []

    def broken(request, progress=None, cancel=None):
        requests.append(request)
        raise RuntimeError("no features today")

    monkeypatch.setattr(editor, "feature_maps", broken)
    widget = Widget(picture(64, 64, seed=4), editor=editor, prompt="a red disc", preview_every=0)
    widget.points = [{"handle": [20, 30], "target": [26, 30]}]
    result = widget.run(wait=True)
    assert result is not None and widget.result is result and widget.feature_maps is None
    assert widget.results.edited_view.value[:4] == b"\x89PNG"
    assert "feature maps failed: RuntimeError: no features today" in widget.status and widget.error == ""
    assert "no features today" in widget.results.features.label.value
    assert "RuntimeError" in widget.last_traceback and not widget.running
    # what was asked: original vs edited of this result, with the widget's prompt, the drag's block only
    (request,) = requests
    assert request.edited is result.image and request.image is result.original
    assert request.prompt == "a red disc" and list(request.blocks) == [result.config.feature_block]

    widget.feature_blocks = [1, 2]                                 # a trait chooses other blocks
    widget.run(wait=True)
    assert list(requests[-1].blocks) == [1, 2] and widget.result is not None


def test_model_is_loaded_lazily_at_the_first_run(tiny_model_dir):
    widget = Widget(picture(), model=str(tiny_model_dir), lora_steps=1, max_drag_steps=2, preview_every=0)
    assert widget.editor is None
    widget.points = [((10, 10), (14, 10))]
    result = widget.run(wait=True)
    assert widget.editor is not None and widget.editor.model.name == str(tiny_model_dir)
    assert result.config.lora_steps == 1 and result.config.max_drag_steps == 2
    assert widget.results.gif == b""


def test_generated_image_mode(editor):
    widget = Widget(editor=editor, preview_every=0)
    assert "no image" in widget.point_list.summary.value
    widget.generate("a red disc", wait=True)
    assert widget.image is not None and widget.prompt == "a red disc"
    width, height = widget.image.size
    widget.points = [{"handle": [width // 3, height // 2], "target": [width // 2, height // 2]}]
    result = widget.run(wait=True)
    assert result.image.size == widget.image.size
    assert result.reused == {"lora": "none", "inversion": "generation"}
    widget.image = picture()                                       # another image drops the generated latents
    assert widget.controller.generated is None


def test_engine_error_leaves_points_mask_and_image_intact():
    def behave(request, progress, cancel):
        progress(Progress("lora", 1, 1))
        progress(Progress("drag", 1, 5, handles=[(30.0, 30.0)]))
        raise InputError("the prompt is too long for this model")

    editor = FakeEditor(behave)
    image = picture()
    widget = Widget(image, editor=editor)
    widget.points = [{"handle": [10, 10], "target": [20, 20]}]
    widget.mode = "mask"
    widget.canvas.on_mouse_down(100, 100)
    widget.canvas.on_mouse_up(140, 100)
    points, mask, shown = list(widget.points), widget.mask.copy(), np.asarray(widget.image).copy()
    with pytest.raises(InputError):
        widget.run(wait=True)
    assert widget.error == "the prompt is too long for this model"
    assert "the prompt is too long" in widget.progress.error_html.value
    assert widget.points == points and np.array_equal(widget.mask, mask)
    assert np.array_equal(np.asarray(widget.image), shown) and widget.result is None
    assert not widget.running and not widget.toolbar.run_button.disabled
    assert widget.canvas.tracked is None
    assert editor.requests[0].points == points and np.array_equal(editor.requests[0].mask, mask)

    widget.run()
    widget.controller.runner.join(10)
    assert widget.undo() == "stroke"                               # still editable after an error


def test_cancel_stops_a_run():
    started = threading.Event()

    def behave(request, progress, cancel):
        started.set()
        for step in range(1000):
            progress(Progress("drag", step, 1000, handles=[(10.0, 10.0)]))
            if cancel():
                raise DragCancelled("cancelled by the user")
            threading.Event().wait(0.01)
        raise AssertionError("not cancelled")

    widget = Widget(picture(), editor=FakeEditor(behave))
    widget.points = [((1, 1), (5, 5))]
    widget.run()
    assert started.wait(10)
    click(widget, 40, 40)                                         # no editing while it runs
    assert widget.pending_handle is None
    widget.canvas.on_key("Escape")
    with pytest.raises(DragCancelled):
        widget.wait(10)
    assert "cancelled" in widget.status and widget.error == "" and not widget.running


def test_run_needs_points():
    widget = Widget(picture(), model="fake")
    assert widget.run() is None and "no point pairs" in widget.error
    with pytest.raises(InputError):
        widget.run(wait=True)


def blocking_editor(events=()):
    """A FakeEditor whose run sends `events`, then holds until `release` is set (and fails)."""
    started, release = threading.Event(), threading.Event()

    def behave(request, progress, cancel):
        for event in events:
            progress(event)
        started.set()
        release.wait(10)
        raise InputError("stopped by the test")

    return FakeEditor(behave), started, release


def test_the_image_cannot_change_while_a_run_works():
    editor, started, release = blocking_editor()
    widget = Widget(picture(seed=1), editor=editor)
    widget.points = [((1, 1), (5, 5))]
    shown = np.asarray(widget.image).copy()
    widget.run()
    assert started.wait(10)
    try:
        with pytest.raises(RuntimeError, match=r"a run is in progress: press Cancel \(or widget.cancel\(\)\) first"):
            widget.image = picture(seed=2)
        buffer = io.BytesIO()
        Image.fromarray(picture(30, 20)).save(buffer, format="PNG")
        widget.parameters_panel.upload.value = ({"name": "new.png", "type": "image/png", "size": len(buffer.getvalue()),
                                "content": memoryview(buffer.getvalue()), "last_modified": datetime.now(timezone.utc)},)
        assert "new.png was not loaded: a run is in progress" in widget.error
        assert widget.generate("a red disc") is None and "a run is in progress" in widget.status
        with pytest.raises(RuntimeError, match="a run is in progress"):
            widget.generate("a red disc", wait=True)
        with pytest.raises(RuntimeError, match="a run is in progress"):
            widget.run(wait=True)
        assert np.array_equal(np.asarray(widget.image), shown) and widget.points == [{"handle": [1, 1], "target": [5, 5]}]
    finally:
        release.set()
        widget.controller.runner.join(10)
    widget.image = picture(seed=2)                                 # allowed again once it ended
    assert not np.array_equal(np.asarray(widget.image), shown)


def test_each_run_starts_from_clean_bars_and_a_failure_is_marked():
    runs = []

    def behave(request, progress, cancel):
        runs.append(request)
        if len(runs) == 1:
            progress(Progress("lora", 1, 1))
            progress(Progress("drag", 3, 5, handles=[(3.0, 3.0)]))
            raise RuntimeError("out of memory")
        progress(Progress("lora", 1, 1))                            # ends exactly at the end of LoRA
        raise RuntimeError("broken LoRA")

    widget = Widget(picture(), editor=FakeEditor(behave))
    widget.points = [((1, 1), (5, 5))]
    with pytest.raises(RuntimeError):
        widget.run(wait=True)
    assert widget.progress.bar.bar_style == "danger" and widget.status.startswith("FAILED during optimise")
    assert "Optimise" in widget.progress.stage.value
    with pytest.raises(RuntimeError):
        widget.run(wait=True)
    assert widget.progress.bar.bar_style == "danger" and widget.status.startswith("FAILED during lora")
    assert "LoRA" in widget.progress.stage.value and widget.progress.timing.value.startswith("<small>1/1 ·")
    assert widget.error == "RuntimeError: broken LoRA" and "broken LoRA" in widget.progress.error_html.value


def test_stage_bars_show_elapsed_time_and_time_left():
    now = [100.0]
    events = []

    def behave(request, progress, cancel):
        for step, at in ((0, 100.0), (10, 102.0)):
            now[0] = at
            progress(Progress("drag", step, 80, handles=[(3.0, 3.0)]))
        events.append(widget.progress.timing.value)
        now[0] = 103.0
        progress(Progress("denoise", 5, 5))
        raise RuntimeError("stop")

    widget = Widget(picture(), editor=FakeEditor(behave))
    widget.progress.clock = StageClock(clock=lambda: now[0])
    widget.points = [((1, 1), (5, 5))]
    with pytest.raises(RuntimeError):
        widget.run(wait=True)
    # 10 steps in 2 s: 70 left take about 14 s
    assert events == ["<small>10/80 · 2.0 s · ~14 s left</small>"]
    assert widget.progress.timing.value == "<small>5/5 · 0.0 s</small>"


def test_status_says_the_first_run_trains_a_lora_and_how_long_it_takes():
    widget = Widget(picture(), model="fake", lora_steps=80)     # model not loaded yet, no shipped times
    assert "the first Run on this image fine-tunes a LoRA first (80 steps" in widget.status
    assert "its time is known once the model has run here" in widget.status
    toy = Widget(picture(), model="toy", lora_steps=80)          # not loaded: the toy's shipped times
    assert re.search(r"first \(80 steps, unless an earlier one is in the disk cache; about \d+ s by the model's own "
                     r"figures\)", toy.status), toy.status
    editor = FakeEditor(lambda *args: None)
    editor.next_plan = RunPlan(needs_lora=True, lora_steps=80, steps={"lora": 80, "drag": 40},
                               expected_seconds={"lora": 41.0, "drag": 9.0})
    widget = Widget(picture(), editor=editor)
    assert widget.status == "the first Run on this image fine-tunes a LoRA first (80 steps; about 41 s, 50 s for the whole run)"
    widget.status = ""
    widget.prompt = "a red disc"                                    # another LoRA: asked again
    assert editor.plans[-1].prompt == "a red disc" and "fine-tunes a LoRA" in widget.status
    editor.next_plan = RunPlan(needs_lora=True, lora_steps=80, steps={"lora": 80}, expected_seconds={"lora": 12.0},
                               measured_here=False)
    widget.prompt = "a green square"
    assert widget.status == ("the first Run on this image fine-tunes a LoRA first (80 steps; about 12 s, 12 s for "
                             "the whole run by the model's own figures; measured here after this run)")
    editor.next_plan = RunPlan(needs_lora=True, lora_steps=10, steps={"lora": 10}, expected_seconds=None)
    widget.lora_steps = 10
    assert editor.plans[-1].config.for_method().lora_steps == 10 and "(10 steps; no time measured yet" in widget.status
    editor.next_plan = RunPlan(needs_lora=False, lora_steps=0, steps={}, expected_seconds=None)
    widget.status = ""
    widget.image = picture(seed=3)                                  # LoRA in memory or on disk: nothing said
    assert widget.status == ""


def test_waiting_for_another_run_on_the_model_is_shown():
    editor, started, release = blocking_editor([Progress("waiting", 0, 1)])
    widget = Widget(picture(), editor=editor)
    widget.points = [((1, 1), (5, 5))]
    widget.run()
    assert started.wait(10)
    try:
        assert widget.status == "waiting for another run on this model to finish"
    finally:
        release.set()
        widget.controller.runner.join(10)


def test_the_mask_overlay_is_hatched_and_outlined(monkeypatch):
    widget = Widget(picture(64, 64), model="fake")             # shown x8
    drawn = []
    monkeypatch.setattr(widget.canvas.mask_layer, "put_image_data", lambda data, x, y: drawn.append((data, x, y)))
    mask = np.zeros((64, 64), bool)
    mask[10:30, 20:40] = True
    widget.mask = mask
    (overlay, x, y), = drawn
    assert (x, y) == (0, 0) and overlay.shape == (512, 512, 4)
    alpha = overlay[..., 3]
    assert not alpha[:80].any() and not alpha[:, :160].any() and not alpha[240:].any()   # nothing outside
    r, g, b = drawing.MASK_RGB
    assert (overlay[alpha > 0][:, :3] == (r, g, b)).all()
    inner = alpha[90:230, 170:310]                                  # well inside: stripes and gaps
    assert set(np.unique(inner)) == {0, drawing.MASK_HATCH_ALPHA}
    assert 0.2 < (inner > 0).mean() < 0.6
    v0, v1, u0, u1 = 80, 240, 160, 320                              # the region's edge, all round
    for edge in (alpha[v0, u0:u1], alpha[v1 - 1, u0:u1], alpha[v0:v1, u0], alpha[v0:v1, u1 - 1]):
        assert (edge == 255).all()
    # a stroke redraws only its box, and the outline of the grown region follows it
    drawn.clear()
    widget.mode = "mask"
    widget.brush_radius = 2
    widget.canvas.on_mouse_down(41.5 * 8, 20.5 * 8)                       # touches the region's right edge
    (patch, x, y), = drawn
    assert patch.shape[0] < 512 and x <= 40 * 8 - drawing.MASK_OUTLINE_WIDTH
    assert patch[20 * 8 - y, 40 * 8 - 1 - x, 3] != 255             # the old edge is inside now: no outline


def test_delete_mode_removes_the_clicked_pair_and_undo_brings_it_back():
    widget = Widget(picture(64, 64), model="fake")             # shown x8
    widget.points = [{"handle": [5, 5], "target": [15, 5]}, {"handle": [30, 30], "target": [40, 40]}]
    widget.canvas.handle_event({"type": "keydown", "key": "x"})
    assert widget.mode == "delete" and "delete" in [value for _, value in widget.toolbar.mode_buttons.options]
    click(widget, 55 * 8, 55 * 8)                                  # near nothing: nothing removed
    assert len(widget.points) == 2
    click(widget, 40.5 * 8 + 6, 40.5 * 8 - 4)                      # next to the second pair's target
    assert widget.points == [{"handle": [5, 5], "target": [15, 5]}] and "removed" in widget.status
    click(widget, 5.5 * 8, 5.5 * 8)                                # on the first pair's handle
    assert widget.points == []
    assert widget.undo() == "delete pair" and widget.undo() == "delete pair" and len(widget.points) == 2
    assert widget.redo() == "delete pair" and widget.points == [{"handle": [5, 5], "target": [15, 5]}]


# ---------------------------------------------------------------------- environment
def test_colab_custom_widget_manager_is_enabled(monkeypatch):
    calls = []
    colab = types.ModuleType("google.colab")
    colab.output = SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(True))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    Widget(picture(), model="fake")
    assert calls == [True]


def test_import_dragwidget_does_not_import_widgets():
    code = ("import sys, dragwidget; assert 'ipywidgets' not in sys.modules; "
            "from dragwidget import DragWidget; assert DragWidget.__module__ == 'dragwidget.widget.widget'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_edit_history_is_bounded():
    history = EditHistory(max_history=3)
    current = Snapshot.of("now", [], None, np.zeros((8, 8), bool))
    for i in range(5):
        history.record(Snapshot.of(f"handle {i}", [], (i, 0), np.zeros((8, 8), bool)))
    assert [history.undo(current).label for _ in range(3)] == ["handle 4", "handle 3", "handle 2"]
    assert history.undo(current) is None and history.can_redo


def test_the_method_choice_runs_that_method_and_the_status_gives_the_verdict(editor):
    widget = Widget(picture(64, 64, seed=3), editor=editor, preview_every=0, show_features=False)
    assert "dragwidget-method" in widget.toolbar.method_choice._dom_classes
    assert widget.method == widget.toolbar.method_choice.value == editor.config.method
    widget.toolbar.method_choice.value = "gooddrag"
    widget.points = [{"handle": [20, 30], "target": [40, 30]}]
    result = widget.run(wait=True)
    assert result.config.method == "gooddrag" and widget._config(editor).method == "gooddrag"
    assert result.says in widget.status and html.escape(result.says) in widget.results.info.value
