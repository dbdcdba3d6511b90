"""Progress on the command line's stderr: tqdm bars on a terminal, plain lines anywhere else.

Piped or written to a file (CI, a Slurm job array's log, `dragwidget edit ... | tail`), a bar's
carriage returns and cursor moves pile up into one unreadable line; there, each stage or loop
gets one line when it starts, one each time it passes a quarter of its steps, and one when it ends.

tqdm is imported only when a bar is made: the CLI's `--help` must answer at once. Engine events are
read duck-typed (stage, step, total, message, cached) so that this front-end helper needs nothing
from the engine.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Optional

QUARTERS = 4


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty at all, or a closed stream
        return False


def quiet_library_bars(stream=None) -> None:
    """Off a terminal, the model libraries' own bars (hub downloads, transformers' "Loading
    weights") go too, through the switch they read when first imported; a value the user set wins."""
    if not is_terminal(sys.stderr if stream is None else stream):
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _amount(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def _suffix(message: str) -> str:
    return f", {message}" if message else ""


def _quarter(step: int, total: Optional[int]) -> int:
    return step * QUARTERS // total if total else 0


class _Lines:
    def __init__(self, stream, clock):
        self.stream, self.clock = stream, clock

    def line(self, text: str) -> None:
        print(text, file=self.stream)
        # a log file may be read (tail -f) while the run goes on
        self.stream.flush()

    def counted(self, name: str, step: int, total: int, message: str = "") -> None:
        """A line for a quarter passed: how far, of how many."""
        self.line(f"{name}: {step}/{total} ({100 * step // total} %){_suffix(message)}")

    def ended(self, name: str, counted: str, finished: bool, started: float, message: str = "") -> None:
        """The last line of a stage or loop: how far it got (`counted`, '' when nothing was counted),
        done or stopped short, in how long."""
        self.line(f"{name}: {counted + ' ' if counted else ''}{'done' if finished else 'stopped'} "
                  f"in {self.clock() - started:.1f} s{_suffix(message)}")


# ---------------------------------------------------------------- engine events (edit, features)

class _Stage:
    def __init__(self, total: int, started: float, step: int):
        self.total, self.started, self.step = total, started, step
        self.quarter = _quarter(step, total)


class _StageLines(_Lines):
    def __init__(self, stream, clock=time.monotonic):
        super().__init__(stream, clock)
        self.open = {}

    def __call__(self, event) -> None:
        stage, step, total = event.stage, event.step, event.total
        message, cached = getattr(event, "message", "") or "", getattr(event, "cached", False)
        state = self.open.get(stage)
        if state is not None and step < state.step:   # the same stage run again
            self._end(stage)
            state = None
        if state is None:
            self._start(stage, step, total, message, cached)
            return
        state.total = total
        if total <= 0:                        # waiting: nothing to count until the next stage starts
            return
        state.step = step
        if step >= total:
            self._end(stage, message)
        elif _quarter(step, total) > state.quarter:
            state.quarter = _quarter(step, total)
            self.counted(stage, step, total, message)

    def _start(self, stage: str, step: int, total: int, message: str, cached: bool) -> None:
        # The engine's stages run one after the other: a new one means the others have ended
        # (a drag stops early once its handles arrive, waiting ends with no event of its own).
        for other in list(self.open):
            self._end(other)
        if cached:
            self.line(f"{stage}: {step}/{total} cached{_suffix(message)}")
        elif total > 0 and step >= total:     # a stage of one event (decode, verdict)
            self.line(f"{stage}: {step}/{total} done{_suffix(message)}")
        else:
            state = self.open[stage] = _Stage(total, self.clock(), step)
            self.line(f"{stage}: {message or 'started'}" if total <= 0
                      else f"{stage}: started, {_amount(total, 'step')}{_suffix(message)}")
            if state.quarter:
                self.counted(stage, step, total)

    def _end(self, stage: str, message: str = "") -> None:
        state = self.open.pop(stage)
        self.ended(stage, f"{state.step}/{state.total}" if state.total > 0 else "", state.step >= state.total,
                   state.started, message)

    def close(self) -> None:
        for stage in list(self.open):
            self._end(stage)


class _StageBars:
    def __init__(self, stream):
        from tqdm import tqdm

        self.tqdm, self.stream, self.bars = tqdm, stream, {}

    def __call__(self, event) -> None:
        bar = self.bars.get(event.stage)
        if bar is None:
            bar = self.bars[event.stage] = self.tqdm(total=event.total, desc=event.stage, leave=True, file=self.stream)
        bar.total = event.total
        bar.n = event.step
        if getattr(event, "cached", False):
            bar.set_postfix_str("cached")
        elif getattr(event, "message", ""):
            bar.set_postfix_str(event.message)
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


class StageProgress:
    """The `progress=` callback of an engine call; use it as a context manager, which ends the bars
    or lines of the stages still open (a drag that stopped early, a run that failed)."""

    def __init__(self, stream=None, clock=time.monotonic):
        stream = sys.stderr if stream is None else stream
        self._show = _StageBars(stream) if is_terminal(stream) else _StageLines(stream, clock)

    def __call__(self, event) -> None:
        self._show(event)

    def close(self) -> None:
        self._show.close()

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------- loops (samples, training steps)

class Counter(_Lines):
    """A count over a loop (DragBench samples, training steps), with the tqdm calls the loops use:
    iterate it or call update(), set_postfix_str(), write() a line of its own, close()."""

    def __init__(self, iterable: Optional[Iterable] = None, *, desc: str, total: Optional[int] = None,
                 unit: str = "step", initial: int = 0, stream=None, clock=time.monotonic):
        stream = sys.stderr if stream is None else stream
        super().__init__(stream, clock)
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = initial + len(iterable)
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.postfix, self.closed = "", False
        self.bar = None
        if is_terminal(stream):
            from tqdm import tqdm

            self.bar = tqdm(iterable, desc=desc, total=total, unit=unit, initial=initial, file=stream)
            return
        self._n, self.started, self.quarter = initial, clock(), _quarter(initial, total)
        if total is None:
            self.line(f"{desc}: started")
        elif initial:                       # a resumed run
            self.line(f"{desc}: started at {initial}/{total} {unit}s")
        else:
            self.line(f"{desc}: started, {_amount(total, unit)}")

    def __iter__(self):
        if self.bar is not None:
            yield from self.bar
            return
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)
            return
        self._n += n
        quarter = _quarter(self._n, self.total)
        if quarter > self.quarter and self._n < self.total:   # the end has its own line, at close()
            self.quarter = quarter
            self.counted(self.desc, self._n, self.total, self.postfix)

    def set_postfix_str(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        self.postfix = text

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)   # above the bar, which tqdm then redraws
        else:
            self.line(text)

    @property
    def n(self) -> int:
        return self.bar.n if self.bar is not None else self._n

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            return
        if self.closed:
            return
        self.closed = True
        counted = _amount(self._n, self.unit) if self.total is None else f"{self._n}/{self.total}"
        self.ended(self.desc, counted, self.total is None or self._n >= self.total, self.started, self.postfix)

    def __enter__(self) -> "Counter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
