"""The widget's parts, each built and driven alone (no DragWidget around them)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import traitlets
from PIL import Image

from dragwidget import DragConfig, Progress
from dragwidget.errors import InputError
from dragwidget.widget.canvas import DragCanvas
from dragwidget.widget.controls import ArrayLink, Toolbar
from dragwidget.widget.point_list import PointList
from dragwidget.widget.progress_view import ProgressView
from dragwidget.widget.result_panel import ResultPanel, wipe
from dragwidget.widget.run_controller import RunController, RunOptions
from dragwidget.widget.runner import RunInProgressError
from widget_fakes import FakeEditor, picture


def canvas_with_picture(width=64, height=64):
    canvas = DragCanvas(max_display_size=(512, 512))
    canvas.image = picture(width, height)
    return canvas


def press(canvas, x, y):
    canvas.on_mouse_down(x, y)
    canvas.on_mouse_up(x, y)


# ---------------------------------------------------------------------- the canvas
def test_the_canvas_traits_are_its_data_and_its_history():
    canvas = canvas_with_picture()                     # shown x8
    press(canvas, 10.5 * 8, 20.5 * 8)
    assert canvas.pending == [10, 20] and canvas.points == []
    press(canvas, 30.5 * 8, 20.5 * 8)
    assert canvas.points == [{"handle": [10, 20], "target": [30, 20]}] and canvas.pending is None
    canvas.points = [{"handle": [1, 1], "target": [2, 2]}]        # from Python: an undo step too
    assert canvas.can_undo and canvas.undo() == "set points"
    assert canvas.points == [{"handle": [10, 20], "target": [30, 20]}]
    assert canvas.undo() == "target" and canvas.pending == [10, 20] and canvas.points == []
    assert canvas.redo() == "target" and len(canvas.points) == 1
    with pytest.raises(InputError, match="outside"):
        canvas.points = [{"handle": [100, 1], "target": [2, 2]}]
    assert canvas.points == [{"handle": [10, 20], "target": [30, 20]}]


def test_a_stroke_becomes_the_mask_when_it_ends():
    canvas = canvas_with_picture()
    canvas.mode = "mask"
    canvas.brush_radius = 2
    masks = []
    canvas.observe(lambda change: masks.append(change["new"].sum()), names="mask")
    canvas.on_mouse_down(10.5 * 8, 10.5 * 8)
    canvas.on_mouse_move(20.5 * 8, 10.5 * 8, buttons=1)
    assert masks == [] and not canvas.mask.any()      # painting: the mask changes once, at the end
    canvas.on_mouse_up(20.5 * 8, 10.5 * 8)
    assert len(masks) == 1 and canvas.mask[10, 10:21].all()
    assert canvas.undo() == "stroke" and not canvas.mask.any()


def test_a_locked_canvas_ignores_edits_and_refuses_a_new_picture():
    canvas = canvas_with_picture()
    canvas.locked = True
    press(canvas, 80, 80)
    assert canvas.pending is None and not canvas.clear_points() and canvas.undo() is None
    with pytest.raises(RunInProgressError, match="a run is in progress"):
        canvas.image = picture(seed=3)
    canvas.locked = False
    press(canvas, 80, 80)
    assert canvas.pending == [10, 10]


def test_enter_and_escape_go_to_the_callbacks_and_keys_switch_modes():
    canvas = canvas_with_picture()
    calls = []
    canvas.on_submit(lambda: calls.append("run"))
    canvas.on_escape(lambda: calls.append("escape"))
    canvas.handle_event({"type": "keydown", "key": "Enter"})
    canvas.on_key("Escape")
    canvas.on_key("m")
    assert calls == ["run", "escape"] and canvas.mode == "mask"


def test_a_new_picture_starts_points_mask_and_history_afresh():
    canvas = canvas_with_picture()
    press(canvas, 8, 8)
    press(canvas, 80, 8)
    canvas.image = picture(32, 16)
    assert canvas.points == [] and canvas.mask.shape == (16, 32) and not canvas.can_undo
    assert canvas.scale == 16 and canvas.canvas_size == (512, 256)


# ---------------------------------------------------------------------- the point list
def test_the_point_list_numbers_the_pairs_and_removes_one_undoably():
    canvas = canvas_with_picture()
    listing = PointList(canvas)
    canvas.points = [{"handle": [1, 2], "target": [3, 4]}, {"handle": [10, 20], "target": [30, 40]}]
    rows = listing.rows.children
    assert len(rows) == 2 and "<b>2</b> (10, 20) → (30, 40)" in rows[1].children[1].value
    rows[0].children[0].click()                          # the first pair's remove button
    assert canvas.points == [{"handle": [10, 20], "target": [30, 40]}]
    assert len(listing.rows.children) == 1 and "<b>1</b> (10, 20)" in listing.rows.children[0].children[1].value
    assert canvas.undo() == "delete pair" and len(canvas.points) == 2
    canvas.locked = True
    assert all(row.children[0].disabled for row in listing.rows.children)


# ---------------------------------------------------------------------- toolbar and links
def test_the_toolbar_edits_the_canvas_traits():
    canvas = canvas_with_picture()
    toolbar = Toolbar(canvas, on_run=lambda: None, on_cancel=lambda: None)
    toolbar.mode_buttons.value = "erase"
    assert canvas.mode == "erase"
    assert toolbar.undo_button.disabled
    toolbar.mode_buttons.value = "points"
    press(canvas, 8, 8)
    assert not toolbar.undo_button.disabled
    toolbar.undo_button.click()
    assert canvas.pending is None and toolbar.undo_button.disabled and not toolbar.redo_button.disabled
    canvas.image = picture(256, 256)
    assert toolbar.brush_slider.max == 64


def test_array_link_keeps_both_sides_equal():
    class Holder(traitlets.HasTraits):
        mask = traitlets.Any()

    canvas, holder = canvas_with_picture(), Holder()
    ArrayLink(canvas, holder, "mask")
    assert holder.mask is canvas.mask
    painted = np.zeros((64, 64), bool)
    painted[5, 5] = True
    holder.mask = painted
    assert canvas.mask[5, 5] and canvas.mask.sum() == 1


# ---------------------------------------------------------------------- progress and result
def test_the_progress_line_shows_one_stage_at_a_time():
    now = [0.0]
    view = ProgressView()
    view.clock.clock = lambda: now[0]
    view.show("drag", 0, 10)
    now[0] = 2.0
    view.show("drag", 5, 10)
    assert "Optimise" in view.stage.value and view.timing.value == "<small>5/10 · 2.0 s · ~2 s left</small>"
    view.mark("danger")
    assert view.bar.bar_style == "danger"
    view.reset()
    assert (view.bar.value, view.bar.bar_style, view.stage.value, view.timing.value) == (0, "", "", "")
    view.status, view.error = "running", "bad <input>"
    assert "running" in view.status_html.value and "bad &lt;input&gt;" in view.error_html.value


def test_the_result_is_shown_at_the_canvas_size_with_a_wipe_on_it():
    panel = ResultPanel(lambda: None, max_display_size=(512, 512))
    original = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    edited = Image.fromarray(np.full((64, 64, 3), 255, np.uint8))
    panel.show_input(original)
    assert panel.edited_view.layout.width == "512px" and panel.compare.layout.display == "none"
    assert "dragwidget-result" in panel.edited_view._dom_classes
    panel.show_result(original, edited, b"", "<small>reached</small>")
    shown = np.asarray(Image.open(__import__("io").BytesIO(panel.edited_view.value)))
    assert shown.min() == 255                              # the slider at "after": all edited
    panel.compare.value = 0.25                             # left three quarters: the original
    shown = np.asarray(Image.open(__import__("io").BytesIO(panel.edited_view.value)))
    assert shown[:, :300].max() == 0 and shown[:, 400:].min() == 255
    assert np.array_equal(np.asarray(wipe(original, edited, 0.0)), np.asarray(edited))


# ---------------------------------------------------------------------- the run controller
def test_the_run_controller_runs_the_canvas_data_and_locks_it_meanwhile():
    started, release = threading.Event(), threading.Event()
    seen = {}

    def behave(request, progress, cancel):
        seen["request"] = request
        progress(Progress("drag", 1, 4, handles=[(12.0, 10.0)]))
        started.set()
        release.wait(10)
        raise InputError("stopped by the test")

    canvas = canvas_with_picture()
    progress, results = ProgressView(), ResultPanel(lambda: None)
    controller = RunController(canvas, progress, results, FakeEditor(behave))
    options = RunOptions(model="fake", prompt="a disc", config_for=lambda editor: DragConfig(lora_steps=1))
    assert controller.run(options) is None and "no point pairs" in controller.error
    canvas.points = [{"handle": [10, 10], "target": [20, 10]}]
    controller.run(options)
    assert started.wait(10)
    try:
        assert canvas.locked and controller.running and canvas.tracked == [(12.0, 10.0)]
        assert "a disc" == seen["request"].prompt and seen["request"].points == canvas.points
        assert progress.error == ""
    finally:
        release.set()
    with pytest.raises(InputError):
        controller.wait(10)
    assert not canvas.locked and canvas.tracked is None and canvas.points == [{"handle": [10, 10], "target": [20, 10]}]
    assert progress.error == "stopped by the test" and controller.status.startswith("FAILED during optimise")
