"""`dragwidget bench dragbench`: edit every DragBench sample and write the results.

Each result goes to `OUT/<the sample's relative folder>/dragged_image.png`, where the original
evaluation scripts (and `dragwidget eval dragbench`) look for it, with `result.json` beside it:
final handles, targets, the verdict (reached, and where each handle's content was found), steps,
per-stage timings and the settings.
`result.json` is written last, so a sample counts as finished only once both files exist: a run
that is interrupted and resumed redoes at most the sample it was in. A sample that fails (bad
metadata, points outside the image, ...) is reported and skipped, never the end of the run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, List, Optional

from ..api import DragCancelled, DragConfig, DragWidgetError
from .samples import DragBenchSample, load_sample

RESULT_IMAGE = "dragged_image.png"
RESULT_INFO = "result.json"

# on_sample(sample, status, details): status is "done", "resumed" (already finished) or "failed";
# details is the result.json content, or {"reason": ...} for a failure.
SampleCallback = Callable[[DragBenchSample, str, dict], None]


def finished(out: Path, sample: DragBenchSample) -> bool:
    folder = out / sample.relative
    return (folder / RESULT_IMAGE).is_file() and (folder / RESULT_INFO).is_file()


def _write_atomically(path: Path, write) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")   # two processes never share one
    write(partial)
    os.replace(partial, path)


def edit_sample(editor, sample: DragBenchSample, out: Path, config: DragConfig) -> dict:
    """Edit one sample and write its result; return what result.json holds."""
    from ..api import DragRequest

    loaded = load_sample(sample)
    started = time.perf_counter()
    result = editor.run(DragRequest(loaded.image, loaded.pairs, loaded.mask, loaded.prompt, config))
    seconds = time.perf_counter() - started
    folder = out / sample.relative
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomically(folder / RESULT_IMAGE, lambda path: result.image.save(path, format="PNG"))
    info = {
        "sample": sample.name, "category": sample.category, "prompt": loaded.prompt,
        "handles": [pair["handle"] for pair in loaded.pairs], "targets": [pair["target"] for pair in loaded.pairs],
        "final_handles": [list(xy) for xy in result.handles], "reached": result.reached,
        "verdict": result.verdict.to_dict(), "tracker_reached": result.tracker_reached, "steps": result.steps,
        "seconds": round(seconds, 3), "timings": {k: round(v, 4) for k, v in result.timings.items()},
        "reused": result.reused, "config": config.to_dict(),
    }
    _write_atomically(folder / RESULT_INFO, lambda path: path.write_text(json.dumps(info, indent=2)))
    return info


def run_dragbench(editor, samples: List[DragBenchSample], out: Path, config: DragConfig, resume: bool = False,
                  on_sample: Optional[SampleCallback] = None) -> dict:
    """Edit `samples` in order; return {"done", "resumed", "failed": [{"sample", "reason"}], "seconds"}."""
    out = Path(out)
    summary = {"done": 0, "resumed": 0, "failed": [], "seconds": 0.0}
    for sample in samples:
        if resume and finished(out, sample):
            summary["resumed"] += 1
            if on_sample is not None:
                on_sample(sample, "resumed", {})
            continue
        try:
            info = edit_sample(editor, sample, out, config)
        except DragCancelled:
            raise
        except (DragWidgetError, ValueError, OSError) as error:
            failure = {"sample": sample.name, "reason": str(error)}
            summary["failed"].append(failure)
            if on_sample is not None:
                on_sample(sample, "failed", failure)
            continue
        summary["done"] += 1
        summary["seconds"] += info["seconds"]
        if on_sample is not None:
            on_sample(sample, "done", info)
    return summary
