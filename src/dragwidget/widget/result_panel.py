"""The result beside the canvas, at the canvas's size, with a before/after wipe on the picture itself;
"use as new input", save as PNG; and two views shown elsewhere in the widget (tabs): the PCA grid of
the decoder-block features of original and edited, and the animated GIF of the drag."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Optional, Tuple

import ipywidgets as widgets
import numpy as np
from PIL import Image

from .compat import tip
from .drawing import display_size, fit_scale, gif_size, png_bytes, resized

FEATURE_VIEW_WIDTH = 720  # px: the PCA grid is shown at most this wide


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


def _fixed_size(view: widgets.Image, size: Tuple[int, int]) -> None:
    # a fixed box: flex layouts would otherwise stretch the picture
    view.layout.width, view.layout.height = f"{size[0]}px", f"{size[1]}px"


class FeatureView(widgets.VBox):
    """The PCA grid of the last result (PNG bytes of `FeatureMaps.figure()`), or why there is none."""

    def __init__(self):
        self.label = widgets.HTML("<small>after a run: the PCA maps of the decoder features</small>")
        self.view = widgets.Image(format="png", layout=widgets.Layout(width="auto", height="auto"))
        self.png: bytes = b""
        super().__init__([self.label, self.view])
        self.add_class("dragwidget-features")

    def clear(self, text: str = "") -> None:
        self.png = b""
        self.view.value = b""
        self.view.layout.display = "none"
        self.label.value = text

    def show(self, png: bytes, text: str) -> None:
        with Image.open(io.BytesIO(png)) as picture:
            width, height = picture.size
        shown = min(width, FEATURE_VIEW_WIDTH)
        self.png = png
        self.view.value = png
        _fixed_size(self.view, (shown, max(1, round(height * shown / width))))
        self.view.layout.display = None
        self.label.value = text


class AnimationView(widgets.VBox):
    """The animated GIF of the last drag (previews every few steps)."""

    def __init__(self):
        self.gif: bytes = b""
        self.view = widgets.Image(format="gif", layout=widgets.Layout(width="auto", height="auto"))
        self.label = widgets.HTML("<small>after a run with previews on: the drag, frame by frame</small>")
        super().__init__([self.label, self.view])

    def show(self, gif: bytes, size: Tuple[int, int]) -> None:
        self.gif = gif
        self.view.value = gif
        self.view.layout.display = None if gif else "none"
        if gif:
            _fixed_size(self.view, gif_size(*size))
        self.label.value = "<small>the drag (previews every few steps)</small>" if gif else (
            "<small>no previews in this run (preview_every = 0)</small>")


class ResultPanel(widgets.VBox):
    def __init__(self, on_use_as_input: Callable[[], None], max_display_size=(448, 448)):
        self.max_display_size = tuple(max_display_size)
        self._original: Optional[Image.Image] = None
        self._edited: Optional[Image.Image] = None
        self.features = FeatureView()
        self.animation = AnimationView()
        self.title = widgets.HTML("<b>Result</b>")
        self.edited_view = widgets.Image(format="png", layout=widgets.Layout(width="auto", height="auto"))
        self.edited_view.add_class("dragwidget-result")
        self.info = widgets.HTML("")
        self.compare = widgets.FloatSlider(1.0, min=0.0, max=1.0, step=0.01, description="Before/after",
                                           readout=False, layout=widgets.Layout(width="300px"),
                                           style={"description_width": "80px"},
                                           **tip("left of the line the original, right of it the edited image"))
        self.compare.observe(lambda _: self._draw(), names="value")
        self.use_button = widgets.Button(description="Use as input", icon="arrow-left",
                                         tooltip="replace the input with the edited image to chain edits")
        self.use_button.on_click(lambda _: on_use_as_input())
        self.path = widgets.Text(value="dragwidget_result.png", layout=widgets.Layout(width="170px"))
        self.save_png_button = widgets.Button(description="PNG", icon="save", layout=widgets.Layout(width="70px"),
                                              tooltip="save the edited image to the file named beside")
        self.save_gif_button = widgets.Button(description="GIF", icon="film", layout=widgets.Layout(width="70px"),
                                              tooltip="save the animation of the drag")
        self.save_png_button.on_click(lambda _: self._save_clicked("png"))
        self.save_gif_button.on_click(lambda _: self._save_clicked("gif"))
        self.saved = widgets.HTML("")
        self.actions = widgets.HBox([self.use_button, self.path, self.save_png_button, self.save_gif_button],
                                    layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__([self.title, self.edited_view, self.compare, self.actions, self.info, self.saved],
                         # never squeezed (a flex item would be, and its picture with it): in a narrow
                         # front end the row wraps instead
                         layout=widgets.Layout(margin="0 0 0 8px", flex="0 0 auto",
                                               width=f"{self.max_display_size[0]}px"))
        self.show_input(None)

    @property
    def gif(self) -> bytes:
        return self.animation.gif

    def _display(self, image: Image.Image) -> bytes:
        size = display_size(image.width, image.height, fit_scale(image.width, image.height, *self.max_display_size))
        _fixed_size(self.edited_view, size)
        return png_bytes(resized(image.convert("RGB"), size))

    def _draw(self) -> None:
        if self._original is not None and self._edited is not None:
            self.edited_view.value = self._display(wipe(self._original, self._edited, 1.0 - self.compare.value))

    # ------------------------------------------------------------------ content
    def show_input(self, image: Optional[Image.Image]) -> None:
        """No result yet: the input stands in its place (so the pair keeps its shape)."""
        self._original, self._edited = image, None
        self.features.clear("<small>after a run: the PCA maps of the decoder features</small>")
        self.animation.show(b"", (1, 1))
        self.title.value = "<b>Result</b> <small>(none yet: the input is shown)</small>"
        self.edited_view.value = b"" if image is None else self._display(image)
        self.info.value = self.saved.value = ""
        for part in (self.compare, self.actions):
            part.layout.display = "none"

    def show_preview(self, original: Image.Image, preview: Image.Image, text: str,
                     what: str = "predicted clean image during the drag") -> None:
        """A preview: while the drag runs (the predicted clean image), or while the pointer drags."""
        self.title.value = f"<b>Live preview</b> <small>({what})</small>"
        self.edited_view.value = self._display(preview.resize(original.size))
        self.info.value = text
        self.features.clear()             # the previous result's features do not belong to this drag
        for part in (self.compare, self.actions):
            part.layout.display = "none"

    def show_result(self, original: Image.Image, edited: Image.Image, gif: bytes, text: str) -> None:
        self._original, self._edited = original, edited
        self.title.value = "<b>Result</b>"
        self.features.clear()             # `show_features` / `features_pending` follow for this result
        self._draw()
        self.animation.show(gif, original.size)
        self.info.value = text
        self.saved.value = ""
        for part in (self.compare, self.actions):
            part.layout.display = None
        self.save_gif_button.layout.display = None if gif else "none"

    def features_pending(self, text: str = "computing feature maps…") -> None:
        self.features.clear(f"<small>{text}</small>")

    def features_failed(self, text: str) -> None:
        self.features.clear(f"<small style='color:#b00'>{text}</small>")

    def show_features(self, png: bytes, text: str) -> None:
        self.features.show(png, text)

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
