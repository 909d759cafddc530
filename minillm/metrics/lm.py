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

LN2 = math.log(2)


def cross_entropy(target_probs: Sequence[float] | np.ndarray) -> float:
    """Mean −ln p over the probabilities a model gave to what actually came next (nats/token).

    A probability of 0 gives ``inf``: one impossible event makes the whole text impossible,
    which is why count models need smoothing.
    """
    p = np.asarray(target_probs, dtype=np.float64).reshape(-1)
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

    logits, targets = torch.as_tensor(logits), torch.as_tensor(targets)
    if logits.ndim != 2 or targets.ndim != 1 or logits.shape[0] != targets.shape[0]:
        raise ValueError(f"expected logits (N, V) and targets (N,), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    logits = logits.double()
    log_probs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)  # (N, V)
    return float(-log_probs.gather(1, targets.long()[:, None]).mean())


def perplexity(nats_per_token: float) -> float:
    """e^H: the size of a uniform choice that would be exactly as surprising."""
    return math.exp(nats_per_token)


def nats_to_bits(nats: float) -> float:
    """Convert nats (natural log) to bits (log base 2)."""
    return nats / LN2


def bits_per_char(total_nats: float, n_chars: int) -> float:
    """Total negative log-likelihood in nats of a text, as bits per character of that text."""
    if n_chars <= 0:
        raise ValueError(f"n_chars must be positive, got {n_chars}")
    return total_nats / (n_chars * LN2)


@dataclass(frozen=True)
class LMScore:
    """A language model's total surprise on a text, and every way of quoting it."""

    total_nats: float  # Σ −ln p over all predicted tokens
    n_tokens: int  # predictions made
    n_chars: int  # characters of text those tokens cover

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
        p = np.asarray(target_probs, dtype=np.float64).reshape(-1)
        return cls(cross_entropy(p) * p.size, int(p.size), int(n_chars))
