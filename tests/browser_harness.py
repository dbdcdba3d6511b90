"""Shared harness of the real-browser tests (tests/test_browser_quickstart.py): a Jupyter server
(JupyterLab or Notebook 7), Debian's Chromium driven by Playwright, and helpers that talk to the
page and to the notebook's kernel. Facts it relies on, checked on this machine:

* both front ends expose `window.jupyterapp` with their own `expose_app_in_browser` flag
  (`LabApp.` / `JupyterNotebookApp.`), and both have the command `notebook:run-all-cells`;
  `shell.currentWidget` is the notebook panel in both;
* the settings API (/lab/api/settings) of a Notebook 7 server is the jupyterlab extension's, which
  ignores `--JupyterNotebookApp.user_settings_dir`: the settings folder is given to both front ends
  with $JUPYTERLAB_SETTINGS_DIR (Notebook 7's default windowing is "contentVisibility", Lab 4.6's
  too, so "none" must be set to have every output in the DOM);
* JupyterLab opens with the file browser on the left (the right area collapsed); Notebook 7 opens
  with both side areas collapsed. `shell.collapseLeft()/collapseRight()` and
  `shell.leftCollapsed/rightCollapsed` exist in both.
* JupyterLab handles shortcut keys in the bubbling phase (`bubblingKeydown: true`), so a widget
  that stops a key (ipyevents' prevent_default_action) keeps it; Notebook 7 starts its app without
  that option and handles them in the capture phase, before the widget: in command mode 'm' turns
  the widget's cell into Markdown (its output, the widget, is gone). Lumino skips shortcuts whose
  target is inside an element with the attribute `data-lm-suppress-shortcuts`. `Front.press` tells.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
LONG = 300_000  # ms: generous, the machine may be busy
# ms between checks of a waited-for condition. Playwright's default waits for the next animation
# frame, and headless Chromium may stop producing frames: the condition would then go unchecked
POLL = 250
VIEWPORT = {"width": 1280, "height": 800}
FRONT_ENDS = {  # module to run, its app's config name, the URL of a notebook
    "lab": ("jupyterlab", "LabApp", "/lab/tree/{}?reset"),
    "notebook": ("notebook", "JupyterNotebookApp", "/notebooks/{}"),
}


def requirements(front_end: str) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"real-browser test SKIPPED: Debian's Chromium is not installed at {CHROMIUM} "
                    "(apt-get install chromium); the widget was not tested in a browser")
    module = FRONT_ENDS[front_end][0]
    for name, package in (("playwright.sync_api", "playwright"), (module, "notebook>=7" if module == "notebook" else module)):
        try:
            imported = __import__(name)
        except ImportError:
            pytest.skip(f"real-browser test SKIPPED: the Python package {package!r} is not installed "
                        f"(pip install '{package}'); the widget was not tested in {front_end}")
        if name == "notebook" and int(imported.__version__.split(".")[0]) < 7:
            pytest.skip(f"real-browser test SKIPPED: notebook {imported.__version__} is installed, the test needs "
                        "Notebook 7 (pip install 'notebook>=7')")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_settings(folder: Path) -> None:
    """No news toast over the page, and every cell rendered (no windowing) so outputs are in the DOM."""
    settings = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for name, value in settings.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


def wait_for_server(url: str, process: subprocess.Popen, log_path: Path, what: str, give_up, seconds: float = 180):
    """Until the Jupyter server at `url` answers; when it dies or takes too long, `give_up()` and
    fail with the end of its log."""
    deadline = time.time() + seconds
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=5).read()
            return
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                give_up()
                pytest.fail(f"{what} did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.5)


class JupyterServer:
    """`python -m jupyterlab` or `python -m notebook` on 127.0.0.1, no token, serving `root`."""

    def __init__(self, front_end: str, root: Path, work: Path, env: dict):
        module, app, self._url_pattern = FRONT_ENDS[front_end]
        self.front_end, self.root = front_end, root
        _write_settings(work / "settings")
        env = dict(env, JUPYTER_RUNTIME_DIR=str(work / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(work / "settings"),
                   JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"))
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = work / f"{front_end}-server.log"
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen([
            sys.executable, "-m", module, f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--ServerApp.open_browser=False",
            "--ServerApp.allow_root=True", "--IdentityProvider.token=", "--ServerApp.password=",
            "--ServerApp.disable_check_xsrf=True", f"--{app}.expose_app_in_browser=True",
        ], cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for_server(self.url, self.process, self.log_path, module, self.close)

    def notebook_url(self, name: str) -> str:
        return self.url + self._url_pattern.format(name)

    def shutdown_kernels(self) -> None:
        """Frees the CPU between scenarios: the previous notebook's kernel would keep its threads."""
        try:
            kernels = json.loads(urllib.request.urlopen(f"{self.url}/api/kernels", timeout=30).read())
            for kernel in kernels:
                request = urllib.request.Request(f"{self.url}/api/kernels/{kernel['id']}", method="DELETE")
                urllib.request.urlopen(request, timeout=60).read()
        except OSError:
            pass

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


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

# The widget's state as JSON (getattr: optional traits may be renamed by a rewrite of the widget).
STATE = """import json as _json
_w = widget
_m = _w.mask
_ys, _xs = _m.nonzero() if _m is not None else ((), ())
print(_json.dumps({
    "points": _w.points, "size": list(_w.image.size), "running": bool(_w.running), "error": _w.error,
    "mask_pixels": int(_m.sum()) if _m is not None else 0,
    "mask_box": [int(_xs.min()), int(_ys.min()), int(_xs.max()), int(_ys.max())] if len(_xs) else None,
    "result_id": None if _w.result is None else id(_w.result),
    "result": None if _w.result is None else {"size": list(_w.result.image.size), "steps": _w.result.steps,
              "pairs": [p.to_dict() for p in _w.result.pairs], "reused": getattr(_w.result, "reused", None)},
    "mode": getattr(_w, "mode", None), "brush": getattr(_w, "brush_radius", None), "status": getattr(_w, "status", "")}))
"""

# Where every cell stands: code cells without an execution count, and error outputs.
CELLS = """() => {
    const cells = window.jupyterapp.shell.currentWidget.content.model.cells;
    const out = {code: 0, unrun: [], errors: []};
    for (let i = 0; i < cells.length; i++) {
        const cell = cells.get(i);
        if (cell.type !== 'code') continue;
        out.code++;
        if (!cell.executionCount) out.unrun.push(i);
        for (let j = 0; j < cell.outputs.length; j++) {
            const o = cell.outputs.get(j).toJSON();
            if (o.output_type === 'error') out.errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
        }
    }
    return out;
}"""

# The part of the viewport where element `e` can be seen: the viewport cut by every ancestor that
# clips its overflow (e.g. the notebook's own scroller, which ends above the status bar); `by` names them.
VISIBLE = """(e) => {
    let v = {x: 0, y: 0, right: window.innerWidth, bottom: window.innerHeight}, by = [];
    for (let a = e.parentElement; a && a !== document.body; a = a.parentElement) {
        const s = getComputedStyle(a), r = a.getBoundingClientRect();
        if (s.display === 'contents' || [s.overflowX, s.overflowY].every((o) => o === 'visible')) continue;
        if (r.x > v.x || r.y > v.y || r.right < v.right || r.bottom < v.bottom) by.push(a.className || a.tagName);
        v = {x: Math.max(v.x, r.x), y: Math.max(v.y, r.y), right: Math.min(v.right, r.right), bottom: Math.min(v.bottom, r.bottom)};
    }
    return {x: v.x, y: v.y, width: v.right - v.x, height: v.bottom - v.y, by: by.join(' | ')};
}"""

# Scrolls the widget's root to the top of its scrollers, then measures it and its parts: their boxes,
# DOM containment, and where each can be seen.
LAYOUT = """() => {
    const visible = VISIBLE;
    const root = document.querySelector('.dragwidget');
    if (!root) return {error: 'no .dragwidget in the page'};
    root.scrollIntoView({block: 'start', inline: 'start'});
    const box = (e) => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, width: r.width, height: r.height}; };
    const out = {viewport: {width: window.innerWidth, height: window.innerHeight}, root: box(root), parts: {}};
    for (const name of ['canvas', 'run', 'result']) {
        const all = Array.from(document.querySelectorAll('.dragwidget-' + name));
        const e = all.find((x) => root.contains(x)) || all[0];
        out.parts[name] = e ? {box: box(e), visible: visible(e), inside_root: root.contains(e), tag: e.tagName.toLowerCase(), count: all.length} : null;
    }
    return out;
}""".replace("VISIBLE", VISIBLE)

# The root scrolled to the top, and the part of it that can be seen (for screenshots of the widget alone).
ROOT_CLIP = """() => {
    const visible = VISIBLE;
    const root = document.querySelector('.dragwidget');
    root.scrollIntoView({block: 'start', inline: 'start'});
    const r = root.getBoundingClientRect(), v = visible(root);
    const x = Math.max(r.x, v.x), y = Math.max(r.y, v.y);
    return {x, y, width: Math.min(r.right, v.x + v.width) - x, height: Math.min(r.bottom, v.y + v.height) - y};
}""".replace("VISIBLE", VISIBLE)


def layout_problems(layout: dict, slack: float = 4) -> list:
    """What breaks the one-screen layout: every part in the root, entirely inside the viewport
    together (and not cut by more than `slack` px by a clipping ancestor such as the notebook's
    scroller), and the result to the right of the canvas (`slack` px overlap allowed). [] when all holds."""
    if "error" in layout:
        return [layout["error"]]
    problems, parts = [], layout["parts"]
    width, height = layout["viewport"]["width"], layout["viewport"]["height"]
    for name, part in parts.items():
        if part is None:
            problems.append(f".dragwidget-{name} is not in the page")
            continue
        b, v = part["box"], part["visible"]
        if not part["inside_root"]:
            problems.append(f".dragwidget-{name} is not inside .dragwidget")
        if b["width"] <= 0 or b["height"] <= 0:
            problems.append(f".dragwidget-{name} has an empty box {b}")
        if b["x"] < -0.5 or b["y"] < -0.5 or b["x"] + b["width"] > width + 0.5 or b["y"] + b["height"] > height + 0.5:
            problems.append(f".dragwidget-{name} {b} is not entirely inside the {width}x{height} viewport")
        elif (b["x"] < v["x"] - slack or b["y"] < v["y"] - slack or b["x"] + b["width"] > v["x"] + v["width"] + slack
              or b["y"] + b["height"] > v["y"] + v["height"] + slack):
            problems.append(f".dragwidget-{name} {b} is inside the viewport but more than {slack} px of it are cut "
                            f"by an ancestor that clips (visible area {v})")
    canvas, result = parts.get("canvas"), parts.get("result")
    if canvas and result and result["box"]["x"] < canvas["box"]["x"] + canvas["box"]["width"] - slack:
        problems.append(f"the result (x={result['box']['x']:.0f}) is not to the right of the canvas "
                        f"(right edge {canvas['box']['x'] + canvas['box']['width']:.0f})")
    return problems


def launch(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"])


class Front:
    """One page of a front end showing one notebook, with its kernel reachable through the page."""

    def __init__(self, page, front_end: str, prefix: str):
        self.page, self.front_end, self.prefix = page, front_end, prefix
        self.console = []
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        self.began, self.timings = time.time(), {}
        self.problems = []   # soft failures (layout, hotkeys), reported together at the end

    def lap(self, name: str) -> None:
        self.timings[name] = round(time.time() - self.began, 1)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{self.prefix}-{name}.png"))

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                    " && window.jupyterapp.shell.currentWidget.sessionContext", timeout=LONG,
                                    polling=POLL)
        self.page.evaluate("""async () => {
            const panel = window.jupyterapp.shell.currentWidget;
            await panel.sessionContext.ready;
            await panel.revealed;
        }""")
        self.lap("notebook open, kernel ready")

    def collapse_side_areas(self) -> dict:
        """Collapses the left and right areas; returns what the shell and the DOM say afterwards."""
        self.page.evaluate("""() => { const s = window.jupyterapp.shell;
            if (!s.leftCollapsed) s.collapseLeft(); if (!s.rightCollapsed) s.collapseRight(); }""")
        self.page.wait_for_function("""() => { const s = window.jupyterapp.shell;
            const shown = (id) => { const e = document.getElementById(id); return !!e && e.getBoundingClientRect().width > 0; };
            return s.leftCollapsed && s.rightCollapsed && !shown('jp-left-stack') && !shown('jp-right-stack'); }""",
                                    polling=POLL)
        return self.page.evaluate("""() => ({left: window.jupyterapp.shell.leftCollapsed, right: window.jupyterapp.shell.rightCollapsed,
            panel: window.jupyterapp.shell.currentWidget.node.getBoundingClientRect().toJSON()})""")

    def run_all(self) -> dict:
        """Runs every cell (the command both front ends have) and returns once the kernel has run them."""
        assert self.page.evaluate("() => window.jupyterapp.commands.hasCommand('notebook:run-all-cells')")
        self.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        self.page.locator(".dragwidget").first.wait_for(state="attached", timeout=LONG)
        self.lap("widget shown")
        self.kernel("pass")  # queued behind the cells
        self.page.wait_for_function(f"() => ((r) => r.unrun.length === 0 || r.errors.length > 0)(({CELLS})())", timeout=LONG,
                                    polling=POLL)
        cells = self.page.evaluate(CELLS)
        self.lap("all cells ran")
        assert not cells["errors"], cells
        return cells

    def press(self, key: str) -> list:
        """Presses `key` (pointer where it is) and returns the commands the front end ran on it: []
        when the widget got the key. Notebook 7 handles keydown in the capture phase (its app starts
        without JupyterLab's `bubblingKeydown: true`), so in command mode its shortcuts ('m' cell to
        Markdown, Enter edit mode, 'x' cut cell, ...) run before the widget sees the key. When that
        removed the widget's output, the widget is displayed again in a new cell below."""
        self.page.evaluate("""() => { window.__ranOnKey = [];
            if (!window.__watchingCommands) { window.__watchingCommands = true;
                window.jupyterapp.commands.commandExecuted.connect((_, args) => window.__ranOnKey.push(args.id)); } }""")
        self.page.keyboard.press(key)
        self.page.wait_for_timeout(700)
        ran = self.page.evaluate("() => window.__ranOnKey")
        if ran and not self.page.locator(".dragwidget-canvas").count():
            self.page.evaluate("""async () => { const app = window.jupyterapp;
                await app.commands.execute('notebook:enter-command-mode');
                await app.commands.execute('notebook:insert-cell-below');
                app.shell.currentWidget.content.activeCell.model.sharedModel.setSource('widget');
                await app.commands.execute('notebook:run-cell'); }""")
            self.page.locator(".dragwidget-canvas").first.wait_for(state="visible", timeout=LONG)
            self.page.wait_for_timeout(1000)
        return ran

    def kernel(self, code: str) -> str:
        text = self.page.evaluate(KERNEL_EXEC, code)
        assert "KERNEL ERROR" not in text, text
        return text

    def state(self) -> dict:
        return json.loads(self.kernel(STATE).strip().splitlines()[-1])

    def check_layout(self, name: str) -> None:
        """Measures the layout (root scrolled to the top), keeps it in the artifacts, adds its problems
        (with the boxes) to self.problems."""
        self.page.evaluate(LAYOUT)
        self.page.wait_for_timeout(300)   # let the scroll settle, then measure again
        layout = self.page.evaluate(LAYOUT)
        problems = layout_problems(layout)
        (ARTIFACTS / f"{self.prefix}-layout-{name}.json").write_text(json.dumps({**layout, "problems": problems}, indent=1))
        self.shot(f"layout-{name}")
        self.problems += [f"{self.front_end}, {name}: {p}" for p in problems] + (
            [f"{self.front_end}, {name}: boxes {json.dumps(layout)}"] if problems else [])

    def assert_no_problems(self) -> None:
        assert not self.problems, "the one-screen layout or the hotkeys do not hold:\n" + "\n".join(self.problems)

    def root_clip(self) -> dict:
        """The widget's root scrolled to the top: the part of it that can be seen, as a screenshot clip."""
        self.page.evaluate(ROOT_CLIP)
        self.page.wait_for_timeout(200)
        return self.page.evaluate(ROOT_CLIP)

    def canvas_position(self, x: float, y: float, size) -> tuple:
        """CSS position of the centre of image pixel (x, y) on the CSS-scaled canvas."""
        canvas = self.page.locator(".dragwidget-canvas").first
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        return box["x"] + (x + 0.5) * box["width"] / size[0], box["y"] + (y + 0.5) * box["height"] / size[1]

    def wait_for_new_result(self, old_id, frames: list = None, every: float = 0.4, timeout: float = LONG / 1000) -> dict:
        """Polls the kernel until a run other than `old_id`'s has ended (result and feature maps);
        with `frames`, screenshots of the widget every `every` s meanwhile (PNG bytes)."""
        clip = self.root_clip() if frames is not None else None
        deadline, polled = time.time() + timeout, 0.0
        while True:
            if frames is not None:
                frames.append(self.page.screenshot(clip=clip))
            if time.time() - polled >= 1.0 or frames is None:
                polled = time.time()
                state = self.state()
                if not state["running"] and state["result_id"] not in (None, old_id):
                    return state
                assert not state["error"], state
                assert time.time() < deadline, f"no result in time: {state}"
            self.page.wait_for_timeout(every * 1000 if frames is not None else 1000)

    def widget_picture(self, targets) -> None:
        """The widget alone (its root scrolled to the top, as much of it as can be seen) as a palette
        PNG (small) at each of `targets`."""
        from PIL import Image

        picture = Image.open(io.BytesIO(self.page.screenshot(clip=self.root_clip(), animations="disabled"))).convert("RGB")
        small = picture.quantize(256, method=Image.Quantize.MEDIANCUT)
        for target in targets:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            small.save(target, optimize=True)

    def save_failure(self) -> None:
        """A screenshot and the browser's console; the soft failures found so far printed."""
        if self.problems:
            print("soft failures (layout, hotkeys) so far:\n" + "\n".join(self.problems))
        try:
            self.shot("99-failure")
        finally:
            (ARTIFACTS / f"{self.prefix}-console.log").write_text("\n".join(self.console))


def save_gif(frames: list, final: bytes, target, width: int = 800, frame_ms: int = 400, final_ms: int = 3000,
             budget: int = 1_500_000) -> int:
    """An animated GIF of the run: `frames` (PNG bytes) then `final` held longer, at most `width` px
    wide, one shared palette; every other frame dropped until it fits `budget` bytes. Returns its size."""
    from PIL import Image

    def load(data):
        picture = Image.open(io.BytesIO(data)).convert("RGB")
        if picture.width > width:
            picture = picture.resize((width, round(picture.height * width / picture.width)), Image.LANCZOS)
        return picture

    last = load(final)
    palette = last.quantize(255, method=Image.Quantize.MEDIANCUT)
    pictures = [load(f).resize(last.size) for f in frames]
    step = 1
    while True:
        chosen = pictures[::step] + [last]
        durations = [frame_ms * step] * (len(chosen) - 1) + [final_ms]
        quantized = [p.quantize(palette=palette, dither=Image.Dither.NONE) for p in chosen]
        buffer = io.BytesIO()
        quantized[0].save(buffer, format="GIF", save_all=True, append_images=quantized[1:], duration=durations, loop=0)
        if buffer.tell() <= budget or len(chosen) <= 2:
            break
        step *= 2
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_bytes(buffer.getvalue())
    return buffer.tell()


# Watches the result picture and the pointer: every change of the result's <img> and every pointer
# move, with a wall clock in ms (the kernel's time.time() can be compared with it).
WATCH_LIVE = """() => {
    const now = () => performance.timeOrigin + performance.now();
    window.__live = {moves: [], changes: []};
    if (window.__watchingLive) return;
    window.__watchingLive = true;
    const img = Array.from(document.querySelectorAll('.dragwidget-result')).pop();
    new MutationObserver(() => window.__live.changes.push({t: now(), src: img.src}))
        .observe(img, {attributes: true, attributeFilter: ['src']});
    document.addEventListener('mousemove', (e) => window.__live.moves.push({t: now(), x: e.clientX, y: e.clientY}),
                              true);
}"""
NOW = "() => performance.timeOrigin + performance.now()"


def live_drag(front: Front, start, end, size, steps: int = 10, seconds: float = 2.0, frames: list = None) -> dict:
    """Press at image pixel `start`, move to `end` in `steps` even moves over `seconds`, release;
    returns the page's record: pointer moves, result changes, when the press and the release
    happened (ms, a wall clock) and the canvas's box. With `frames`, a screenshot of the widget after every move."""
    page = front.page
    page.evaluate(WATCH_LIVE)
    at = lambda x, y: front.canvas_position(x, y, size)
    clip = front.root_clip() if frames is not None else None
    page.mouse.move(*at(*start))
    pressed = page.evaluate(NOW)
    page.mouse.down()
    for i in range(1, steps + 1):
        began = time.time()
        page.mouse.move(*at(start[0] + (end[0] - start[0]) * i / steps, start[1] + (end[1] - start[1]) * i / steps))
        if frames is not None:
            frames.append(page.screenshot(clip=clip))
        page.wait_for_timeout(max(0.0, seconds / steps - (time.time() - began)) * 1000)
    page.mouse.up()
    released = page.evaluate(NOW)
    box = page.locator(".dragwidget-canvas").first.bounding_box()     # where the moves were, on screen
    return {"pressed": pressed, "released": released, "canvas": box, **page.evaluate("() => window.__live")}
