"""The layers (docs/architecture.md): the engine (src/dragwidget/*.py and methods/) never imports
the front ends above it (the DragBench harness, the widget, the CLI, the toy's training and
benchmark); the front ends reach the engine only through its public module, `dragwidget.api`."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dragwidget"
ABOVE = ("dragbench", "widget", "cli", "cli_inputs", "cli_progress", "toy")
NOT_ENGINE = {"__init__.py", "api.py", "cli.py", "cli_inputs.py", "cli_progress.py"}
FRONT_ENDS = ("widget", "dragbench", "toy")
BENCHMARKS = PACKAGE.parents[1] / "benchmarks"


def imported_modules(path: Path, package: str = ""):
    """Every module a file imports, relative imports resolved against the package (dotted, without
    `dragwidget.`); `package` is the file's subpackage ("widget" for widget/canvas.py)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                base = ".".join(parts[:len(parts) - (node.level - 1)] + ([node.module] if node.module else []))
                yield from ([base] if node.module else [".".join(filter(None, (base, alias.name)))
                                                        for alias in node.names])
            elif node.module and node.module.startswith("dragwidget"):
                yield node.module.removeprefix("dragwidget").lstrip(".")
        elif isinstance(node, ast.Import):
            yield from (alias.name.removeprefix("dragwidget").lstrip(".") for alias in node.names
                        if alias.name.startswith("dragwidget"))


def engine_files():
    return [path for path in PACKAGE.glob("*.py") if path.name not in NOT_ENGINE] + \
        [path for path in (PACKAGE / "methods").glob("*.py")]


def engine_modules():
    return {path.stem for path in PACKAGE.glob("*.py") if path.name not in NOT_ENGINE} | {"methods"}


def test_no_engine_module_imports_a_layer_above_it():
    engine = engine_files()
    assert {"editor.py", "drag_verdict.py", "locating.py", "fastdrag.py"} <= {path.name for path in engine}
    reaching_up = {path.name: sorted(name for name in imported_modules(path, "methods" if path.parent.name == "methods"
                                                                       else "")
                                     if name.split(".")[0] in ABOVE + ("api",))
                   for path in engine}
    assert not {name: found for name, found in reaching_up.items() if found}, reaching_up


def test_front_ends_reach_the_engine_only_through_the_public_module():
    engine = engine_modules()
    files = [(path, path.parent.name) for folder in FRONT_ENDS for path in (PACKAGE / folder).glob("*.py")]
    files += [(PACKAGE / name, "") for name in ("cli.py", "cli_inputs.py", "cli_progress.py")]
    files += [(path, "") for path in BENCHMARKS.glob("*.py")]
    assert len(files) > 25
    reaching_down = {str(path.relative_to(PACKAGE.parents[1])): sorted(
        name for name in imported_modules(path, package) if name.split(".")[0] in engine) for path, package in files}
    assert not {name: found for name, found in reaching_down.items() if found}, reaching_down


def test_the_scan_sees_relative_and_absolute_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from .dragbench.dift import x\nfrom . import widget\nimport dragwidget.cli\nfrom .config import y\n")
    assert sorted(imported_modules(sample)) == ["cli", "config", "dragbench.dift", "widget"]
    sample.write_text("from ..editor import x\nfrom .canvas import y\nfrom .. import api\n")
    assert sorted(imported_modules(sample, "widget")) == ["api", "editor", "widget.canvas"]
