"""Greedy speculative decoding: a small draft model guesses, the large target model checks.

Decoding one token at a time leaves most of a large model's time to reading its weights, not to
arithmetic: scoring k + 1 tokens in one forward costs about as much as scoring one. Speculative
decoding (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding"; Chen
et al. 2023, "Accelerating Large Language Model Decoding with Speculative Sampling") lets a cheap
draft model propose k tokens, one by one, and has the target score the last accepted token and
the k proposals in one forward. With greedy decoding the rule is simple: keep the longest prefix of
proposals that equal the target's own argmax, then append the target's token at the first mismatch
(or a bonus token after k accepted proposals). Every kept token is one the target would have picked,
so the output equals ``target.generate(...)`` token for token whatever the draft; a good draft only
makes it faster — up to k + 1 tokens per target forward.

Both models keep a preallocated key/value cache (:class:`minillm.models.llama.KVCache`,
:class:`minillm.models.gpt.KVCache`). Rejected proposals leave keys and values past the accepted
length; rolling back is setting the cache's ``length``: every layer reads only the filled prefix
``[:length]`` and the next call overwrites the stale tail.

Shape letters: P prompt tokens, k draft tokens per round, V vocabulary.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .models.gpt import GPT, KVCache as GPTCache
from .models.llama import KVCache as LlamaCache, LlamaForCausalLM
from .validation import check_int, check_tensor, check_token_ids

IDS = "input_ids (int64/int32 token ids, shape (1, P))"


def _context_window(model: nn.Module) -> int:
    config = model.config
    return config.block_size if isinstance(model, GPT) else config.max_position_embeddings


def _new_cache(model: nn.Module, max_len: int, device: torch.device) -> GPTCache | LlamaCache:
    """An empty batch-of-one cache with the model's weight dtype."""
    dtype = next(model.parameters()).dtype
    cache_class = GPTCache if isinstance(model, GPT) else LlamaCache
    return cache_class(model.config, 1, max_len, device=device, dtype=dtype)


def _check_args(target: nn.Module, draft: nn.Module, input_ids: Any, max_new_tokens: Any,
                num_draft_tokens: Any, eos_token_id: Any) -> tuple[int, int, int | None]:
    for name, model in (("target", target), ("draft", draft)):
        if not isinstance(model, (GPT, LlamaForCausalLM)):
            raise TypeError(f"{name} must be a minillm GPT or LlamaForCausalLM, got "
                            f"{type(model).__name__}")
    V, V_draft = target.config.vocab_size, draft.config.vocab_size
    if V != V_draft:
        raise ValueError(f"the draft has vocab_size={V_draft} but the target has {V}: the draft must share the "
                         f"target's tokenizer, or its proposals are other tokens' ids")
    check_token_ids(IDS, input_ids, V, ndim=2)
    if input_ids.dtype not in (torch.int64, torch.int32):  # what nn.Embedding accepts
        raise TypeError(f"{IDS} must be int64 or int32, got {input_ids.dtype}")
    if input_ids.size(0) != 1:
        raise ValueError(f"speculative decoding runs one sequence at a time (batch size 1): "
                         f"{IDS} has shape {tuple(input_ids.shape)}")
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=0)
    k = check_int("num_draft_tokens", num_draft_tokens, low=1)
    P = input_ids.size(1)
    for name, model in (("target", target), ("draft", draft)):
        limit = _context_window(model)
        if P + max_new_tokens > limit:
            raise ValueError(f"prompt of {P} tokens + max_new_tokens={max_new_tokens} = "
                             f"{P + max_new_tokens} is longer than the {name}'s context window "
                             f"({limit})")
    if eos_token_id is None:  # as generate: the target's config (GPT has no end token)
        eos_token_id = getattr(target.config, "eos_token_id", None)
    eos = check_int("eos_token_id", eos_token_id, low=0, high=V - 1, allow_none=True)
    return max_new_tokens, k, eos


def greedy_accept(proposed: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """The tokens one round of greedy speculative decoding adds.

    proposed (k,): the draft's guesses; picks (k+1,): the target's argmax after the prompt and after
    each guess, from one forward pass. The guesses are kept up to the first one the target would not
    have chosen, then the target's own token there (or, if all k were right, its token after them):
    returns picks[:a + 1], a = the number of leading guesses equal to the target's picks (0 ≤ a ≤ k).
    """
    check_tensor("proposed", proposed, ndim=1, dtype_kind="int")
    check_tensor("picks", picks, ndim=1, dtype_kind="int")
    if picks.numel() != proposed.numel() + 1:
        raise ValueError(f"picks must hold one token more than proposed (the target's pick after "
                         f"every guess and after the last): got {picks.numel()} picks for "
                         f"{proposed.numel()} proposals")
    agree = (proposed == picks[:-1]).long().cumprod(dim=0)  # 1 while every guess so far was right
    return picks[:int(agree.sum()) + 1]


@torch.inference_mode()
def speculative_generate(target: nn.Module, draft: nn.Module, input_ids: torch.Tensor,
                         max_new_tokens: int, *, num_draft_tokens: int = 4,
                         eos_token_id: int | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Greedy continuation of ``input_ids`` by ``target``, sped up by guesses of ``draft``.

    The tokens equal ``target.generate(input_ids, max_new_tokens)`` (greedy, with its end token:
    the sequence stops after the first ``eos_token_id``, which defaults to the target config's).
    Both models are run in eval mode and restored afterwards.

    Args:
        target: the model whose greedy output is wanted (minillm ``LlamaForCausalLM`` or ``GPT``).
        draft: a cheaper model with the same vocabulary that proposes tokens.
        input_ids: the prompt (1, P), P ≥ 1.
        max_new_tokens: at most this many tokens are added; P + max_new_tokens must fit both
            models' context windows.
        num_draft_tokens: k, the proposals per round (the last round proposes fewer if fewer
            tokens are left).
        eos_token_id: end token (default: ``target.config.eos_token_id`` where it has one).

    Returns:
        (tokens (1, P + n) with n ≤ max_new_tokens, stats) where stats holds ``proposed`` and
        ``accepted`` draft tokens, ``acceptance_rate`` (accepted / proposed, 0.0 if none was
        proposed) and ``target_forwards`` (forward calls of the target, the prompt included).
    """
    max_new_tokens, k, eos = _check_args(target, draft, input_ids, max_new_tokens,
                                         num_draft_tokens, eos_token_id)
    P, device = input_ids.size(1), input_ids.device
    stats = dict(proposed=0, accepted=0, acceptance_rate=0.0, target_forwards=0)
    if max_new_tokens == 0:
        return input_ids, stats
    total = P + max_new_tokens
    out = torch.empty(1, total, dtype=input_ids.dtype, device=device)
    out[:, :P] = input_ids
    modes = (target.training, draft.training)
    target.eval()
    draft.eval()
    try:
        # each cache holds the keys/values of out[:, :cache.length]; neither ever reads past it
        target_cache = _new_cache(target, total, device)
        draft_cache = _new_cache(draft, total, device)
        length = P  # tokens in out
        while length < total:
            # a round adds accepted + 1 tokens, so propose at most what is left minus one
            k_now = min(k, total - length - 1)
            proposals = []
            for i in range(k_now):
                # the draft catches up on tokens it has not seen, then feeds its own guesses
                new = out[:, draft_cache.length:length] if i == 0 else proposals[-1]
                logits = draft(new, past_key_values=draft_cache)[:, -1]  # (1, V)
                proposals.append(logits.argmax(dim=-1, keepdim=True))  # (1, 1)
            guess = torch.cat([out[:, target_cache.length:length], *proposals], dim=1)
            logits = target(guess, past_key_values=target_cache)[0, -(k_now + 1):]  # (k+1, V)
            stats["target_forwards"] += 1
            picks = logits.argmax(dim=-1)  # (k+1,) the target's token after each prefix
            proposed = torch.cat(proposals, dim=1)[0] if proposals else picks[:0]  # (k,)
            new_tokens = greedy_accept(proposed, picks).to(out.dtype)
            stats["proposed"] += k_now
            stats["accepted"] += new_tokens.numel() - 1
            if eos is not None:
                ends = (new_tokens == eos).nonzero()
                if len(ends):  # generate stops right after the end token
                    new_tokens = new_tokens[:int(ends[0]) + 1]
            out[0, length:length + new_tokens.numel()] = new_tokens
            # roll back: keep the keys of the tokens now in out, minus the newest, not fed yet
            length += new_tokens.numel()
            target_cache.length = min(target_cache.length, length - 1)
            draft_cache.length = min(draft_cache.length, length - 1)
            if eos is not None and int(out[0, length - 1]) == eos:
                break
    finally:
        target.train(modes[0])
        draft.train(modes[1])
    if stats["proposed"]:
        stats["acceptance_rate"] = stats["accepted"] / stats["proposed"]
    return out[:, :length], stats


__all__ = ["speculative_generate", "greedy_accept"]
