"""The widget in a real browser, in JupyterLab and in Notebook 7: Debian's Chromium driven by
Playwright for Python, at a 1280x800 viewport (the harness is tests/browser_harness.py).

For each front end (parametrized "lab" and "notebook"; one server per front end) three scenarios:

* quickstart: opens notebooks/quickstart.ipynb (side areas collapsed, every cell rendered), runs all
  cells, then clicks a handle/target pair on the canvas, paints a mask stroke ('m', drag), presses
  'p' and Enter (the run hotkey) with the pointer over the canvas, and checks from the kernel's own
  state that the pair arrived at the right image pixels (within 1 px), the mask has pixels, the run
  produced `widget.result` and the points survived the run;
* live drag: the quickstart again; the mouse presses at the disc, moves 15 % of the picture to the
  right in 10 steps over 2 s and releases: the result picture changes at least 3 times while it
  moves, the last preview is the scripted FastDrag edit of the pair with the preview's settings,
  the pair is committed where the mouse pressed and released, and one undo removes it;
* own picture: a notebook written here showing `DragWidget(picture, model="toy")` for a 512x512 PIL
  picture (a disc on a coloured ground); points set from Python, then the Run button.

Before and after each run it checks the one-screen layout: with the root `.dragwidget` scrolled to the
top, `.dragwidget-canvas`, `.dragwidget-run` and `.dragwidget-result` are inside it and entirely on
screen together (inside the viewport and not cut by a scrolling ancestor), the result to the right of
the canvas. Layout failures are collected and reported at the end (with the boxes) so that the rest of
the scenario still runs. Screenshots, layouts (JSON) and timings go to test-artifacts/browser/.

To refresh the README's picture and animated GIF of a drag (JupyterLab):

    DRAGWIDGET_SCREENSHOT=docs/widget.png DRAGWIDGET_GIF=docs/widget_drag.gif \
        DRAGWIDGET_LIVE_GIF=docs/widget_live_drag.gif python3 -m pytest tests/test_browser_quickstart.py -k lab

Skipped, with the reason, when /usr/bin/chromium or the playwright / jupyterlab / notebook>=7 Python
packages are missing; when Chromium is present it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from browser_harness import (ARTIFACTS, LONG, VIEWPORT, Front, JupyterServer, launch, live_drag, requirements,
                             save_gif)
from dragwidget.model_source import embedded_model_names

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
SCREENSHOT_ENV = "DRAGWIDGET_SCREENSHOT"   # the Lab quickstart also saves the widget's picture here
GIF_ENV = "DRAGWIDGET_GIF"                 # ... and an animated GIF of the drag here
LIVE_GIF_ENV = "DRAGWIDGET_LIVE_GIF"       # ... and one of a live drag here


def _model_env(env: dict, tiny_model_dir, work) -> str:
    """The notebook's own choice (embedded toy model); a fast tiny-model copy only where toy is missing."""
    env.pop("DRAGWIDGET_MODEL", None)
    if "toy" in embedded_model_names():
        return "toy"
    fast = shutil.copytree(tiny_model_dir, work / "fast_tiny_model")
    settings = json.loads((fast / "dragwidget_settings.json").read_text())
    (fast / "dragwidget_settings.json").write_text(json.dumps({**settings, "lora_steps": 2, "max_drag_steps": 3}))
    env["DRAGWIDGET_MODEL"] = str(fast)
    return str(fast)


@pytest.fixture(scope="module", params=["lab", "notebook"])
def server(request, tmp_path_factory, tiny_model_dir):
    requirements(request.param)
    work = tmp_path_factory.mktemp(f"browser-{request.param}")
    root = work / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    # The CPU path, and one intra-op thread in the kernel (as conftest sets for the test process:
    # on a shared two-core machine torch's spin-waiting threads made the edit about 60x slower).
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    model = _model_env(env, tiny_model_dir, work)
    jupyter = JupyterServer(request.param, root, work, env)
    jupyter.model = model
    try:
        yield jupyter
    finally:
        jupyter.close()


@contextmanager
def browser_page(server, scenario: str):
    """A fresh Chromium page at 1280x800; failure screenshot, console log and timings kept."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    prefix = f"{server.front_end}-{scenario}"
    for old in ARTIFACTS.glob(f"{prefix}-*"):
        old.unlink()
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page()
        page.set_viewport_size(VIEWPORT)
        page.set_default_timeout(LONG)
        front = Front(page, server.front_end, prefix)
        try:
            yield front
        except BaseException:
            front.save_failure()
            raise
        finally:
            front.lap("end")
            (ARTIFACTS / f"{prefix}-timings.json").write_text(json.dumps(
                {"model": server.model, "seconds": front.timings}, indent=1))
            print(f"{prefix} timings (s): {front.timings}")
            browser.close()
            server.shutdown_kernels()


def open_and_run_all(front: Front, server, name: str) -> dict:
    front.open(server.notebook_url(name))
    side = front.collapse_side_areas()
    assert side["left"] and side["right"], side
    front.run_all()
    return front.state()


def test_quickstart_widget(server):
    with browser_page(server, "quickstart") as front:
        page = front.page
        state = open_and_run_all(front, server, NOTEBOOK.name)
        assert state["result"] is not None, state    # the notebook's scripted edit
        (scripted,) = state["points"]                  # its pair (the notebook checks that it works)
        front.check_layout("before-run")
        front.shot("01-notebook-ran")

        # The image really is on the canvas (front end): MultiCanvas composites its layers into one
        # <canvas>, fully opaque where the image layer was drawn.
        painted = page.evaluate("""() => {
            const c = document.querySelector('canvas.dragwidget-canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let opaque = 0; for (let i = 3; i < d.length; i += 4) if (d[i] === 255) opaque++;
            return {opaque, pixels: c.width * c.height};
        }""")
        assert painted["opaque"] == painted["pixels"], painted

        front.kernel("import numpy as _np\nnotebook_mask = widget.mask.copy()\nwidget.points = []\n"
                     "widget.mask = _np.zeros((widget.image.height, widget.image.width), bool)")
        state = front.state()
        assert state["points"] == [] and state["mask_pixels"] == 0, state
        size = width, height = state["size"]

        def at(x, y):
            return front.canvas_position(x, y, size)

        handle, target = tuple(scripted["handle"]), tuple(scripted["target"])   # clicked again, by hand
        page.mouse.click(*at(*handle))
        page.wait_for_timeout(300)
        page.mouse.click(*at(*target))
        page.wait_for_timeout(300)

        # mask brush by hotkey (pointer over the image), then an L-shaped stroke: its corner is only
        # painted if the throttled pointer moves arrive (press and release alone paint a straight line)
        start, corner, end = ((round(width * 0.2), round(height * 0.55)), (round(width * 0.7), round(height * 0.55)),
                              (round(width * 0.7), round(height * 0.85)))
        def hotkey(key, fallback):
            """Presses `key` over the canvas; where the front end takes it, says so and does `fallback`.

            Notebook 7's command mode handles m, x, z and y before the widget sees them (m turns the
            cell into Markdown): the README says so, and there the toolbar is used instead."""
            if server.front_end == "notebook" and key in TAKEN_BY_NOTEBOOK7:
                fallback()
                return
            ran = front.press(key)
            if ran:
                front.problems.append(f"{server.front_end}: the key {key!r} over the canvas went to the front end, "
                                f"not to the widget (it ran {ran})")
                fallback()

        page.mouse.move(*at(*start))
        hotkey("m", lambda: page.locator(".dragwidget-toolbar .widget-toggle-button", has_text="Mask").first.click())
        page.mouse.move(*at(*start))
        page.mouse.down()
        for (ax, ay), (bx, by) in ((start, corner), (corner, end)):
            for i in range(1, 11):
                page.mouse.move(*at(ax + (bx - ax) * i / 10, ay + (by - ay) * i / 10))
                page.wait_for_timeout(40)
        page.mouse.up()
        page.wait_for_timeout(500)
        assert front.state()["mode"] in (None, "mask"), "the 'm' hotkey did not arrive"
        hotkey("p", lambda: front.kernel("widget.mode = 'points'"))
        front.shot("02-points-and-mask")

        state = front.state()
        assert state["mode"] in (None, "points"), state           # the 'p' hotkey arrived
        assert len(state["points"]) == 1, state
        pair = state["points"][0]
        for got, want in ((pair["handle"], handle), (pair["target"], target)):
            assert abs(got[0] - want[0]) <= 1 and abs(got[1] - want[1]) <= 1, (pair, handle, target)
        assert state["mask_pixels"] > 0, state
        box, radius = state["mask_box"], state["brush"] or 0
        assert abs(box[0] - (start[0] - radius)) <= 2 and abs(box[2] - (corner[0] + radius)) <= 2, (box, radius)
        assert abs(box[1] - (start[1] - radius)) <= 2 and abs(box[3] - (end[1] + radius)) <= 2, (box, radius)
        off_stroke = (round(width * 0.45), round(height * 0.7))
        values = json.loads(front.kernel("import json; print(json.dumps([bool(widget.mask[y, x]) for x, y in %r]))"
                                         % [start, corner, end, off_stroke]))
        assert values == [True, True, True, False], values
        front.lap("points and stroke checked")
        # The run drags with the notebook's own mask (the path the disc passes over): the L-shaped
        # stroke above is too thin to free the object's path, and the picture should show a drag
        # that works.
        front.kernel("widget.mask = notebook_mask")

        gif = os.environ.get(GIF_ENV) if server.front_end == "lab" else None
        frames = [] if gif else None
        page.mouse.move(*at(width // 2, height // 2))
        hotkey("Enter", lambda: page.locator(".dragwidget-run").first.click())   # the run hotkey
        after = front.wait_for_new_result(state["result_id"], frames)
        front.lap("result")
        assert after["points"] == state["points"], (state["points"], after["points"])   # points survive the run
        assert after["result"]["size"] == [width, height], after
        assert after["result"]["pairs"] == state["points"], after
        if after["result"]["reused"] is not None:
            assert after["result"]["reused"]["lora"] == "memory", after   # same image: LoRA and inversion reused
        front.check_layout("after-run")
        front.shot("03-result")
        targets = [ARTIFACTS / f"{server.front_end}-widget.png"]
        if server.front_end == "lab" and os.environ.get(SCREENSHOT_ENV):
            targets.append(os.environ[SCREENSHOT_ENV])
        front.widget_picture(targets)
        if gif:
            size_bytes = save_gif(frames, page.screenshot(clip=front.root_clip()), gif)
            print(f"GIF: {len(frames)} frames of the run + the final one, {size_bytes} bytes -> {gif}")
        front.assert_no_problems()


TAKEN_BY_NOTEBOOK7 = ("m", "x", "z", "y")

# What the kernel says of the live previews shown: each one's pairs, and whether the last one is the
# scripted FastDrag edit of the committed pair with the preview's settings.
LIVE_STATE = """import json as _json, numpy as _np
from dragwidget import DragRequest as _Request
assert widget.controller.live.wait_idle(60)
_shown = widget.controller.live_shown
_config = widget._config(widget.editor).replace(method="fastdrag", fastdrag_inference_steps=widget.preview_steps,
    fastdrag_inversion_strength=widget.preview_strength, fastdrag_lora_steps=0, preview_every=0)
_mask = widget.mask if widget.mask.any() else None
_scripted = widget.editor.run(_Request(widget.image, widget.points, _mask, widget.prompt, _config)) if widget.points else None
print(_json.dumps({"shown": [[p.to_dict() for p in s.preview.pairs] for s in _shown],
    "engine_seconds": [s.engine_seconds for s in _shown],
    "last_is_scripted": bool(_shown) and _scripted is not None
        and bool(_np.array_equal(_np.asarray(_shown[-1].preview.image), _np.asarray(_scripted.image))),
    "points": widget.points, "note": widget.progress.note}))
"""


def test_live_drag(server):
    with browser_page(server, "live") as front:
        page = front.page
        open_and_run_all(front, server, NOTEBOOK.name)
        # the notebook's pair and mask go; the live preview prepares the picture when the canvas is shown
        front.kernel("widget.points = []\nwidget.clear_mask()\nwidget.controller.live_shown.clear()\n"
                     "assert widget.controller.live.wait_idle(60), widget.progress.note\nprint(widget.progress.note)")
        state = front.state()
        size = width, height = state["size"]
        start = (round(0.33 * width), round(0.5 * height))           # the disc's centre
        end = (start[0] + round(0.15 * width), start[1])
        gif = os.environ.get(LIVE_GIF_ENV) if server.front_end == "lab" else None
        frames = [] if gif else None
        record = live_drag(front, start, end, size, steps=10, seconds=2.0, frames=frames)
        page.wait_for_timeout(1000)
        front.lap("live drag")
        during = {c["src"] for c in record["changes"] if record["pressed"] <= c["t"] <= record["released"]}
        live = json.loads(front.kernel(LIVE_STATE).strip().splitlines()[-1])
        front.shot("04-live-drag")
        assert len(during) >= 3, (record["changes"], live)           # the picture followed the pointer
        (pair,) = live["points"]
        for got, want in ((pair["handle"], start), (pair["target"], end)):
            assert abs(got[0] - want[0]) <= 1.5 and abs(got[1] - want[1]) <= 1.5, (pair, start, end)
        assert live["shown"][-1] == live["points"] and live["last_is_scripted"], live
        if gif:
            size_bytes = save_gif(frames, page.screenshot(clip=front.root_clip()), gif, frame_ms=200)
            print(f"live GIF: {len(frames)} frames + the final one, {size_bytes} bytes -> {gif}")
        # one undo removes the pair (Notebook 7 takes 'z' itself: the toolbar's undo button there)
        page.mouse.move(*front.canvas_position(width // 2, height // 4, size))
        if server.front_end == "notebook" or front.press("z"):
            page.locator(".dragwidget-undo").first.click()
            page.wait_for_timeout(500)
        assert front.state()["points"] == [], front.state()
        # the click-click mode is unchanged
        page.mouse.click(*front.canvas_position(*start, size))
        page.wait_for_timeout(300)
        page.mouse.click(*front.canvas_position(*end, size))
        page.wait_for_timeout(500)
        assert front.state()["points"] == [{"handle": list(start), "target": list(end)}], front.state()

PICTURE_NOTEBOOK = """from PIL import Image, ImageDraw
from dragwidget.widget import DragWidget

picture = Image.new("RGB", (512, 512), (222, 196, 120))
ImageDraw.Draw(picture).ellipse((156, 176, 316, 336), fill=(40, 90, 200))
widget = DragWidget(picture, model={model!r}, prompt="a blue disc on a yellow background")
widget"""


def test_own_picture_512(server):
    import nbformat

    name = "picture512.ipynb"
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"display_name": "Python 3 (ipykernel)",
                                                                 "language": "python", "name": "python3"}})
    notebook.cells = [nbformat.v4.new_code_cell(PICTURE_NOTEBOOK.format(model=server.model))]
    nbformat.write(notebook, str(server.root / name))
    with browser_page(server, "picture512") as front:
        page = front.page
        state = open_and_run_all(front, server, name)
        assert state["size"] == [512, 512] and state["result"] is None, state
        front.check_layout("before-run")          # the result shows its placeholder
        points = [{"handle": [236, 256], "target": [300, 256]}]
        front.kernel(f"widget.points = {points!r}")
        assert front.state()["points"] == points
        started = time.time()
        page.locator(".dragwidget-run").first.click()
        after = front.wait_for_new_result(None, timeout=900)   # LoRA, inversion, drag, verdict, feature maps
        front.lap("result")
        print(f"picture512 run: {time.time() - started:.1f} s")
        assert after["points"] == points, after                # points survive the run
        assert after["result"]["size"] == [512, 512], after
        front.check_layout("after-run")
        front.widget_picture([ARTIFACTS / f"{server.front_end}-picture512-widget.png"])
        front.assert_no_problems()
