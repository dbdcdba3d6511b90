"""The widget in a real browser: JupyterLab + Debian's Chromium driven by Playwright for Python.

Starts JupyterLab on 127.0.0.1, opens notebooks/quickstart.ipynb, runs every cell, clicks a
handle/target pair and paints a mask stroke on the canvas, presses Run, waits for the result, and
checks from the kernel's own state that the points (within 1 image pixel) and the mask arrived and
that the result exists. Screenshots are kept in test-artifacts/browser/; widget.png is the widget
alone after the run. To refresh the README's picture from this test:

    DRAGWIDGET_SCREENSHOT=docs/widget.png python3 -m pytest tests/test_browser_quickstart.py

Skipped, with the reason, when /usr/bin/chromium or the playwright / jupyterlab Python packages are
missing; when Chromium is present it runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dragwidget.loading import embedded_model_names

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_ENV = "DRAGWIDGET_SCREENSHOT"   # also save the widget's picture here (e.g. docs/widget.png)
SCREENSHOT_COLORS = 256                    # a palette PNG keeps docs/widget.png small
LONG = 240_000  # ms: generous, the machine may be busy


def _requirements():
    if not CHROMIUM.exists():
        pytest.skip(f"real-browser test SKIPPED: Debian's Chromium is not installed at {CHROMIUM} "
                    "(apt-get install chromium); the widget was not tested in a browser")
    for module, package in (("playwright.sync_api", "playwright"), ("jupyterlab", "jupyterlab")):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f"real-browser test SKIPPED: the Python package {package!r} is not installed "
                        f"(pip install {package}); the widget was not tested in a browser")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _model_env(env: dict, tiny_model_dir, tmp_path) -> str:
    """The notebook's own choice (embedded toy model); a fast tiny-model copy only where toy is missing."""
    env.pop("DRAGWIDGET_MODEL", None)
    if "toy" in embedded_model_names():
        return "toy"
    fast = shutil.copytree(tiny_model_dir, tmp_path / "fast_tiny_model")
    settings = json.loads((fast / "dragwidget_settings.json").read_text())
    (fast / "dragwidget_settings.json").write_text(json.dumps({**settings, "lora_steps": 2, "max_drag_steps": 3}))
    env["DRAGWIDGET_MODEL"] = str(fast)
    return str(fast)


def _write_lab_settings(folder: Path) -> None:
    """No news toast over the page, and every cell rendered (no windowing) so outputs are in the DOM."""
    settings = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for name, value in settings.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


@pytest.fixture
def jupyterlab(tmp_path, tiny_model_dir):
    _requirements()
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    # The CPU path, and one intra-op thread in the kernel (as conftest sets for the test process:
    # on a shared two-core machine torch's spin-waiting threads made the edit about 60x slower).
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    model = _model_env(env, tiny_model_dir, tmp_path)
    _write_lab_settings(tmp_path / "lab-settings")
    port = _free_port()
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen([
        sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--ServerApp.open_browser=False",
        "--ServerApp.allow_root=True", "--IdentityProvider.token=", "--ServerApp.password=",
        "--ServerApp.disable_check_xsrf=True", "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={tmp_path / 'lab-settings'}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
    ], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    log.flush()
                    pytest.fail("JupyterLab did not start:\n" + (tmp_path / "jupyterlab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url, model
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


# Runs `code` in the notebook's kernel and returns what it printed: the kernel's own state, read
# through the page (queued behind the cells, so it also waits for "run all" to finish).
KERNEL_EXEC = """async (code) => {
    const panel = window.jupyterapp.shell.currentWidget;
    await panel.sessionContext.ready;
    const future = panel.sessionContext.session.kernel.requestExecute({code, store_history: false});
    let text = '';
    future.onIOPub = (msg) => {
        const kind = msg.header.msg_type;
        if (kind === 'stream') text += msg.content.text;
        if (kind === 'error') text += 'KERNEL ERROR ' + msg.content.ename + ': ' + msg.content.evalue;
    };
    await future.done;
    return text;
}"""

STATE = """import json as _json
_w = widget
_m = _w.mask
_ys, _xs = _m.nonzero()
print(_json.dumps({
    "points": _w.points, "pending": _w.pending_handle, "scale": _w.display_scale, "size": list(_w.image.size),
    "mask_pixels": int(_m.sum()), "mask_box": [int(_xs.min()), int(_ys.min()), int(_xs.max()), int(_ys.max())] if _m.any() else None,
    "running": _w.running, "result": None if _w.result is None else {"size": list(_w.result.image.size), "steps": _w.result.steps,
    "pairs": [p.to_dict() for p in _w.result.pairs], "reused": _w.result.reused},
    "error": _w.error, "status": _w.status, "mode": _w.mode, "brush": _w.brush_radius}))
"""


def save_widget_picture(widget) -> None:
    """The widget alone (canvas with points and hatched mask, result panel) as a palette PNG, in
    test-artifacts/browser/widget.png and, when $DRAGWIDGET_SCREENSHOT names a path, there too."""
    from PIL import Image

    widget.scroll_into_view_if_needed()
    raw = ARTIFACTS / "widget-raw.png"
    widget.screenshot(path=str(raw), animations="disabled")
    with Image.open(raw) as picture:
        small = picture.convert("RGB").quantize(SCREENSHOT_COLORS, method=Image.Quantize.MEDIANCUT)
    raw.unlink()
    targets = [ARTIFACTS / "widget.png"] + ([Path(os.environ[SCREENSHOT_ENV])] if os.environ.get(SCREENSHOT_ENV) else [])
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        small.save(target, optimize=True)


def test_quickstart_widget_in_chromium(jupyterlab):
    from playwright.sync_api import sync_playwright

    url, model = jupyterlab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in [*ARTIFACTS.glob("*.png"), *ARTIFACTS.glob("*.log"), *ARTIFACTS.glob("*.json")]:
        old.unlink()
    began, timings = time.time(), {}

    def lap(name):
        timings[name] = round(time.time() - began, 1)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1500, "height": 2400})
        page.set_default_timeout(LONG)
        console = []
        page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))

        def kernel_state() -> dict:
            text = page.evaluate(KERNEL_EXEC, STATE)
            assert "KERNEL ERROR" not in text, text
            return json.loads(text.strip().splitlines()[-1])

        def shot(name):
            page.screenshot(path=str(ARTIFACTS / name), full_page=True)

        try:
            page.goto(f"{url}/lab/tree/{NOTEBOOK.name}")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.sessionContext", timeout=LONG)
            lap("lab loaded")
            page.evaluate("""async () => {
                const panel = window.jupyterapp.shell.currentWidget;
                await panel.sessionContext.ready;
                await panel.revealed;
            }""")
            lap("kernel ready")
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
            canvas_box = page.locator(".dragwidget-canvas")
            canvas_box.wait_for(state="visible", timeout=LONG)
            lap("widget shown")
            state = kernel_state()                       # returns once every cell has run
            lap("all cells ran")
            assert state["result"] is not None, state    # the notebook's scripted edit
            canvas_box.scroll_into_view_if_needed()
            shot("01-notebook-ran.png")

            # The image really is on the canvas (front end): MultiCanvas composites its layers into
            # one <canvas>, fully opaque where the image layer was drawn.
            painted = page.evaluate("""() => {
                const c = document.querySelector('canvas.dragwidget-canvas');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let opaque = 0; for (let i = 3; i < d.length; i += 4) if (d[i] === 255) opaque++;
                return {opaque, pixels: c.width * c.height};
            }""")
            assert painted["opaque"] == painted["pixels"], painted

            page.locator(".dragwidget-clear-points").click()
            page.locator(".dragwidget-clear-mask").click()
            page.wait_for_timeout(500)
            state = kernel_state()
            assert state["points"] == [] and state["mask_pixels"] == 0, state
            width, height = state["size"]
            scale = state["scale"]

            def at(x, y):
                """CSS position of image pixel (x, y)'s centre, from the canvas's measured box."""
                canvas_box.scroll_into_view_if_needed()
                box = canvas_box.bounding_box()
                css_per_buffer = box["width"] / round(width * scale)
                return (box["x"] + (x + 0.5) * scale * css_per_buffer,
                        box["y"] + (y + 0.5) * scale * css_per_buffer)

            def pixels(xy):
                """The canvas pixels of image pixel `xy` (the hatched overlay covers only part of each)."""
                side = max(1, int(scale))
                return page.evaluate("""([x, y, side]) => Array.from(document.querySelector('canvas.dragwidget-canvas')
                    .getContext('2d').getImageData(x, y, side, side).data)""",
                    [int(xy[0] * scale), int(xy[1] * scale), side])

            probe = (round(width * 0.6), round(height * 0.55))   # on the stroke, away from the arrow
            before = pixels(probe)
            handle = (round(width * 0.3), round(height * 0.5))
            target = (round(width * 0.55), round(height * 0.45))
            page.mouse.click(*at(*handle))
            page.wait_for_timeout(300)
            page.mouse.click(*at(*target))
            page.wait_for_timeout(300)

            # mask brush by hotkey (pointer over the image), then an L-shaped stroke: its corner is
            # only painted if the throttled pointer moves arrive (the press and release alone would
            # paint the straight line between them)
            start, corner, end = ((round(width * 0.2), round(height * 0.55)), (round(width * 0.7), round(height * 0.55)),
                                  (round(width * 0.7), round(height * 0.85)))
            off_stroke = (round(width * 0.45), round(height * 0.7))
            page.mouse.move(*at(*start))
            page.keyboard.press("m")
            page.wait_for_timeout(500)
            page.mouse.down()
            for (ax, ay), (bx, by) in ((start, corner), (corner, end)):
                for i in range(1, 11):
                    page.mouse.move(*at(ax + (bx - ax) * i / 10, ay + (by - ay) * i / 10))
                    page.wait_for_timeout(40)
            page.mouse.up()
            page.wait_for_timeout(800)
            shot("02-points-and-mask.png")

            state = kernel_state()
            assert state["mode"] == "mask", state           # the hotkey arrived
            assert len(state["points"]) == 1, state
            pair = state["points"][0]
            for got, want in ((pair["handle"], handle), (pair["target"], target)):
                assert abs(got[0] - want[0]) <= 1 and abs(got[1] - want[1]) <= 1, (pair, handle, target)
            box = state["mask_box"]
            radius = state["brush"]
            assert box is not None, state
            assert abs(box[0] - (start[0] - radius)) <= 2 and abs(box[2] - (corner[0] + radius)) <= 2, (box, radius)
            assert abs(box[1] - (start[1] - radius)) <= 2 and abs(box[3] - (end[1] + radius)) <= 2, (box, radius)
            values = json.loads(page.evaluate(KERNEL_EXEC, "import json; print(json.dumps([bool(widget.mask[y, x]) for x, y in %r]))"
                                              % [start, corner, end, off_stroke]))
            assert values == [True, True, True, False], values

            # The overlay reached the front end too: the canvas changed colour under the stroke.
            after = pixels(probe)
            assert after != before, (before, after)

            lap("points and stroke checked")
            page.locator(".dragwidget-run").click()
            deadline = time.time() + LONG / 1000
            while True:
                state = kernel_state()
                if not state["running"] and state["result"] is not None and state["result"]["pairs"] == state["points"]:
                    break
                assert not state["error"], state
                assert time.time() < deadline, f"no result in time: {state}"
                page.wait_for_timeout(1000)
            page.locator(".dragwidget-result").scroll_into_view_if_needed()
            page.wait_for_timeout(800)
            lap("result")
            shot("03-result.png")
            save_widget_picture(page.locator(".dragwidget").first)
            assert state["result"]["size"] == [width, height]
            assert state["result"]["reused"]["lora"] == "memory", state  # same image: LoRA and inversion reused
            assert "reused from the previous run" in page.locator(".dragwidget-status").inner_text()
        except Exception:
            shot("99-failure.png")
            (ARTIFACTS / "console.log").write_text("\n".join(console))
            raise
        finally:
            (ARTIFACTS / "timings.json").write_text(json.dumps({"model": model, "seconds": timings}, indent=1))
            browser.close()
