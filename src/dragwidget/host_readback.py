"""Reading small per-step results (handles, losses, "arrived?") on the host without stalling a GPU.

`float(tensor)` or `.item()` on a CUDA tensor waits until the GPU has finished everything queued
so far: inside a step loop that empties the GPU's queue every step, and the host then needs time
to queue the next step while the GPU idles. Instead each step's small tensors are copied to
pinned host memory asynchronously, an event marks when the copy is done, and the loop collects
the steps whose events have completed, usually one or two steps later. On the CPU the values are
ready at once, so a CPU loop sees every step's values at that step.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Iterator, List, Sequence, Tuple

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: once per stage, so that stage timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class HostReadback:
    """A queue of (step, host tensors) whose copies from the device are complete.

    `lag` holds each step back until that many later steps were pushed: a CPU stand-in for a GPU
    that is behind the host, so that code built for late values can be tested without one.
    """

    def __init__(self, device: torch.device, lag: int = 0):
        self.asynchronous = device.type == "cuda"
        self.lag = lag
        self.pending: Deque[Tuple[int, List[torch.Tensor], object]] = deque()

    def push(self, step: int, *tensors: torch.Tensor, keep: Sequence[torch.Tensor] = ()) -> None:
        """Queue copies of `tensors` for the host, plus snapshots of `keep` that stay on the device
        (large ones, such as a latent to preview, read later by device code)."""
        if self.asynchronous:
            copies = [tensor.detach().to("cpu", non_blocking=True) for tensor in tensors]  # lands in pinned memory
            done = torch.cuda.Event()
            done.record()
        else:
            copies, done = [tensor.detach().clone() for tensor in tensors], None
        self.pending.append((step, copies + [tensor.detach().clone() for tensor in keep], done))

    def ready(self) -> Iterator[Tuple[int, List[torch.Tensor]]]:
        """The steps whose values have arrived, oldest first; never waits."""
        while len(self.pending) > self.lag and (self.pending[0][2] is None or self.pending[0][2].query()):
            step, copies, _ = self.pending.popleft()
            yield step, copies

    def drain(self) -> Iterator[Tuple[int, List[torch.Tensor]]]:
        """Every remaining step, waiting for the device if needed (once, at the end of a loop)."""
        while self.pending:
            step, copies, done = self.pending.popleft()
            if done is not None:
                done.synchronize()
            yield step, copies
