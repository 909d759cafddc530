"""Language-model metrics: cross-entropy, perplexity, bits per token and bits per character.

One number, four faces. If a model gives the tokens of a held-out text probabilities p₁ … p_T,

    cross-entropy H = −(1/T) Σ ln pₜ              nats per token
    bits per token  = H / ln 2
    perplexity      = e^H = 2^(bits per token)   "as unsure as a fair die with this many sides"
    bits per char   = (Σ −ln pₜ) / (n_chars · ln 2)

Per-token numbers depend on what a token is: a word-level model has a far larger perplexity than a
character model of the same text, yet may compress it better. Bits per *character* divides the
same total by a count every tokenizer shares, so it compares any two models of the same text;
the course leaderboard uses it (see ``minillm.leaderboard``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..validation import check_float, check_int

LN2 = math.log(2)


def _as_probabilities(target_probs) -> np.ndarray:
    if isinstance(target_probs, (str, bytes)) or target_probs is None:
        raise TypeError(f"target_probs must be a sequence of probabilities, got "
                        f"{type(target_probs).__name__}")
    try:
        p = np.asarray(target_probs)
    except ValueError as err:  # ragged nested lists
        raise TypeError(f"target_probs must be a flat sequence of numbers in [0, 1] ({err})") from None
    if p.size and p.dtype.kind not in "biuf":  # None, strings, objects
        raise TypeError(f"target_probs must be a flat sequence of numbers in [0, 1], got dtype "
                        f"{p.dtype} ({str(target_probs)[:60]})")
    return p.astype(np.float64).reshape(-1)


def _check_nats(name: str, value, *, low: float | None = 0) -> float:
    """An amount of surprise in nats: a number >= ``low``; +inf is allowed (a probability-0
    event), NaN is not."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 and not isinstance(value, bool):
        value = value.item()
    if isinstance(value, float) and value == math.inf:
        return math.inf
    return check_float(name, value, low=low)


def cross_entropy(target_probs: Sequence[float] | np.ndarray) -> float:
    """Mean −ln p over the probabilities a model gave to what actually came next (nats/token).

    A probability of 0 gives ``inf``: one impossible event makes the whole text impossible,
    which is why count models need smoothing.
    """
    p = _as_probabilities(target_probs)
    if p.size == 0:
        raise ValueError("target_probs is empty: cross-entropy needs at least one prediction")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        bad = p[np.isnan(p) | (p < 0) | (p > 1)][0]
        raise ValueError(f"target_probs must be probabilities in [0, 1], got {bad}")
    with np.errstate(divide="ignore"):
        return float(-np.log(p).mean())


def cross_entropy_from_logits(logits, targets) -> float:
    """Mean cross-entropy (nats) of integer ``targets`` (N,) under ``logits`` (N, V), via a stable
    log-softmax: logits − logsumexp(logits). Equals ``torch.nn.functional.cross_entropy``.
    """
    import torch

    def tensor(name, value):
        if isinstance(value, (str, bytes)) or value is None:
            raise TypeError(f"{name} must be a tensor, array or nested list of numbers, got "
                            f"{type(value).__name__}")
        try:
            return torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a tensor, array or nested list of numbers ({err})") from None

    logits, targets = tensor("logits", logits), tensor("targets", targets)
    if logits.ndim != 2 or targets.ndim != 1 or logits.shape[0] != targets.shape[0]:
        raise ValueError(f"expected logits (N, V) and targets (N,), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("logits and targets hold zero tokens: cross-entropy over no predictions is "
                         "undefined")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class ids, got dtype {targets.dtype}")
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= logits.shape[1]:
        raise ValueError(f"targets must be ids in [0, {logits.shape[1]}) (the logits' width), got "
                         f"{lo if lo < 0 else hi}")
    if torch.isnan(logits).any():
        raise ValueError(f"logits contain NaN at {int(torch.isnan(logits).sum())} positions")
    logits = logits.double()
    log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)  # (N, V)
    return float(-log_probs.gather(1, targets.long()[:, None]).mean())


def perplexity(nats_per_token: float) -> float:
    """e^H: the size of a uniform choice that would be exactly as surprising."""
    nats = _check_nats("nats_per_token", nats_per_token)
    return math.exp(nats) if nats < 709 else math.inf  # exp overflows a float beyond ~709.78


def nats_to_bits(nats: float) -> float:
    """Convert nats (natural log) to bits (log base 2)."""
    return _check_nats("nats", nats, low=None) / LN2


def bits_per_char(total_nats: float, n_chars: int) -> float:
    """Total negative log-likelihood in nats of a text, as bits per character of that text."""
    check_int("n_chars", n_chars, low=1)
    return _check_nats("total_nats", total_nats) / (n_chars * LN2)


@dataclass(frozen=True)
class LMScore:
    """A language model's total surprise on a text, and every way of quoting it."""

    total_nats: float  # Σ −ln p over all predicted tokens
    n_tokens: int  # predictions made
    n_chars: int  # characters of text those tokens cover

    def __post_init__(self):
        _check_nats("total_nats", self.total_nats)
        check_int("n_tokens", self.n_tokens, low=1)
        check_int("n_chars", self.n_chars, low=1)

    @property
    def nats_per_token(self) -> float:
        return self.total_nats / self.n_tokens

    @property
    def bits_per_token(self) -> float:
        return nats_to_bits(self.nats_per_token)

    @property
    def perplexity(self) -> float:
        return perplexity(self.nats_per_token)

    @property
    def bits_per_char(self) -> float:
        return bits_per_char(self.total_nats, self.n_chars)

    @property
    def char_perplexity(self) -> float:
        """2^(bits per char): perplexity per character, comparable across tokenizers."""
        return 2 ** self.bits_per_char

    @classmethod
    def from_probs(cls, target_probs: Sequence[float] | np.ndarray, n_chars: int) -> "LMScore":
        p = _as_probabilities(target_probs)
        return cls(cross_entropy(p) * p.size, int(p.size), int(n_chars))
