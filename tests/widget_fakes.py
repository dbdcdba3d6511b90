"""What the widget tests share: test pictures, clicks, DOM events and an engine stand-in."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np

from dragwidget import DragConfig, DragRequest
from dragwidget.run_plan import RunPlan
from dragwidget.widget import DragWidget

# the widget at a display of 512 px: a 64-px picture is shown x8, a click at (i + 0.5) * 8 is pixel i
Widget = functools.partial(DragWidget, max_display_size=512)


def picture(width=64, height=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def click(widget, x, y):
    """A click at canvas buffer pixel (x, y)."""
    widget.canvas.on_mouse_down(x, y)
    widget.canvas.on_mouse_up(x, y)


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
        self.plans = []
        self.next_plan = RunPlan(needs_lora=False, lora_steps=0, steps={}, expected_seconds=None)

    def run(self, request: DragRequest, progress=None, cancel=None):
        self.requests.append(request)
        return self.behaviour(request, progress, cancel)

    def plan(self, request: DragRequest) -> RunPlan:
        self.plans.append(request)
        return self.next_plan
