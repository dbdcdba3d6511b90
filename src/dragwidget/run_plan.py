"""Before a run: will it fine-tune a LoRA first, and about how long will each stage take?

The editor measures the seconds per step of every stage it runs and keeps them per model, device,
working size and LoRA batch: in memory for this process, and in `stage_rates.json` in the editor's
cache folder for the next one. Before a stage was measured here, the model's own figures
(`dragwidget_stage_rates.json` in its folder, measured by its makers on the same kind of device)
stand in, and the plan says so; without either, a stage has no estimate (None), never a guess.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

STAGES = ("lora", "inversion", "drag", "gooddrag", "warp", "denoise", "decode", "verdict")
RATES_FILE = "stage_rates.json"


@dataclass
class RunPlan:
    """What `DragEditor.plan` expects a request to do. `steps` counts the steps each stage will run
    (0: reused from memory or a cache; the drag counts `max_drag_steps`, its most)."""

    needs_lora: bool                                # LoRA fine-tuning runs first (not in memory, not on disk)
    lora_steps: int                                 # its steps; 0 when it does not run
    steps: Dict[str, int]
    expected_seconds: Optional[Dict[str, float]]    # stage -> seconds; None until each stage that runs was measured
    measured_here: bool = True                      # False: some stage's time is the model's shipped figure
    lora_looked_up: bool = True                     # False: the disk cache was not looked at (model not loaded)

    @classmethod
    def before_loading(cls, lora_steps: int, shipped: Dict[str, float]) -> "RunPlan":
        """What the first run on a model not loaded yet does before its drag, as far as the model's
        shipped figures tell: a LoRA of `lora_steps` (unless the disk cache has one)."""
        steps = {"lora": lora_steps}
        return cls(needs_lora=lora_steps > 0, lora_steps=lora_steps, steps=steps,
                   expected_seconds=seconds_for(steps, shipped), measured_here=False, lora_looked_up=False)

    @property
    def total_seconds(self) -> Optional[float]:
        return None if self.expected_seconds is None else sum(self.expected_seconds.values())

    def lora_message(self) -> str:
        """What the run does before its drag, in words ('' when it trains no LoRA)."""
        if not self.needs_lora:
            return ""
        expected = self.expected_seconds
        if not self.lora_looked_up:
            cost = (f"about {expected['lora']:.0f} s by the model's own figures" if expected
                    else "its time is known once the model has run here")
            return (f"the first Run on this image fine-tunes a LoRA first ({self.lora_steps} steps, unless an "
                    f"earlier one is in the disk cache; {cost})")
        cost = (f"about {expected.get('lora', 0):.0f} s, {self.total_seconds:.0f} s for the whole run"
                + ("" if self.measured_here else " by the model's own figures; measured here after this run")
                if expected else "no time measured yet with this model here")
        return f"the first Run on this image fine-tunes a LoRA first ({self.lora_steps} steps; {cost})"


def seconds_for(steps: Dict[str, int], rates: Dict[str, Optional[float]]) -> Optional[Dict[str, float]]:
    """Stage -> seconds for `steps` at `rates` (seconds per step); None when a stage that runs has no rate."""
    if any(rates.get(stage) is None for stage, count in steps.items() if count > 0):
        return None
    return {stage: rates[stage] * count if count > 0 else 0.0 for stage, count in steps.items()}


def rate_key(model, working_size: Tuple[int, int], lora_batch_size: int) -> str:
    """What the per-step times depend on: the weights, where they run, the size and the LoRA batch."""
    width, height = working_size
    return f"{model.fingerprint} {model.device} {model.dtype} {width}x{height} batch {lora_batch_size}"


class StageRates:
    """Seconds per step of each stage, by `rate_key`. One instance per cache folder and process, so
    editors sharing a folder share what they measured."""

    _instances: Dict[Path, "StageRates"] = {}
    _instances_lock = threading.Lock()

    @classmethod
    def in_folder(cls, folder) -> "StageRates":
        folder = Path(folder).expanduser().absolute()
        with cls._instances_lock:
            return cls._instances.setdefault(folder, cls(folder / RATES_FILE))

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._rates: Optional[Dict[str, Dict[str, float]]] = None  # read from the file on first use

    def rate(self, key: str, stage: str) -> Optional[float]:
        with self._lock:
            return self._known().get(key, {}).get(stage)

    def record(self, key: str, stage: str, seconds: float, steps: int) -> None:
        if steps <= 0 or not seconds > 0:
            return
        with self._lock:
            self._known().setdefault(key, {})[stage] = seconds / steps
            on_disk = self._read()
            on_disk.setdefault(key, {})[stage] = seconds / steps
            self._write(on_disk)

    def estimate(self, key: str, steps: Dict[str, int],
                 shipped: Optional[Dict[str, float]] = None) -> Tuple[Optional[Dict[str, float]], bool]:
        """(stage -> seconds for `steps`, all measured here?). A stage never measured here takes its
        `shipped` seconds per step; the estimate is None when a stage that runs has neither."""
        shipped = shipped or {}
        measured = {stage: self.rate(key, stage) for stage, count in steps.items() if count > 0}
        rates = {stage: shipped.get(stage) if rate is None else rate for stage, rate in measured.items()}
        seconds = seconds_for(steps, rates)
        return seconds, seconds is not None and all(rate is not None for rate in measured.values())

    def _known(self) -> Dict[str, Dict[str, float]]:
        if self._rates is None:
            self._rates = self._read()
        return self._rates

    def _read(self) -> Dict[str, Dict[str, float]]:
        # A missing, unreadable or hand-edited file only means "nothing measured yet".
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {key: {stage: float(rate) for stage, rate in entry.items()
                      if stage in STAGES and isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0}
                for key, entry in data.items() if isinstance(entry, dict)}

    def _write(self, rates: Dict[str, Dict[str, float]]) -> None:
        # Estimates are a convenience: a cache folder that cannot be written keeps them in memory only.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=".stage_rates.", suffix=".tmp",
                                             delete=False) as handle:
                json.dump(rates, handle, indent=1, sort_keys=True)
        except OSError:
            return
        try:
            os.replace(handle.name, self.path)  # atomic: another process never reads half a file
        except OSError:
            Path(handle.name).unlink(missing_ok=True)


class StageSteps:
    """What a stage's body reports: how many steps it ran (its rate is recorded per step)."""

    count: int = 0


class StageTimer:
    """Times the stages of a drag: each ends with one device synchronisation (so the time is the
    device's work, not the host's queueing), and a stage that counted its steps records its rate."""

    def __init__(self, device, record_rate: Callable[[str, float, int], None]):
        self.device, self.record_rate = device, record_rate
        self.timings: Dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, rate: Optional[str] = None) -> Iterator[StageSteps]:
        from .host_readback import synchronize   # torch: only once a stage runs

        steps = StageSteps()
        started = time.perf_counter()
        yield steps
        synchronize(self.device)
        self.timings[name] = time.perf_counter() - started
        if steps.count:
            self.record_rate(rate or name, self.timings[name], steps.count)
