"""Live drag in the widget: press, move and release drag a pair (one undo step) and the result panel
follows the pointer with FastDrag previews; a preview overtaken by a newer position is dropped; the
engine's preview is the picture its run gives, without a LoRA or a verdict."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dragwidget import DragCancelled, DragEditor, DragRequest
from dragwidget.widget.live_preview import LivePreview
from widget_fakes import Widget, click, picture


def disc_picture(size=64):
    """The quickstart's picture: a red disc on a sky gradient."""
    ramp = np.linspace(0, 1, size)[:, None, None]
    sky = (1 - ramp) * np.array([200, 230, 240]) + ramp * np.array([120, 170, 200])
    image = Image.fromarray(np.repeat(sky, size, axis=1).round().astype(np.uint8))
    cx, cy, radius = 0.33 * size, 0.5 * size, 0.14 * size
    ImageDraw.Draw(image).ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=(235, 80, 60))
    return image


def drag(canvas, start, end, steps=5):
    """Press at `start`, move to `end` in `steps` moves with the button held, release (buffer pixels)."""
    canvas.on_mouse_down(*start)
    for k in range(1, steps + 1):
        canvas.on_mouse_move(start[0] + (end[0] - start[0]) * k / steps,
                             start[1] + (end[1] - start[1]) * k / steps, buttons=1)
    canvas.on_mouse_up(*end)


# ---------------------------------------------------------------------- the gesture on the canvas
def test_press_move_release_commits_one_pair_as_one_undo_step():
    widget = Widget(picture(), live_preview=False)
    seen = []
    widget.canvas.on_live_drag(lambda pairs, released: seen.append(([p.to_dict() for p in pairs], released)))
    drag(widget.canvas, (12 * 8 + 4, 6 * 8 + 4), (25 * 8 + 4, 6 * 8 + 4))
    assert widget.points == [{"handle": [12, 6], "target": [25, 6]}] and widget.pending_handle is None
    # the target followed the pointer while it moved, then the release committed it
    assert len(seen) >= 3 and not any(released for _, released in seen[:-1]) and seen[-1][1]
    assert seen[-1][0] == [{"handle": [12, 6], "target": [25, 6]}]
    assert [pairs[0]["target"][0] for pairs, _ in seen[:-1]] == sorted(pairs[0]["target"][0] for pairs, _ in seen[:-1])
    assert widget.undo() == "drag pair" and widget.points == [] and widget.pending_handle is None
    assert widget.redo() == "drag pair" and widget.points == [{"handle": [12, 6], "target": [25, 6]}]


def test_clicks_and_wobbles_keep_the_click_click_mode():
    widget = Widget(picture(), live_preview=False)
    canvas = widget.canvas
    canvas.on_mouse_down(10 * 8 + 4, 10 * 8 + 4)
    canvas.on_mouse_move(10 * 8 + 5, 10 * 8 + 6, buttons=1)     # less than a drag: still a click
    canvas.on_mouse_up(10 * 8 + 5, 10 * 8 + 6)
    assert widget.pending_handle == [10, 10] and widget.points == []
    click(widget, 20 * 8 + 4, 10 * 8 + 4)
    assert widget.points == [{"handle": [10, 10], "target": [20, 10]}]
    assert widget.undo() == "target" and widget.undo() == "handle" and widget.points == []


def test_dragging_a_target_moves_it_and_a_release_outside_ends_the_drag():
    widget = Widget(picture(), points=[{"handle": [10, 10], "target": [20, 10]}], live_preview=False)
    drag(widget.canvas, (20 * 8 + 4, 10 * 8 + 4), (30 * 8 + 4, 14 * 8 + 4))
    assert widget.points == [{"handle": [10, 10], "target": [30, 14]}] and widget.pending_handle is None
    assert widget.undo() == "move target" and widget.points == [{"handle": [10, 10], "target": [20, 10]}]
    # the pointer leaves the canvas while pressed: the drag ends where it left
    canvas = widget.canvas
    canvas.on_mouse_down(20 * 8 + 4, 10 * 8 + 4)
    canvas.on_mouse_move(40 * 8 + 4, 10 * 8 + 4, buttons=1)
    canvas.on_mouse_leave()
    assert widget.points == [{"handle": [10, 10], "target": [40, 10]}]
    canvas.on_mouse_move(50 * 8 + 4, 10 * 8 + 4, buttons=0)       # back over the canvas, released: nothing
    assert widget.points == [{"handle": [10, 10], "target": [40, 10]}]


def test_the_mouse_comes_from_ipycanvas_and_keys_from_ipyevents():
    """ipycanvas's own mouse events (what every front end delivers) drive the canvas; ipyevents
    brings keys and the wheel only, and the help line says whether its events arrive."""
    widget = Widget(picture(), live_preview=False)
    canvas = widget.canvas
    assert not {"mousedown", "mousemove", "mouseup"} & set(canvas.input.events.watched_events)
    layer = canvas[-1]                      # where MultiCanvas hands its front end's mouse events

    def front_end(event, x, y):
        layer._handle_frontend_event(None, {"event": event, "x": x, "y": y}, [])

    front_end("mouse_down", 12 * 8 + 4, 6 * 8 + 4)
    for x in range(13, 26):
        front_end("mouse_move", x * 8 + 4, 6 * 8 + 4)
    front_end("mouse_up", 25 * 8 + 4, 6 * 8 + 4)
    assert widget.points == [{"handle": [12, 6], "target": [25, 6]}] and canvas.input.mouse_active
    assert "nothing received yet" in widget.help_html.value and not canvas.input.keys_active
    canvas.handle_event({"type": "mouseenter"})
    assert canvas.input.keys_active and "working here" in widget.help_html.value


# ---------------------------------------------------------------------- latest wish only
class SlowEditor:
    """preview() takes `seconds` in steps, honouring cancel; records what it finished."""

    def __init__(self, seconds=0.3):
        self.seconds, self.finished, self.cancelled, self.started = seconds, [], [], []

    def preview(self, request, progress=None, cancel=None):
        self.started.append(request.points[0].target)
        for _ in range(10):
            time.sleep(self.seconds / 10)
            if cancel is not None and cancel():
                self.cancelled.append(request.points[0].target)
                raise DragCancelled("overtaken")
        self.finished.append(request.points[0].target)
        return SimpleNamespace(image=None, pairs=request.points, timings={})

    def ready(self, *args, **kwargs):
        return None


def test_a_preview_overtaken_by_a_newer_position_is_cancelled_never_queued():
    editor, shown = SlowEditor(), []
    live = LivePreview(lambda: editor, shown.append, lambda message: None)
    image = picture()
    for x in range(20, 30):   # ten positions faster than a preview
        live.want(DragRequest(image, [((10, 10), (x, 10))]))
        time.sleep(0.01)
    assert live.wait_idle(10)
    # only the last position was shown; each started preview of an older one was cancelled
    assert [s.preview.pairs[0].target for s in shown] == [(29.0, 10.0)]
    assert editor.finished == [(29.0, 10.0)] and len(editor.started) < 10   # most never started at all
    assert set(editor.started[:-1]) <= set(editor.cancelled)


def test_a_preview_that_fails_says_why_and_the_next_one_still_runs():
    class Broken(SlowEditor):
        def preview(self, request, progress=None, cancel=None):
            if request.points[0].target[0] < 25:
                raise RuntimeError("no such thing")
            return super().preview(request, progress, cancel)

    said, shown = [], []
    live = LivePreview(lambda: Broken(0.05), shown.append, said.append)
    live.want(DragRequest(picture(), [((10, 10), (20, 10))]))
    assert live.wait_idle(10) and any("no such thing" in message for message in said)
    live.want(DragRequest(picture(), [((10, 10), (30, 10))]))
    assert live.wait_idle(10) and len(shown) == 1


# ---------------------------------------------------------------------- the engine's preview
def test_the_preview_is_the_runs_picture_without_lora_or_verdict(toy_editor):
    image = disc_picture()
    config = toy_editor.config.replace(method="fastdrag", fastdrag_lora_steps=0)
    request = DragRequest(image, [((21, 32), (31, 32))], prompt="a red disc", config=config)
    prepared = toy_editor.ready(image, "a red disc", config)
    assert prepared.lora_weights is None and prepared.inverted
    preview = toy_editor.preview(request)
    result = toy_editor.run(request)
    assert np.array_equal(np.asarray(preview.image), np.asarray(result.image))
    assert "verdict" not in preview.timings and "verdict" in result.timings
    # the first drag accounts for the preparation ready() did; the run after it reuses it
    assert preview.reused == {"lora": "none", "inversion": "computed"} and result.reused["inversion"] == "memory"
    assert toy_editor.prepared_for(image, "a red disc", config) is prepared


@pytest.fixture(scope="module")
def toy_editor(tmp_path_factory):
    return DragEditor("toy", device="cpu", cache_dir=tmp_path_factory.mktemp("live_cache"), cpu_threads=1)


# ---------------------------------------------------------------------- the widget, end to end
def test_the_widget_previews_while_dragging_and_the_last_preview_is_the_scripted_edit(toy_editor):
    image = disc_picture()
    widget = Widget(image, editor=toy_editor, prompt="a red disc")
    widget.canvas.displayed = True               # a front end shows it: previews start
    assert widget.controller.live.wait_idle(60)
    assert "ready" in widget.progress.note
    shown_before = len(widget.controller.live_shown)
    # press at the disc (pixel 21, 32: display x8), drag 10 px to the right
    canvas = widget.canvas
    canvas.on_mouse_down(21 * 8 + 4, 32 * 8 + 4)
    for x in range(22, 32):
        canvas.on_mouse_move(x * 8 + 4, 32 * 8 + 4, buttons=1)
        time.sleep(0.05)
    canvas.on_mouse_up(31 * 8 + 4, 32 * 8 + 4)
    assert widget.controller.live.wait_idle(60)
    shown = widget.controller.live_shown[shown_before:]
    assert shown and shown[-1].preview.pairs == [{"handle": [21, 32], "target": [31, 32]}]
    assert widget.points == [{"handle": [21, 32], "target": [31, 32]}]
    assert "Live preview" in widget.results.title.value
    # the last preview is the FastDrag edit of the pair with the preview's settings
    config = widget._config(toy_editor).replace(method="fastdrag", fastdrag_inference_steps=widget.preview_steps,
                                                fastdrag_inversion_strength=widget.preview_strength,
                                                fastdrag_lora_steps=0, preview_every=0)
    scripted = toy_editor.run(DragRequest(image, widget.points, prompt="a red disc", config=config))
    assert np.array_equal(np.asarray(shown[-1].preview.image), np.asarray(scripted.image))
    # Run replaces the preview with the chosen method's result and its verdict
    result = widget.run(wait=True)
    assert widget.results.title.value.startswith("<b>Result</b>") and result.verdict is not None
    assert widget.undo() == "drag pair" and widget.points == []


def test_no_preview_without_a_front_end_or_when_switched_off(toy_editor):
    widget = Widget(disc_picture(), editor=toy_editor, prompt="a red disc")
    drag(widget.canvas, (21 * 8 + 4, 32 * 8 + 4), (31 * 8 + 4, 32 * 8 + 4))
    assert widget.controller.live.wait_idle(10) and widget.controller.live_shown == []
    widget.live_preview = False
    widget.canvas.displayed = True
    drag(widget.canvas, (21 * 8 + 4, 40 * 8 + 4), (31 * 8 + 4, 40 * 8 + 4))
    assert widget.controller.live.wait_idle(10) and widget.controller.live_shown == []


def test_preview_settings_are_checked_and_shown_on_the_parameters_tab():
    widget = Widget(picture(), live_preview=False)
    panel = widget.parameters_panel
    assert set(panel.live_fields) == {"live_preview", "preview_steps", "preview_strength"}
    panel.live_fields["preview_steps"].value = 6
    assert widget.preview_steps == 6
    with pytest.raises(Exception, match="preview_strength"):
        widget.preview_strength = 1.5
    panel.live_fields["preview_strength"].value = 0.05      # 6 x 0.05 < 1 inversion step: refused, put back
    assert widget.preview_strength != 0.05 and "preview_strength" in panel.message.value


def test_hovering_in_points_mode_sends_the_front_end_nothing(monkeypatch):
    """ipycanvas reports every pointer move over the canvas: in points mode, with no button held,
    they must not turn into drawing messages."""
    widget = Widget(picture(), live_preview=False)
    layer = widget.canvas.cursor_layer
    cleared = []
    monkeypatch.setattr(type(layer), "clear", lambda self: cleared.append(self))
    for x in range(10, 60):
        widget.canvas.on_mouse_move(x * 8, 20 * 8)
    assert cleared == []
    widget.mode = "mask"                      # the brush cursor follows the pointer there
    widget.canvas.on_mouse_move(80, 80)
    cleared.clear()
    widget.mode = "points"                    # and is cleared once when it goes
    widget.canvas.on_mouse_move(90, 80)
    assert len(cleared) == 1
