"""How many threads torch uses on the CPU: the engine chooses, a user can override.

torch's default is one intra-op thread per physical core. That is right on an idle machine and
badly wrong on a busy one: OpenMP threads spin-wait for each other at every operation, and when
one of them is descheduled by another process the others spin until it comes back. Measured with
`benchmarks/bench_threads.py` on 2 cores (UNet forward+backward, the unit of a LoRA or drag step):

    model (GFLOP/pass)   "idle": 1 / 2 threads   one busy process: 1 / 2 threads
    toy (0.4)            0.053 / 0.065 s         0.060 / 0.182 s   (3.0x slower with 2)
    mid (3.6)            0.182 / 0.129 s         0.198 / 0.709 s   (3.6x slower with 2)

("idle" had other work at a load average near 1; a second idle run gave the toy 0.048 / 0.047 s,
and the toy at 96-128 px 1.3-1.4x faster with 2 threads.) So a free core pays or is a wash
(1.0-1.2x either way on the toy at 64 px, 1.3-1.6x on anything larger), while a core another
process keeps busy costs 3-4x, whatever the model's size: no size threshold is needed. The
engine therefore uses the cores that other processes leave free, at least one, at most torch's
own default (physical cores, or OMP_NUM_THREADS). "Free" is measured, not guessed: the CPU time the machine spent on this
process's cores (/proc/stat) minus this process's own CPU time, since the previous heavy call
(a fresh 0.1 s sample the first time, or after a long pause). The load average would count this
process's own threads as "busy" and lag by a minute. Elsewhere (macOS, Windows) the 1-minute load
average minus this process's share is the estimate, or none at all.

It is chosen again whenever a DragEditor call takes the model (`DragEditor.holding_model`: a
process that starts or stops in between is seen by the next call) and only for CPU devices: CUDA and MPS keep torch's setting.
The count stays set after the call, so a notebook's own low-level calls run with it too.

Overrides, strongest first: `DragEditor(cpu_threads=N)`, then the environment variable
DRAGWIDGET_CPU_THREADS=N; "auto" (or unset) is the automatic choice. An explicit
`torch.set_num_threads` is not kept, because it cannot be told apart from torch's default: use
one of the two. Inter-op threads are left alone: they serve only `torch.jit.fork`-style parallel
work the engine never starts, and torch refuses to change them once any has run.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Optional, Union

import torch

from .errors import InputError

ENV_VAR = "DRAGWIDGET_CPU_THREADS"
# torch's default when dragwidget was imported: the most the automatic choice uses.
TORCH_DEFAULT = torch.get_num_threads()
# A core counts as taken once other processes use more than this share of it.
TAKEN_SHARE = 0.25
SAMPLE_SECONDS = 0.1        # the first measurement, and one after a long pause
MIN_WINDOW = 0.1            # calls closer than this keep the previous choice (too few clock ticks)
MAX_WINDOW = 120.0          # an average over a longer pause says little about now

_last = {"at": None, "busy": None, "own": None, "others": None}


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def requested_threads(value: Union[int, str, None] = None) -> Optional[int]:
    """The thread count asked for: `value` (DragEditor's `cpu_threads`), else DRAGWIDGET_CPU_THREADS;
    None when both leave it to the automatic choice. Raises InputError on anything else."""
    if value is not None:
        return _parse(value, "cpu_threads")
    return _parse(os.environ.get(ENV_VAR, "auto"), ENV_VAR)


def choose_cpu_threads(value: Union[int, str, None] = None) -> int:
    """The intra-op thread count to use now: the one requested, else the cores others leave free."""
    requested = requested_threads(value)
    if requested is not None:
        return requested
    others = cores_used_by_others()
    taken = max(0, math.ceil(others - TAKEN_SHARE)) if others is not None else 0
    return max(1, min(TORCH_DEFAULT, usable_cores() - taken))


def use_cpu_threads(device: torch.device, value: Union[int, str, None] = None) -> None:
    """Set torch's intra-op threads for work on `device` (CPU only; other devices keep theirs)."""
    if torch.device(device).type != "cpu":
        return
    threads = choose_cpu_threads(value)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _parse(value: Union[int, str], name: str) -> Optional[int]:
    if isinstance(value, str) and value.strip().lower() in ("", "auto"):
        return None
    try:
        threads = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        threads = None
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise InputError(f"{name} must be 'auto' or a whole number of threads from 1 up "
                         f"(this machine has {usable_cores()} usable cores), not {value!r}")
    return threads


def cores_used_by_others() -> Optional[float]:
    """Cores that other processes kept busy since the previous call (see the module docstring)."""
    now, busy, own = time.monotonic(), _busy_seconds(), time.process_time()
    last = dict(_last)
    if last["at"] is not None and now - last["at"] < MIN_WINDOW:
        return last["others"]
    if last["at"] is None or now - last["at"] > MAX_WINDOW:
        time.sleep(SAMPLE_SECONDS)
        last = {"at": now, "busy": busy, "own": own}
        now, busy, own = time.monotonic(), _busy_seconds(), time.process_time()
    window, own_cores = now - last["at"], (own - last["own"]) / (now - last["at"])
    if busy is not None:
        others = (busy - last["busy"]) / window - own_cores
    elif hasattr(os, "getloadavg"):
        others = os.getloadavg()[0] - own_cores
    else:
        others = None
    others = None if others is None else max(0.0, others)
    _last.update(at=now, busy=busy, own=own, others=others)
    return others


def _busy_seconds() -> Optional[float]:
    """CPU seconds the machine has spent busy on this process's cores, from /proc/stat (Linux)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
        cores = {f"cpu{n}" for n in os.sched_getaffinity(0)}
    except (OSError, AttributeError):
        return None
    ticks = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in cores:
            # user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy
            values = [int(v) for v in fields[1:9]]
            ticks += sum(values) - values[3] - values[4]
    return ticks / os.sysconf("SC_CLK_TCK")
