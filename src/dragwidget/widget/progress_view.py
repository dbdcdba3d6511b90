"""One compact progress line (stage, bar, elapsed and time left), the status and error lines, and a
note on background work (the live preview's)."""

from __future__ import annotations

import html
import time
from typing import Callable, Dict, Tuple

import ipywidgets as widgets
import traitlets

STAGES = {"lora": "LoRA", "inversion": "Inversion", "drag": "Optimise", "denoise": "Denoise",
          "decode": "Decode", "verdict": "Verdict", "features": "Features", "generate": "Generate"}


class StageClock:
    """Elapsed time and time left of each stage, from the step rate observed since it started."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self._started: Dict[str, Tuple[float, int]] = {}

    def reset(self) -> None:
        self._started.clear()

    def label(self, stage: str, step: int, total: int) -> str:
        """ "12/80 · 3.1 s · ~17 s left" (time left once a step has been seen)."""
        now = self.clock()
        began, first_step = self._started.setdefault(stage, (now, step))
        elapsed = now - began
        text = f"{step}/{total} · {elapsed:.1f} s"
        if step > first_step and step < total and elapsed > 0:
            left = (total - step) * elapsed / (step - first_step)
            text += f" · ~{left:.0f} s left"
        return text


class ProgressView(widgets.VBox):
    """Shows the stage the run is in; `status` and `error` are set by whoever runs the work."""

    status = traitlets.Unicode("")
    error = traitlets.Unicode("")
    note = traitlets.Unicode("", help="background work beside the runs: the live preview's preparation")

    def __init__(self):
        self.clock = StageClock()
        self.stage = widgets.HTML("", layout=widgets.Layout(width="80px"))
        self.bar = widgets.IntProgress(0, min=0, max=1, layout=widgets.Layout(width="220px"))
        self.timing = widgets.HTML("")
        self.status_html = widgets.HTML("")
        self.error_html = widgets.HTML("")
        self.note_html = widgets.HTML("")
        line = widgets.HBox([self.stage, self.bar, self.timing], layout=widgets.Layout(align_items="center"))
        super().__init__([line, self.status_html, self.note_html, self.error_html])
        self.add_class("dragwidget-progress")
        self.current = None             # the stage shown

    def reset(self) -> None:
        """Nothing of the previous run shown; the clocks restarted."""
        self.clock.reset()
        self.current = None
        with self.bar.hold_sync():
            self.bar.value, self.bar.max, self.bar.bar_style = 0, 1, ""
        self.stage.value = self.timing.value = ""
        self.error = ""

    def show(self, stage: str, step: int, total: int, cached: bool = False) -> None:
        self.current = stage
        self.stage.value = f"<small><b>{STAGES.get(stage, stage)}</b></small>"
        with self.bar.hold_sync():
            self.bar.max = max(1, int(total))
            self.bar.value = min(int(step), self.bar.max)
            self.bar.bar_style = "info" if cached else ("success" if step >= total else "")
        self.timing.value = "<small>cached</small>" if cached else f"<small>{self.clock.label(stage, step, total)}</small>"

    def finish(self, stage: str, text: str) -> None:
        """The stage ended well; `text` replaces its timing."""
        self.current = stage
        self.stage.value = f"<small><b>{STAGES.get(stage, stage)}</b></small>"
        with self.bar.hold_sync():
            self.bar.value, self.bar.bar_style = self.bar.max, "success"
        self.timing.value = f"<small>{html.escape(text)}</small>"

    def mark(self, style: str) -> None:
        """The shown stage ended badly: "warning" (cancelled) or "danger" (failed)."""
        self.bar.bar_style = style

    @traitlets.observe("status")
    def _status_changed(self, change):
        self.status_html.value = f"<span class='dragwidget-status'>{html.escape(change['new'])}</span>"

    @traitlets.observe("note")
    def _note_changed(self, change):
        self.note_html.value = (f"<small class='dragwidget-note' style='color:#555'>{html.escape(change['new'])}</small>"
                                if change["new"] else "")

    @traitlets.observe("error")
    def _error_changed(self, change):
        text = change["new"]
        self.error_html.value = (f"<div class='dragwidget-error' style='color:#b00020;white-space:pre-wrap'>"
                                 f"<b>Error:</b> {html.escape(text)}</div>") if text else ""
