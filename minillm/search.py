"""Decoding as search: batched greedy decoding and beam search over any model's *step function*.

Every autoregressive model — a GRU decoder, T5's decoder, GPT — can be driven one token at a time by

    step_fn(prefix, state) -> (logits, new_state)

where ``prefix`` (N, t) holds the ids chosen so far (column 0 is the start token), ``state`` is
whatever the model carries between steps (encoder memory, a GRU hidden state, a key/value cache) and
``logits`` (N, V) scores the next token of each row. The searches below never look inside ``state``:
beam search only *reorders its rows* when hypotheses are pruned, with :func:`reorder_state` (index
dim 0 of every tensor in a nested tuple/list/dict) or a ``reorder_fn`` the model supplies.

A hypothesis' *model score* is the sum of its tokens' log-probabilities, end-of-sequence included.
Beam search ranks hypotheses by ``score / length ** length_penalty`` (the length normalization of
Wu et al., 2016, in the simple form Hugging Face ``generate`` uses): with ``length_penalty=0`` it
maximises the raw score, which favours short outputs; 1.0 compares the average log-probability per
token. A finished hypothesis stays in its beam slot and is only extended by padding at log-prob 0,
so ``num_beams=1`` is exactly greedy decoding.

:func:`hf_beam_search` is Hugging Face ``generate``'s variant (used by T5, whose parity tests compare
tokens with transformers): a hypothesis that ends *leaves* the running beams for a list of finished
ones, so all ``num_beams`` slots keep exploring. The two agree when no hypothesis ends early.

Shape letters: B batch (sentences), K beams per sentence, N rows (B or B*K), t steps so far,
V vocabulary, L generated length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .validation import check_float, check_int, check_tensor

State = Any
StepFn = Callable[[torch.Tensor, State], tuple[torch.Tensor, State]]
ReorderFn = Callable[[State, torch.Tensor], State]


@dataclass
class SearchOutput:
    """What a search returns, one row per input sentence."""

    sequences: torch.Tensor  # (B, L) generated ids (start token excluded), pad_id after end-of-sequence
    scores: torch.Tensor  # (B,) model score: sum of token log-probs (fp32)
    lengths: torch.Tensor  # (B,) generated tokens per row, end-of-sequence included

    @property
    def normalized_scores(self) -> torch.Tensor:
        """Average log-probability per generated token, (B,)."""
        return self.scores / self.lengths.clamp(min=1).float()

    def tokens(self, row: int) -> list[int]:
        """The ids of ``row`` up to (not including) end-of-sequence or padding."""
        return self.sequences[row, : int(self.lengths[row])].tolist()


def reorder_state(state: State, index: torch.Tensor) -> State:
    """Select rows ``index`` (dim 0) of every tensor in a (nested) tuple/list/dict ``state``."""
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index.to(state.device))
    if isinstance(state, dict):
        return {k: reorder_state(v, index) for k, v in state.items()}
    if isinstance(state, (tuple, list)):
        return type(state)(reorder_state(v, index) for v in state)
    return state  # None, ints, configs: shared by every row


def beam_step(beam_scores: torch.Tensor, log_probs: torch.Tensor, k: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of beam search: the ``k`` best one-token extensions of each sentence's beams.

    Args:
        beam_scores: (B, K) scores of the current hypotheses.
        log_probs: (B, K, V) next-token log-probabilities (or any additive scores) of each hypothesis.
        k: how many extensions to keep per sentence.
    Returns:
        scores (B, k), beam_index (B, k) (which hypothesis each came from), token (B, k); best first.
    """
    if beam_scores.dim() != 2 or log_probs.dim() != 3 or log_probs.shape[:2] != beam_scores.shape:
        raise ValueError(f"expected beam_scores (B, K) and log_probs (B, K, V), got "
                         f"{tuple(beam_scores.shape)} and {tuple(log_probs.shape)}")
    B, K, V = log_probs.shape
    if not 1 <= k <= K * V:
        raise ValueError(f"k must be in [1, K*V={K * V}], got {k}")
    cand = (beam_scores.unsqueeze(-1) + log_probs).reshape(B, K * V)  # (B, K*V)
    scores, flat = cand.topk(k, dim=1)  # (B, k)
    return scores, flat // V, flat % V


def _check_args(batch_size: int, max_new_tokens: int, **ids: int | None) -> None:
    check_int("batch_size", batch_size, low=1)
    check_int("max_new_tokens", max_new_tokens, low=1)
    for name, value in ids.items():
        check_int(name, value, low=0, allow_none=name == "eos_id")


def _log_probs(logits: torch.Tensor, n_rows: int) -> torch.Tensor:
    if logits.dim() != 2 or logits.size(0) != n_rows:
        raise ValueError(f"step_fn must return logits of shape (N={n_rows}, V), got {tuple(logits.shape)}")
    return F.log_softmax(logits.float(), dim=-1)  # fp32: sums of many log-probs need the precision


@torch.no_grad()
def greedy_search(step_fn: StepFn, state: State, *, batch_size: int, bos_id: int, eos_id: int,
                  max_new_tokens: int, pad_id: int = 0,
                  device: torch.device | str | None = None) -> SearchOutput:
    """Pick the most likely next token at every step, for ``batch_size`` rows at once.

    Args:
        step_fn: ``step_fn(prefix (B, t), state) -> (logits (B, V), state)``.
        state: the model's initial state for the B rows.
        bos_id / eos_id / pad_id: start token fed first; token that ends a row; filler after the end.
        max_new_tokens: stop after this many tokens even if some rows have not ended.
    """
    _check_args(batch_size, max_new_tokens, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    B = batch_size
    prefix = torch.full((B, 1), bos_id, dtype=torch.long, device=device)  # (B, 1)
    scores = torch.zeros(B, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        logits, state = step_fn(prefix, state)
        logp = _log_probs(logits, B)  # (B, V)
        token = logp.argmax(dim=-1)  # (B,)
        token_logp = logp.gather(1, token[:, None]).squeeze(1)  # (B,)
        scores += torch.where(finished, torch.zeros_like(token_logp), token_logp)
        lengths += (~finished).long()
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        prefix = torch.cat([prefix, token[:, None]], dim=1)  # (B, t+1)
        finished |= token == eos_id
        if bool(finished.all()):
            break
    return SearchOutput(prefix[:, 1:], scores, lengths)


@torch.no_grad()
def beam_search(step_fn: StepFn, state: State, *, batch_size: int, bos_id: int | None,
                eos_id: int | None, max_new_tokens: int, num_beams: int = 4,
                length_penalty: float = 1.0, pad_id: int = 0, reorder_fn: ReorderFn = reorder_state,
                expand_fn: ReorderFn = reorder_state, prompt: torch.Tensor | None = None,
                device: torch.device | str | None = None) -> SearchOutput:
    """Keep the ``num_beams`` best hypotheses of every sentence; return each sentence's best.

    Candidates are ranked by ``score / length ** length_penalty``; the returned ``scores`` are the
    raw model scores (sum of log-probs) of the chosen hypotheses.

    Args:
        step_fn: ``step_fn(prefix (N, t), state) -> (logits (N, V), state)`` with N = B * num_beams.
        state: the model's initial state for the B sentences; ``expand_fn(state, index)`` repeats
            each sentence's rows num_beams times once, ``reorder_fn(state, rows)`` then picks the
            surviving rows after every step (both default to :func:`reorder_state`; a model whose
            state holds per-sentence data such as encoder memory can skip reordering it, since
            beams never move between sentences).
        bos_id: the start token every prefix begins with (ignored when ``prompt`` is given).
        eos_id: the token that ends a hypothesis; None = no end token (decoder-only LMs without
            one): every hypothesis then has ``max_new_tokens`` tokens and the length penalty has
            no effect, so candidates are ranked by their raw score.
        num_beams: hypotheses kept per sentence (1 = greedy decoding). More beams than distinct
            hypotheses is allowed: the surplus stays at score -inf and never wins.
        length_penalty: exponent of the length normalization (0 = raw log-probability).
        prompt: (B, T0) ids every prefix starts from instead of ``bos_id`` (a decoder-only LM's
            prompt); the returned sequences exclude it.
    """
    if prompt is not None:
        check_tensor("prompt", prompt, ndim=2, dtype_kind="int")
        if prompt.size(0) != batch_size or prompt.size(1) < 1:
            raise ValueError(f"prompt must have shape (batch_size={batch_size}, T >= 1), "
                             f"got {tuple(prompt.shape)}")
        bos_id = 0 if bos_id is None else bos_id  # unused
    _check_args(batch_size, max_new_tokens, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    K = check_int("num_beams", num_beams, low=1)
    length_penalty = check_float("length_penalty", length_penalty)
    B = batch_size
    N = B * K
    state = expand_fn(state, torch.arange(B, device=device).repeat_interleave(K))  # rows b*K .. b*K+K-1
    if prompt is None:
        prefix = torch.full((N, 1), bos_id, dtype=torch.long, device=device)  # (N, 1)
    else:
        prefix = prompt.to(device).repeat_interleave(K, dim=0)  # (N, T0) every beam starts as the prompt
    start = prefix.size(1)
    beam_scores = torch.zeros(B, K, device=device)
    beam_scores[:, 1:] = float("-inf")  # all beams start identical: let only the first one expand
    lengths = torch.zeros(N, dtype=torch.long, device=device)
    finished = torch.zeros(N, dtype=torch.bool, device=device)
    offsets = (torch.arange(B, device=device) * K)[:, None]  # (B, 1) first row of each sentence
    for _ in range(max_new_tokens):
        logits, state = step_fn(prefix, state)
        logp = _log_probs(logits, N)  # (N, V)
        V = logp.size(-1)
        if eos_id is None:  # equal lengths: rank by the raw score (normalising cannot change the order)
            scores, beam_idx, token = beam_step(beam_scores, logp.view(B, K, V), K)
            rows = (offsets + beam_idx).reshape(N)  # (N,) which old row each new hypothesis extends
            beam_scores = scores  # (B, K), best first
            token = token.reshape(N)
            prefix = torch.cat([prefix[rows], token[:, None]], dim=1)  # (N, t+1)
            lengths = lengths + 1
            state = reorder_fn(state, rows)
            continue
        if bool(finished.any()):  # a finished hypothesis continues only with padding, at no cost
            done_row = torch.full((V,), float("-inf"), device=logp.device)
            done_row[pad_id] = 0.0
            logp = torch.where(finished[:, None], done_row, logp)
        new_len = lengths + (~finished).long()  # (N,)
        norm = new_len.clamp(min=1).float().pow(length_penalty)  # (N,)
        # rank by normalized score: divide cumulative scores by each row's new length
        ranked, beam_idx, token = beam_step((beam_scores.reshape(N) / norm).view(B, K),
                                            (logp / norm[:, None]).view(B, K, V), K)
        rows = (offsets + beam_idx).reshape(N)  # (N,) which old row each new hypothesis extends
        beam_scores = (beam_scores.reshape(N)[rows] + logp[rows, token.reshape(N)]).view(B, K)
        token = token.reshape(N)
        prefix = torch.cat([prefix[rows], token[:, None]], dim=1)  # (N, t+1)
        lengths = new_len[rows]
        finished = finished[rows] | (token == eos_id)
        state = reorder_fn(state, rows)
        if bool(finished.all()):
            break
    final = (beam_scores if eos_id is None  # equal lengths: the raw score decides
             else beam_scores / lengths.view(B, K).clamp(min=1).float().pow(length_penalty))  # (B, K)
    best = offsets.squeeze(1) + final.argmax(dim=1)  # (B,) row of each sentence's winner
    return SearchOutput(prefix[best, start:], beam_scores.reshape(N)[best], lengths[best])


@torch.no_grad()
def hf_beam_search(step_fn: StepFn, state: Any, *, batch_size: int, bos_id: int, eos_id: int | None, pad_id: int,
                   max_new_tokens: int, num_beams: int, length_penalty: float = 1.0,
                   reorder_fn: ReorderFn | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Hugging Face ``generate``'s beam search (transformers 5, ``early_stopping=False``), over the
    same ``step_fn(prefix (N, t), state) -> (logits (N, V), state)`` interface as
    :func:`minillm.search.beam_search`; returns (B, 1 + L) ids starting with ``bos_id``.

    It differs from :func:`minillm.search.beam_search` in where finished hypotheses live: here a
    hypothesis that ends leaves the K running beams for a separate list of the K best finished ones
    (ranked by score / length**length_penalty), so K beams keep exploring; there it keeps its beam
    slot. The two agree until a hypothesis ends, then can pick different outputs. Each step takes
    the 2K best continuations (so K non-ending ones always exist); an ending one is kept only if it
    is among the K best; the search stops when every sentence's best running beam, normalised by the
    current length, cannot beat its worst finished one (HF's heuristic), or at ``max_new_tokens``.
    """
    B = check_int("batch_size", batch_size, low=1)
    K = check_int("num_beams", num_beams, low=1)
    max_len = 1 + check_int("max_new_tokens", max_new_tokens, low=1)
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
        check_int(name, value, low=0, allow_none=name == "eos_id")
    length_penalty = check_float("length_penalty", length_penalty)
    running = torch.full((B, K, max_len), pad_id, dtype=torch.long, device=device)
    running[:, :, 0] = bos_id
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = -1.0e9  # all beams start identical: only the first expands
    finished = torch.full((B, K, max_len), pad_id, dtype=torch.long, device=device)
    finished_scores = torch.full((B, K), -1.0e9, device=device)
    finished_len = torch.zeros(B, K, dtype=torch.long, device=device)
    is_finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    improvable = torch.ones(B, 1, dtype=torch.bool, device=device)
    top_k_mask = torch.arange(2 * K, device=device) < K  # (2K,) only these may be finalised
    cur = 1
    while cur < max_len:
        logits, state = step_fn(running.view(B * K, max_len)[:, :cur], state)
        logp = F.log_softmax(logits.float(), dim=-1)  # (B·K, V)
        V = logp.size(-1)
        acc = (logp.view(B, K, V) + running_scores[:, :, None]).view(B, K * V)
        top_scores, top_idx = acc.topk(2 * K, dim=1)  # (B, 2K)
        beam, token = top_idx // V, top_idx % V
        cand = running.gather(1, beam[:, :, None].expand(B, 2 * K, max_len)).clone()  # (B, 2K, max_len)
        cand[:, :, cur] = token
        hits = token == eos_id if eos_id is not None else torch.zeros_like(token, dtype=torch.bool)
        hits = hits | (cur + 1 >= max_len)  # (B, 2K) ended: end token, or the length limit
        # the K best continuations that did not end keep running
        keep_scores, keep = (top_scores + hits.float() * -1.0e9).topk(K, dim=1)  # (B, K)
        running = cand.gather(1, keep[:, :, None].expand(B, K, max_len))
        running_scores = keep_scores
        rows = (beam.gather(1, keep) + torch.arange(B, device=device)[:, None] * K).view(B * K)
        # ended ones among the K best join the finished list if they beat its worst
        just = hits & top_k_mask[None, :]
        norm = top_scores / float(cur) ** length_penalty  # cur + 1 - prompt length (1)
        norm = norm + (~improvable).float() * -1.0e9 + (~just).float() * -1.0e9
        merged = torch.cat([finished_scores, norm], dim=1)  # (B, 3K)
        pick = merged.topk(K, dim=1).indices  # (B, K)
        finished = torch.cat([finished, cand], dim=1).gather(1, pick[:, :, None].expand(B, K, max_len))
        finished_scores = merged.gather(1, pick)
        finished_len = torch.cat([finished_len, torch.full_like(token, cur)], dim=1).gather(1, pick)
        is_finished = torch.cat([is_finished, just], dim=1).gather(1, pick)
        if reorder_fn is not None:
            state = reorder_fn(state, rows)
        cur += 1
        best_running = running_scores[:, :1] / float(cur - 1) ** length_penalty  # (B, 1)
        worst = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True).values,
                            torch.full_like(finished_scores, -1.0e9))  # (B, K)
        improvable = improvable & (best_running > worst).any(dim=-1, keepdim=True)
        if not bool(improvable.any()) or bool(hits.all()):
            break
    L = int(finished_len[:, 0].max())
    return finished[:, 0, :1 + L]


# ---------------------------------------------------------------------------------------------
# Hugging Face configs
