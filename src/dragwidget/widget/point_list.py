"""The point pairs listed beside the canvas, numbered as on it, each with a remove button."""

from __future__ import annotations

import ipywidgets as widgets

from .canvas import DragCanvas


def _xy(point) -> str:
    return f"({point[0]:g}, {point[1]:g})"


class PointList(widgets.VBox):
    """A live view of `canvas.points` (and its pending handle, mask and scale); it stores nothing."""

    def __init__(self, canvas: DragCanvas):
        # a fixed column beside two 448-px pictures in a 1100-px notebook: as a flex item it would
        # otherwise be squeezed until every pair wraps over several lines
        super().__init__(layout=widgets.Layout(width="184px", min_width="184px", flex="0 0 184px", margin="0 0 0 8px"))
        self.add_class("dragwidget-points")
        self.canvas = canvas
        self.summary = widgets.HTML("")
        self.rows = widgets.VBox([], layout=widgets.Layout(max_height="300px", overflow="auto"))
        self.children = [widgets.HTML("<b>Point pairs</b>"), self.rows, self.summary]
        canvas.observe(lambda _: self.refresh(), names=["points", "pending", "mask", "image", "locked", "dragging"])
        self.refresh()

    def refresh(self) -> None:
        canvas = self.canvas
        rows = []
        for index, pair in enumerate(canvas.points):
            remove = widgets.Button(icon="times", tooltip=f"remove pair {index + 1} (z undoes it)",
                                    layout=widgets.Layout(width="24px", min_width="24px", height="22px", padding="0"),
                                    disabled=canvas.locked)
            remove.add_class("dragwidget-remove-pair")
            remove.on_click(lambda _, index=index: canvas.remove_pair(index))
            label = widgets.HTML(f"<small style='white-space:nowrap'><b>{index + 1}</b> {_xy(pair.handle)} → "
                                 f"{_xy(pair.target)}</small>")
            rows.append(widgets.HBox([remove, label], layout=widgets.Layout(align_items="center")))
        self.rows.children = rows
        if canvas.image is None or canvas.mask is None:
            self.summary.value = "<small>no image yet: upload one, or generate one (Parameters)</small>"
            return
        pending = "" if canvas.pending is None else (
            "release to place the target<br>" if canvas.dragging else f"pending handle {_xy(canvas.pending)}: click its target<br>")
        hint = "" if rows or pending else "click a handle, then its target<br>"
        self.summary.value = (f"<small>{hint}{pending}{canvas.image.width}×{canvas.image.height} px, shown "
                              f"×{canvas.scale:.3g} · mask {int(canvas.mask.sum())} px</small>")
