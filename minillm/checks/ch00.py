"""Checks for the tour's exercises (chapter 0)."""

from __future__ import annotations

import torch

from . import Case, CheckResult, run_check


def _ref_bigram_counts(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    counts.index_put_((ids[:-1], ids[1:]), torch.ones(len(ids) - 1, dtype=torch.long), accumulate=True)
    return counts


def _ref_mean_nll(probs: torch.Tensor, ids: torch.Tensor) -> float:
    return float(-torch.log(probs[ids[:-1], ids[1:]]).mean())


def _bigram_cases() -> list[Case]:
    g = torch.Generator().manual_seed(0)
    return [
        Case((torch.tensor([0, 1, 2, 1, 2]), 3), description="short sequence"),
        Case((torch.tensor([2, 2, 2, 2]), 4), description="a repeated pair must be counted every time"),
        Case((torch.randint(0, 7, (500,), generator=g), 7), description="500 random ids"),
        Case((torch.tensor([4]), 5), description="one token: no pairs"),
    ]


def check_bigram_counts(fn) -> CheckResult:
    """``fn(ids, vocab_size)`` → (V, V) int tensor whose [a, b] counts how often b follows a."""
    return run_check("bigram_counts", fn, _ref_bigram_counts, _bigram_cases(),
                     hint="counts[a, b] += 1 for each neighbouring pair (ids[t], ids[t+1]); "
                          "`index_put_(..., accumulate=True)` or `torch.bincount(a * V + b)` avoid a loop")


def check_mean_nll(fn) -> CheckResult:
    """``fn(probs, ids)`` → mean negative log-likelihood (float) of ``ids`` under a bigram table."""
    g = torch.Generator().manual_seed(1)
    table = torch.rand(6, 6, generator=g) + 0.1
    table = table / table.sum(1, keepdim=True)
    cases = [
        Case((torch.full((3, 3), 1 / 3), torch.tensor([0, 1, 2])), description="uniform: ln 3"),
        Case((table, torch.randint(0, 6, (50,), generator=g)), description="random table"),
        Case((table, torch.tensor([5, 0])), description="a single pair"),
    ]
    return run_check("mean_nll", fn, _ref_mean_nll, cases,
                     hint="pick probs[ids[t], ids[t+1]] for every t, take -log and average")
