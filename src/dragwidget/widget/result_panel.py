"""The result panel: original and edited side by side, a before/after wipe to compare them,
"use as new input", save as PNG, the animated GIF of the drag, and, beside the edited image, the
PCA grid of the decoder-block features of original and edited (`DragWidget.show_features`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Optional

import ipywidgets as widgets
import numpy as np
from PIL import Image

from .drawing import gif_size, png_bytes, resized

FEATURE_VIEW_WIDTH = 480  # px: the PCA grid beside the edited image is shown at most this wide


def wipe(original: Image.Image, edited: Image.Image, position: float) -> Image.Image:
    """Left of `position` (0..1 of the width) the original, right of it the edited image, with a line."""
    edited = edited.convert("RGB").resize(original.size) if edited.size != original.size else edited.convert("RGB")
    left = np.asarray(original.convert("RGB")).copy()
    right = np.asarray(edited)
    split = int(round(position * left.shape[1]))
    left[:, split:] = right[:, split:]
    if 0 < split < left.shape[1]:
        left[:, max(0, split - 1):split + 1] = (255, 255, 255)
    return Image.fromarray(left)


class ResultPanel(widgets.VBox):
    def __init__(self, on_use_as_input: Callable[[], None], view_size: int = 240):
        self.view_size = view_size
        self._original: Optional[Image.Image] = None
        self._edited: Optional[Image.Image] = None
        self.gif: bytes = b""
        self.on_use_as_input = on_use_as_input
        box = widgets.Layout(width="auto", height="auto")
        self.original_view = widgets.Image(format="png", layout=box)
        self.edited_view = widgets.Image(format="png", layout=box)
        self.compare_view = widgets.Image(format="png", layout=box)
        self.gif_view = widgets.Image(format="gif", layout=box)
        self.features_view = widgets.Image(format="png", layout=widgets.Layout(width="auto", height="auto"))
        self.features_label = widgets.HTML("")
        self.features_png: bytes = b""
        self.title = widgets.HTML("<b>Result</b>")
        self.info = widgets.HTML("")
        self.compare = widgets.FloatSlider(0.5, min=0.0, max=1.0, step=0.01, description="Compare",
                                           readout=False, layout=widgets.Layout(width="260px"),
                                           tooltip="left: original, right: edited")
        self.compare.observe(lambda _: self._draw_compare(), names="value")
        self.use_button = widgets.Button(description="Use as new input", icon="arrow-left",
                                         tooltip="replace the input with the edited image to chain edits")
        self.use_button.on_click(lambda _: self.on_use_as_input())
        self.path = widgets.Text(value="dragwidget_result.png", description="File", layout=widgets.Layout(width="260px"))
        self.save_png_button = widgets.Button(description="Save PNG", icon="save")
        self.save_gif_button = widgets.Button(description="Save GIF", icon="film")
        self.save_png_button.on_click(lambda _: self._save_clicked("png"))
        self.save_gif_button.on_click(lambda _: self._save_clicked("gif"))
        self.saved = widgets.HTML("")
        labelled = lambda text, view: widgets.VBox([widgets.HTML(f"<small>{text}</small>"), view])
        self.features_box = widgets.VBox([self.features_label, self.features_view])
        self.features_box.add_class("dragwidget-features")
        self.pictures = widgets.HBox([labelled("original", self.original_view), labelled("edited", self.edited_view),
                                      self.features_box], layout=widgets.Layout(flex_flow="row wrap"))
        self.comparison = widgets.VBox([self.compare, labelled("left: original · right: edited", self.compare_view)])
        self.animation = labelled("the drag (previews every few steps)", self.gif_view)
        super().__init__([self.title, self.pictures, self.comparison, self.animation, self.info,
                          widgets.HBox([self.use_button]),
                          widgets.HBox([self.path, self.save_png_button, self.save_gif_button]), self.saved])
        self.layout.max_width = f"{2 * view_size + 40}px"
        self.layout.margin = "0 0 0 12px"
        self.add_class("dragwidget-result")
        self.clear()

    # ------------------------------------------------------------------ content
    def _view(self, image: Image.Image, view: widgets.Image = None) -> bytes:
        size = gif_size(*image.size, target=self.view_size)
        if view is not None:  # a fixed box: flex layouts would otherwise stretch the picture
            view.layout.width, view.layout.height = f"{size[0]}px", f"{size[1]}px"
        return png_bytes(resized(image.convert("RGB"), size))

    def clear(self) -> None:
        self._original = self._edited = None
        self.gif = b""
        self.clear_features()
        self.layout.display = "none"

    # ------------------------------------------------------------------ the PCA feature grid
    def _fit_width(self, extra: int = 0) -> None:
        self.layout.max_width = f"{2 * self.view_size + 40 + (extra + 12 if extra else 0)}px"

    def clear_features(self) -> None:
        self.features_png = b""
        self.features_view.value = b""
        self.features_label.value = ""
        self.features_box.layout.display = "none"
        self._fit_width()

    def features_pending(self, text: str = "computing feature maps…") -> None:
        """Beside the edited image, while the features of the new result are computed."""
        self._features_message(f"<small>{text}</small>")

    def features_failed(self, text: str) -> None:
        self._features_message(f"<small style='color:#b00'>{text}</small>")

    def _features_message(self, html: str) -> None:
        self.features_png = b""
        self.features_view.value = b""
        self.features_view.layout.display = "none"
        self.features_label.value = html
        self.features_box.layout.display = None
        self._fit_width(self.view_size)

    def show_features(self, png: bytes, text: str) -> None:
        """The PCA feature grid (PNG bytes of `FeatureMaps.figure()`) beside the edited image."""
        with Image.open(io.BytesIO(png)) as picture:
            width, height = picture.size
        shown = min(width, FEATURE_VIEW_WIDTH)
        self.features_png = png
        self.features_view.value = png
        self.features_view.layout.width = f"{shown}px"
        self.features_view.layout.height = f"{max(1, round(height * shown / width))}px"
        self.features_view.layout.display = None
        self.features_label.value = text
        self.features_box.layout.display = None
        self._fit_width(shown)

    def show_preview(self, original: Image.Image, preview: Image.Image, text: str) -> None:
        """A live preview while the drag runs (the predicted clean image)."""
        self.layout.display = None
        self.title.value = "<b>Live preview</b> <small>(predicted clean image during the drag)</small>"
        self.original_view.value = self._view(original, self.original_view)
        self.edited_view.value = self._view(preview.resize(original.size), self.edited_view)
        self.info.value = text
        self.clear_features()             # the previous result's features do not belong to this drag
        for part in (self.comparison, self.animation, self.use_button, self.save_png_button, self.save_gif_button):
            part.layout.display = "none"

    def show_result(self, original: Image.Image, edited: Image.Image, gif: bytes, text: str) -> None:
        self._original, self._edited, self.gif = original, edited, gif
        self.title.value = "<b>Result</b>"
        self.clear_features()             # `show_features` / `features_pending` follow for this result
        self.original_view.value = self._view(original, self.original_view)
        self.edited_view.value = self._view(edited, self.edited_view)
        self._draw_compare()
        self.gif_view.value = gif
        if gif:
            size = gif_size(*original.size)
            self.gif_view.layout.width, self.gif_view.layout.height = f"{size[0]}px", f"{size[1]}px"
        self.info.value = text
        self.saved.value = ""
        for part in (self.comparison, self.use_button, self.save_png_button):
            part.layout.display = None
        self.animation.layout.display = None if gif else "none"
        self.save_gif_button.layout.display = None if gif else "none"
        self.layout.display = None

    def _draw_compare(self) -> None:
        if self._original is not None and self._edited is not None:
            self.compare_view.value = self._view(wipe(self._original, self._edited, self.compare.value), self.compare_view)

    # ------------------------------------------------------------------ saving
    def save_png(self, path) -> Path:
        if self._edited is None:
            raise ValueError("no result to save yet: run an edit first")
        path = Path(path).expanduser()
        if path.suffix.lower() != ".png":
            path = path.with_suffix(".png")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._edited.save(path)
        return path

    def save_gif(self, path) -> Path:
        if not self.gif:
            raise ValueError("no GIF of the drag yet: run an edit with preview_every > 0")
        path = Path(path).expanduser().with_suffix(".gif")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.gif)
        return path

    def _save_clicked(self, kind: str) -> None:
        try:
            saved = self.save_png(self.path.value) if kind == "png" else self.save_gif(self.path.value)
            self.saved.value = f"<small>saved {saved}</small>"
        except (OSError, ValueError) as error:
            self.saved.value = f"<small style='color:#b00'>not saved: {error}</small>"
