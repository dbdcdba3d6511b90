"""Colab readiness without Colab: every notebook's first code cell installs the package when it is
missing and turns on Colab's custom widget manager before any widget is shown, run here with a
stand-in `google.colab` module."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import ipywidgets
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def first_code_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


@pytest.fixture
def colab(monkeypatch):
    """A stand-in google.colab whose output.enable_custom_widget_manager records when it ran,
    and how many widgets existed then."""
    calls = []
    output = types.ModuleType("google.colab.output")
    output.enable_custom_widget_manager = lambda: calls.append(_widget_count())
    package = types.ModuleType("google.colab")
    package.output = output
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", package)
    monkeypatch.setitem(sys.modules, "google.colab.output", output)
    return calls


def test_every_notebook_starts_with_the_same_setup_cell():
    assert len(NOTEBOOKS) >= 3
    cells = {path.name: first_code_cell(path) for path in NOTEBOOKS}
    assert len(set(cells.values())) == 1, cells
    assert "enable_custom_widget_manager" in next(iter(cells.values()))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_the_setup_cell_turns_the_widget_manager_on_and_installs_nothing_when_present(notebook, colab, monkeypatch):
    installs = []
    monkeypatch.setattr(subprocess, "check_call", lambda command, **kwargs: installs.append(command))
    widgets_before = _widget_count()
    exec(compile(first_code_cell(notebook), notebook.name, "exec"), {"__name__": "__main__"})
    assert colab == [widgets_before] and _widget_count() == widgets_before   # on before any widget exists
    assert installs == []                                                   # dragwidget is installed here


def test_the_setup_cell_installs_the_package_when_it_is_missing(colab, monkeypatch, tmp_path):
    installs = []
    monkeypatch.setattr(subprocess, "check_call", lambda command, **kwargs: installs.append(command))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "dragwidget" else real_find_spec(name, *args))
    monkeypatch.setenv("DRAGWIDGET_SOURCE", str(tmp_path))
    exec(compile(first_code_cell(NOTEBOOKS[0]), "setup", "exec"), {"__name__": "__main__"})
    assert installs == [[sys.executable, "-m", "pip", "install", "--quiet", str(tmp_path)]]
    assert len(colab) == 1


def _widget_count() -> int:
    """Widgets alive in this kernel (ipywidgets 8 keeps them in widget._instances, 7 in Widget.widgets)."""
    instances = getattr(ipywidgets.widgets.widget, "_instances", None)
    return len(instances if instances is not None else ipywidgets.Widget.widgets)
