"""How many threads torch uses on the CPU: the engine chooses per model, a user can override.

torch's default is one intra-op thread per physical core. Measured with
`benchmarks/bench_threads.py` on this project's 2-core machine (medians of interleaved rounds):

    work                       idle: 1 / 2 threads    one busy process: 1 / 2 threads
    toy UNet pass (2.2M par.)  0.080 / 0.060 s        0.081 / 0.268 s  (3.3x slower with 2)
    mid UNet pass (35M par.)   0.201 / 0.177 s        0.193 / 0.514 s  (2.7x slower with 2)
    toy edit (LoRA 10, drag 20)  5.06 / 4.80 s         4.53 / 17.99 s  (4.0x slower with 2)

OpenMP threads spin-wait for each other at every operation; when another process takes one of
their cores, the others spin until it comes back. So on a shared machine a second thread costs
3-4x, while on an idle one it gains only 1.05-1.3x for models of this size.

Two facts decide the rule. First, those numbers: small models run on one thread. Second, the
thread count changes the summation order inside CPU kernels and so the last bits of a result.
A first version chose the count from the machine's load at each call; the same edit then
differed by one grey level in 0.2 % of its values between a quiet and a busy moment, breaking
"same seed, same result". So the choice depends on the model alone, never on the load:

* a UNet below `SMALL_UNET_PARAMETERS` (the embedded `toy`, test models, anything of the mid
  model's size): 1 thread;
* a larger one (Stable Diffusion's UNet has 860M parameters): torch's own default, because there
  one thread per core pays for itself on an idle machine (and a CPU edit takes many minutes either way).

The count is applied whenever a DragEditor call takes the model (`DragEditor.holding_model`), for
CPU devices only (CUDA and MPS keep torch's setting), and stays set after the call, so a
notebook's own low-level calls run with it too. Overrides, strongest first:
`DragEditor(cpu_threads=N)`, then the environment variable DRAGWIDGET_CPU_THREADS=N ("auto" or
unset: the rule above). Inter-op threads are left alone: the engine starts no inter-op work.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import torch

from .errors import InputError

ENV_VAR = "DRAGWIDGET_CPU_THREADS"
# torch's default when dragwidget was imported (physical cores, or OMP_NUM_THREADS).
TORCH_DEFAULT = torch.get_num_threads()
# Below this many UNet parameters a second thread gained at most 1.3x idle and cost 3-4x beside a busy process.
SMALL_UNET_PARAMETERS = 100_000_000


def requested_threads(value: Union[int, str, None] = None) -> Optional[int]:
    """The thread count asked for: `value` (DragEditor's `cpu_threads`), else DRAGWIDGET_CPU_THREADS;
    None when both leave it to the automatic choice. Raises InputError on anything else."""
    if value is not None:
        return _parse(value, "cpu_threads")
    return _parse(os.environ.get(ENV_VAR, "auto"), ENV_VAR)


def choose_cpu_threads(unet: torch.nn.Module, value: Union[int, str, None] = None) -> int:
    """The intra-op thread count for work with `unet`: the one requested, else the rule above."""
    requested = requested_threads(value)
    if requested is not None:
        return requested
    parameters = sum(parameter.numel() for parameter in unet.parameters())
    return 1 if parameters < SMALL_UNET_PARAMETERS else TORCH_DEFAULT


def use_cpu_threads(device: torch.device, unet: torch.nn.Module, value: Union[int, str, None] = None) -> None:
    """Set torch's intra-op threads for work with `unet` on `device` (CPU only; other devices keep theirs)."""
    if torch.device(device).type != "cpu":
        return
    threads = choose_cpu_threads(unet, value)
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
                         f"(torch's default here is {TORCH_DEFAULT}), not {value!r}")
    return threads
