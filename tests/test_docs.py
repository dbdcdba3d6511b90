"""The documentation: notebooks committed with their outputs, the README's size, the generated pages.

`mkdocs build --strict` itself runs in `.ci/run` (it needs the `docs` extra); these tests check
what must hold in any checkout.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_every_notebook_is_committed_with_its_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code), \
        f"{path.name} has cells that were not run: python3 scripts/run_notebooks.py {path.stem}"
    assert not [o for cell in code for o in cell.outputs if o.output_type == "error"]
    assert sum(len(cell.outputs) for cell in code) >= len(code) // 2


def test_the_tutorial_shows_its_figures():
    notebook = nbformat.read(ROOT / "notebooks" / "tutorial.ipynb", as_version=4)
    pictures = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
                if "image/png" in o.get("data", {})]
    assert len(pictures) >= 5
    assert (ROOT / "notebooks" / "tutorial.ipynb").stat().st_size < 3_000_000   # small PNGs, no widget state


def test_the_readme_is_short_and_links_only_what_exists():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) <= 8000
    for target in re.findall(r"\]\(((?:docs|notebooks)/[^)#]+)\)", readme):
        assert (ROOT / target).exists(), target


def _reference_hook():
    spec = importlib.util.spec_from_file_location("reference_hook", ROOT / "docs" / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_command_line_page_lists_every_command_from_the_parsers():
    from dragwidget.cli import build_parser

    page = _reference_hook().on_page_markdown("before <!-- cli-reference --> after")
    assert "<!-- cli-reference -->" not in page
    for name in ("edit", "bench shapes", "bench dragbench", "eval dragbench", "features", "train-toy", "cache info"):
        assert f"### `dragwidget {name}`" in page, name
    assert build_parser().format_usage().split()[1] in page       # "dragwidget", from the parser itself
    assert "--pictures" in page and "--family" in page            # options of train-toy and bench shapes


def test_the_config_reference_gives_every_field_its_default_and_meaning():
    import dataclasses

    from dragwidget.config import DragConfig

    table = _reference_hook().config_reference()
    for field in dataclasses.fields(DragConfig):
        row = next(line for line in table.splitlines() if line.startswith(f"| `{field.name}` |"))
        assert f"`{getattr(DragConfig(), field.name)!r}`" in row and row.split("|")[3].strip(), field.name
    assert "Reference: r_m = 1, r_p = 3" in table
