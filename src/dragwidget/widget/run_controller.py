"""Running the engine for the widget: start, progress, results, feature maps, errors, what the
next run will cost, and the live previews while the pointer drags.

`RunController` is given the canvas (whose picture, points and mask a run takes), a progress view
and the result panel. The engine is reached only through `DragEditor.run`, `.generate` and
`.feature_maps` in the runner's thread, `.ready` and `.preview` in the live preview's
(`live_preview.LivePreview`), and `.plan` (a quick look-up) in the caller's.
"""

from __future__ import annotations

import html
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable, List, Optional

import traitlets

from ..api import (DragCancelled, DragConfig, DragEditor, DragRequest, DragResult, DragWidgetError, FeatureMaps,
                   FeatureRequest, InputError, PreparedImage, Progress, RunPlan, figure_png, setting_info)
from . import drawing
from .canvas import DragCanvas
from .live_preview import LivePreview, Shown
from .models import model_stage_rates
from .progress_view import STAGES, ProgressView
from .result_panel import ResultPanel
from .runner import BUSY, RunInProgressError, Runner

WAITING = "waiting for another run on this model to finish"


@dataclass
class RunOptions:
    """What a run needs besides the canvas's data, read from the widget when it starts."""

    model: str
    prompt: str
    config_for: Callable[[Optional[DragEditor]], DragConfig]   # the engine settings, given the editor
    lora_steps: int = 0
    preview_every: int = 0
    show_features: bool = True
    feature_blocks: Optional[List[int]] = None
    live_preview: bool = False
    # the live preview's FastDrag: DDIM steps and inversion strength
    preview_steps: int = setting_info("fastdrag_inference_steps").default
    preview_strength: float = setting_info("fastdrag_inversion_strength").default

    def preview_config(self, editor: Optional[DragEditor]) -> DragConfig:
        """The live preview's settings: FastDrag with its own steps and strength, no LoRA, no frames."""
        return self.config_for(editor).replace(method="fastdrag", fastdrag_inference_steps=self.preview_steps,
                                               fastdrag_inversion_strength=self.preview_strength,
                                               fastdrag_lora_steps=0, preview_every=0).for_method()


class RunController(traitlets.HasTraits):
    running = traitlets.Bool(False)
    status = traitlets.Unicode("")
    error = traitlets.Unicode("", help="the last error's message ('' after a successful run)")
    result = traitlets.Instance(DragResult, allow_none=True)

    def __init__(self, canvas: DragCanvas, progress: ProgressView, results: ResultPanel,
                 editor: Optional[DragEditor] = None):
        super().__init__()
        self.canvas, self.progress, self.results = canvas, progress, results
        self.editor = editor
        self._editor_model = editor.model.name if editor is not None else None
        self.runner = Runner()
        self.generated = None               # (image it belongs to, PreparedImage) in generated-image mode
        self.frames = []                    # (picture, handles) of the drag so far: the GIF
        self.feature_maps: Optional[FeatureMaps] = None
        self.last_traceback = ""
        self._started = 0.0
        self._editor_lock = threading.Lock()           # the live preview's thread may load the model too
        self._live_model = self._editor_model
        self.live = LivePreview(lambda: self.editor_for(self._live_model), self._show_live, self._live_note)
        self.live_shown: List[Shown] = []              # the previews put on screen, latest last
        traitlets.dlink((self, "status"), (progress, "status"))
        traitlets.dlink((self, "error"), (progress, "error"))
        traitlets.dlink((self, "running"), (canvas, "locked"))
        canvas.observe(self._picture_changed, names="image")

    def _picture_changed(self, change) -> None:
        if self.generated is not None and self.generated[0] is not change["new"]:
            self.generated = None       # the generation's latents belong to the picture it made

    # ================================================================== the engine
    def editor_for(self, model: str) -> DragEditor:
        with self._editor_lock:
            if self.editor is None or self._editor_model != model:
                self.progress.note = f"loading model {model}…"
                self.editor = DragEditor(model)
                self._editor_model = model
                self.progress.note = ""
            return self.editor

    def generated_for(self, image) -> Optional[PreparedImage]:
        return self.generated[1] if self.generated is not None and self.generated[0] is image else None

    def _busy(self, wait: bool) -> None:
        self.status = BUSY
        if wait:
            raise RunInProgressError(BUSY)

    # ================================================================== what the next run costs
    def plan_message(self, options: RunOptions) -> str:
        """What the first Run on this image does before the drag ('' when nothing to say)."""
        image = self.canvas.image
        if image is None or self.running or self.generated_for(image) is not None or options.lora_steps <= 0:
            return ""
        if self.editor is None:      # loaded at the first run: no caches known, only the model's own figures
            return RunPlan.before_loading(options.lora_steps, model_stage_rates(options.model)).lora_message()
        try:
            plan = self.editor.plan(DragRequest(image=image, points=list(self.canvas.points), prompt=options.prompt,
                                                config=options.config_for(self.editor)))
        except DragWidgetError:
            return ""
        return plan.lora_message()

    # ================================================================== live previews
    def prepare_live(self, options: RunOptions) -> None:
        """Prepare the canvas's picture for live previews, in the background."""
        request = self._live_request([], options)
        if request is not None:
            self.live.prepare(request)

    def want_live(self, pairs, options: RunOptions) -> None:
        """Preview `pairs` of the canvas's picture (the committed ones and the one being dragged)."""
        request = self._live_request(pairs, options) if pairs else None
        if request is not None:
            self.live.want(request)

    def _live_request(self, pairs, options: RunOptions) -> Optional[DragRequest]:
        """The preview request of `pairs`, or None (and the note says why where it is news)."""
        image = self.canvas.image
        # without a front end showing the canvas nobody can drag: no model is loaded for previews then
        if not (options.live_preview and self.canvas.displayed and image is not None and not self.running):
            return None
        if self.generated_for(image) is not None:
            if pairs:
                self.progress.note = "no live preview of a generated picture (FastDrag needs an inversion): press Run"
            return None
        self._live_model = options.model
        try:
            config = options.preview_config(self.editor)
        except DragWidgetError as error:
            self.progress.note = f"no live preview: {error}"
            return None
        mask = self.canvas.mask.copy() if self.canvas.mask is not None and self.canvas.mask.any() else None
        return DragRequest(image=image, points=list(pairs), mask=mask, prompt=options.prompt, config=config)

    def _show_live(self, shown: Shown) -> None:
        image = self.canvas.image
        if self.running or image is None or shown.request.image is not image:
            return        # a run took over, or the picture changed meanwhile
        self.live_shown.append(shown)
        del self.live_shown[:-200]
        steps = shown.preview.timings
        self.results.show_preview(image, shown.preview.image, (
            f"<small>FastDrag preview of {len(shown.preview.pairs)} pair{'s' if len(shown.preview.pairs) != 1 else ''}"
            f" in {shown.engine_seconds:.2f} s (denoising {steps.get('denoise', 0):.2f} s); not judged: "
            "Run gives the chosen method's edit and its verdict</small>"),
            what="FastDrag, following the pointer")
        self.progress.note = ""

    def _live_note(self, message: str) -> None:
        self.progress.note = message

    # ================================================================== run
    def run(self, options: RunOptions, wait: bool = False, timeout: Optional[float] = None) -> Optional[DragResult]:
        """Start the drag of the canvas's picture in a background thread (the notebook stays
        responsive). With wait=True, block until it ends and return the result (raising its error)."""
        canvas = self.canvas
        with canvas.lock:
            if self.running:
                return self._busy(wait)
            problem = None
            if canvas.image is None:
                problem = "no image: pass one to DragWidget, upload one or generate one from a prompt"
            else:
                canvas.end_stroke()
                if not canvas.points:
                    problem = "no point pairs: click a handle, then its target (or set widget.points)"
            if problem:
                self.error = problem
                if wait:
                    raise InputError(problem)
                return None
            image, points = canvas.image, list(canvas.points)
            mask = canvas.mask.copy() if canvas.mask.any() else None
            self.live.drop()            # a preview must not hold the model the run needs
            generated = self.generated_for(image)
            self.progress.reset()
            self.feature_maps = None
            self.frames = []
            self.status = "starting…"
            self.running = True
            self._started = time.perf_counter()

        def work(cancelled):
            editor = self.editor_for(options.model)
            request = DragRequest(image=None if generated else image, points=points, mask=mask, prompt=options.prompt,
                                  config=options.config_for(editor), prepared=generated)
            self.status = "running…"
            result = editor.run(request, progress=lambda event: self._on_progress(event, image), cancel=cancelled)
            self._finish_run(result, image, points, options)          # shown now; the features follow
            if options.show_features:
                self._compute_features(editor, result, options, generated, cancelled)
            return result

        def done(result, error):
            try:
                if error is not None:
                    self._fail(error)
            finally:
                canvas.tracked = None
                self.running = False

        if not self.runner.start(work, done):
            self.running = False
            return self._busy(wait)
        return self.wait(timeout) if wait else None

    def wait(self, timeout: Optional[float] = None) -> Optional[DragResult]:
        """Block until the running job ends; return its value or raise its error."""
        if not self.runner.join(timeout):
            raise TimeoutError(f"the edit is still running after {timeout} s")
        if self.runner.error is not None:
            raise self.runner.error
        return self.runner.value

    def cancel(self) -> bool:
        if self.runner.cancel():
            self.status = "cancelling (at the next step)…"
            return True
        return False

    def _on_progress(self, event: Progress, image) -> None:
        if event.stage == "waiting":
            self.status = event.message or WAITING
            return
        self.progress.show(event.stage, event.step, event.total, cached=event.cached)
        if event.cached and event.stage == "lora" and "reusing" in event.message:
            self.status = "reusing the LoRA and inversion of the previous run on this image"
        elif event.stage == "features":
            self.status = f"computing feature maps… {event.step}/{event.total}" + (
                f" ({event.message})" if event.message else "")
        elif event.stage in ("lora", "inversion", "drag", "denoise", "generate") and not event.cached:
            self.status = f"{STAGES[event.stage].lower()} {event.step}/{event.total}" + (
                f" ({event.message})" if event.message else "")
        # the drag's frames; FastDrag's come while it denoises its one warp
        if event.stage in ("drag", "denoise") and event.handles is not None:
            tracked = [tuple(h) for h in event.handles]
            if event.step == 0:
                self.frames.append((image, tracked))
            if event.preview is not None:
                self.frames.append((event.preview, tracked))
                self.results.show_preview(image, event.preview, f"<small>{event.stage} step {event.step}</small>")
            self.canvas.tracked = tracked

    def _finish_run(self, result: DragResult, image, points, options: RunOptions) -> None:
        seconds = time.perf_counter() - self._started
        self.frames.append((result.image, result.handles))
        gif = drawing.drag_gif(self.frames, points, image.size) if options.preview_every > 0 else b""
        reuse = _what_was_reused(result)
        handles = [tuple(round(v, 1) for v in h) for h in result.handles]
        if result.config.method == "fastdrag":   # one warp: no drag steps, no point tracking
            how, finished = f"one warp of the latent, which sent the handles to {handles}", "one warp"
        else:
            how, finished = f"{result.steps} drag steps; point tracking ended at {handles}", f"{result.steps} drag steps"
        self.progress.finish("drag", finished)
        self.status = f"done in {seconds:.1f} s: {result.says} ({reuse})"
        self.results.show_result(image, result.image, gif, (
            f"<small>{html.escape(result.says)}; "
            f"{html.escape(how)}; {html.escape(reuse)}</small>"))
        self.result = result

    def _compute_features(self, editor: DragEditor, result: DragResult, options: RunOptions,
                          prepared: Optional[PreparedImage], cancelled) -> None:
        """The PCA feature grid of original vs edited (in the run's thread).

        Only the edited picture is new work (the editor reuses the image it prepared for the drag).
        Whatever goes wrong here, the drag's result stays: the message goes to the status line."""
        done_status = self.status
        started = time.perf_counter()
        self.status = "computing feature maps…"
        self.results.features_pending()
        try:
            blocks = [result.config.feature_block] if options.feature_blocks is None else list(options.feature_blocks)
            extra = {} if prepared is None else {"prepared": prepared}
            request = FeatureRequest.for_result(result, prompt=options.prompt, blocks=blocks, **extra)
            maps = editor.feature_maps(request, progress=lambda event: self._on_progress(event, None), cancel=cancelled)
            png = figure_png(maps.figure())
        except DragCancelled:
            self.status = f"{done_status}; feature maps cancelled"
            self.results.features_failed("feature maps cancelled")
            self.progress.mark("warning")
            return
        except Exception as error:  # the drag's result is kept whatever happens here
            self.last_traceback = traceback.format_exc()
            message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            self.status = f"{done_status}; feature maps failed: {message}"
            self.results.features_failed(html.escape(f"feature maps failed: {message}"))
            self.progress.mark("danger")
            return
        self.feature_maps = maps
        self.progress.finish("features", f"{time.perf_counter() - started:.1f} s")
        shown = ", ".join(str(b) for b in maps.blocks)
        self.results.show_features(png, (
            f"<small>PCA of decoder block{'s' if len(maps.blocks) > 1 else ''} {shown} "
            f"(rows original / edited, columns inversion steps; the drag's block and step framed)</small>"))
        self.status = f"{done_status}; feature maps in {time.perf_counter() - started:.1f} s"

    def _fail(self, error: BaseException) -> None:
        """The run ended with `error`: the stage it stopped in is marked, the status says so."""
        self.last_traceback = self.runner.error_traceback
        stage = self.progress.current
        where = f" during {STAGES.get(stage, stage).lower()}" if stage else ""
        if stage:
            self.progress.mark("warning" if isinstance(error, DragCancelled) else "danger")
        if isinstance(error, DragCancelled):
            self.status = f"cancelled{where}; points, mask and image are unchanged"
            return
        self.status = f"FAILED{where} (see the error below); points, mask and image are unchanged"
        message = str(error) or type(error).__name__
        self.error = message if isinstance(error, InputError) else f"{type(error).__name__}: {message}"

    # ================================================================== generated-image mode
    def generate(self, options: RunOptions, seed: Optional[int] = None, wait: bool = False) -> None:
        """Generated-image mode: make the canvas's picture from the prompt; it is then dragged
        without LoRA or inversion (the generation's own latents are kept)."""
        with self.canvas.lock:
            if self.running:
                return self._busy(wait)
            if not options.prompt.strip():
                self.error = "generated-image mode needs a prompt (Parameters → Prompt)"
                return None
            self.live.drop()
            self.progress.reset()
            self.status = "starting…"
            self.running = True
            self._started = time.perf_counter()

        def work(cancelled):
            editor = self.editor_for(options.model)
            self.status = "generating…"
            return editor.generate(options.prompt, seed=seed, config=options.config_for(editor),
                                   progress=lambda event: self._on_progress(event, None), cancel=cancelled)

        def done(prepared: Optional[PreparedImage], error):
            # under the lock: nobody starts a run or sets an image between the end and the new image
            with self.canvas.lock:
                self.running = False
                if error is None:
                    self.canvas.image = prepared.image
                    self.generated = (self.canvas.image, prepared)
                    self.status = f"generated in {time.perf_counter() - self._started:.1f} s: add points and run"
                else:
                    self._fail(error)

        if not self.runner.start(work, done, name="dragwidget-generate"):
            self.running = False
            return self._busy(wait)
        if wait:
            self.wait()
        return None


def _what_was_reused(result: DragResult) -> str:
    """The run's preparation in words: what came from memory or a cache, what was computed."""
    reused = result.reused or {}
    lora = "none" if result.config.lora_steps == 0 else reused.get("lora", "?")
    inversion = reused.get("inversion", "?")
    if inversion == "memory" and lora in ("memory", "none"):
        return ("LoRA and inversion" if lora == "memory" else "inversion") + " reused from the previous run on this image"
    return f"LoRA: {lora}, inversion: {inversion}"
