"""ipywidgets 7 (Google Colab's front end, classic Notebook) and 8: the few places where the widget's
code has to say things differently. Everything else it uses is the same in both."""

from __future__ import annotations

from typing import List, Sequence

import ipywidgets as widgets

IPYWIDGETS_MAJOR = int(widgets.__version__.split(".")[0])


def tip(text: str) -> dict:
    """The keyword that gives a described control (a text box, checkbox, slider; buttons take
    `tooltip` in both) its hover text: ipywidgets 7 calls it description_tooltip."""
    return {"tooltip": text} if IPYWIDGETS_MAJOR >= 8 else {"description_tooltip": text}


def titled_tabs(children: Sequence[widgets.Widget], titles: Sequence[str]) -> widgets.Tab:
    """A Tab with a title per child (ipywidgets 7 has no `titles`, only set_title)."""
    if IPYWIDGETS_MAJOR >= 8:
        return widgets.Tab(children=list(children), titles=tuple(titles))
    tabs = widgets.Tab(children=list(children))
    for index, title in enumerate(titles):
        tabs.set_title(index, title)
    return tabs


def uploaded_files(value) -> List[dict]:
    """A FileUpload's value as [{"name": ..., "content": bytes-like}]: ipywidgets 8 gives a tuple of
    dicts, ipywidgets 7 a dict from file name to {"metadata": ..., "content": ...}."""
    if isinstance(value, dict):
        return [{"name": name, "content": item["content"]} for name, item in value.items()]
    return [{"name": item["name"], "content": item["content"]} for item in value]


def clear_upload(upload: widgets.FileUpload) -> None:
    """Forget the uploaded files, so that the same file can be uploaded again."""
    if IPYWIDGETS_MAJOR >= 8:
        upload.value = ()
    else:
        upload.value = {}
        upload._counter = 0
