"""The engine's modules (src/dragwidget/*.py but the CLI and the package's lazy front door) never
import the layers above them: the DragBench harness, the widget, the CLI or the toy's benchmark."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dragwidget"
ABOVE = ("dragbench", "widget", "cli", "cli_inputs", "toy")
NOT_ENGINE = {"__init__.py", "cli.py", "cli_inputs.py"}


def imported_modules(path: Path):
    """Every module a file imports, relative imports resolved against the package (dotted, without `dragwidget.`)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module or ""
                yield from ([base] if base else [alias.name for alias in node.names])
            elif node.module and node.module.startswith("dragwidget"):
                yield node.module.removeprefix("dragwidget").lstrip(".")
        elif isinstance(node, ast.Import):
            yield from (alias.name.removeprefix("dragwidget").lstrip(".") for alias in node.names
                        if alias.name.startswith("dragwidget"))


def test_no_engine_module_imports_a_layer_above_it():
    engine = [path for path in PACKAGE.glob("*.py") if path.name not in NOT_ENGINE]
    assert {"editor.py", "drag_verdict.py", "locating.py", "fastdrag.py"} <= {path.name for path in engine}
    reaching_up = {path.name: sorted(name for name in imported_modules(path) if name.split(".")[0] in ABOVE)
                   for path in engine}
    assert not {name: found for name, found in reaching_up.items() if found}, reaching_up


def test_the_scan_sees_relative_and_absolute_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from .dragbench.dift import x\nfrom . import widget\nimport dragwidget.cli\nfrom .config import y\n")
    assert sorted(imported_modules(sample)) == ["cli", "config", "dragbench.dift", "widget"]
