"""Checks for the tour's exercises (chapter 0)."""

from __future__ import annotations

import torch

from . import Case, CheckResult, run_check
from .. import checks as _checks


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


# ----- the larger exercise: a training loop for the bigram model -----
class _BigramTarget:
    """What a trained bigram table must reach on one case: the counted (maximum-likelihood) NLL."""

    def __init__(self, ids: torch.Tensor, vocab_size: int):
        self.ids, self.vocab_size = ids, vocab_size
        counts = _ref_bigram_counts(ids, vocab_size).double()
        probs = counts / counts.sum(1, keepdim=True).clamp_min(1)
        self.optimum = float(-probs[ids[:-1], ids[1:]].log().mean())  # the best any table can do


def _ref_train_bigram(ids: torch.Tensor, vocab_size: int, steps: int, lr: float) -> _BigramTarget:
    return _BigramTarget(ids, vocab_size)


def _compare_trained_bigram(expected: _BigramTarget, got, **_) -> str | None:
    V = expected.vocab_size
    if not isinstance(got, torch.Tensor):
        return f"result: expected a ({V}, {V}) tensor of logits, got {type(got).__name__}"
    if tuple(got.shape) != (V, V):
        return f"result: expected shape ({V}, {V}), got {tuple(got.shape)}"
    if not got.is_floating_point():
        return f"result: the logits must be floating-point numbers, got dtype {got.dtype}"
    if not torch.isfinite(got).all():
        n_nan, n_inf = int(torch.isnan(got).sum()), int(torch.isinf(got).sum())
        return (f"result: the logits must be finite, got {n_nan} NaN and {n_inf} infinite values "
                f"(a learning rate too high, or a log of 0?)")
    ids = expected.ids
    nll = float(torch.nn.functional.cross_entropy(got.detach().double()[ids[:-1]], ids[1:]))
    if nll > expected.optimum + 0.01:
        return (f"training NLL of your table is {nll:.4f} nats, but counting reaches {expected.optimum:.4f}: "
                f"the loop did not get within 0.01 of the optimum (is the optimizer stepping, the "
                f"gradient zeroed each step, the loss the cross-entropy of logits[ids[:-1]] vs ids[1:]?)")
    return None


def _markov_ids(vocab_size: int, length: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    transition = torch.softmax(2 * torch.randn(vocab_size, vocab_size, generator=g), dim=-1)
    ids = [0]
    for _ in range(length - 1):
        ids.append(int(torch.multinomial(transition[ids[-1]], 1, generator=g)))
    return torch.tensor(ids)


def check_train_bigram(fn) -> CheckResult:
    """``fn(ids, vocab_size, steps, lr)`` → (V, V) logits trained by gradient descent whose
    training NLL is within 0.01 nats of the counted (maximum-likelihood) bigram model's."""
    cases = [
        Case((_markov_ids(4, 1000, 0), 4, 300, 0.1), description="4 tokens from a random Markov chain"),
        Case((_markov_ids(6, 1500, 1), 6, 300, 0.1), description="6 tokens from a random Markov chain"),
        Case((torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]), 3, 300, 0.1),
             description="a deterministic cycle 0 → 1 → 2 → 0: the optimum is 0 nats"),
    ]
    # 300 optimizer steps per case: seconds on a busy machine, so four times the default limit
    return run_check("train_bigram", fn, _ref_train_bigram, cases, compare_fn=_compare_trained_bigram,
                     time_limit=4 * _checks.DEFAULT_TIME_LIMIT,
                     hint="table = torch.zeros(V, V, requires_grad=True); opt = torch.optim.Adam([table], lr=lr); "
                          "each step: loss = F.cross_entropy(table[ids[:-1]], ids[1:]); opt.zero_grad(); "
                          "loss.backward(); opt.step()")
