"""Checks for chapter 6's exercises: additive attention scores, masked softmax, one beam-search step."""

from __future__ import annotations

import torch

from ..models.seq2seq import masked_softmax
from ..search import beam_step
from . import Case, CheckResult, run_check


def _ref_additive_scores(query, keys, W_q, W_k, v):
    return torch.tanh((query @ W_q.T).unsqueeze(1) + keys @ W_k.T) @ v  # (B, S)


def check_additive_scores(fn) -> CheckResult:
    """``fn(query (B, Hq), keys (B, S, Hk), W_q (A, Hq), W_k (A, Hk), v (A,))`` → scores (B, S)."""
    g = torch.Generator().manual_seed(6)

    def case(B, S, Hq, Hk, A, description):
        r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
        return Case((r(B, Hq), r(B, S, Hk), r(A, Hq), r(A, Hk), r(A)), description=description)

    cases = [case(1, 3, 2, 2, 2, "one query, three keys"),
             case(4, 7, 5, 6, 3, "query and key widths differ"),
             case(2, 1, 4, 4, 8, "a single key")]
    return run_check("additive_scores", fn, _ref_additive_scores, cases, atol=1e-5,
                     hint="project the query (B, A) and the keys (B, S, A), add them with "
                          "broadcasting (unsqueeze the query at dim 1), tanh, then dot with v")


def check_masked_softmax(fn) -> CheckResult:
    """``fn(scores (B, S), mask (B, S) bool)`` → weights (B, S): softmax over the True positions, 0 elsewhere."""
    g = torch.Generator().manual_seed(7)
    lengths = torch.tensor([5, 2, 1, 4])
    ragged = torch.arange(5)[None] < lengths[:, None]
    cases = [
        Case((torch.randn(4, 5, generator=g), ragged), description="padded batch, lengths 5, 2, 1, 4"),
        Case((torch.randn(2, 3, generator=g), torch.ones(2, 3, dtype=torch.bool)), description="no padding"),
        Case((torch.tensor([[1000.0, 999.0, 0.0]]), torch.tensor([[True, True, False]])),
             description="large scores: subtract the maximum (or use torch.softmax)"),
        Case((torch.tensor([[0.0, 50.0, 1.0]]), torch.tensor([[True, False, True]])),
             description="the masked score is the largest one"),
    ]
    return run_check("masked_softmax", fn, masked_softmax, cases, atol=1e-6,
                     hint="set the scores at masked positions to -inf (scores.masked_fill(~mask, ...)) "
                          "before the softmax, so exp() makes them exactly 0")


def check_beam_step(fn) -> CheckResult:
    """``fn(beam_scores (B, K), log_probs (B, K, V), k)`` → (scores, beam_index, token), each (B, k)."""
    g = torch.Generator().manual_seed(8)

    def logp(*shape):
        return torch.log_softmax(torch.randn(*shape, generator=g), dim=-1)

    cases = [
        Case((torch.zeros(1, 1), logp(1, 1, 5), 2), description="first step: one beam, keep 2"),
        Case((torch.tensor([[-0.5, -2.0]]), logp(1, 2, 4), 2), description="two beams, two survivors"),
        Case((-torch.rand(3, 4, generator=g), logp(3, 4, 6), 4), description="batch of 3 sentences"),
        Case((torch.tensor([[-1.0, -9.0]]), logp(1, 2, 3), 3),
             description="all survivors may come from the same beam"),
    ]
    return run_check("beam_step", fn, beam_step, cases, atol=1e-6,
                     hint="add beam_scores[..., None] to log_probs, flatten the last two dims to "
                          "(B, K*V), take topk(k), then beam = index // V and token = index % V")
