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
import hashlib
import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import fastdrag, lora_cache, lora_finetuning
from .compositing import keep_original_outside_mask
from .config import DEFAULT_MODEL, DragConfig
from .cpu_threads import requested_threads, use_cpu_threads
from .ddim_inversion import InversionRecord, ddim_scheduler, drag_timestep_index, invert, invert_recording
from .denoise_decode import decode, denoise
from .encoding import encode_image, encode_prompt, image_to_tensor, tensor_to_image
from .errors import InputError
from .feature_maps import extract_feature_maps
from .generation import generate_keeping_latents
from .drag_verdict import Verdict, judge
from .gooddrag import drag_and_denoise, most_trackings
from .image_input import CheckedRequest, ImageLike, PointPair, check_drag_request, load_image, working_size
from .host_readback import synchronize
from .latent_optimization import optimize_latent
from .loading import DiffusionModel, load_model
from .locating import content_features, nearest_cell
from .progress import XY, CancelCheck, Progress, ProgressCallback, ProgressReporter
from .run_plan import RunPlan, StageRates, StageTimer, rate_key

WAIT_POLL_SECONDS = 0.1  # how often a run waiting for the model looks at its cancel check


@dataclass
class OriginalFeatures:
    """The prepared original's features, computed once and kept with it."""

    # verdict_ensemble -> its locating features (`locating.content_features`): the verdict's and
    # FastDrag's rigid core's
    locating: Dict[int, torch.Tensor] = field(default_factory=dict)
    # (DDIM steps, steps, blocks, grid) -> block -> features (`feature_maps`), the latest few
    maps: Dict[tuple, Dict[int, torch.Tensor]] = field(default_factory=dict)

    def locating_for(self, model: DiffusionModel, image: Image.Image, prompt: str, config: DragConfig) -> torch.Tensor:
        if config.verdict_ensemble not in self.locating:
            self.locating[config.verdict_ensemble] = content_features(model, image, prompt, config)
        return self.locating[config.verdict_ensemble]


@dataclass
class PreparedImage:
    """An image made ready for dragging: keep it and drag it again without repeating the work."""

    image: Image.Image                 # the input as given (RGB, EXIF orientation applied)
    prompt: str
    config: DragConfig                 # the LoRA and inversion settings it was prepared with
    working_size: Tuple[int, int]
    pixels: torch.Tensor
    text_embedding: torch.Tensor
    uncond_embedding: torch.Tensor
    lora_weights: Optional[Dict[str, torch.Tensor]]
    lora_source: str                   # "trained", "disk cache" or "none" (generated image, 0 steps)
    clean_latent: Optional[torch.Tensor]
    guidance_scale: float
    generated: bool = False
    timings: Dict[str, float] = field(default_factory=dict)
    inverted: Dict[Tuple[int, int], torch.Tensor] = field(default_factory=dict)
    recorded: Dict[Tuple[int, int], InversionRecord] = field(default_factory=dict)  # FastDrag's, by the same key
    dragged: bool = False
    original_features: OriginalFeatures = field(default_factory=OriginalFeatures, repr=False)

    @property
    def size(self) -> Tuple[int, int]:
        return self.image.size


@dataclass
class DragResult:
    image: Image.Image                 # edited, at the input's size
    original: Image.Image
    pairs: List[PointPair]
    handles: List[XY]                  # where the handles ended, input-image pixels
    trajectory: List[List[XY]]         # handle positions after every step, input-image pixels
    reached: bool                      # the verdict on the picture: every handle's content arrived, intact
    verdict: Verdict                   # per pair: where its content was found, how far from the target, intact?
    tracker_reached: bool              # what point tracking believed (it can be fooled: see drag_verdict)
    steps: int
    timings: Dict[str, float]
    config: DragConfig
    mask: Optional[np.ndarray]
    reused: Dict[str, str]             # what came from a cache: {"lora": ..., "inversion": ...}
    kept_outside_mask: bool = False    # the original's pixels were kept outside the mask (config.keep_outside_mask)

    @property
    def says(self) -> str:
        """The verdict in words, its category first, e.g. "reached, shape kept: the grabbed region
        is 1.0 px from the target, 96 % of it in place"."""
        return self.verdict.describe()

    def report(self) -> dict:
        """Everything but the pictures, as JSON-ready data."""
        return {
            "image_size": list(self.image.size),
            "pairs": [pair.to_dict() for pair in self.pairs],
            "final_handles": [list(h) for h in self.handles],
            "trajectory": [[list(h) for h in step] for step in self.trajectory],
            "reached": self.reached,
            "verdict": self.verdict.to_dict(),
            "tracker_reached": self.tracker_reached,
            "steps": self.steps,
            "timings": self.timings,
            "reused": self.reused,
            "kept_outside_mask": self.kept_outside_mask,
            "config": self.config.to_dict(),
        }


@dataclass
class DragRequest:
    """What a front end asks for: drag `points` of `image` (or of an already prepared image)."""

    image: Optional[ImageLike]
    points: object
    mask: object = None
    prompt: str = ""
    config: Optional[DragConfig] = None
    prepared: Optional[PreparedImage] = None


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
                self._installed_lora = None  # training replaces the UNet's adapter (and removes it if cancelled)
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
        self._inverted_latent(prepared, config, report)
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
        self._installed_lora = None
        started = time.perf_counter()
        made = generate_keeping_latents(self.model, prompt, config, width, height, config.seed if seed is None else seed,
                        on_step=lambda step, total: report(Progress("generate", step, total)))
        picture = tensor_to_image(made.pixels)
        prepared = PreparedImage(
            image=picture, prompt=prompt, config=config, working_size=(width, height), pixels=made.pixels,
            text_embedding=made.text_embedding, uncond_embedding=made.uncond_embedding, lora_weights=None,
            lora_source="none", clean_latent=None, guidance_scale=config.generation_guidance_scale,
            generated=True, timings={"generate": time.perf_counter() - started})
        prepared.inverted[(config.num_inference_steps, config.inversion_steps)] = made.drag_latent
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

    def _drag(self, prepared: PreparedImage, request: CheckedRequest, config: DragConfig,
              report: ProgressReporter) -> DragResult:
        grid = request.grid
        on_device = lambda points: [torch.tensor(grid.to_grid(xy), device=self.model.device) for xy in points]
        handles, targets = on_device(p.handle for p in request.pairs), on_device(p.target for p in request.pairs)
        # The first drag of a prepared image accounts for its preparation; later ones reuse it.
        first_drag = not prepared.dragged
        prepared.dragged = True
        stage = StageTimer(self.model.device, lambda name, seconds, steps: self._record_rate(prepared, name, seconds, steps))
        stage.timings["lora"] = prepared.timings.get("lora", 0.0) if first_drag else 0.0

        # 1. The prepared image's LoRA in the UNet and its inverted latent (from memory after the first drag).
        self.use_prepared(prepared)
        with stage("inversion"):
            latent, inversion_cached = self._inverted_latent(prepared, config, report)
        if first_drag and inversion_cached:
            stage.timings["inversion"] = prepared.timings.get("inversion", 0.0)
            inversion_cached = False
        elif inversion_cached:
            stage.timings["inversion"] = 0.0

        # 2. Where the drag starts: the DDIM schedule, its timestep, and what the mask keeps at latent size.
        inversion_key = (config.num_inference_steps, config.inversion_steps)
        scheduler = ddim_scheduler(self.model, config)
        start_index = drag_timestep_index(config)
        keep_mask = None
        if request.editable is not None:
            keep_mask = 1.0 - F.interpolate(torch.from_numpy(request.editable).float()[None, None],
                                            size=latent.shape[-2:], mode="nearest").to(self.model.device)

        def on_drag_step(step, current, clean):
            preview = None if clean is None else tensor_to_image(decode(self.model, clean))
            report(Progress("drag", step, total, handles=[grid.to_image(h) for h in current], preview=preview))

        # 3. The drag: the paper's optimisation at one timestep, GoodDrag's drag while denoising, or
        #    FastDrag's one warp of the latent.
        keep = None
        if config.method == "fastdrag":
            outcome, keep = self._warp(prepared, request, latent, config, stage, report)
            original, edited, resume_index = latent, outcome.latent, start_index
            arrived = [outcome.to_image(h) for h in outcome.handles]

            def on_denoised(step, count, clean):
                # FastDrag's frames: the warped picture taking shape, step by step
                if step % config.preview_every == 0 or step == count:
                    report(Progress("denoise", step, count, handles=arrived,
                                    preview=tensor_to_image(decode(self.model, clean))))
        else:
            total = config.max_drag_steps if config.method == "dragdiffusion" else most_trackings(config)
            report(Progress("drag", 0, total, handles=[grid.to_image(h) for h in handles]))
            torch.manual_seed(config.seed)
            drag_inputs = dict(text_embedding=prepared.text_embedding, handles=handles, targets=targets,
                               grid_size=grid.shape, config=config, keep_mask=keep_mask,
                               guidance_scale=prepared.guidance_scale, uncond_embedding=prepared.uncond_embedding,
                               on_step=on_drag_step)
            with stage("optimisation", rate="drag" if config.method == "dragdiffusion" else "gooddrag") as steps:
                if config.method == "dragdiffusion":
                    outcome = optimize_latent(self.model, latent, scheduler.timesteps[start_index], scheduler,
                                              **drag_inputs)
                    original, edited, resume_index = latent, outcome.latent, start_index
                else:
                    outcome = drag_and_denoise(self.model, latent, scheduler, start_index, **drag_inputs)
                    original, edited, resume_index = outcome.original, outcome.edited, outcome.resume_index
                steps.count = outcome.steps
            stage.timings["optimisation_steps_per_second"] = (outcome.steps / stage.timings["optimisation"]
                                                             if stage.timings["optimisation"] else 0.0)

        # 4. Denoise the rest of the way, the original alongside for mutual self-attention (FastDrag:
        #    the edit alone, with the keys and values its inversion recorded).
        with stage("denoise") as steps:
            edited = denoise(self.model, scheduler, resume_index, original, edited, prepared.text_embedding, config,
                             guidance_scale=prepared.guidance_scale, uncond_embedding=prepared.uncond_embedding,
                             on_step=lambda step, count: report(Progress("denoise", step, count)), keep=keep,
                             reference=prepared.recorded.get(inversion_key) if config.method == "fastdrag" else None,
                             on_clean=on_denoised if config.method == "fastdrag" and config.preview_every else None)
            steps.count = config.num_inference_steps - resume_index
        report.check()

        # 5. Decode at the input's size (the original's own pixels outside a drawn mask, when asked).
        with stage("decode") as steps:
            picture = tensor_to_image(decode(self.model, edited)).resize(prepared.size, Image.LANCZOS)
            kept_outside_mask = config.keep_outside_mask and request.editable is not None
            if kept_outside_mask:
                picture = keep_original_outside_mask(prepared.image, picture, request.editable)
            steps.count = 1
        report(Progress("decode", 1, 1))

        # 6. The verdict, read from the picture: where each handle's content went and whether it survived.
        with stage("verdict"):
            kept = prepared.original_features.locating
            verdict, kept[config.verdict_ensemble] = judge(self.model, prepared.image, picture, request.pairs,
                                                           prepared.prompt, config, kept.get(config.verdict_ensemble))
        report(Progress("verdict", 1, 1, verdict.describe()))
        to_image = outcome.to_image if config.method == "fastdrag" else grid.to_image
        return DragResult(
            image=picture, original=prepared.image, pairs=request.pairs,
            handles=[to_image(h) for h in outcome.handles],
            trajectory=[[to_image(h) for h in step] for step in outcome.trajectory],
            reached=verdict.reached, verdict=verdict, tracker_reached=outcome.reached, steps=outcome.steps,
            timings=stage.timings, config=config, mask=request.editable,
            reused={"lora": prepared.lora_source if first_drag else "memory",
                    "inversion": "generation" if prepared.generated else "memory" if inversion_cached else "computed"},
            kept_outside_mask=kept_outside_mask)

    def _warp(self, prepared: PreparedImage, request: CheckedRequest, latent: torch.Tensor, config: DragConfig,
              stage: StageTimer, report: ProgressReporter) -> Tuple["WarpedDrag", torch.Tensor]:
        """FastDrag's step 3: the inverted latent warped once (no optimisation, no tracking); also
        what the denoising keeps of the original (1 outside the editable region)."""
        latent_size = tuple(latent.shape[-2:])
        handles = fastdrag.latent_points([p.handle for p in request.pairs], prepared.size, latent_size)
        targets = fastdrag.latent_points([p.target for p in request.pairs], prepared.size, latent_size)
        to_image = lambda cells: fastdrag.image_points(torch.as_tensor(cells)[None], prepared.size, latent_size)[0]
        report(Progress("drag", 0, 1, handles=[p.handle for p in request.pairs]))
        with stage("warp") as steps:
            features = None
            if config.fastdrag_rigid_core:
                # the handle's object is found with the verdict's locating features of the original (computed once)
                features = prepared.original_features.locating_for(self.model, prepared.image, prepared.prompt, config)
            warped = fastdrag.warp(latent, handles, targets, config, request.editable, features)
            steps.count = 1
        columns, rows = zip(*(nearest_cell(h, latent_size[1], latent_size[0]) for h in handles.tolist()))
        arrived = handles + warped.moves[list(rows), list(columns)].cpu()   # where the field sends each handle
        report(Progress("drag", 1, 1, handles=[to_image(h) for h in arrived]))
        keep = (~warped.region).to(latent.dtype)[None, None]
        outcome = WarpedDrag(warped.latent, list(arrived), [handles.tolist(), arrived.tolist()],
                             bool(((arrived - targets).norm(dim=-1) < 1.0).all()), to_image, warped)
        return outcome, keep

    @_holds_the_model
    def run(self, request: DragRequest, progress: Optional[ProgressCallback] = None,
            cancel: Optional[CancelCheck] = None) -> DragResult:
        """Prepare (or reuse) the request's image, then drag it. Points and mask are checked first,
        so bad input fails before any long work starts."""
        config = (request.config or self.config).for_method()
        prepared = request.prepared
        if prepared is None:
            picture = _request_picture(request)
            checked = check_drag_request(request.points, request.mask, picture.size,
                                         self._working_size(picture.size, config), config)
            prepared = self.prepared_for(picture, request.prompt, config)
            if prepared is None:
                prepared = self.prepare(picture, request.prompt, config=config, progress=progress, cancel=cancel)
                self._prepared[_prepared_key(picture, request.prompt, config)] = prepared
                while len(self._prepared) > self._keep_prepared:
                    self._prepared.popitem(last=False)
            elif progress is not None:
                progress(Progress("lora", 1, 1, "reusing the prepared image (LoRA and inversion)", cached=True))
        else:
            checked = check_drag_request(request.points, request.mask, prepared.size, prepared.working_size, config)
        return self._drag(prepared, checked, config, ProgressReporter(progress, cancel))

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
            picture = _request_picture(request)
            prepared = self._prepared.get(_prepared_key(picture, request.prompt, config))
        if prepared is not None:
            size, lora_batch, needs_lora = prepared.working_size, prepared.config.lora_batch_size, False
            inverts = (config.num_inference_steps, config.inversion_steps) not in prepared.inverted
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
        key = _prepared_key(load_image(image), prompt, config or self.config)
        prepared = self._prepared.get(key)
        if prepared is not None:
            self._prepared.move_to_end(key)
        return prepared

    @_holds_the_model
    def use_prepared(self, prepared: PreparedImage) -> None:
        """Put the LoRA of `prepared` (or none) into the UNet, so that UNet calls see what its drag sees."""
        weights = prepared.lora_weights
        if weights is None or self._installed_lora is not weights:
            lora_finetuning.install_lora(self.model.unet, weights, prepared.config)
            self._installed_lora = weights

    # ---------------------------------------------------------------- helpers
    def _lora_cache_path(self, working: Image.Image, prompt: str, config: DragConfig) -> Path:
        key = lora_cache.lora_cache_key(self.model, np.asarray(working), prompt, config)
        return lora_cache.entry_path(self.cache_dir, key)

    def _record_rate(self, prepared: PreparedImage, stage: str, seconds: float, steps: int) -> None:
        key = rate_key(self.model, prepared.working_size, prepared.config.lora_batch_size)
        self._rates.record(key, stage, seconds, steps)

    def _working_size(self, size: Tuple[int, int], config: DragConfig) -> Tuple[int, int]:
        return working_size(*size, config.working_width or self.model.native_width, self.model.vae_scale_factor)

    @property
    def _installed_lora(self) -> Optional[Dict[str, torch.Tensor]]:
        # The weights now in the UNet. Kept on the UNet, not the editor, so that editors sharing a
        # model see each other's changes; a reference (not an id()) so that it cannot be reused.
        return getattr(self.model.unet, "_dragwidget_installed_lora", None)

    @_installed_lora.setter
    def _installed_lora(self, weights: Optional[Dict[str, torch.Tensor]]) -> None:
        self.model.unet._dragwidget_installed_lora = weights

    def _inverted_latent(self, prepared: PreparedImage, config: DragConfig, report) -> Tuple[torch.Tensor, bool]:
        """The prepared image's inverted latent for `config`'s steps (computed once); for FastDrag
        with its record (`InversionRecord`) beside it in `prepared.recorded`."""
        key = (config.num_inference_steps, config.inversion_steps)
        records = config.method == "fastdrag"
        if key in prepared.inverted and (key in prepared.recorded or not records):
            report(Progress("inversion", config.inversion_steps, config.inversion_steps, cached=True))
            return prepared.inverted[key], True
        if prepared.generated:
            raise InputError("a generated image can only be dragged with the step count and strength it was generated with"
                             + (" and by the methods that optimise (FastDrag needs an inversion)" if records else ""))
        started = time.perf_counter()
        on_step = lambda step, total: report(Progress("inversion", step, total))
        if records:
            latent, prepared.recorded[key] = invert_recording(self.model, prepared.clean_latent,
                                                              prepared.text_embedding, config, on_step)
        else:
            latent = invert(self.model, prepared.clean_latent, prepared.text_embedding, config, on_step=on_step)
        synchronize(self.model.device)
        prepared.timings["inversion"] = time.perf_counter() - started
        self._record_rate(prepared, "inversion", prepared.timings["inversion"], config.inversion_steps)
        prepared.inverted[key] = latent
        return latent, False


@dataclass
class WarpedDrag:
    """FastDrag's step 3 in the shape of the other methods' outcomes (handles in latent cells)."""

    latent: torch.Tensor
    handles: List[torch.Tensor]          # where the warp sent each handle
    trajectory: List[List[XY]]           # the handles before and after the warp
    reached: bool                        # the warp sent every handle to within a cell of its target
    to_image: object                     # latent cell -> input pixels
    warp: "fastdrag.WarpOutcome"
    steps: int = 0                       # no optimisation steps


def _request_picture(request: DragRequest) -> Image.Image:
    if request.image is None:
        raise InputError("a request needs an image (or an already prepared image)")
    return load_image(request.image)


def _prepared_key(picture: Image.Image, prompt: str, config: DragConfig) -> str:
    digest = hashlib.sha256(picture.tobytes())
    digest.update(repr((picture.size, prompt, config.working_width, config.lora_rank, config.lora_alpha,
                        config.lora_steps, config.lora_lr, config.lora_batch_size, config.lora_seed,
                        config.lora_target_modules, config.lora_augment)).encode())
    return digest.hexdigest()
