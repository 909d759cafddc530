"""Shared pieces of the benchmark runner: a result row and a timing helper."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


@dataclass
class Row:
    """One line of the benchmark table: our figure next to the reference's, measured in one run."""

    figure: str  # what was measured, e.g. "training steps/s, bigram LM"
    value: float  # ours
    reference: float | None  # the reference implementation's (None if there is none)
    unit: str  # e.g. "steps/s", "MB", "s"
    higher_is_better: bool = True
    reference_name: str = ""  # e.g. "bare PyTorch loop"

    @property
    def ratio(self) -> float | None:
        """How many times better ours is than the reference (> 1 = ours is better)."""
        if self.reference in (None, 0) or self.value == 0:
            return None
        return self.value / self.reference if self.higher_is_better else self.reference / self.value


def best_of(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Fastest wall-clock seconds of ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def format_table(rows: list[Row]) -> str:
    lines = [f"{'figure':52s} {'ours':>12s} {'reference':>12s} {'ratio':>7s}  unit (reference)",
             "-" * 110]
    for r in rows:
        ref = f"{r.reference:12.4g}" if r.reference is not None else f"{'—':>12s}"
        ratio = f"{r.ratio:6.2f}x" if r.ratio is not None else f"{'—':>7s}"
        lines.append(f"{r.figure:52s} {r.value:12.4g} {ref} {ratio}  {r.unit}"
                     + (f" ({r.reference_name})" if r.reference_name else ""))
    return "\n".join(lines)
