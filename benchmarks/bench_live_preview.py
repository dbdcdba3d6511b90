#!/usr/bin/env python3
"""How long the picture takes to follow the pointer: pointer event -> live preview on screen.

    python3 benchmarks/bench_live_preview.py                 # JupyterLab, the quickstart, the toy, 1 thread
    python3 benchmarks/bench_live_preview.py --drags 5 --moves 20 --seconds 4

A real browser (Debian's Chromium through Playwright, as the browser tests) opens
notebooks/quickstart.ipynb in JupyterLab at 1280x800, runs it, and drags the disc with the mouse:
press, `--moves` even moves over `--seconds`, release, `--drags` times. The page records when each
pointer move happened and when the result picture changed; the kernel records, for each preview it
put on screen, which pointer position it was for, when that position arrived and how long the engine
took. Printed, median and 90th percentile over every preview shown:

* pointer -> screen: from the pointer move to the result's <img> changing (wall clocks of the page
  and the kernel, on one machine);
* engine: `DragEditor.preview` (the warp, the denoising and the decoding);
* kernel: from the position's arrival in the kernel to the preview handed to the widget (the
  engine plus the wait for a preview still running);
* transport: pointer -> screen minus kernel (browser -> kernel -> browser messages, drawing).

Moves overtaken before their preview started are never shown: the count of previews shown is
printed beside the count of moves. The model and thread count are the quickstart's own (the
embedded toy on one CPU thread unless DRAGWIDGET_MODEL / DRAGWIDGET_CPU_THREADS say otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))   # the browser harness of the tests

# For each preview shown: its pair, when its position reached the kernel and when it was shown
# (time.time(), s: a wall clock the page's can be compared with), and the engine's seconds.
KERNEL_RECORD = """import json as _json
assert widget.controller.live.wait_idle(60)
print(_json.dumps([{"pairs": [p.to_dict() for p in s.preview.pairs], "asked": s.asked_at, "shown": s.shown_at,
                    "engine": s.engine_seconds} for s in widget.controller.live_shown]))
"""


def percentile(values, fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drags", type=int, default=3, help="drags of the disc (default 3)")
    parser.add_argument("--moves", type=int, default=10, help="pointer moves per drag (default 10)")
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each drag (default 2)")
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from browser_harness import VIEWPORT, Front, JupyterServer, launch, live_drag, requirements

    requirements("lab")
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    root = work / "root"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", root / "quickstart.ipynb")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    server = JupyterServer("lab", root, work, env)
    latencies, engine, kernel, transport, moves = [], [], [], [], 0
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright)
            page = browser.new_page()
            page.set_viewport_size(VIEWPORT)
            front = Front(page, "lab", "bench-live")
            front.open(server.notebook_url("quickstart.ipynb"))
            front.collapse_side_areas()
            front.run_all()
            front.kernel("widget.points = []\nwidget.clear_mask()\nassert widget.controller.live.wait_idle(60)")
            size = width, height = front.state()["size"]
            for drag in range(args.drags):
                front.kernel("widget.points = []\nwidget.controller.live_shown.clear()")
                start = (round(0.33 * width), round((0.4 + 0.1 * (drag % 3)) * height))
                end = (start[0] + round(0.15 * width), start[1])
                record = live_drag(front, start, end, size, steps=args.moves, seconds=args.seconds)
                box = record["canvas"]
                to_pixel = lambda move: (int((move["x"] - box["x"]) * width / box["width"]),
                                         int((move["y"] - box["y"]) * height / box["height"]))
                page.wait_for_timeout(1500)
                shown = json.loads(front.kernel(KERNEL_RECORD).strip().splitlines()[-1])
                changes = [c for c in record["changes"] if c["t"] >= record["pressed"]]
                pointer = [m for m in record["moves"] if m["t"] >= record["pressed"]]
                moves += args.moves
                for preview in shown:
                    # the first picture on screen once the kernel showed it; the move it was for
                    on_screen = [c["t"] for c in changes if c["t"] >= preview["shown"] * 1000 - 5]
                    target = tuple(preview["pairs"][-1]["target"])
                    asked = [m["t"] for m in pointer if to_pixel(m) == target and m["t"] <= preview["asked"] * 1000 + 5]
                    if not on_screen or not asked:
                        continue
                    latencies.append((on_screen[0] - asked[-1]) / 1000)
                    engine.append(preview["engine"])
                    kernel.append(preview["shown"] - preview["asked"])
                    transport.append(latencies[-1] - kernel[-1])
            browser.close()
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)

    if not latencies:
        print("no preview was shown: is the live preview on, and the model loaded?")
        return 1
    print(f"live preview latency, {date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}: {len(latencies)} previews shown for {moves} "
          f"pointer moves ({args.drags} drags of {args.moves} moves over {args.seconds:g} s)")
    print(f"{'':18s} {'median':>8s} {'p90':>8s}")
    for name, values in (("pointer -> screen", latencies), ("engine", engine), ("kernel", kernel),
                         ("transport", transport)):
        print(f"{name:18s} {statistics.median(values):7.3f}s {percentile(values, 0.9):7.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
