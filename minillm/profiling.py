"""Measuring what a call costs: used by the notebooks' cost plots (chapter 7) and by ``benchmarks/``.

:func:`peak_memory_bytes` measures the peak bytes of tensors a call allocates (the CUDA allocator's
peak on a GPU, a dispatch-mode tensor tracker elsewhere); :func:`time_call` the fastest of a few
timed calls after a warm-up.
"""

from __future__ import annotations

import time
import weakref
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["peak_memory_bytes", "time_call"]

class _TensorMemoryTracker(TorchDispatchMode):
    """Counts the bytes of every tensor storage created while active, minus those freed."""

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0
        self._live: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self.current -= nbytes
        self._live.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = id(storage)
                if key not in self._live:
                    self._live.add(key)
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key, storage.nbytes())
        return out


def peak_memory_bytes(fn: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Peak bytes of tensors allocated while ``fn()`` runs (beyond those alive before it).

    On CUDA this is the allocator's own peak; elsewhere every tensor an operator creates is counted
    until it is freed (the workspace a fused kernel uses internally is not visible).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    tracker = _TensorMemoryTracker()
    with tracker:
        fn()
    return tracker.peak


def time_call(fn: Callable[[], object], repeats: int = 3, device: torch.device | str = "cpu") -> float:
    """Fastest wall-clock seconds of ``repeats`` calls of ``fn()`` after one warm-up call."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best
