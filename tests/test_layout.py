"""The package's layout: a clone of this repository named `dragwidget` must not shadow it."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_works_from_the_folder_that_holds_a_clone_named_dragwidget(tmp_path):
    # A user who clones into ./dragwidget and runs a script next to it puts the clone's root on
    # sys.path first; with the package at the repository root that root was imported as an empty
    # namespace package ("cannot import name 'DragEditor' from 'dragwidget' (unknown location)").
    (tmp_path / "dragwidget").symlink_to(ROOT, target_is_directory=True)
    script = tmp_path / "use_it.py"
    script.write_text("from dragwidget import DragConfig\nimport dragwidget\nprint(dragwidget.__file__)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ""}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == (ROOT / "src" / "dragwidget" / "__init__.py").resolve()
