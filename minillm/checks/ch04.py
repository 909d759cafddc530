"""Checks for chapter 4's exercises (embeddings and the MLP language model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Case, CheckResult, run_check
from ..models.mlp_lm import context_windows


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ref_embedding_as_matmul(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.one_hot(ids, weight.size(0)).to(weight.dtype) @ weight


def check_embedding_as_matmul(fn) -> CheckResult:
    """``fn(ids, weight)`` → one-hot(ids) @ weight: an embedding lookup written as a matmul."""
    g = _gen(0)
    w = torch.randn(7, 3, generator=g)
    cases = [
        Case((torch.tensor([0, 3, 6]), w), description="three ids"),
        Case((torch.tensor([[1, 1], [5, 2]]), w), description="a (2, 2) batch: output (2, 2, 3)"),
        Case((torch.randint(0, 11, (4, 5), generator=g), torch.randn(11, 8, generator=g)),
             description="random (4, 5) ids, 11 x 8 table"),
    ]
    return run_check("embedding_as_matmul", fn, _ref_embedding_as_matmul, cases,
                     hint="F.one_hot(ids, num_classes=V) gives (..., V) integers: convert to the "
                          "weight's dtype, then `@ weight` gives (..., C) — the same rows as weight[ids]")


def _ref_windows(ids: torch.Tensor, context: int, pad_id: int) -> torch.Tensor:
    return context_windows(ids[None], context, pad_id)[0]


def check_context_windows(fn) -> CheckResult:
    """``fn(ids, context, pad_id)`` → (T, N): row t = ids[t-N+1 .. t], ``pad_id`` before the start."""
    g = _gen(1)
    cases = [
        Case((torch.tensor([5, 6, 7, 8]), 3, 0), description="4 ids, context 3"),
        Case((torch.tensor([1, 2]), 4, 9), description="context longer than the text"),
        Case((torch.tensor([4, 2, 3]), 1, 0), description="context 1: each id alone"),
        Case((torch.randint(0, 20, (30,), generator=g), 5, 20), description="30 random ids"),
    ]
    return run_check("context_windows", fn, _ref_windows, cases,
                     hint="put context-1 copies of pad_id in front of ids, then take the N ids "
                          "ending at each position (a loop, or `padded.unfold(0, N, 1)`)")


def _ref_mlp_forward(windows, emb, w1, b1, w2, b2) -> torch.Tensor:
    x = emb[windows].flatten(1)  # (B, N*C)
    return torch.tanh(x @ w1.T + b1) @ w2.T + b2


def check_mlp_forward(fn) -> CheckResult:
    """``fn(windows, emb, w1, b1, w2, b2)`` → (B, V) logits of the Bengio MLP."""
    cases = []
    for seed, (b, n, v, c, h) in enumerate([(2, 3, 5, 4, 6), (1, 1, 3, 2, 2), (8, 4, 10, 3, 7)]):
        g = _gen(10 + seed)
        cases.append(Case((torch.randint(0, v, (b, n), generator=g), torch.randn(v, c, generator=g),
                           torch.randn(h, n * c, generator=g), torch.randn(h, generator=g),
                           torch.randn(v, h, generator=g), torch.randn(v, generator=g)),
                          description=f"B={b}, N={n}, V={v}, C={c}, H={h}"))
    return run_check("mlp_forward", fn, _ref_mlp_forward, cases,
                     hint="look up emb[windows] → (B, N, C), flatten to (B, N*C) keeping the order "
                          "of the context, then tanh(x @ w1.T + b1) @ w2.T + b2")


def _ref_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.double(), targets).to(logits.dtype)


def check_cross_entropy(fn) -> CheckResult:
    """``fn(logits, targets)`` → mean negative log-probability of the targets (a 0-d tensor)."""
    g = _gen(2)
    cases = [
        Case((torch.zeros(2, 4), torch.tensor([0, 3])), description="uniform logits: ln 4"),
        Case((torch.randn(16, 9, generator=g), torch.randint(0, 9, (16,), generator=g)),
             description="random logits"),
        Case((torch.tensor([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 999.0]]), torch.tensor([0, 2])),
             description="huge logits: exp(1000) overflows unless you subtract the maximum"),
    ]
    return run_check("cross_entropy", fn, _ref_cross_entropy, cases, atol=1e-5,
                     hint="log_softmax = logits - max - log(sum(exp(logits - max))); pick the "
                          "target column of every row, negate and average")


# ---------------------------------------------------------------------------------------------
# Larger exercise: dropout for the MLP LM (then a sweep for the best rate, in the notebook)
# ---------------------------------------------------------------------------------------------

def _ref_dropout(h: torch.Tensor, p: float, training: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return h
    keep = torch.rand(h.shape, generator=generator) >= p  # True with probability 1 - p
    return h * keep / (1 - p)


_DROPOUT_PROPERTIES = ("output", "unchanged (returns h itself)", "every entry is 0 or h / (1 - p)",
                       "fraction set to 0", "same generator seed gives the same output",
                       "raises ValueError for p = 1.5")


def _dropout_probe(fn, h: torch.Tensor, p: float, training: bool, seed: int) -> dict:
    """The properties every correct (inverted) dropout shares; the mask itself may differ."""
    original = h.clone()
    out = fn(h, p, training, torch.Generator().manual_seed(seed))  # ``h`` is watched for in-place writes
    props = dict.fromkeys(_DROPOUT_PROPERTIES)  # every key always present: the first difference is reported
    props["output"] = f"tensor of shape {tuple(original.shape)}"
    if not isinstance(out, torch.Tensor) or out.shape != original.shape:
        props["output"] = (f"tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor)
                           else f"{type(out).__name__} {out!r:.60}")
        return props
    n_nan = int(torch.isnan(out.float()).sum())
    if n_nan:
        props["output"] += f" with NaN at {n_nan:,} positions"
        return props
    again = fn(original.clone(), p, training, torch.Generator().manual_seed(seed))
    dropped = out == 0
    scaled = torch.isclose(out, original / (1 - p), rtol=1e-5, atol=1e-7)
    try:
        fn(original.clone(), 1.5, training, torch.Generator().manual_seed(seed))
        rejects = False
    except ValueError:
        rejects = True
    props.update({"unchanged (returns h itself)": bool(torch.equal(out, original)),
                  "every entry is 0 or h / (1 - p)": bool((dropped | scaled).all()),
                  "fraction set to 0": round(float(dropped.float().mean()), 3),
                  "same generator seed gives the same output": bool(isinstance(again, torch.Tensor)
                                                                    and torch.equal(out, again)),
                  "raises ValueError for p = 1.5": rejects})
    return props


def check_dropout(fn) -> CheckResult:
    """``fn(h, p, training=True, generator=None)`` → inverted dropout of ``h``, checked by its properties."""
    g = _gen(3)
    big = torch.rand(200, 500, generator=g) + 0.5  # no zeros, so a zero in the output means "dropped"
    cases = [
        Case((big, 0.5, False, 0), description="training=False: dropout is off"),
        Case((big, 0.0, True, 1), description="p = 0: nothing is dropped"),
        Case((big, 0.25, True, 2), description="p = 0.25 on 100,000 activations"),
        Case((torch.rand(50, 40, 30, generator=g) + 0.5, 0.6, True, 3), description="p = 0.6, a 3-D input"),
    ]
    def learner(h, p, training, seed):
        return _dropout_probe(fn, h, p, training, seed)

    def reference(h, p, training, seed):
        return _dropout_probe(_ref_dropout, h, p, training, seed)

    return run_check("dropout", learner, reference, cases, atol=0.01,
                     hint="when training and p > 0: keep = torch.rand(h.shape, generator=generator) >= p, "
                          "return h * keep / (1 - p) (the survivors are scaled up so the expected value "
                          "is unchanged); otherwise return h; raise ValueError unless 0 <= p < 1")
