"""The public API: prepare an image once (LoRA, inversion), then drag it as often as you like.

    editor = DragEditor("toy")
    prepared = editor.prepare("photo.png", prompt="a red disc")
    result = editor.drag(prepared, [{"handle": [10, 20], "target": [30, 20]}])
    result.image.save("edited.png")

`DragEditor.run(DragRequest(...))` is the one narrow entry point used by the widget and the CLI:
it keeps prepared images in memory, so repeated drags of the same image reuse LoRA and inversion.
`DragEditor.plan(request)` says beforehand whether a LoRA will be trained and how long it should take.

An editor, and several editors sharing one model, may be used from several threads: the runs take
turns on the model (its `lock`), and a run that has to wait says so with a "waiting" progress event.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import time
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from . import lora_cache, lora_finetuning
from .config import DEFAULT_MODEL, DragConfig
from .cpu_threads import requested_threads, use_cpu_threads
from .drag_pipeline import edit_picture, run_drag
from .drag_request import DragPreview, DragRequest, DragResult, check_drag_request
from .encoding import encode_image, encode_prompt, image_to_tensor, tensor_to_image
from .feature_maps import extract_feature_maps
from .generation import generate_keeping_latents
from .image_input import ImageLike, load_image, working_size
from .loading import DiffusionModel, load_model
from .prepared_image import PreparedImage, inversion_key, prepared_key
from .progress import CancelCheck, Progress, ProgressCallback, ProgressReporter
from .run_plan import RunPlan, StageRates, rate_key

__all__ = ["DragEditor", "DragPreview", "DragRequest", "DragResult", "PreparedImage", "Progress"]

WAIT_POLL_SECONDS = 0.1  # how often a run waiting for the model looks at its cancel check


def _holds_the_model(method):
    """Run `method` holding the model (`DragEditor.holding_model`), with the call's progress and cancel."""
    parameters = inspect.signature(method)

    @functools.wraps(method)
    def holding_the_model(self, *args, **kwargs):
        given = parameters.bind(self, *args, **kwargs).arguments
        with self.holding_model(given.get("progress"), given.get("cancel")):
            return method(self, *args, **kwargs)

    return holding_the_model


class DragEditor:
    def __init__(self, model=DEFAULT_MODEL, *, vae: Optional[str] = None, device=None, dtype=None,
                 config: Optional[DragConfig] = None, cache_dir=None, keep_prepared: int = 4, cpu_threads=None,
                 cache_max_bytes=None):
        requested_threads(cpu_threads)  # a bad thread count (argument or environment) fails before the model loads
        self.cpu_threads = cpu_threads  # None: DRAGWIDGET_CPU_THREADS or the engine's choice for the model
        self.model: DiffusionModel = model if isinstance(model, DiffusionModel) else load_model(
            model, vae=vae, device=device, dtype=dtype)
        # An embedded model may ship settings measured for it; Stable Diffusion keeps the reference ones.
        self.config = config or DragConfig.from_dict(self.model.recommended_settings)
        self.cache_dir = Path(cache_dir) if cache_dir else lora_cache.default_cache_dir()
        self.cache_max_bytes = lora_cache.max_cache_bytes(cache_max_bytes)  # bad value: fails before any work
        self._prepared = collections.OrderedDict()
        self._keep_prepared = keep_prepared
        self._rates = StageRates.in_folder(self.cache_dir)

    # ---------------------------------------------------------------- preparation
    @_holds_the_model
    def prepare(self, image: ImageLike, prompt: str = "", *, config: Optional[DragConfig] = None,
                progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None) -> PreparedImage:
        """Fine-tune the identity LoRA (or take it from the disk cache) and invert the image."""
        config = (config or self.config).for_method()
        report = ProgressReporter(progress, cancel)
        picture = load_image(image)
        width, height = self._working_size(picture.size, config)
        working = picture.resize((width, height), Image.BILINEAR)
        pixels = image_to_tensor(working, self.model.device)
        text_embedding = encode_prompt(self.model, prompt)
        timings = {}

        started = time.perf_counter()
        weights, source = None, "none"
        if config.lora_steps > 0:
            path = self._lora_cache_path(working, prompt, config)
            weights = lora_cache.load_lora(path, self.model, config,
                                           lora_finetuning.expected_lora_shapes(self.model.unet, config))
            if weights is not None:
                source = "disk cache"
                report(Progress("lora", config.lora_steps, config.lora_steps, "LoRA loaded from cache", cached=True))
            else:
                self.model.installed_lora = None  # training replaces the UNet's adapter (and removes it if cancelled)
                weights = lora_finetuning.train_identity_lora(
                    self.model, pixels, text_embedding, config,
                    on_step=lambda step, total, loss: report(Progress("lora", step, total, f"loss {loss:.4f}")))
                lora_cache.save_lora(weights, path, self.model, config, self.cache_max_bytes)
                source = "trained"
        timings["lora"] = time.perf_counter() - started

        prepared = PreparedImage(
            image=picture, prompt=prompt, config=config, working_size=(width, height), pixels=pixels,
            text_embedding=text_embedding, uncond_embedding=encode_prompt(self.model, ""),
            lora_weights=weights, lora_source=source, clean_latent=encode_image(self.model, pixels),
            guidance_scale=config.guidance_scale, timings=timings)
        if source == "trained":
            self._record_rate(prepared, "lora", timings["lora"], config.lora_steps)
        self.use_prepared(prepared)  # the just-trained LoRA is already in place; this records it
        prepared.inverted_latent(self.model, config, report, functools.partial(self._record_rate, prepared))
        return prepared

    @_holds_the_model
    def generate(self, prompt: str, *, seed: Optional[int] = None, width: Optional[int] = None,
                 height: Optional[int] = None, config: Optional[DragConfig] = None,
                 progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None) -> PreparedImage:
        """Generated-image mode: a new image from `prompt`, ready to drag (no LoRA, no inversion)."""
        config = (config or self.config).for_method()
        report = ProgressReporter(progress, cancel)
        width = width or self.model.native_width
        width, height = working_size(width, height or width, width, self.model.vae_scale_factor)
        lora_finetuning.install_lora(self.model.unet, None, config)
        self.model.installed_lora = None
        started = time.perf_counter()
        made = generate_keeping_latents(self.model, prompt, config, width, height, config.seed if seed is None else seed,
                        on_step=lambda step, total: report(Progress("generate", step, total)))
        picture = tensor_to_image(made.pixels)
        prepared = PreparedImage(
            image=picture, prompt=prompt, config=config, working_size=(width, height), pixels=made.pixels,
            text_embedding=made.text_embedding, uncond_embedding=made.uncond_embedding, lora_weights=None,
            lora_source="none", clean_latent=None, guidance_scale=config.generation_guidance_scale,
            generated=True, timings={"generate": time.perf_counter() - started})
        prepared.inverted[inversion_key(config)] = made.drag_latent
        return prepared

    # ---------------------------------------------------------------- the drag
    @_holds_the_model
    def drag(self, prepared: PreparedImage, points, mask=None, *, config: Optional[DragConfig] = None,
             progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None) -> DragResult:
        """Drag the handles of `points` to their targets. `config` may change the drag settings;
        LoRA settings are those the image was prepared with."""
        config = (config or prepared.config).for_method()
        request = check_drag_request(points, mask, prepared.size, prepared.working_size, config)
        return self._drag(prepared, request, config, ProgressReporter(progress, cancel))

    def _drag(self, prepared: PreparedImage, request, config: DragConfig, report: ProgressReporter,
              judged: bool = True):
        self.use_prepared(prepared)
        drag = run_drag if judged else edit_picture
        return drag(self.model, prepared, request, config, report, functools.partial(self._record_rate, prepared))

    @_holds_the_model
    def run(self, request: DragRequest, progress: Optional[ProgressCallback] = None,
            cancel: Optional[CancelCheck] = None) -> DragResult:
        """Prepare (or reuse) the request's image, then drag it. Points and mask are checked first,
        so bad input fails before any long work starts."""
        config = (request.config or self.config).for_method()
        prepared, checked = self._checked_and_ready(request, config, progress, cancel)
        return self._drag(prepared, checked, config, ProgressReporter(progress, cancel))

    @_holds_the_model
    def preview(self, request: DragRequest, progress: Optional[ProgressCallback] = None,
                cancel: Optional[CancelCheck] = None) -> DragPreview:
        """`run` without the verdict: the edited picture only, as fast as the request's settings
        allow (a live preview while the pointer moves). The picture is the one `run` gives."""
        config = (request.config or self.config).for_method()
        prepared, checked = self._checked_and_ready(request, config, progress, cancel)
        return self._drag(prepared, checked, config, ProgressReporter(progress, cancel), judged=False)

    @_holds_the_model
    def ready(self, image: ImageLike, prompt: str = "", config: Optional[DragConfig] = None,
              progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None) -> PreparedImage:
        """The image `run` would drag, prepared for `config` (its LoRA, its inversion and, for
        FastDrag's rigid core, the original's locating features) and kept in memory: from there when
        it is, prepared now otherwise (so that a later drag starts at once)."""
        config = (config or self.config).for_method()
        prepared = self._kept(load_image(image), prompt, config, progress, cancel)
        self.use_prepared(prepared)
        prepared.inverted_latent(self.model, config, ProgressReporter(progress, cancel),
                                 functools.partial(self._record_rate, prepared))
        if config.method == "fastdrag" and config.fastdrag_rigid_core:   # what its warp looks the object up in
            prepared.original_features.locating_for(self.model, prepared.image, prepared.prompt, config)
        return prepared

    def _kept(self, picture: Image.Image, prompt: str, config: DragConfig, progress, cancel) -> PreparedImage:
        """The picture prepared for `config`'s LoRA settings, from memory or prepared now and kept."""
        prepared = self.prepared_for(picture, prompt, config)
        if prepared is None:
            prepared = self.prepare(picture, prompt, config=config, progress=progress, cancel=cancel)
            self._prepared[prepared_key(picture, prompt, config)] = prepared
            while len(self._prepared) > self._keep_prepared:
                self._prepared.popitem(last=False)
        elif progress is not None:
            progress(Progress("lora", 1, 1, "reusing the prepared image (LoRA and inversion)", cached=True))
        return prepared

    def _checked_and_ready(self, request: DragRequest, config: DragConfig, progress, cancel):
        """The request's prepared image and its checked points and mask (checked before any work)."""
        if request.prepared is not None:
            prepared = request.prepared
            return prepared, check_drag_request(request.points, request.mask, prepared.size, prepared.working_size,
                                                config)
        picture = request.picture()
        checked = check_drag_request(request.points, request.mask, picture.size,
                                     self._working_size(picture.size, config), config)
        return self._kept(picture, request.prompt, config, progress, cancel), checked

    @_holds_the_model
    def feature_maps(self, request, progress: Optional[ProgressCallback] = None,
                     cancel: Optional[CancelCheck] = None):
        """Decoder-block features of `request.image` (and `request.edited`) along the DDIM inversion,
        PCA-coloured with one basis: a `feature_maps.FeatureRequest` in, a `FeatureMaps` out (its
        `.figure()` is the grid). Reuses the image this editor prepared for a drag, LoRA included."""
        return extract_feature_maps(self, request, progress, cancel)

    def plan(self, request: DragRequest) -> RunPlan:
        """What `run(request)` will do before its drag (train a LoRA? invert?) and about how long each
        stage will take, from the per-step times measured in earlier runs with this model, device,
        working size and LoRA batch (None until each stage that will run has been measured).

        Answers at once, even while another run holds the model: it only looks up, so a front end
        can ask before queuing a run. The answer is advisory: another run may change it meanwhile."""
        config = (request.config or self.config).for_method()
        prepared = request.prepared
        if prepared is None:
            picture = request.picture()
            prepared = self._prepared.get(prepared_key(picture, request.prompt, config))
        if prepared is not None:
            size, lora_batch, needs_lora = prepared.working_size, prepared.config.lora_batch_size, False
            inverts = inversion_key(config) not in prepared.inverted
        else:
            size, lora_batch, inverts = self._working_size(picture.size, config), config.lora_batch_size, True
            working = picture.resize(size, Image.BILINEAR)
            needs_lora = config.lora_steps > 0 and not self._lora_cache_path(working, request.prompt, config).is_file()
        steps = {"lora": config.lora_steps if needs_lora else 0, "inversion": config.inversion_steps if inverts else 0,
                 "decode": 1}
        if config.method == "dragdiffusion":
            steps.update(drag=config.max_drag_steps, denoise=config.inversion_steps)
        elif config.method == "fastdrag":   # the warp itself costs next to nothing
            steps.update(denoise=config.inversion_steps)
        else:   # about one Adam step a round: most rounds end early, once the supervision loss is small
            dragged = min(config.gooddrag_denoising_steps, config.inversion_steps)
            steps.update(gooddrag=dragged * config.gooddrag_rounds, denoise=config.inversion_steps - dragged)
        expected, measured_here = self._rates.estimate(rate_key(self.model, size, lora_batch), steps,
                                                       self.model.shipped_stage_rates)
        return RunPlan(needs_lora=needs_lora, lora_steps=steps["lora"], steps=steps, expected_seconds=expected,
                       measured_here=measured_here)

    # ---------------------------------------------------------------- sharing the model
    @contextlib.contextmanager
    def holding_model(self, progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None):
        """Make the model this thread's until the block ends. Every public call that touches the
        UNet holds it (re-entrantly); hold it yourself around direct UNet use after `use_prepared`.
        While another thread has it: one "waiting" progress event, then wait, still honouring `cancel`."""
        lock = self.model.lock
        if not lock.acquire(blocking=False):
            report = ProgressReporter(progress, cancel)
            report(Progress("waiting", 0, 0, "waiting for another run on this model to finish"))
            while not lock.acquire(timeout=WAIT_POLL_SECONDS):
                report.check()
        try:
            use_cpu_threads(self.model.device, self.model.unet, self.cpu_threads)
            yield
        finally:
            lock.release()

    @_holds_the_model
    def prepared_for(self, image: ImageLike, prompt: str = "", config: Optional[DragConfig] = None
                     ) -> Optional[PreparedImage]:
        """The image `run` prepared in memory for this picture, prompt and LoRA settings, or None."""
        key = prepared_key(load_image(image), prompt, (config or self.config).for_method())
        prepared = self._prepared.get(key)
        if prepared is not None:
            self._prepared.move_to_end(key)
        return prepared

    @_holds_the_model
    def use_prepared(self, prepared: PreparedImage) -> None:
        """Put the LoRA of `prepared` (or none) into the UNet, so that UNet calls see what its drag sees."""
        weights = prepared.lora_weights
        if weights is None or self.model.installed_lora is not weights:
            lora_finetuning.install_lora(self.model.unet, weights, prepared.config)
            self.model.installed_lora = weights

    # ---------------------------------------------------------------- helpers
    def _lora_cache_path(self, working: Image.Image, prompt: str, config: DragConfig) -> Path:
        key = lora_cache.lora_cache_key(self.model, np.asarray(working), prompt, config)
        return lora_cache.entry_path(self.cache_dir, key)

    def _record_rate(self, prepared: PreparedImage, stage: str, seconds: float, steps: int) -> None:
        key = rate_key(self.model, prepared.working_size, prepared.config.lora_batch_size)
        self._rates.record(key, stage, seconds, steps)

    def _working_size(self, size: Tuple[int, int], config: DragConfig) -> Tuple[int, int]:
        return working_size(*size, config.working_width or self.model.native_width, self.model.vae_scale_factor)
