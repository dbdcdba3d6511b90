"""The correspondence explorer: click a point on picture A, see where its feature lives in picture B.

Point tracking re-finds each handle by a nearest-neighbour search for its *initial* feature.
This widget makes that search visible: the feature under the clicked point of A (the original)
is compared, by cosine similarity, with every feature of B (the edited image, or any other),
for a decoder block and an inversion step chosen with sliders; the similarity is laid over B as
a heatmap and the best match is marked.

    maps = editor.feature_maps(FeatureRequest(original, prompt, edited=result.image))
    explorer = CorrespondenceExplorer(maps)
    explorer                       # in Jupyter: two canvases, sliders, a read-out
    explorer.click_a(120, 80)      # what a mouse click does (canvas pixels); explorer.match is the result

The logic (`locating.best_match`, and the handlers `click_a`, `select`) needs no
browser: tests call them directly and read `explorer.match` and the drawn arrays `view_a`/`view_b`.
"""

from __future__ import annotations

import threading
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ..api import FeatureMaps, FeatureRequest, Match, best_match

# ---------------------------------------------------------------------------- the widget
class CorrespondenceExplorer:
    """Two canvases (A with the clicked point, B with the similarity heatmap and best match),
    a block slider, a step slider, a "PCA colours" switch and a one-line read-out."""

    def __init__(self, maps: FeatureMaps, a: int = 0, b: Optional[int] = None, *, display_size: int = 320,
                 colormap: str = "magma", alpha: float = 0.6, block: Optional[int] = None,
                 step: Optional[int] = None, point: Optional[Sequence[float]] = None):
        import ipywidgets as widgets
        from ipycanvas import Canvas

        self.maps = maps
        self.a = a
        self.b = (1 if len(maps.labels) > 1 else 0) if b is None else b
        self.alpha = alpha
        self.colormap = colormap
        self._lock = threading.Lock()
        width, height = maps.images[a].size
        self.scale = display_size / max(width, height)
        self.canvas_size = (max(1, round(width * self.scale)), max(1, round(height * self.scale)))
        if block is None:
            block = maps.drag_block if maps.drag_block in maps.blocks else maps.blocks[0]
        if step is None:
            step = maps.drag_step if maps.drag_step in maps.steps else maps.steps[0]
        self.block, self.step = block, step
        self._syncing = False
        self.match: Optional[Match] = None
        self.view_a: Optional[np.ndarray] = None   # RGBA arrays last drawn on the canvases
        self.view_b: Optional[np.ndarray] = None

        self.canvas_a = Canvas(width=self.canvas_size[0], height=self.canvas_size[1])
        self.canvas_b = Canvas(width=self.canvas_size[0], height=self.canvas_size[1])
        self.canvas_a.layout.margin = "0 8px 0 0"
        self.canvas_a.on_mouse_down(self.click_a)
        blocks = sorted(maps.blocks)
        if blocks == list(range(blocks[0], blocks[-1] + 1)):
            self.block_slider = widgets.IntSlider(value=self.block, min=blocks[0], max=blocks[-1],
                                                  description="block", continuous_update=False)
        else:
            self.block_slider = widgets.SelectionSlider(options=blocks, value=self.block, description="block",
                                                        continuous_update=False)
        self.step_slider = widgets.SelectionSlider(
            options=[(f"{s} (t={t})", s) for s, t in zip(maps.steps, maps.timesteps)], value=self.step,
            description="step", continuous_update=False)
        self.pca_toggle = widgets.Checkbox(value=False, description="PCA colours", indent=False)
        self.readout = widgets.HTML()
        self.block_slider.observe(lambda change: self._slid(block=change["new"]), names="value")
        self.step_slider.observe(lambda change: self._slid(step=change["new"]), names="value")
        self.pca_toggle.observe(lambda change: self.redraw(), names="value")
        titles = [widgets.HTML(f"<b>A: {maps.labels[self.a]}</b> (click a point)",
                               layout=widgets.Layout(width=f"{self.canvas_size[0]}px")),
                  widgets.HTML(f"<b>B: {maps.labels[self.b]}</b> (cosine similarity, best match ringed)")]
        self.widget = widgets.VBox([
            widgets.HBox(titles),
            widgets.HBox([self.canvas_a, self.canvas_b]),
            widgets.HBox([self.block_slider, self.step_slider, self.pca_toggle]),
            self.readout,
        ])
        start = point if point is not None else (maps.grid[1] / 2, maps.grid[0] / 2)
        self.set_point(start)

    @classmethod
    def from_images(cls, editor, image_a, image_b, prompt: str = "", *, steps=None, blocks=None, config=None,
                    max_size: int = 64, **options) -> "CorrespondenceExplorer":
        """Compute the features of both pictures with `editor.feature_maps`, then open the explorer."""
        maps = editor.feature_maps(FeatureRequest(image_a, prompt, edited=image_b, steps=steps, blocks=blocks,
                                                  config=config, max_size=max_size))
        return cls(maps, **options)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------ handlers (callable without a browser)
    def click_a(self, x: float, y: float) -> Match:
        """A mouse-down on canvas A at buffer pixels (x, y)."""
        working = (x / self.scale, y / self.scale)
        return self.set_point(self.maps.scale(self.maps.images[self.a].size).to_grid(working))

    def select(self, block: Optional[int] = None, step: Optional[int] = None) -> Match:
        """Change block and/or step (what the sliders do) and recompute the match."""
        if block is not None:
            if block not in self.maps.blocks:
                raise ValueError(f"block {block} was not extracted; have {self.maps.blocks}")
            self.block = block
        if step is not None:
            if step not in self.maps.steps:
                raise ValueError(f"step {step} was not extracted; have {self.maps.steps}")
            self.step = step
        self._syncing = True
        try:
            self.block_slider.value = self.block
            self.step_slider.value = self.step
        finally:
            self._syncing = False
        return self.set_point(self.match.point if self.match else (0, 0))

    def _slid(self, **change) -> None:
        if not self._syncing:
            self.select(**change)

    def set_point(self, grid_xy: Sequence[float]) -> Match:
        """Query A at a feature-grid point (x, y); update the match and redraw both canvases."""
        with self._lock:
            self.match = best_match(self.maps.feature(self.a, self.block, self.step),
                                    self.maps.feature(self.b, self.block, self.step), grid_xy)
        self.redraw()
        return self.match

    def image_point(self, grid_xy: Sequence[float], row: int) -> Tuple[float, float]:
        """A feature-grid point -> pixels of picture `row` (its working size)."""
        return self.maps.scale(self.maps.images[row].size).to_image(grid_xy)

    def canvas_point(self, grid_xy: Sequence[float]) -> Tuple[float, float]:
        """Where a feature-grid cell's centre is drawn on a canvas (buffer pixels)."""
        height, width = self.maps.grid
        return ((grid_xy[0] + 0.5) * self.canvas_size[0] / width, (grid_xy[1] + 0.5) * self.canvas_size[1] / height)

    # ------------------------------------------------------------ drawing
    def _base(self, row: int) -> np.ndarray:
        if self.pca_toggle.value:
            colours = self.maps.rgb[self.block][row, self.maps.steps.index(self.step)]
            picture = Image.fromarray((colours * 255).round().astype(np.uint8))
        else:
            picture = self.maps.images[row]
        return np.asarray(picture.convert("RGB").resize(self.canvas_size, Image.NEAREST), dtype=np.float32)

    def _heat(self, heatmap: np.ndarray) -> np.ndarray:
        from matplotlib import colormaps

        low, high = float(heatmap.min()), float(heatmap.max())
        scaled = (heatmap - low) / max(high - low, 1e-8)
        resized = np.asarray(Image.fromarray(scaled.astype(np.float32)).resize(self.canvas_size, Image.BILINEAR))
        return colormaps[self.colormap](np.clip(resized, 0, 1))[..., :3] * 255

    def redraw(self) -> None:
        from ipycanvas import hold_canvas

        match = self.match
        a = self._base(self.a)
        b = (1 - self.alpha) * self._base(self.b) + self.alpha * self._heat(match.heatmap)
        self.view_a, self.view_b = (_rgba(a), _rgba(b))
        ax, ay = self.canvas_point(match.point)
        bx, by = self.canvas_point(match.best)
        radius = max(4.0, self.scale * self.maps.images[self.a].size[0] / self.maps.grid[1] * 0.8)
        with hold_canvas():
            self.canvas_a.clear()
            self.canvas_a.put_image_data(self.view_a, 0, 0)
            _marker(self.canvas_a, ax, ay, radius, "#e8402a")
            self.canvas_b.clear()
            self.canvas_b.put_image_data(self.view_b, 0, 0)
            _marker(self.canvas_b, bx, by, radius + 2, "#36e0ff")
        px, py = self.image_point(match.point, self.a)
        qx, qy = self.image_point(match.best, self.b)
        timestep = self.maps.timesteps[self.maps.steps.index(self.step)]
        drag = " (the drag's own)" if (self.block, self.step) == (self.maps.drag_block, self.maps.drag_step) else ""
        self.readout.value = (
            f"A ({px:.0f}, {py:.0f}) px &rarr; best match in B ({qx:.0f}, {qy:.0f}) px, cosine "
            f"{match.similarity:.3f}; block {self.block}, step {self.step} (t={timestep}){drag}")


def _rgba(rgb: np.ndarray) -> np.ndarray:
    """Canvases get RGBA (sent as PNG); RGB would go as lossy JPEG."""
    rgb = np.clip(rgb, 0, 255).round().astype(np.uint8)
    return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)


def _marker(canvas, x: float, y: float, radius: float, colour: str) -> None:
    canvas.line_width = 3
    canvas.stroke_style = "black"
    canvas.stroke_circle(x, y, radius)
    canvas.line_width = 2
    canvas.stroke_style = colour
    canvas.stroke_circle(x, y, radius)
    canvas.fill_style = colour
    canvas.fill_circle(x, y, 2)
