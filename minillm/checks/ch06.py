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


# ----------------------------------------------------------------------------- a whole beam search

def _toy_step_model(seed: int, vocab_size: int = 8, hidden: int = 6, eos_bias: float = 0.0):
    """A tiny random recurrent LM as a search step function over a ``{"hidden": (N, H)}`` state."""
    g = torch.Generator().manual_seed(seed)
    E = torch.randn(vocab_size, hidden, generator=g)
    W = torch.randn(hidden, hidden, generator=g) / hidden ** 0.5
    O = torch.randn(hidden, vocab_size, generator=g) * 1.5
    bias = torch.zeros(vocab_size)
    bias[:2] = float("-inf")  # ids 0 and 1 (<pad>, <bos>) are never predicted
    bias[2] = eos_bias  # id 2 = <eos>: shifts how long hypotheses run

    def step(prefix: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        h = torch.tanh(E[prefix[:, -1]] + state["hidden"] @ W)  # (N, H)
        return h @ O + bias, {"hidden": h}  # (N, V)

    start = {"hidden": torch.randn(1, hidden, generator=g)}
    return step, start


def _ref_beam_search(step_fn, state, *, num_beams, length_penalty, max_new_tokens=20,
                     bos_id=1, eos_id=2, pad_id=0):
    from ..search import beam_search

    out = beam_search(step_fn, state, batch_size=1, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id,
                      max_new_tokens=max_new_tokens, num_beams=num_beams, length_penalty=length_penalty)
    return out.tokens(0), float(out.scores[0])


def check_beam_search(fn) -> CheckResult:
    """``fn(step_fn, state, *, num_beams, length_penalty, max_new_tokens, bos_id, eos_id, pad_id)``
    → (ids of the best hypothesis up to and including ``<eos>``, its raw score), for one sentence.

    Compared with ``minillm.search.beam_search`` on small random recurrent step functions whose
    state must follow each surviving hypothesis; the cases include ones where the length penalty
    changes which hypothesis wins.
    """
    cases = []
    for seed, eos_bias, k, alpha, max_new, what in [
        (3, 0.0, 1, 0.0, 12, "one beam = greedy decoding"),
        (6, 1.0, 3, 0.0, 12, "3 beams, no length normalization: a short hypothesis wins"),
        (6, 1.0, 3, 1.0, 12, "the same model with length_penalty=1: a longer one wins"),
        (9, -1.0, 5, 2.0, 12, "5 beams, length_penalty=2: the best hypothesis stops at max_new_tokens"),
        (7, -1.0, 4, 0.5, 12, "4 beams: a hypothesis ends early and must stay finished"),
        (5, 0.0, 5, 2.0, 12, "5 beams, length_penalty=2, the winner ends with <eos> at step 9"),
    ]:
        step, start = _toy_step_model(seed, eos_bias=eos_bias)
        cases.append(Case((step, start), dict(num_beams=k, length_penalty=alpha, max_new_tokens=max_new,
                                              bos_id=1, eos_id=2, pad_id=0), description=what))
    return run_check("beam_search", fn, _ref_beam_search, cases, atol=1e-4,
                     hint="keep (K, t) prefixes, K raw scores, lengths and a done flag; each step: "
                          "log_softmax, finished rows may only add <pad> at log-prob 0, rank "
                          "(score + logp) / new_length**length_penalty over all K*V candidates, "
                          "topk(K), then select the parents' rows of prefix, scores, lengths and state")
