"""DragWidget without a browser: its handlers are called directly (as ipyannotations' tests do)."""

from __future__ import annotations

import io
from datetime import datetime, timezone
import json
import pickle
import subprocess
import sys
import threading
import types
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from dragwidget import DragConfig, DragRequest, Progress
from dragwidget.errors import DragCancelled, InputError
from dragwidget.widget import DragWidget, load_session, save_session
from dragwidget.widget.session import safe_load_pickle
from dragwidget.widget.state import EditState, paint_capsule


def picture(width=64, height=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def click(widget, x, y):
    widget.on_mouse_down(x, y)
    widget.on_mouse_up(x, y)


def dom(kind, x, y, css_width, css_height, widget, **extra):
    """An ipyevents event as the browser sends it: CSS pixels relative to the canvas element."""
    return {"type": kind, "relativeX": x, "relativeY": y, "boundingRectWidth": css_width,
            "boundingRectHeight": css_height, "button": 0, **extra}


class FakeEditor:
    """The narrow engine interface the widget uses; `behaviour(request, progress, cancel)` runs."""

    def __init__(self, behaviour):
        self.model = SimpleNamespace(name="fake")
        self.config = DragConfig(lora_steps=1, max_drag_steps=5)
        self.behaviour = behaviour
        self.requests = []

    def run(self, request: DragRequest, progress=None, cancel=None):
        self.requests.append(request)
        return self.behaviour(request, progress, cancel)


# ---------------------------------------------------------------------- coordinates and clicks
def test_clicks_at_display_scale_8_store_image_pixels():
    widget = DragWidget(picture(64, 64), model="fake")
    assert widget.display_scale == 8 and widget.canvas_size == (512, 512)
    click(widget, 100, 50)                       # buffer pixels -> image pixel (12, 6)
    assert widget.pending_handle == [12, 6] and widget.points == []
    click(widget, 200, 52)
    assert widget.points == [{"handle": [12, 6], "target": [25, 6]}]
    assert widget.pending_handle is None


def test_dom_events_with_css_scaling_and_downscaled_display():
    widget = DragWidget(picture(1000, 800), model="fake")   # shown reduced to fit 512x512
    assert widget.display_scale == pytest.approx(0.512)
    assert widget.canvas_size == (512, 410)
    # The canvas element is shown at 256 CSS px wide (half its buffer): CSS (128, 100) is the
    # buffer's (256, 200).
    widget.handle_event(dom("mousedown", 128, 100, 256, 205, widget))
    widget.handle_event(dom("mouseup", 128, 100, 256, 205, widget))
    widget.handle_event(dom("mousedown", 200, 50, 256, 205, widget))
    # buffer (256, 200) and (400, 100) are image (256 / 0.512, 200 / 0.512) = (500, 390.6) and (781.3, 195.3)
    assert widget.points == [{"handle": [500, 390], "target": [781, 195]}]


def test_right_button_and_clicks_while_running_are_ignored():
    widget = DragWidget(picture(), model="fake")
    widget.handle_event({"type": "mousedown", "relativeX": 10, "relativeY": 10, "button": 2})
    assert widget.pending_handle is None
    widget.running = True
    click(widget, 10, 10)
    assert widget.pending_handle is None


# ---------------------------------------------------------------------- mask strokes
def test_stroke_at_scale_paints_image_pixels_and_eraser_removes():
    widget = DragWidget(picture(64, 64), model="fake")
    widget.mode = "mask"
    widget.brush_radius = 2
    # a horizontal stroke from image (10, 20) to (30, 20): buffer x = (i + 0.5) * 8
    widget.on_mouse_down(10.5 * 8, 20.5 * 8)
    widget.on_mouse_move(20.5 * 8, 20.5 * 8, buttons=1)
    widget.on_mouse_move(25.5 * 8, 20.5 * 8, buttons=0)   # a late move from before the press: ignored
    widget.on_mouse_up(30.5 * 8, 20.5 * 8)
    mask = widget.mask
    assert mask.shape == (64, 64) and mask.dtype == bool
    assert mask[20, 10:31].all() and mask[18, 20] and mask[22, 20]
    assert not mask[17, 20] and not mask[20, 7] and not mask[20, 34]
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (18, 22, 8, 32)
    widget.mode = "erase"
    widget.on_mouse_down(20.5 * 8, 20.5 * 8)
    widget.on_mouse_leave()                       # leaving the canvas ends the stroke
    assert not widget.mask[20, 20] and widget.mask[20, 10]


def test_stroke_at_downscaled_display_and_dom_throttled_moves():
    widget = DragWidget(picture(1024, 512), model="fake")   # scale 0.5
    widget.mode = "mask"
    widget.brush_radius = 10
    widget.handle_event(dom("mousedown", 100, 100, 512, 256, widget, timeStamp=10.0))
    widget.handle_event(dom("mousemove", 140, 100, 512, 256, widget, buttons=0, timeStamp=5.0))  # before the press
    widget.handle_event(dom("mousemove", 150, 100, 512, 256, widget, buttons=1, timeStamp=20.0))
    widget.handle_event(dom("mouseup", 150, 100, 512, 256, widget))
    mask = widget.mask
    assert mask[200, 200] and mask[200, 300] and mask[209, 250]
    assert not mask[200, 185] and not mask[200, 315] and not mask[215, 250]


def test_wheel_changes_brush_radius_in_mask_mode_only():
    widget = DragWidget(picture(), model="fake")
    radius = widget.brush_radius
    widget.on_wheel(-100)
    assert widget.brush_radius == radius              # points mode: wheel left to the page
    assert "wheel" not in widget._events.watched_events
    assert widget._moves.watched_events == []                     # no pointer traffic in points mode
    widget.mode = "mask"
    assert "wheel" in widget._events.watched_events and widget._moves.watched_events == ["mousemove"]
    widget.handle_event({"type": "wheel", "deltaY": -100})
    widget.on_wheel(-3)
    assert widget.brush_radius == radius + 2
    widget.on_wheel(5)
    assert widget.brush_radius == radius + 1


def test_paint_capsule_edges():
    mask = np.zeros((10, 10), bool)
    assert paint_capsule(mask, (-50, -50), (-40, -40), 2, True) is None
    assert paint_capsule(mask, (0, 0), (0, 0), 1, True) == (0, 0, 2, 2)
    assert mask.sum() == 3


# ---------------------------------------------------------------------- undo / redo / clear
def test_undo_redo_each_action():
    widget = DragWidget(picture(), model="fake")
    click(widget, 80, 80)
    click(widget, 160, 80)
    widget.mode = "mask"
    widget.on_mouse_down(300, 300)
    widget.on_mouse_up(300, 300)
    painted = widget.mask.copy()
    widget.clear_points()
    widget.clear_mask()
    assert widget.points == [] and not widget.mask.any()
    assert widget.undo() == "clear mask" and np.array_equal(widget.mask, painted)
    assert widget.undo() == "clear points" and len(widget.points) == 1
    assert widget.undo() == "stroke" and not widget.mask.any()
    assert widget.undo() == "target" and widget.points == [] and widget.pending_handle == [10, 10]
    assert widget.undo() == "handle" and widget.pending_handle is None
    assert widget.undo() is None and widget.undo_button.disabled
    assert widget.redo() == "handle" and widget.redo() == "target"
    assert widget.points == [{"handle": [10, 10], "target": [20, 10]}]
    assert widget.redo() == "stroke" and np.array_equal(widget.mask, painted)
    assert not widget.redo_button.disabled
    widget.mode = "points"
    click(widget, 0, 0)                            # a new action empties the redo stack
    assert widget.redo() is None


def test_python_changes_are_undoable_too():
    widget = DragWidget(picture(), model="fake")
    widget.points = [((1, 2), (3, 4))]
    widget.points = [[1, 2], [5, 6], [7, 8], [9, 10]]      # flat DragBench layout
    assert len(widget.points) == 2
    widget.undo()
    assert widget.points == [{"handle": [1, 2], "target": [3, 4]}]


def test_escape_drops_a_pending_handle_when_idle():
    widget = DragWidget(picture(), model="fake")
    click(widget, 40, 40)
    widget.on_key("Escape")
    assert widget.pending_handle is None
    widget.on_key("z")
    assert widget.pending_handle == [5, 5]


# ---------------------------------------------------------------------- hotkeys
def test_hotkeys_switch_modes_undo_redo_and_run():
    done = threading.Event()

    def behave(request, progress, cancel):
        done.set()
        raise RuntimeError("stop here")

    widget = DragWidget(picture(), editor=FakeEditor(behave))
    for key, mode in (("m", "mask"), ("e", "erase"), ("p", "points"), ("M", "mask")):
        widget.handle_event({"type": "keydown", "key": key})
        assert widget.mode == mode
    widget.on_key("p")
    click(widget, 8, 8)
    widget.on_key("z")
    assert widget.pending_handle is None
    widget.on_key("y")
    assert widget.pending_handle == [1, 1]
    click(widget, 80, 8)
    widget.on_key("Enter")
    assert done.wait(10)
    widget.runner.join(10)
    assert widget.error == "RuntimeError: stop here"
    assert "p</b> points" in widget.help_html.value and "Esc" in widget.help_html.value


# ---------------------------------------------------------------------- traits
def test_trait_round_trips_and_validation():
    image = Image.fromarray(picture(40, 30))
    widget = DragWidget(image, prompt="a red disc", model="fake", lora_steps=7, seed=3)
    assert widget.image.size == (40, 30) and widget.mask.shape == (30, 40)
    assert widget.prompt_text.value == "a red disc"
    assert widget.parameter_widgets["lora_steps"].value == 7 and widget.seed == 3
    widget.parameter_widgets["drag_steps"].value = 12       # the panel changes the trait
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
        DragWidget(image, model="fake", lora_step=3)


def test_defaults_come_from_the_engine_config(editor):
    widget = DragWidget(picture(), editor=editor)
    assert widget.model == editor.model.name
    assert widget.lora_steps == editor.config.lora_steps
    assert widget.drag_steps == editor.config.max_drag_steps
    assert widget.inversion_strength == editor.config.inversion_strength
    assert widget.accordion.selected_index is None               # the panel starts collapsed
    assert widget._config(editor) == editor.config.replace(preview_every=widget.preview_every)


def test_model_defaults_without_loading(tmp_path):
    folder = tmp_path / "m"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        (folder / part).mkdir(parents=True)
    (folder / "dragwidget_settings.json").write_text(json.dumps({"lora_steps": 11, "max_drag_steps": 9}))
    widget = DragWidget(picture(), model=str(folder))
    assert (widget.lora_steps, widget.drag_steps, widget.editor) == (11, 9, None)


def test_upload_button_sets_the_image():
    widget = DragWidget(model="fake")
    buffer = io.BytesIO()
    Image.fromarray(picture(30, 20)).save(buffer, format="PNG")
    widget.upload.value = ({"name": "mine.png", "type": "image/png", "size": len(buffer.getvalue()),
                            "content": memoryview(buffer.getvalue()), "last_modified": datetime.now(timezone.utc)},)
    assert widget.image.size == (30, 20) and "mine.png" in widget.status
    widget.upload.value = ({"name": "bad.png", "type": "image/png", "size": 3, "content": memoryview(b"abc"),
                            "last_modified": datetime.now(timezone.utc)},)
    assert "could not open bad.png" in widget.error and widget.image.size == (30, 20)


def test_show_mask_hides_the_overlay_only():
    widget = DragWidget(picture(), model="fake", mask=np.ones((64, 64), bool))
    widget.show_mask_box.value = False
    assert widget.show_mask is False and widget.mask.all()


# ---------------------------------------------------------------------- sessions
def test_session_round_trip(tmp_path):
    widget = DragWidget(picture(48, 32), prompt="two squares", model="fake", lora_steps=5, mask_weight=0.3)
    widget.points = [{"handle": [3, 4], "target": [20, 10]}, {"handle": [40, 30], "target": [30.5, 20]}]
    mask = np.zeros((32, 48), bool)
    mask[5:20, 10:30] = True
    widget.mask = mask
    folder = widget.save_session(tmp_path / "s")
    for name in ("original_image.png", "meta_data.pkl", "meta_data.json", "mask.png", "user_drag.png"):
        assert (folder / name).is_file()
    meta = safe_load_pickle((folder / "meta_data.pkl").read_bytes())
    assert meta["prompt"] == "two squares"
    assert meta["points"] == [[3, 4], [20, 10], [40, 30], [30.5, 20]]
    assert meta["mask"].dtype == np.uint8 and meta["mask"].shape == (32, 48) and meta["mask"].sum() == mask.sum()
    assert json.loads((folder / "meta_data.json").read_text())["parameters"]["lora_steps"] == 5

    other = DragWidget.from_session(folder, model="fake")
    assert other.points == widget.points and np.array_equal(other.mask, mask)
    assert np.array_equal(np.asarray(other.image), np.asarray(widget.image))
    assert (other.prompt, other.lora_steps, other.mask_weight) == ("two squares", 5, 0.3)
    assert other.undo() is None                                   # a loaded session starts a new history

    (folder / "meta_data.json").unlink()                          # a DragBench sample: pickle only
    session = load_session(folder)
    assert session.points == widget.points and np.array_equal(session.mask, mask)


def test_dragbench_pickle_from_another_writer(tmp_path):
    """Points as numpy ints and default-protocol numpy arrays, as DragBench's own tools write them."""
    folder = tmp_path / "sample"
    folder.mkdir()
    Image.fromarray(picture(20, 10)).save(folder / "original_image.png")
    mask = np.zeros((10, 20), np.uint8)
    mask[2:5, 3:9] = 1
    points = [np.array([1, 2]), np.array([5, 6])]
    for protocol in (2, 4, 5):
        (folder / "meta_data.pkl").write_bytes(pickle.dumps({"prompt": "x", "points": points, "mask": mask}, protocol=protocol))
        session = load_session(folder)
        assert session.points == [{"handle": [1, 2], "target": [5, 6]}] and session.mask.sum() == 18


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return os.system, (f"touch {marker}",)

    folder = save_session(tmp_path / "s", Image.fromarray(picture()), "p", [], None)
    (folder / "meta_data.json").unlink()
    (folder / "meta_data.pkl").write_bytes(pickle.dumps({"prompt": "p", "points": [], "mask": Evil()}))
    with pytest.raises(InputError, match="refusing to load (posix|os|nt).system"):
        load_session(folder)
    assert not marker.exists()
    with pytest.raises(InputError, match="refusing"):
        safe_load_pickle(pickle.dumps(eval))
    with pytest.raises(InputError, match="meta_data.pkl"):
        safe_load_pickle(b"\x80\x04\x95")


# ---------------------------------------------------------------------- running
def test_run_on_tiny_model_in_a_thread(editor, tmp_path):
    image = picture(64, 64, seed=2)
    widget = DragWidget(image, editor=editor, prompt="a red disc", preview_every=1)
    widget.points = [{"handle": [20, 30], "target": [28, 30]}]
    mask = np.zeros((64, 64), bool)
    mask[20:40, 10:40] = True
    widget.mask = mask
    main = threading.current_thread()
    seen_threads = []
    widget.observe(lambda change: seen_threads.append(threading.current_thread()), names="result")
    widget.run()
    assert widget.running and widget.run_button.disabled and not widget.cancel_button.disabled
    result = widget.wait(120)
    assert result is widget.result and widget.result is not None
    assert seen_threads and seen_threads[0] is not main
    assert not widget.running and not widget.run_button.disabled and widget.cancel_button.disabled
    assert result.image.size == (64, 64) and widget.error == ""
    assert widget.bars["lora"].value == widget.bars["lora"].max and widget.bars["denoise"].value > 0
    assert widget.result_panel.layout.display is None
    assert widget.result_panel.gif[:6] == b"GIF89a"
    assert len(widget._frames) == 2 + result.steps               # start, a preview per step, the result
    assert Image.open(widget.result_panel.save_gif(tmp_path / "drag.gif")).n_frames >= 2
    assert Image.open(widget.result_panel.save_png(tmp_path / "edited.png")).size == (64, 64)
    assert "LoRA: trained" in widget.status
    # the PCA feature grid of original vs edited, computed in the same thread, beside the edited image
    maps = widget.feature_maps
    assert maps is not None and maps.labels == ["original", "edited"]
    assert maps.blocks == [result.config.feature_block] and maps.drag_block == result.config.feature_block
    assert widget.result_panel.features_view.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert widget.result_panel.features_png == widget.result_panel.features_view.value
    assert widget.result_panel.features_box.layout.display is None
    assert "feature maps in" in widget.status and widget.bars["features"].bar_style == "success"
    # points, mask and image are the user's; the handles drawn during the run came from tracking
    assert widget.points == [{"handle": [20, 30], "target": [28, 30]}] and np.array_equal(widget.mask, mask)

    widget.run(wait=True)                                          # same image: cached LoRA and inversion
    assert "reused from the previous run" in widget.status
    assert widget.bar_labels["lora"].value == "<small>cached</small>"

    widget.use_result_as_input()
    assert np.array_equal(np.asarray(widget.image), np.asarray(widget.result.image)) and widget.points == []


def test_show_features_off_computes_no_feature_maps(editor, monkeypatch):
    calls = []
    monkeypatch.setattr(editor, "feature_maps", lambda *args, **kwargs: calls.append(args))
    widget = DragWidget(picture(64, 64, seed=3), editor=editor, preview_every=0, show_features=False)
    assert not widget.show_features_box.value and widget._features_row.layout.display == "none"
    widget.points = [{"handle": [20, 30], "target": [26, 30]}]
    result = widget.run(wait=True)
    assert result is widget.result and calls == [] and widget.feature_maps is None
    assert widget.result_panel.features_view.value == b"" and widget.result_panel.features_box.layout.display == "none"
    assert "feature maps" not in widget.status


def test_a_feature_maps_failure_keeps_the_drag_result(editor, monkeypatch):
    requests = []

    def broken(request, progress=None, cancel=None):
        requests.append(request)
        raise RuntimeError("no features today")

    monkeypatch.setattr(editor, "feature_maps", broken)
    widget = DragWidget(picture(64, 64, seed=4), editor=editor, prompt="a red disc", preview_every=0)
    widget.points = [{"handle": [20, 30], "target": [26, 30]}]
    result = widget.run(wait=True)
    assert result is not None and widget.result is result and widget.feature_maps is None
    assert widget.result_panel.edited_view.value[:4] == b"\x89PNG"
    assert "feature maps failed: RuntimeError: no features today" in widget.status and widget.error == ""
    assert "no features today" in widget.result_panel.features_label.value
    assert "RuntimeError" in widget.last_traceback and not widget.running
    # what was asked: original vs edited of this result, with the widget's prompt, the drag's block only
    (request,) = requests
    assert request.edited is result.image and request.image is result.original
    assert request.prompt == "a red disc" and list(request.blocks) == [result.config.feature_block]

    widget.feature_blocks = [1, 2]                                 # a trait chooses other blocks
    widget.run(wait=True)
    assert list(requests[-1].blocks) == [1, 2] and widget.result is not None


def test_model_is_loaded_lazily_at_the_first_run(tiny_model_dir):
    widget = DragWidget(picture(), model=str(tiny_model_dir), lora_steps=1, drag_steps=2, preview_every=0)
    assert widget.editor is None
    widget.points = [((10, 10), (14, 10))]
    result = widget.run(wait=True)
    assert widget.editor is not None and widget.editor.model.name == str(tiny_model_dir)
    assert result.config.lora_steps == 1 and result.config.max_drag_steps == 2
    assert widget.result_panel.gif == b""


def test_generated_image_mode(editor):
    widget = DragWidget(editor=editor, preview_every=0)
    assert "no image" in widget.readout.value
    widget.generate("a red disc", wait=True)
    assert widget.image is not None and widget.prompt == "a red disc"
    width, height = widget.image.size
    widget.points = [{"handle": [width // 3, height // 2], "target": [width // 2, height // 2]}]
    result = widget.run(wait=True)
    assert result.image.size == widget.image.size
    assert result.reused == {"lora": "none", "inversion": "generation"}
    widget.image = picture()                                       # another image drops the generated latents
    assert widget._generated is None


def test_engine_error_leaves_points_mask_and_image_intact():
    def behave(request, progress, cancel):
        progress(Progress("lora", 1, 1))
        progress(Progress("drag", 1, 5, handles=[(30.0, 30.0)]))
        raise InputError("the prompt is too long for this model")

    editor = FakeEditor(behave)
    image = picture()
    widget = DragWidget(image, editor=editor)
    widget.points = [{"handle": [10, 10], "target": [20, 20]}]
    widget.mode = "mask"
    widget.on_mouse_down(100, 100)
    widget.on_mouse_up(140, 100)
    points, mask, shown = list(widget.points), widget.mask.copy(), np.asarray(widget.image).copy()
    with pytest.raises(InputError):
        widget.run(wait=True)
    assert widget.error == "the prompt is too long for this model"
    assert "the prompt is too long" in widget.error_html.value
    assert widget.points == points and np.array_equal(widget.mask, mask)
    assert np.array_equal(np.asarray(widget.image), shown) and widget.result is None
    assert not widget.running and not widget.run_button.disabled
    assert widget._tracked is None
    assert editor.requests[0].points == points and np.array_equal(editor.requests[0].mask, mask)

    widget.run()
    widget.runner.join(10)
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

    widget = DragWidget(picture(), editor=FakeEditor(behave))
    widget.points = [((1, 1), (5, 5))]
    widget.run()
    assert started.wait(10)
    click(widget, 40, 40)                                         # no editing while it runs
    assert widget.pending_handle is None
    widget.on_key("Escape")
    with pytest.raises(DragCancelled):
        widget.wait(10)
    assert "cancelled" in widget.status and widget.error == "" and not widget.running


def test_run_needs_points():
    widget = DragWidget(picture(), model="fake")
    assert widget.run() is None and "no point pairs" in widget.error
    with pytest.raises(InputError):
        widget.run(wait=True)


# ---------------------------------------------------------------------- environment
def test_colab_custom_widget_manager_is_enabled(monkeypatch):
    calls = []
    colab = types.ModuleType("google.colab")
    colab.output = SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(True))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    DragWidget(picture(), model="fake")
    assert calls == [True]


def test_import_dragwidget_does_not_import_widgets():
    code = ("import sys, dragwidget; assert 'ipywidgets' not in sys.modules; "
            "from dragwidget import DragWidget; assert DragWidget.__module__ == 'dragwidget.widget.widget'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_edit_state_history_is_bounded():
    state = EditState(8, 8, max_history=3)
    for i in range(5):
        state.add_point(i, 0)
    assert sum(1 for _ in iter(state.undo, None)) == 3
