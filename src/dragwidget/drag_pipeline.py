"""One drag of a prepared image, step by step, whichever the method (`methods`).

    1. the inverted latent (from memory after the first drag);
    2. where the drag starts: the DDIM schedule, its timestep, what the mask keeps;
    3. the method's drag: DragDiffusion's optimisation at one timestep, GoodDrag's drag while
       denoising, or FastDrag's one warp;
    4. the rest of the denoising, the original alongside for mutual self-attention (FastDrag: the
       keys and values its inversion recorded);
    5. decoding at the input's size;
    6. the verdict, read from the picture.

`edit_picture` runs steps 1-5 (a preview: the picture only), `run_drag` all six. The caller
(`DragEditor`) holds the model and has put the prepared image's LoRA into its UNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from . import methods
from .compositing import keep_original_outside_mask
from .config import DragConfig
from .ddim_inversion import ddim_scheduler, drag_timestep_index
from .denoise_decode import decode, denoise
from .drag_request import CheckedRequest, DragPreview, DragResult
from .drag_verdict import judge
from .encoding import tensor_to_image
from .loading import DiffusionModel
from .methods.common import DragInputs
from .prepared_image import PreparedImage, RateRecorder, inversion_key
from .progress import Progress, ProgressReporter
from .run_plan import StageTimer


def run_drag(model: DiffusionModel, prepared: PreparedImage, request: CheckedRequest, config: DragConfig,
             report: ProgressReporter, record_rate: RateRecorder) -> DragResult:
    edited = edit_picture(model, prepared, request, config, report, record_rate)
    stage = StageTimer(model.device, record_rate)

    # 6. The verdict, read from the picture: where each handle's content went and whether it survived.
    with stage("verdict"):
        kept = prepared.original_features.locating
        verdict, kept[config.verdict_ensemble] = judge(model, prepared.image, edited.image, request.pairs,
                                                       prepared.prompt, config, kept.get(config.verdict_ensemble))
    report(Progress("verdict", 1, 1, verdict.describe()))
    return DragResult(
        image=edited.image, original=prepared.image, pairs=request.pairs, handles=edited.handles,
        trajectory=edited.trajectory, reached=verdict.reached, verdict=verdict, tracker_reached=edited.tracker_reached,
        steps=edited.steps, timings={**edited.timings, **stage.timings}, config=config, mask=request.editable,
        reused=edited.reused, kept_outside_mask=edited.kept_outside_mask)


def edit_picture(model: DiffusionModel, prepared: PreparedImage, request: CheckedRequest, config: DragConfig,
                 report: ProgressReporter, record_rate: RateRecorder) -> DragPreview:
    """Steps 1-5: the edited picture, not yet judged."""
    # The first drag of a prepared image accounts for its preparation; later ones reuse it.
    first_drag = not prepared.dragged
    prepared.dragged = True
    stage = StageTimer(model.device, record_rate)
    stage.timings["lora"] = prepared.timings.get("lora", 0.0) if first_drag else 0.0

    # 1. The inverted latent.
    with stage("inversion"):
        latent, inversion_cached = prepared.inverted_latent(model, config, report, record_rate)
    if first_drag and inversion_cached:
        stage.timings["inversion"] = prepared.timings.get("inversion", 0.0)
        inversion_cached = False
    elif inversion_cached:
        stage.timings["inversion"] = 0.0

    # 2. Where the drag starts: the DDIM schedule, its timestep, and what the mask keeps at latent size.
    scheduler = ddim_scheduler(model, config)
    start_index = drag_timestep_index(config)
    keep_mask = None
    if request.editable is not None:
        keep_mask = 1.0 - F.interpolate(torch.from_numpy(request.editable).float()[None, None],
                                        size=latent.shape[-2:], mode="nearest").to(model.device)
    on_device = lambda points: torch.tensor([request.grid.to_grid(xy) for xy in points], device=model.device)
    inputs = DragInputs(
        model=model, latent=latent, scheduler=scheduler, start_index=start_index,
        text_embedding=prepared.text_embedding, handles=on_device(p.handle for p in request.pairs),
        targets=on_device(p.target for p in request.pairs), grid=request.grid, config=config, keep_mask=keep_mask,
        guidance_scale=prepared.guidance_scale, uncond_embedding=prepared.uncond_embedding, report=report,
        pairs=request.pairs, editable=request.editable,
        locating_features=lambda: prepared.original_features.locating_for(model, prepared.image, prepared.prompt,
                                                                          config))

    # 3. The method's drag.
    method = methods.METHODS[config.method]
    with stage(method.STAGE, rate=method.RATE) as steps:
        outcome = method.drag(inputs)
        steps.count = outcome.steps if method.OPTIMISES else 1
    if method.OPTIMISES:
        stage.timings["optimisation_steps_per_second"] = (outcome.steps / stage.timings["optimisation"]
                                                         if stage.timings["optimisation"] else 0.0)

    # 4. Denoise the rest of the way.
    with stage("denoise") as steps:
        edited = denoise(model, scheduler, outcome.resume_index, outcome.original, outcome.edited,
                         prepared.text_embedding, config, guidance_scale=prepared.guidance_scale,
                         uncond_embedding=prepared.uncond_embedding,
                         on_step=lambda step, count: report(Progress("denoise", step, count)), keep=outcome.keep,
                         reference=prepared.recorded.get(inversion_key(config)) if config.method == "fastdrag" else None,
                         on_clean=outcome.on_denoised)
        steps.count = config.num_inference_steps - outcome.resume_index
    report.check()

    # 5. Decode at the input's size (the original's own pixels outside a drawn mask, when asked).
    with stage("decode") as steps:
        picture = tensor_to_image(decode(model, edited)).resize(prepared.size, Image.LANCZOS)
        kept_outside_mask = config.keep_outside_mask and request.editable is not None
        if kept_outside_mask:
            picture = keep_original_outside_mask(prepared.image, picture, request.editable)
        steps.count = 1
    report(Progress("decode", 1, 1))
    return DragPreview(
        image=picture, pairs=request.pairs, handles=outcome.handles, trajectory=outcome.trajectory,
        tracker_reached=outcome.tracker_reached, steps=outcome.steps, timings=stage.timings,
        reused={"lora": prepared.lora_source if first_drag else "memory",
                "inversion": "generation" if prepared.generated else "memory" if inversion_cached else "computed"},
        kept_outside_mask=kept_outside_mask)
