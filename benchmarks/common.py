"""Shared pieces of the benchmark runner: a result row, paired timing, output checks, peaks, memory.

Every comparison in ``benchmarks/`` follows one protocol so that a ratio means what it says:

1. both sides do the same work: same configuration, same weights (copied), and their outputs are
   asserted equal (or allclose, with the tolerance stated) *before* anything is timed;
2. both sides are warmed up, then timed in pairs whose order alternates (ours first, then the
   reference first, ...), so a noisy neighbour or a frequency change hits both sides alike;
3. the table reports the **median of the paired ratios** and, next to it, each side's median.
"""

from __future__ import annotations

import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator


@dataclass
class Paired:
    """The result of :func:`paired_timing`: seconds per call of each side and their paired ratio."""

    ours_s: float  # median seconds per call, ours
    ref_s: float  # median seconds per call, the reference
    ratio: float  # median over pairs of ref_s / ours_s (> 1 = ours is faster)
    pairs: int  # number of timed pairs
    ratios: list[float] = field(default_factory=list)  # every pair's ratio, in timing order


@dataclass
class Row:
    """One line of the benchmark table: our figure next to the reference's, measured in one run."""

    figure: str  # what was measured, e.g. "training steps/s, bigram LM"
    value: float  # ours (the median of its timed calls when timed)
    reference: float | None  # the reference implementation's (None if there is none)
    unit: str  # e.g. "steps/s", "MB", "s"
    higher_is_better: bool = True
    reference_name: str = ""  # e.g. "bare PyTorch loop"
    paired_ratio: float | None = None  # median of paired ratios (> 1 = ours better), when paired
    pairs: int | None = None  # how many pairs the paired ratio is the median of

    @property
    def ratio(self) -> float | None:
        """How many times better ours is than the reference (> 1 = ours is better): the median of
        paired ratios when the row was timed in pairs, else the ratio of the two figures."""
        if self.paired_ratio is not None:
            return self.paired_ratio
        if self.reference in (None, 0) or self.value == 0:
            return None
        return self.value / self.reference if self.higher_is_better else self.reference / self.value

    @classmethod
    def timed(cls, figure: str, paired: Paired, *, work: float | None = None, unit: str,
              reference_name: str, scale: float = 1.0) -> "Row":
        """A row from a :class:`Paired` timing: ``work / seconds`` (a rate, higher is better) when
        ``work`` is given, else ``seconds * scale`` (lower is better, e.g. scale=1e3 for ms)."""
        if work is not None:
            return cls(figure, work / paired.ours_s, work / paired.ref_s, unit,
                       reference_name=reference_name, paired_ratio=paired.ratio, pairs=paired.pairs)
        return cls(figure, paired.ours_s * scale, paired.ref_s * scale, unit, higher_is_better=False,
                   reference_name=reference_name, paired_ratio=paired.ratio, pairs=paired.pairs)


def paired_timing(ours: Callable[[], object], reference: Callable[[], object], *, repeats: int = 5,
                  warmup: int = 1, sync: Callable[[], object] | None = None) -> Paired:
    """Time ``ours()`` and ``reference()`` in ``repeats`` pairs after ``warmup`` calls of each.

    Pair i runs ours first when i is even and the reference first when i is odd. Each pair gives a
    ratio ref_time / our_time; the result holds the median of those ratios and each side's median.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    sync = sync or (lambda: None)

    def clock(fn: Callable[[], object]) -> float:
        sync()
        t = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t

    for _ in range(warmup):
        clock(ours)
        clock(reference)
    t_ours, t_ref, ratios = [], [], []
    for i in range(repeats):
        if i % 2 == 0:
            a = clock(ours)
            b = clock(reference)
        else:
            b = clock(reference)
            a = clock(ours)
        t_ours.append(a)
        t_ref.append(b)
        ratios.append(b / a)
    return Paired(statistics.median(t_ours), statistics.median(t_ref), statistics.median(ratios),
                  repeats, ratios)


def best_of(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Fastest wall-clock seconds of ``repeats`` calls after ``warmup`` calls (for rows that have
    no reference to pair with; comparisons use :func:`paired_timing`)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def assert_same_output(ours, reference, what: str, *, atol: float = 0.0, rtol: float = 0.0) -> None:
    """Fail before timing if the two sides do not compute the same thing (tensors: allclose with the
    given tolerances; anything else: ==)."""
    import torch

    if isinstance(ours, torch.Tensor):
        if ours.shape != reference.shape:
            raise AssertionError(f"{what}: shapes differ, {tuple(ours.shape)} vs {tuple(reference.shape)}")
        if ours.dtype.is_floating_point:
            diff = float((ours.float() - reference.float()).abs().max()) if ours.numel() else 0.0
            if not torch.allclose(ours.float(), reference.float(), atol=atol, rtol=rtol):
                raise AssertionError(f"{what}: max difference {diff:.3g} exceeds atol={atol}, rtol={rtol}")
        elif not torch.equal(ours, reference):
            raise AssertionError(f"{what}: the two sides return different values")
    elif ours != reference:
        raise AssertionError(f"{what}: the two sides return different values")


PEAK_N = 1024 if os.environ.get("MINILLM_BENCH_QUICK") == "1" else 2048  # quick: a bf16 2048³ matmul
# takes tens of seconds on CPUs without bf16 instructions


def matmul_peak(dtype=None, n: int | None = None, repeats: int = 5) -> float:
    """Best FLOP/s of an n×n @ n×n matmul (n = :data:`PEAK_N`) in ``dtype`` (default fp32) on the
    CPU: the peak that MFU is measured against, taken in the same process and thread setting as the
    benchmark."""
    import torch

    n = PEAK_N if n is None else n
    dtype = dtype or torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def peak_tensor_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes of tensor storages created while ``fn()`` runs, minus those freed on the way:
    the memory of the work itself (activations, gradients, workspaces that are tensors), not what
    was alive before (weights, optimizer state after a warm-up step) and not imports."""
    from minillm.profiling import peak_memory_bytes

    return peak_memory_bytes(fn, "cpu")


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous setting after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def format_table(rows: list[Row]) -> str:
    """The table: each side's figure (medians when timed), then the ratio (> 1 = ours better; the
    median of paired ratios where the row says n=pairs)."""
    lines = [f"{'figure':58s} {'ours':>11s} {'reference':>11s} {'ratio':>7s} {'n':>3s}  unit (reference)",
             "-" * 124]
    for r in rows:
        ref = f"{r.reference:11.4g}" if r.reference is not None else f"{'—':>11s}"
        ratio = f"{r.ratio:6.2f}x" if r.ratio is not None else f"{'—':>7s}"
        n = f"{r.pairs:3d}" if r.pairs else f"{'':3s}"
        lines.append(f"{r.figure:58s} {r.value:11.4g} {ref} {ratio} {n}  {r.unit}"
                     + (f" ({r.reference_name})" if r.reference_name else ""))
    return "\n".join(lines)


def matmul_peaks() -> dict[str, float]:
    """The fp32 and bf16 matmul peaks (FLOP/s, best of two measurements each), measured now."""
    import torch

    return {name: max(matmul_peak(dtype), matmul_peak(dtype))
            for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}


def peak_rows(start: dict[str, float]) -> list[Row]:
    """Rows reporting the matmul peaks measured at the start of a run next to ones measured now (its
    end): a big change means a noisy machine, and the run's ratios deserve less trust."""
    import torch

    end = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    return [Row(f"matmul peak {name}, {PEAK_N}² (start of run)", start[name] / 1e9, None, "GFLOP/s",
                reference_name=f"{end[name] / 1e9:.0f} at the end of the run; a big change means a "
                               "noisy machine")
            for name in ("fp32", "bf16")]

