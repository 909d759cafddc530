"""Decoding strategies for language models: temperature, top-k, top-p (nucleus), greedy, sampling.

Each filter takes next-token logits (..., V) and returns logits of the same shape in which the
tokens it rules out are set to ``-inf``, so filters compose (temperature → top-k → top-p → softmax)
exactly like the logits processors of Hugging Face ``generate``:

* temperature τ: ``logits / τ`` — τ < 1 sharpens the distribution, τ > 1 flattens it;
* top-k: keep the k highest logits (Fan et al., 2018);
* top-p (nucleus): keep the smallest set of most likely tokens whose probability adds up to at least
  p (Holtzman et al., 2020, "The Curious Case of Neural Text Degeneration").

Beam search for a decoder-only model lives in :meth:`minillm.models.gpt.GPT.generate`, which reorders
its key/value cache between steps. Shape letters: B batch, V vocabulary.
"""

from __future__ import annotations

import math

import torch


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` if it is a finite number > 0, else raise ValueError."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature} "
                         "(use do_sample=False for greedy decoding)")
    return float(temperature)


def check_top_k(top_k: int | None) -> int | None:
    """Return ``top_k`` if it is None or an int >= 1, else raise."""
    if top_k is None:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise TypeError(f"top_k must be an int or None, got {type(top_k).__name__}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1 (or None to disable), got {top_k}")
    return top_k


def check_top_p(top_p: float | None) -> float | None:
    """Return ``top_p`` if it is None or a number in (0, 1], else raise."""
    if top_p is None:
        return None
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)):
        raise TypeError(f"top_p must be a number or None, got {type(top_p).__name__}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    return float(top_p)


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
    if not do_sample:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(process_logits(logits, temperature=temperature, top_k=top_k,
                                         top_p=top_p).float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)
