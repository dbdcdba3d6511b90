"""Running the engine from the widget: start, progress (with elapsed time and time left), results,
feature maps, errors, and what the next run will cost.

`Running` is a mixin of `DragWidget`. The engine is reached only through `DragEditor.run`,
`.generate` and `.feature_maps` in the runner's thread, and `.plan` (a quick look-up) in the caller's.
"""

from __future__ import annotations

import html
import time
import traceback
from typing import Callable, Dict, Optional, Tuple

from ..config import DragConfig
from ..editor import DragEditor, DragRequest, DragResult, PreparedImage, Progress
from ..errors import DragCancelled, DragWidgetError, InputError
from ..feature_maps import FeatureRequest, figure_png
from . import drawing
from .layout import PARAMETERS, RUN_STAGES, STAGES, WIDGET_PARAMETERS
from .models import model_stage_rates

BUSY = "a run is in progress: press Cancel (or widget.cancel()) first"
WAITING = "waiting for another run on this model to finish"


class RunInProgressError(DragWidgetError, RuntimeError):
    """The widget's image or session cannot change while a run works on the current one."""


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


class Running:
    """Run / generate / cancel of `DragWidget` (a mixin)."""

    # ================================================================== guards
    def _refuse_while_running(self, action: str) -> None:
        if self.running:
            raise RunInProgressError(f"cannot {action} now: {BUSY}")

    def _busy(self, wait: bool) -> None:
        """A run or generate asked for while one works: say so (raise when the caller waits)."""
        self.status = BUSY
        if wait:
            raise RunInProgressError(BUSY)

    # ================================================================== the engine
    def _get_editor(self) -> DragEditor:
        if self._editor is None or self._editor_model != self.model:
            self.status = f"loading model {self.model}…"
            self._editor = DragEditor(self.model)
            self._editor_model = self.model
        return self._editor

    def _config(self, editor: Optional[DragEditor] = None, **values) -> DragConfig:
        """The engine config of the widget's parameters (`values` overrides them, by trait name)."""
        base = self._base_config or (editor.config if editor is not None else DragConfig())
        traits = {**PARAMETERS, **WIDGET_PARAMETERS}
        chosen = {name: values.get(name, getattr(self, name)) for name in traits}
        return base.replace(**{field: chosen[name] for name, field in traits.items()})

    # ================================================================== what the next run costs
    def _plan_message(self) -> str:
        """What the first Run on this image does before the drag ('' when nothing to say)."""
        if self.image is None or self.running or self._generated_for_image() is not None or self.lora_steps <= 0:
            return ""
        if self._editor is None:      # loaded at the first run: no caches known, only the model's own figures
            lora_rate = model_stage_rates(self.model).get("lora")
            cost = (f"about {lora_rate * self.lora_steps:.0f} s by the model's own figures" if lora_rate
                    else "its time is known once the model has run here")
            return (f"the first Run on this image fine-tunes a LoRA first ({self.lora_steps} steps, unless an "
                    f"earlier one is in the disk cache; {cost})")
        try:
            plan = self._editor.plan(DragRequest(image=self.image, points=list(self.points), prompt=self.prompt,
                                                 config=self._config(self._editor)))
        except DragWidgetError:
            return ""
        if not plan.needs_lora:
            return ""
        expected = plan.expected_seconds
        cost = (f"about {expected.get('lora', 0):.0f} s, {plan.total_seconds:.0f} s for the whole run"
                + ("" if plan.measured_here else " by the model's own figures; measured here after this run")
                if expected else "no time measured yet with this model here")
        return f"the first Run on this image fine-tunes a LoRA first ({plan.lora_steps} steps; {cost})"

    def _show_plan(self, *_) -> None:
        message = self._plan_message()
        if message:
            self.status = message

    # ================================================================== run
    def _reset_progress(self, stages) -> None:
        """Every bar back to empty and the clocks restarted: nothing of the previous run is shown."""
        for stage, bar in self.bars.items():
            with bar.hold_sync():
                bar.value, bar.max, bar.bar_style = 0, 1, ""
            self.bar_labels[stage].value = ""
        self._generate_row.layout.display = None if "generate" in stages else "none"
        self.stage_clock.reset()
        self._stage = None
        self.error = ""

    def run(self, wait: bool = False, timeout: Optional[float] = None) -> Optional[DragResult]:
        """Start the edit in a background thread (the notebook stays responsive).

        With wait=True, block until it ends and return the result (raising its error)."""
        with self._lock:
            if self.running:
                return self._busy(wait)
            problem = None
            if self._state is None:
                problem = "no image: pass one to DragWidget, upload one or generate one from a prompt"
            else:
                self._state.end_stroke()
                if not self._state.points:
                    problem = "no point pairs: click a handle, then its target (or set widget.points)"
            if problem:
                self.error = problem
                if wait:
                    raise InputError(problem)
                return None
            image = self.image
            points = list(self._state.points)
            mask = self._state.mask.copy() if self._state.mask.any() else None
            prompt = self.prompt
            generated = self._generated_for_image()
            features = self.show_features
            blocks = None if self.feature_blocks is None else list(self.feature_blocks)
            self._reset_progress(RUN_STAGES)
            self.feature_maps = None
            self._tracked, self._frames, self._run_image = None, [], image
            self.status = "starting…"
            self.running = True
            self._started = time.perf_counter()

        def work(cancelled):
            editor = self._get_editor()
            request = DragRequest(image=None if generated else image, points=points, mask=mask, prompt=prompt,
                                  config=self._config(editor), prepared=generated)
            self.status = "running…"
            result = editor.run(request, progress=self._on_progress, cancel=cancelled)
            self._finish_run(result, image, points)          # shown now; the features follow
            if features:
                self._compute_features(editor, result, prompt, generated, blocks, cancelled)
            return result

        def done(result, error):
            try:
                if error is not None:
                    self._fail(error)
            finally:
                self._tracked = None
                self._redraw_points()
                self.running = False

        if not self.runner.start(work, done):
            self.running = False
            return self._busy(wait)
        if wait:
            return self.wait(timeout)
        return None

    def wait(self, timeout: Optional[float] = None) -> Optional[DragResult]:
        """Block until the running job ends; return its value or raise its error."""
        if not self.runner.join(timeout):
            raise TimeoutError(f"the edit is still running after {timeout} s")
        if self.runner.error is not None:
            raise self.runner.error
        return self.runner.value

    def _on_progress(self, event: Progress) -> None:
        if event.stage == "waiting":
            self.status = event.message or WAITING
            return
        self._stage = event.stage
        bar = self.bars.get(event.stage)
        if bar is not None:
            with bar.hold_sync():
                bar.max = max(1, int(event.total))
                bar.value = min(int(event.step), bar.max)
                bar.bar_style = "info" if event.cached else ("success" if event.step >= event.total else "")
            self.bar_labels[event.stage].value = "<small>cached</small>" if event.cached else (
                f"<small>{self.stage_clock.label(event.stage, event.step, event.total)}</small>")
        if event.cached and event.stage == "lora" and "reusing" in event.message:
            self.status = "reusing the LoRA and inversion of the previous run on this image"
        elif event.stage == "features":
            self.status = f"computing feature maps… {event.step}/{event.total}" + (
                f" ({event.message})" if event.message else "")
        elif event.stage in ("lora", "inversion", "drag", "denoise", "generate") and not event.cached:
            self.status = f"{dict(STAGES)[event.stage].lower()} {event.step}/{event.total}" + (
                f" ({event.message})" if event.message else "")
        if event.stage == "drag" and event.handles is not None:
            self._tracked = [tuple(h) for h in event.handles]
            if event.step == 0:
                self._frames.append((self._run_image, self._tracked))
            if event.preview is not None:
                self._frames.append((event.preview, self._tracked))
                self.result_panel.show_preview(self._run_image, event.preview, f"<small>drag step {event.step}</small>")
            self._redraw_points()

    def _finish_run(self, result: DragResult, image, points) -> None:
        seconds = time.perf_counter() - self._started
        self._frames.append((result.image, result.handles))
        gif = drawing.drag_gif(self._frames, points, image.size) if self.preview_every > 0 else b""
        reused = result.reused or {}
        if reused.get("lora") == "memory" and reused.get("inversion") == "memory":
            reuse = "LoRA and inversion reused from the previous run on this image"
        else:
            reuse = f"LoRA: {reused.get('lora', '?')}, inversion: {reused.get('inversion', '?')}"
        bar = self.bars["drag"]
        bar.value, bar.bar_style = bar.max, "success"
        self.bar_labels["drag"].value = f"<small>{result.steps} steps</small>"
        self.status = f"done in {seconds:.1f} s: {result.says} ({reuse})"
        self.result_panel.show_result(image, result.image, gif, (
            f"<small>{'reached' if result.reached else 'not reached'}: {html.escape(result.says)}; "
            f"{result.steps} drag steps; point tracking ended at "
            f"{[tuple(round(v, 1) for v in h) for h in result.handles]}; {html.escape(reuse)}</small>"))
        self.result = result

    def _compute_features(self, editor: DragEditor, result: DragResult, prompt: str,
                          prepared: Optional[PreparedImage], blocks, cancelled) -> None:
        """The PCA feature grid of original vs edited, beside the edited image (in the run's thread).

        Only the edited picture is new work (the editor reuses the image it prepared for the drag).
        Whatever goes wrong here, the drag's result stays: the message goes to the status line."""
        done_status = self.status
        started = time.perf_counter()
        self.status = "computing feature maps…"
        self.result_panel.features_pending()
        bar = self.bars["features"]
        try:
            blocks = [result.config.feature_block] if blocks is None else blocks
            options = {"blocks": blocks} if prepared is None else {"blocks": blocks, "prepared": prepared}
            request = FeatureRequest.for_result(result, prompt=prompt, **options)
            maps = editor.feature_maps(request, progress=self._on_progress, cancel=cancelled)
            png = figure_png(maps.figure())
        except DragCancelled:
            self.status = f"{done_status}; feature maps cancelled"
            self.result_panel.features_failed("feature maps cancelled")
            bar.bar_style = "warning"
            return
        except Exception as error:  # the drag's result is kept whatever happens here
            self.last_traceback = traceback.format_exc()
            message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            self.status = f"{done_status}; feature maps failed: {message}"
            self.result_panel.features_failed(html.escape(f"feature maps failed: {message}"))
            bar.bar_style = "danger"
            return
        self.feature_maps = maps
        bar.value, bar.bar_style = bar.max, "success"
        shown = ", ".join(str(b) for b in maps.blocks)
        self.result_panel.show_features(png, (
            f"<small>PCA of decoder block{'s' if len(maps.blocks) > 1 else ''} {shown} "
            f"(rows original / edited, columns inversion steps; the drag's block and step framed)</small>"))
        self.status = f"{done_status}; feature maps in {time.perf_counter() - started:.1f} s"

    def _fail(self, error: BaseException) -> None:
        """The run ended with `error`: the stage it stopped in is marked, the status says so."""
        self.last_traceback = self.runner.error_traceback
        stage = self._stage
        where = f" during {dict(STAGES).get(stage, stage).lower()}" if stage else ""
        if stage in self.bars:
            self.bars[stage].bar_style = "warning" if isinstance(error, DragCancelled) else "danger"
        if isinstance(error, DragCancelled):
            self.status = f"cancelled{where}; points, mask and image are unchanged"
            return
        self.status = f"FAILED{where} (see the error below); points, mask and image are unchanged"
        message = str(error) or type(error).__name__
        self.error = message if isinstance(error, InputError) else f"{type(error).__name__}: {message}"

    # ================================================================== generated-image mode
    def _generated_for_image(self) -> Optional[PreparedImage]:
        return self._generated[1] if self._generated is not None and self._generated[0] is self.image else None

    def generate(self, prompt: Optional[str] = None, seed: Optional[int] = None, wait: bool = False):
        """Generated-image mode: make the input from `prompt`; it is then dragged without LoRA or
        inversion (the generation's own latents are kept)."""
        with self._lock:
            if self.running:
                return self._busy(wait)
            if prompt is not None:
                self.prompt = prompt
            prompt = self.prompt
            if not prompt.strip():
                self.error = "generated-image mode needs a prompt (Parameters → Prompt)"
                return None
            self._reset_progress(("generate",))
            self.status = "starting…"
            self.running = True
            self._started = time.perf_counter()

        def work(cancelled):
            editor = self._get_editor()
            self.status = "generating…"
            return editor.generate(prompt, seed=seed, config=self._config(editor), progress=self._on_progress,
                                   cancel=cancelled)

        def done(prepared: Optional[PreparedImage], error):
            # under the lock: nobody starts a run or sets an image between the end and the new image
            with self._lock:
                self.running = False
                if error is None:
                    self.image = prepared.image
                    self._generated = (self.image, prepared)
                    self.status = f"generated in {time.perf_counter() - self._started:.1f} s: add points and run"
                else:
                    self._fail(error)

        if not self.runner.start(work, done, name="dragwidget-generate"):
            self.running = False
            return self._busy(wait)
        if wait:
            self.wait()
        return None
