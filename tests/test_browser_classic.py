"""The widget on the front-end stack closest to Google Colab's: classic Notebook 6.5 with ipywidgets
7.8, in a real browser (Debian's Chromium through Playwright) at 1280x800.

The old stack lives in a virtual environment this test makes (`--system-site-packages`: torch,
diffusers and the rest come from this environment; ipywidgets 7.8.5, widgetsnbextension 3,
notebook 6.5.7 and the widget libraries' classic-notebook files are installed into it), then
`pip install .` of this checkout, which must keep ipywidgets 7. A notebook showing
`DragWidget(picture, model="toy")` is run there; two clicks make a pair at the right pixels, the
Mask button and a pressed stroke paint the mask, the Run button gives a result and a verdict, and
a feature explorer of the run's feature maps renders its grid. Everything is read back from the
kernel. The mouse comes from ipycanvas's events (ipyevents' classic-notebook files are missing from
its 2.0.4 wheel, mwcraig/ipyevents#91: there the hotkeys are off and the help line says so).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from browser_harness import ARTIFACTS, CHROMIUM, LONG, POLL, VIEWPORT, _free_port, launch, wait_for_server

ROOT = Path(__file__).resolve().parents[1]
OLD_STACK = ("ipywidgets==7.8.5", "notebook==6.5.7")

NOTEBOOK = """import numpy as np
from PIL import Image, ImageDraw
from dragwidget.widget import DragWidget

picture = Image.new("RGB", (64, 64), (200, 225, 240))
ImageDraw.Draw(picture).ellipse((12, 23, 30, 41), fill=(235, 80, 60))
widget = DragWidget(picture, model="toy", prompt="a red disc on a sky background")
widget"""

# The kernel's state, as JSON on its last line.
STATE = """import json as _json, ipywidgets as _ipw
_w = widget
print(_json.dumps({"ipywidgets": _ipw.__version__, "points": _w.points, "mask_pixels": int(_w.mask.sum()),
    "running": bool(_w.running), "error": _w.error, "mode": _w.mode,
    "result": None if _w.result is None else {"size": list(_w.result.image.size), "says": _w.result.says},
    "features": _w.feature_maps is not None, "input": _w.canvas.input.describe()}))
"""

KERNEL_EXEC = """(code) => new Promise((resolve) => {
    let text = '';
    Jupyter.notebook.kernel.execute(code, {
        iopub: {output: (msg) => {
            if (msg.msg_type === 'stream') text += msg.content.text;
            if (msg.msg_type === 'error') text += 'KERNEL ERROR ' + msg.content.ename + ': ' + msg.content.evalue;
        }},
        shell: {reply: () => setTimeout(() => resolve(text), 200)},
    }, {silent: false, store_history: false});
})"""


def _run(command, **kwargs):
    done = subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def classic(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"real-browser test SKIPPED: Debian's Chromium is not installed at {CHROMIUM}")
    pytest.importorskip("playwright.sync_api", reason="real-browser test SKIPPED: playwright is not installed")
    import ipycanvas
    import ipyevents

    work = tmp_path_factory.mktemp("classic")
    venv = work / "ipywidgets7"
    _run([sys.executable, "-m", "venv", "--system-site-packages", venv])
    python = venv / "bin" / "python"
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run(pip + list(OLD_STACK))
    # the widget libraries again inside the venv, so that their classic-notebook files are in its prefix
    _run(pip + ["--no-deps", "--force-reinstall", f"ipycanvas=={ipycanvas.__version__}",
                f"ipyevents=={ipyevents.__version__}"])
    _run(pip + [ROOT])
    versions = json.loads(_run([python, "-c", "import json, ipywidgets, notebook, dragwidget; print(json.dumps("
                                "[ipywidgets.__version__, notebook.__version__, dragwidget.__file__]))"]))
    root = work / "root"
    root.mkdir()
    import nbformat

    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": {"display_name": "Python 3", "language": "python",
                                                                 "name": "python3"}})
    notebook.cells = [nbformat.v4.new_code_cell(NOTEBOOK)]
    nbformat.write(notebook, str(root / "classic.ipynb"))
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("JUPYTER")}
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
               JUPYTER_CONFIG_DIR=str(work / "config"), JUPYTER_DATA_DIR=str(work / "data"),
               JUPYTER_RUNTIME_DIR=str(work / "runtime"))
    log = open(work / "server.log", "w")
    server = subprocess.Popen([python, "-m", "notebook", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                               "--allow-root", "--NotebookApp.token=", "--NotebookApp.password=",
                               "--NotebookApp.disable_check_xsrf=True", f"--notebook-dir={root}"],
                              cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for_server(url, server, work / "server.log", "classic notebook", server.kill)
    try:
        yield {"url": url, "versions": versions, "venv": venv}
    finally:
        server.terminate()
        server.wait(30)
        log.close()
        shutil.rmtree(venv, ignore_errors=True)


def test_pip_install_keeps_ipywidgets_7(classic):
    ipywidgets_version, notebook_version, installed = classic["versions"]
    assert ipywidgets_version == "7.8.5" and notebook_version.startswith("6.5")
    assert str(classic["venv"]) in installed              # this checkout, installed into the old stack


def test_classic_notebook_clicks_paints_runs_and_reads_back(classic):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page()
        page.set_viewport_size(VIEWPORT)
        page.set_default_timeout(LONG)
        try:
            page.goto(f"{classic['url']}/notebooks/classic.ipynb")
            page.wait_for_function("() => window.Jupyter && Jupyter.notebook && Jupyter.notebook.kernel"
                                   " && Jupyter.notebook.kernel.is_connected()", polling=POLL)
            page.evaluate("() => Jupyter.notebook.execute_all_cells()")
            page.locator("canvas.dragwidget-canvas").first.wait_for(state="visible")
            kernel = lambda code: _checked(page.evaluate(KERNEL_EXEC, code))
            state = lambda: json.loads(kernel(STATE).strip().splitlines()[-1])
            page.wait_for_function("() => Jupyter.notebook.get_cell(0).input_prompt_number", polling=POLL)
            page.wait_for_timeout(1000)
            before = state()
            assert before["ipywidgets"] == "7.8.5" and before["points"] == [], before

            canvas = page.locator("canvas.dragwidget-canvas").first
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            at = lambda x, y: (box["x"] + (x + 0.5) * box["width"] / 64, box["y"] + (y + 0.5) * box["height"] / 64)
            page.mouse.click(*at(21, 32))
            page.wait_for_timeout(400)
            page.mouse.click(*at(31, 32))
            page.wait_for_timeout(600)
            after_clicks = state()
            (pair,) = after_clicks["points"]
            for got, want in ((pair["handle"], (21, 32)), (pair["target"], (31, 32))):
                assert abs(got[0] - want[0]) <= 1 and abs(got[1] - want[1]) <= 1, after_clicks

            page.locator(".dragwidget-toolbar .widget-toggle-button", has_text="Mask").first.click()
            page.wait_for_timeout(400)
            page.mouse.move(*at(14, 26))
            page.mouse.down()
            for x in range(15, 40, 2):
                page.mouse.move(*at(x, 32))
                page.wait_for_timeout(30)
            page.mouse.up()
            page.wait_for_timeout(600)
            painted = state()
            assert painted["mode"] == "mask" and painted["mask_pixels"] > 30, painted
            assert painted["points"] == after_clicks["points"], painted
            assert "mouse: ipycanvas" in painted["input"], painted

            page.locator(".dragwidget-run").first.click()
            deadline = time.time() + 300
            while True:
                page.wait_for_timeout(1000)
                ran = state()
                if not ran["running"] and ran["result"] is not None and ran["features"]:
                    break
                assert not ran["error"] and time.time() < deadline, ran
            assert ran["result"]["size"] == [64, 64] and ran["result"]["says"], ran
            result_box = _shown_result_box(page, kernel)
            assert abs(result_box[0] - result_box[1]) <= 2 and result_box[0] >= 300, result_box   # not squeezed

            # the feature explorer of the run's maps, in a new cell: its grid is drawn
            page.evaluate("""() => { const cell = Jupyter.notebook.insert_cell_at_bottom('code');
                cell.set_text('from dragwidget.widget.correspondence import CorrespondenceExplorer\\n'
                              + 'explorer = CorrespondenceExplorer(widget.feature_maps)\\nexplorer');
                cell.execute(); }""")
            page.wait_for_function("() => Jupyter.notebook.get_cell(1).input_prompt_number"
                                   " && document.querySelectorAll('canvas').length >= 3", polling=POLL)
            page.wait_for_timeout(1500)
            drawn = page.evaluate("""() => Array.from(document.querySelectorAll('canvas')).slice(-2).map((c) => {
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let opaque = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) opaque++;
                return opaque; })""")
            assert all(count > 0 for count in drawn), drawn           # both of the explorer's canvases are drawn
            grid = kernel("print(len(explorer.maps.blocks), explorer.maps.grid)")
            assert grid.strip(), grid
            page.screenshot(path=str(ARTIFACTS / "classic-run.png"), full_page=True)
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "classic-99-failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def _shown_result_box(page, kernel) -> list:
    """The result picture's box on the page once it has loaded (a new value is a new blob the <img> loads)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return page.wait_for_function("""() => { const img = Array.from(document.querySelectorAll(
            '.dragwidget-result')).find((e) => e.complete && e.naturalWidth > 0);
            if (!img) return null; const r = img.getBoundingClientRect(); return [r.width, r.height]; }""",
                                      polling=POLL, timeout=60_000).json_value()
    except PlaywrightTimeout:
        page_side = page.evaluate("""() => ({visibility: document.visibilityState, images: Array.from(
            document.querySelectorAll('.dragwidget-result')).map((e) => ({src: e.src.slice(0, 60), complete: e.complete,
            natural: [e.naturalWidth, e.naturalHeight], box: [e.clientWidth, e.clientHeight]}))})""")
        kernel_side = kernel("_v = widget.results.edited_view.value; print(len(_v), bytes(_v[:8]))")
        raise AssertionError(f"no result picture loaded within 60 s: page {page_side}, kernel {kernel_side}") from None


def _checked(text: str) -> str:
    assert "KERNEL ERROR" not in text, text
    return text
