"""Decoding strategies for language models: temperature, top-k, top-p (nucleus), greedy, sampling.

Each filter takes next-token logits (..., V) and returns logits of the same shape in which the
tokens it rules out are set to ``-inf``, so filters compose (temperature → top-k → top-p → softmax)
exactly like the logits processors of Hugging Face ``generate``:

* temperature τ: ``logits / τ`` — τ < 1 sharpens the distribution, τ > 1 flattens it;
* top-k: keep the k highest logits (Fan et al., 2018);
* top-p (nucleus): keep the smallest set of most likely tokens whose probability adds up to at least
  p (Holtzman et al., 2020, "The Curious Case of Neural Text Degeneration").

:func:`generate_tokens` is the shared sampling loop of the small models; beam search for every
model lives in :mod:`minillm.search`. Shape letters: B batch, V vocabulary.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .validation import check_float, check_int, check_tensor, check_token_ids

IDS = "idx (integer token ids, shape (B, T))"  # how errors name a language model's input


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` as a float if it is a finite number > 0, else raise."""
    try:
        return check_float("temperature", temperature, low=0, low_inclusive=False)
    except ValueError as err:
        raise ValueError(f"{err} (use do_sample=False for greedy decoding)") from None


def check_top_k(top_k: int | None) -> int | None:
    """Return ``top_k`` if it is None or an int >= 1 (None disables the filter), else raise."""
    return check_int("top_k", top_k, low=1, allow_none=True)


def check_top_p(top_p: float | None) -> float | None:
    """Return ``top_p`` if it is None or a number in (0, 1], else raise."""
    if top_p is None:
        return None
    top_p = check_float("top_p", top_p)
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    return top_p


def check_generate_args(*, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                        top_p: float | None = None, num_beams: int = 1,
                        length_penalty: float = 1.0) -> None:
    """The checks every ``generate`` shares (HF names): raise on any argument out of range."""
    check_int("max_new_tokens", max_new_tokens, low=0)
    check_temperature(temperature)
    check_top_k(top_k)
    check_top_p(top_p)
    check_int("num_beams", num_beams, low=1)
    check_float("length_penalty", length_penalty)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the logits by ``temperature`` (> 0)."""
    temperature = check_temperature(temperature)
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (ties at the k-th value are kept), -inf elsewhere."""
    k = check_top_k(k)
    if k is None or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1) the k-th largest value
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Nucleus filter: keep the fewest most-likely tokens whose total probability is >= ``p``.

    A token is dropped when the probability of all tokens *more* likely than it already reaches
    ``p``; the most likely token is always kept.
    """
    p = check_top_p(p)
    if p is None or p == 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (..., V)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    mass_before = probs.cumsum(-1) - probs  # probability of the strictly more likely tokens
    drop_sorted = mass_before >= p
    drop_sorted[..., 0] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def process_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> torch.Tensor:
    """Temperature, then top-k, then top-p: the order Hugging Face ``generate`` applies them."""
    return top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)


def sample_next(logits: torch.Tensor, *, do_sample: bool = True, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row of ``logits`` (B, V): argmax if not ``do_sample``, else a sample
    from the filtered distribution. Returns (B, 1) token ids."""
    check_tensor("logits", logits, ndim=2, dtype_kind="float")
    filtered = process_logits(logits, temperature=temperature, top_k=top_k,
                              top_p=top_p) if do_sample else logits
    # one reduction (one device sync) per step: a row with a NaN or with every token at -inf
    # has no next token; argmax would silently answer 0 and multinomial fails deep in torch
    bad = torch.isnan(logits).any(dim=-1) | ~(filtered > float("-inf")).any(dim=-1)  # (B,)
    if bool(bad.any()):
        raise ValueError(f"logits rows {bad.nonzero().flatten().tolist()[:5]} hold NaN or are -inf "
                         "for every token: there is no next token to pick")
    if not do_sample:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(filtered.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]


@torch.no_grad()
def generate_tokens(step: StepFn, idx: torch.Tensor, max_new_tokens: int, *, vocab_size: int,
                    do_sample: bool = True, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None, generator: torch.Generator | None = None,
                    model: torch.nn.Module | None = None) -> torch.Tensor:
    """The one sampling loop of the course's small LMs (bigram, MLP, RNN): continue ``idx`` (B, T).

    ``step(new_ids (B, t), state) -> (next-token logits (B, V), state)`` is called first with the
    whole prompt and ``state=None``, then with each chosen token (B, 1) and the state it returned;
    a model keeps whatever it needs there (an RNN's hidden state, an MLP's last window). ``model``,
    if given, runs in eval mode (no dropout) and gets its previous mode back. Returns
    (B, T + max_new_tokens). Arguments are checked like :meth:`minillm.models.gpt.GPT.generate`.
    """
    check_token_ids(IDS, idx, vocab_size, ndim=2)
    check_generate_args(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p)
    if max_new_tokens == 0:
        return idx
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    out = [idx]
    try:
        logits, state = step(idx, None)
        for i in range(max_new_tokens):
            nxt = sample_next(logits, do_sample=do_sample, temperature=temperature, top_k=top_k,
                              top_p=top_p, generator=generator)  # (B, 1)
            out.append(nxt.to(idx.dtype))
            if i + 1 < max_new_tokens:
                logits, state = step(nxt, state)
    finally:
        if model is not None:
            model.train(was_training)
    return torch.cat(out, dim=1)
