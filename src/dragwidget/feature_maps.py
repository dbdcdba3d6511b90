"""Looking inside: decoder-block features along the DDIM inversion, seen through one shared PCA.

The paper drags with the features of the third decoder block (`up_blocks[2]`) at the latent
reached after 35 of 50 inversion steps (t = 681), chosen by looking at features like these.
This module lets anyone look for themselves:

1. Prepare the original image exactly as a drag would (identity LoRA, same prompt), so the
   features are the ones motion supervision and point tracking see.
2. Run the engine's DDIM inversion once, up to the deepest step asked for, and keep the latent
   after each requested number of inversion steps (`steps`, counted out of
   `config.num_inference_steps`: 35 means the latent at `timesteps[50 - 35]`, t = 681).
3. Run the UNet once per kept latent, at that latent's timestep, and read every requested
   decoder block (`blocks`, indices into `unet.up_blocks`), upsampled to the feature grid the
   drag uses (half the working size) or smaller (`max_size`).
4. Do the same for a second picture (the edited result, or any other image) resized to the
   original's working size. It is a new image, so it is inverted itself, with the same prompt
   and with the *original's* LoRA installed: that is the model that denoised the edited result.
5. Per block, fit ONE three-component PCA (torch.pca_lowrank) on all feature vectors of all
   steps and both pictures, and map each component to a colour channel with one min/max shared
   by everything. The same feature therefore gets the same colour at every timestep and in
   both pictures, and colour differences between panels mean feature differences.

    maps = editor.feature_maps(FeatureRequest(image, prompt, edited=result.image))
    maps.figure()           # rows original / edited, columns steps; the drag's block and step framed
    maps.rgb[2]             # images x steps x h x w x 3 in [0, 1]
    maps.features[2]        # images x steps x C x h x w (float16, CPU): raw features for matching
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .config import DragConfig
from .ddim_inversion import ddim_scheduler, drag_timestep_index, invert
from .encoding import encode_image, image_to_tensor
from .errors import InputError
from .feature_grid import GridScale, grid_shape
from .image_input import ImageLike, load_image
from .prepared_image import PreparedImage
from .progress import Progress, ProgressReporter
from .unet_features import decoder_block, unet_with_features

# Inversion-step counts shown by default, as fractions of the schedule: 10, 20, 30, 35, 40 of 50.
DEFAULT_STEP_FRACTIONS = (0.2, 0.4, 0.6, 0.7, 0.8)
DEFAULT_BLOCKS = (1, 2, 3)
DEFAULT_MAX_SIZE = 64
PCA_FIT_ROWS = 60000          # feature vectors used to fit the basis (all of them when fewer)
DRAG_COLOUR = "#e8402a"       # frame and labels of the drag's own block and step


# ---------------------------------------------------------------------------- request and result
@dataclass
class FeatureRequest:
    """What to look at. `steps` are inversion-step counts (None: 20/40/60/70/80 % of the schedule,
    i.e. 10, 20, 30, 35, 40 of 50); `blocks` are decoder block indices (None: 1, 2, 3)."""

    image: Optional[ImageLike] = None
    prompt: str = ""
    edited: Optional[ImageLike] = None
    steps: Optional[Sequence[int]] = None
    blocks: Optional[Sequence[int]] = None
    config: Optional[DragConfig] = None
    prepared: Optional[PreparedImage] = None
    max_size: int = DEFAULT_MAX_SIZE            # longest side of the feature grid, at most the drag's

    @classmethod
    def for_result(cls, result, prompt: str = "", **options) -> "FeatureRequest":
        """Original vs edited of a `DragResult` (what the widget shows after a run): the editor finds
        the image it prepared for that drag, so only the edited picture is new work."""
        return cls(result.original, prompt, edited=result.image, config=result.config, **options)


@dataclass
class PCABasis:
    """Three principal directions of one block's features and the shared colour range."""

    mean: torch.Tensor        # C
    components: torch.Tensor  # C x 3
    low: torch.Tensor         # 3: minimum of each projection over everything the basis was fitted on
    high: torch.Tensor        # 3

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """... x C x h x w -> ... x h x w x 3 projections (not yet normalised)."""
        moved = features.float().movedim(-3, -1)
        return (moved - self.mean) @ self.components

    def colours(self, features: torch.Tensor) -> np.ndarray:
        """... x C x h x w -> ... x h x w x 3 RGB in [0, 1], with the shared min/max."""
        span = (self.high - self.low).clamp_min(1e-8)
        return ((self.project(features) - self.low) / span).clamp(0, 1).numpy().astype(np.float32)


@dataclass
class FeatureMaps:
    images: List[Image.Image]                 # the pictures, at working size, in row order
    labels: List[str]                         # "original", "edited"
    steps: List[int]                          # inversion-step counts, one per column
    timesteps: List[int]                      # the timestep of each column's latent
    blocks: List[int]
    features: Dict[int, torch.Tensor]         # block -> images x steps x C x h x w, float16 on the CPU
    rgb: Dict[int, np.ndarray]                # block -> images x steps x h x w x 3, float32 in [0, 1]
    bases: Dict[int, PCABasis]
    grid: Tuple[int, int]                     # (h, w) of the feature maps
    drag_block: int
    drag_step: int
    drag_timestep: int
    num_inference_steps: int
    timings: Dict[str, float] = field(default_factory=dict)

    def feature(self, image: int, block: int, step: int) -> torch.Tensor:
        """C x h x w float32 features of picture `image` (row index) for one block and step count."""
        return self.features[block][image, self.steps.index(step)].float()

    def figure(self, blocks: Optional[Sequence[int]] = None, **options):
        return feature_grid_figure(self, blocks, **options)

    def _repr_png_(self) -> bytes:  # `maps` on its own in a notebook cell shows the grid
        return figure_png(self.figure())

    def scale(self, image_size: Tuple[int, int]) -> GridScale:
        """Pixels of a picture of `image_size` (w, h) <-> this feature grid, scaled as the drag
        scales handles, so positions compare with `DragResult.handles`."""
        return GridScale(tuple(image_size), (self.grid[1], self.grid[0]))


# ---------------------------------------------------------------------------- steps, blocks, grid
def default_steps(config: DragConfig) -> List[int]:
    total = config.num_inference_steps
    steps = {max(1, min(total, round(f * total))) for f in DEFAULT_STEP_FRACTIONS}
    return sorted(steps | {config.inversion_steps})


def check_steps(steps: Optional[Sequence[int]], config: DragConfig) -> List[int]:
    if steps is None:
        return default_steps(config)
    steps = sorted({int(s) for s in steps})
    bad = [s for s in steps if not 1 <= s <= config.num_inference_steps]
    if bad or not steps:
        raise InputError(f"steps {bad or list(steps)} are not inversion-step counts between 1 and "
                         f"{config.num_inference_steps} (the number of DDIM steps)")
    return steps


def check_blocks(blocks: Optional[Sequence[int]], unet) -> List[int]:
    blocks = list(DEFAULT_BLOCKS if blocks is None else dict.fromkeys(int(b) for b in blocks))
    count = len(unet.up_blocks)
    if not blocks or any(not 0 <= b < count for b in blocks):
        raise InputError(f"blocks {blocks} must be decoder block indices between 0 and {count - 1}")
    return blocks


def maps_grid_shape(working_size: Tuple[int, int], config: DragConfig, max_size: int) -> Tuple[int, int]:
    """The drag's supervision grid (h, w), shrunk to at most `max_size` on its longest side."""
    h, w = grid_shape(working_size, config.feature_scale)
    shrink = min(1.0, max_size / max(h, w))
    return max(1, round(h * shrink)), max(1, round(w * shrink))


def _strength_for(steps: int, config: DragConfig) -> float:
    """An inversion_strength whose `inversion_steps` is exactly `steps` (float rounding aside)."""
    strength = steps / config.num_inference_steps
    if config.replace(inversion_strength=strength).inversion_steps != steps:
        strength = (steps + 1e-6) / config.num_inference_steps
    return strength


# ---------------------------------------------------------------------------- latents and features
def inversion_latents(model, clean_latent: torch.Tensor, text_embedding: torch.Tensor, config: DragConfig,
                      steps: Sequence[int], on_step=None) -> Dict[int, torch.Tensor]:
    """The latent after each of `steps` inversion steps, from ONE run of the engine's `invert` (the
    latent before its step k is the latent after k steps; the deepest is what it returns)."""
    levels = []
    deepest = max(steps)
    last = invert(model, clean_latent, text_embedding, config.replace(inversion_strength=_strength_for(deepest, config)),
                  on_step=on_step, levels=levels)
    return {k: (last if k == deepest else levels[k]) for k in steps}


@torch.no_grad()
def block_features(model, latent: torch.Tensor, timestep, text_embedding: torch.Tensor,
                   blocks: Sequence[int], grid: Tuple[int, int]) -> Dict[int, torch.Tensor]:
    """C x h x w features of each decoder block in `blocks` from ONE UNet pass.

    The first block is read by the engine's `unet_with_features` (the drag's own reader); the
    others by the same kind of forward hook, resized the same way.
    """
    first, others = blocks[0], blocks[1:]
    captured = {}
    hooks = [decoder_block(model.unet, b).register_forward_hook(
        lambda module, inputs, output, b=b: captured.__setitem__(b, output)) for b in others]
    try:
        with model.autocast():
            _, features = unet_with_features(model.unet, latent, timestep, text_embedding, first, grid)
    finally:
        for hook in hooks:
            hook.remove()
    out = {first: features[0]}
    for b in others:
        out[b] = F.interpolate(captured[b].float(), size=grid, mode="bilinear", align_corners=False)[0]
    return out


def fit_pca_basis(features: torch.Tensor, rows: int = PCA_FIT_ROWS, seed: int = 0) -> PCABasis:
    """One basis for every map in `features` (... x C x h x w): torch.pca_lowrank on all vectors.

    Seeded (pca_lowrank is randomised) and sign-fixed (largest loading positive), so the same
    features always get the same colours.
    """
    vectors = features.float().movedim(-3, -1).reshape(-1, features.shape[-3])
    generator = torch.Generator().manual_seed(seed)
    sample = vectors if len(vectors) <= rows else vectors[torch.randperm(len(vectors), generator=generator)[:rows]]
    mean = sample.mean(0)
    q = min(3, *sample.shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _, _, components = torch.pca_lowrank(sample - mean, q=q, center=False, niter=6)
    if q < 3:  # fewer than three channels: pad with zero directions (grey channels)
        components = torch.cat([components, components.new_zeros(components.shape[0], 3 - q)], dim=1)
    signs = torch.sign(components.gather(0, components.abs().argmax(0, keepdim=True)))
    components = components * torch.where(signs == 0, torch.ones_like(signs), signs)
    projected = (vectors - mean) @ components
    return PCABasis(mean, components, projected.min(0).values, projected.max(0).values)


def picture_features(model, clean_latent: torch.Tensor, text_embedding: torch.Tensor, config: DragConfig,
                     steps: Sequence[int], blocks: Sequence[int], grid: Tuple[int, int],
                     on_pass=None) -> Dict[int, torch.Tensor]:
    """block -> steps x C x h x w (float16, CPU) for one picture: one inversion, one UNet pass per step.

    `on_pass(done, message)` counts UNet passes (max(steps) + len(steps) in all)."""
    scheduler = ddim_scheduler(model, config)
    total = config.num_inference_steps
    tell = on_pass or (lambda done, message: None)
    latents = inversion_latents(model, clean_latent, text_embedding, config, steps,
                                on_step=lambda step, count: tell(step, "inverting"))
    maps = {b: [] for b in blocks}
    for index, k in enumerate(steps):
        timestep = scheduler.timesteps[total - k]
        found = block_features(model, latents[k], timestep, text_embedding, blocks, grid)
        for b in blocks:
            maps[b].append(found[b].half().cpu())
        tell(max(steps) + index + 1, f"step {k} (t={int(timestep)})")
    return {b: torch.stack(maps[b]) for b in blocks}


def extract_feature_maps(editor, request: FeatureRequest, progress=None, cancel=None) -> FeatureMaps:
    """The body of `DragEditor.feature_maps`: see the module docstring for the steps."""
    config = (request.config or editor.config).for_method()
    report = ProgressReporter(progress, cancel)
    model = editor.model
    timings = {}

    # 1. The original, prepared as a drag would prepare it (reused when the editor already has it).
    prepared = request.prepared
    started = time.perf_counter()
    if prepared is None:
        if request.image is None:
            raise InputError("a feature request needs an image (or an already prepared image)")
        picture = load_image(request.image)
        prepared = editor.prepared_for(picture, request.prompt, config) or editor.prepare(
            picture, request.prompt, config=config, progress=progress, cancel=cancel)
    timings["prepare"] = time.perf_counter() - started
    steps = check_steps(request.steps, config)
    blocks = check_blocks(request.blocks, model.unet)
    grid = maps_grid_shape(prepared.working_size, config, request.max_size)
    scheduler = ddim_scheduler(model, config)
    total = config.num_inference_steps
    timesteps = [int(scheduler.timesteps[total - k]) for k in steps]

    pictures = [prepared.image.resize(prepared.working_size, Image.BILINEAR)]
    labels = ["original"]
    if request.edited is not None:
        pictures.append(load_image(request.edited).resize(prepared.working_size, Image.BILINEAR))
        labels.append("edited")

    # 2-4. Inversion latents and features of every picture, with the original's LoRA installed.
    #      The original's are kept on the prepared image: after the next drag only the edit is new.
    editor.use_prepared(prepared)
    per_block = {b: [] for b in blocks}
    passes = max(steps) + len(steps)  # UNet passes per picture: the inversion, then one per step
    cache = prepared.original_features.maps
    cache_key = (total, tuple(steps), tuple(blocks), grid)
    started = time.perf_counter()
    for row, picture in enumerate(pictures):
        done = row * passes
        tell = lambda step, message, done=done: report(Progress("features", done + step, passes * len(pictures), message))
        if row == 0 and cache_key in cache:
            found = cache[cache_key]
            tell(passes, "original: reused")
        else:
            clean = prepared.clean_latent if row == 0 and prepared.clean_latent is not None else \
                encode_image(model, image_to_tensor(picture, model.device))
            found = picture_features(model, clean, prepared.text_embedding, config, steps, blocks, grid,
                                     lambda step, message, row=row: tell(step, f"{labels[row]}: {message}"))
            if row == 0:
                while len(cache) >= 4:
                    cache.pop(next(iter(cache)))
                cache[cache_key] = found
        for b in blocks:
            per_block[b].append(found[b])
    timings["features"] = time.perf_counter() - started

    # 5. One PCA basis per block over everything, one shared colour range.
    started = time.perf_counter()
    features = {b: torch.stack(per_block[b]) for b in blocks}
    bases = {b: fit_pca_basis(features[b]) for b in blocks}
    rgb = {b: bases[b].colours(features[b]) for b in blocks}
    timings["pca"] = time.perf_counter() - started
    drag_index = drag_timestep_index(config)
    return FeatureMaps(
        images=pictures, labels=labels, steps=steps, timesteps=timesteps, blocks=blocks, features=features,
        rgb=rgb, bases=bases, grid=grid, drag_block=config.feature_block % len(model.unet.up_blocks),
        drag_step=config.inversion_steps, drag_timestep=int(scheduler.timesteps[drag_index]),
        num_inference_steps=total, timings=timings)


# ---------------------------------------------------------------------------- the picture
def feature_grid_figure(maps: FeatureMaps, blocks: Optional[Sequence[int]] = None, *, show_images: bool = True,
                        cell_size: float = 1.35, title: Optional[str] = None):
    """A matplotlib Figure: for each block, one row per picture (original / edited), one column
    per step; the drag's block and step get a coloured frame and coloured labels.

    Built on `matplotlib.figure.Figure` (no pyplot), so it is safe from a worker thread; display
    it in Jupyter as is, or turn it into PNG bytes with `figure_png`.
    """
    from matplotlib.figure import Figure

    blocks = list(maps.blocks if blocks is None else blocks)
    rows = [(b, i) for b in blocks for i in range(len(maps.labels))]
    lead = 1 if show_images else 0
    columns = lead + len(maps.steps)
    height, width = maps.grid
    aspect = height / width
    figure = Figure(figsize=(cell_size * columns + 0.9, cell_size * aspect * len(rows) + 1.0), dpi=100)
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for r, (block, image) in enumerate(rows):
        is_drag_block = block == maps.drag_block
        if show_images:
            ax = axes[r, 0]
            ax.imshow(maps.images[image], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("image", fontsize=9)
        for c, (step, timestep) in enumerate(zip(maps.steps, maps.timesteps)):
            ax = axes[r, lead + c]
            ax.imshow(maps.rgb[block][image, c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            is_drag_step = step == maps.drag_step
            if r == 0:
                ax.set_title(f"step {step}\nt={timestep}" + (" (drag)" if is_drag_step else ""), fontsize=9,
                             color=DRAG_COLOUR if is_drag_step else "black",
                             fontweight="bold" if is_drag_step else "normal")
            framed = is_drag_block and is_drag_step
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(DRAG_COLOUR if framed else "#bbbbbb")
                spine.set_linewidth(3.5 if framed else 0.5)
        label = f"block {block}" + ("\n(drag)" if is_drag_block else "") + f"\n{maps.labels[image]}"
        axes[r, 0].set_ylabel(label, fontsize=9, color=DRAG_COLOUR if is_drag_block else "black",
                              fontweight="bold" if is_drag_block else "normal")
    shown = maps.drag_block in blocks and maps.drag_step in maps.steps
    figure.suptitle(title or (
        f"PCA of decoder-block features (one basis per block, shared by all steps and images)\n"
        f"the drag reads block {maps.drag_block} at step {maps.drag_step} of {maps.num_inference_steps} "
        f"(t={maps.drag_timestep})" + ("" if shown else " - not among the panels")), fontsize=9.5)
    figure.tight_layout()
    figure.subplots_adjust(wspace=0.06, hspace=0.08)
    figure._repr_png_ = lambda: figure_png(figure)  # shown inline in Jupyter even without pyplot
    return figure


def figure_png(figure, dpi: Optional[int] = None) -> bytes:
    """PNG bytes of a figure (for an ipywidgets.Image or a file)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()
