"""Classifying with a language model's own head: verbalizers, calibration and PET (chapter 14).

A *pattern* turns an input into a cloze question ("<review> It was [MASK]." for a masked LM, or
"Review: <review>\\nSentiment:" for a causal LM); a *verbalizer* maps each class to label words
("great" / "terrible"). The model's scores of the label words at the answer position are the class
scores — no new head, no new weights:

* :func:`verbalizer_log_probs` — log p(class) = log Σ_{w ∈ words(class)} p(w), p the softmax over the
  whole vocabulary (in-context learning scores classes this way);
* :func:`calibrate` — "Calibrate Before Use" (Zhao et al., 2021): divide each class probability by the
  probability the same prompt gives it for a content-free input ("N/A"), removing the prompt's lean
  towards one label;
* PET (Schick & Schütze, 2021, "Exploiting Cloze Questions for Few Shot Text Classification and Natural
  Language Inference"): :func:`cloze_logits` reads the label words' logits at the mask (or answer)
  position, :func:`pet_loss` is cross-entropy over them (the softmax runs over the label words only),
  :func:`ensemble_targets` averages several patterns' logits into soft labels, and
  :func:`distillation_loss` trains a plain classifier on those soft labels.

Shape letters: B batch, T tokens, V vocabulary, C classes, K patterns.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .validation import check_float, check_shape, check_tensor, describe

__all__ = ["verbalizer_log_probs", "calibrate", "cloze_logits", "pet_loss", "ensemble_targets",
           "distillation_loss"]


def _check_verbalizer(verbalizer: Sequence[Sequence[int]], vocab_size: int) -> list[list[int]]:
    if isinstance(verbalizer, (str, bytes)) or not isinstance(verbalizer, Sequence) or len(verbalizer) < 2:
        raise ValueError(f"verbalizer must be a list of at least 2 classes, each a list of label-word "
                         f"token ids, got {describe(verbalizer)}")
    words = []
    for c, ids in enumerate(verbalizer):
        if isinstance(ids, int):
            ids = [ids]
        ids = list(ids)
        if not ids or not all(isinstance(i, int) and 0 <= i < vocab_size for i in ids):
            raise ValueError(f"verbalizer[{c}] must be a non-empty list of token ids in [0, {vocab_size}), "
                             f"got {ids!r}")
        words.append(ids)
    return words


def _class_scores(scores: torch.Tensor, verbalizer: list[list[int]]) -> torch.Tensor:
    """(B, V) per-token scores → (B, C): logsumexp over each class's words (a single word: its score)."""
    return torch.stack([scores[:, ids].logsumexp(dim=-1) for ids in verbalizer], dim=-1)


def verbalizer_log_probs(logits: torch.Tensor, verbalizer: Sequence[Sequence[int]]) -> torch.Tensor:
    """Next-token logits (B, V) → log p(class) (B, C): the log of the summed probabilities of the
    class's label words, the softmax taken over the whole vocabulary (so the C numbers need not sum
    to one: the rest of the mass is on other words)."""
    check_tensor("logits", logits, ndim=2, dtype_kind="float")
    words = _check_verbalizer(verbalizer, logits.size(-1))
    return _class_scores(logits.float().log_softmax(dim=-1), words)


def calibrate(log_probs: torch.Tensor, content_free: torch.Tensor) -> torch.Tensor:
    """Contextual calibration: class log-probabilities (B, C) and those of a content-free input (C,)
    or (M, C) (averaged over M such inputs, as Zhao et al. do) → calibrated log-probabilities (B, C),
    renormalised over the classes: q ∝ p / p_cf."""
    check_tensor("log_probs", log_probs, ndim=2, dtype_kind="float")
    check_tensor("content_free", content_free, ndim=(1, 2), dtype_kind="float")
    C = log_probs.size(-1)
    check_shape("content_free", content_free, (C,) if content_free.dim() == 1 else (None, C),
                expected="(C,) or (M, C) class log-probabilities like log_probs")
    cf = content_free.reshape(-1, C).log_softmax(dim=-1).exp().mean(dim=0)  # (C,) p_cf over the classes
    return (log_probs.log_softmax(dim=-1) - cf.log()).log_softmax(dim=-1)  # (B, C)


def cloze_logits(logits: torch.Tensor, positions: torch.Tensor, verbalizer: Sequence[Sequence[int]]
                 ) -> torch.Tensor:
    """PET's class scores: the LM's logits (B, T, V), the answer position of each row (B,) (the
    [MASK] of a masked LM, the last prompt token of a causal LM) → the label words' logits (B, C)
    (logsumexp over a class's words when it has several)."""
    check_tensor("logits", logits, ndim=3, dtype_kind="float")
    B, T, V = logits.shape
    check_tensor("positions", positions, ndim=1, dtype_kind="int")
    check_shape("positions", positions, (B,), expected="(B,): one answer position per row")
    if ((positions < 0) | (positions >= T)).any():
        raise ValueError(f"positions must lie in [0, {T}) (the sequence length), got {positions.tolist()}")
    words = _check_verbalizer(verbalizer, V)
    at = logits[torch.arange(B, device=logits.device), positions]  # (B, V)
    return _class_scores(at.float(), words)


def pet_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the labels (B,) under a softmax over the label words' logits (B, C)."""
    check_tensor("class_logits", class_logits, ndim=2, dtype_kind="float")
    check_tensor("labels", labels, ndim=1, dtype_kind="int")
    check_shape("labels", labels, (class_logits.size(0),), expected="(B,) like class_logits")
    return F.cross_entropy(class_logits, labels)


def ensemble_targets(class_logits: Sequence[torch.Tensor], weights: Sequence[float] | None = None,
                     temperature: float = 2.0) -> torch.Tensor:
    """PET's soft labels: K patterns' class logits, each (B, C) → softmax(Σ_k w_k s_k / Σ w / T) (B, C).

    Schick & Schütze weight each pattern by its training-set accuracy before training (uniform
    weights when ``weights`` is None) and soften with T = 2."""
    if isinstance(class_logits, torch.Tensor) or len(class_logits) == 0:
        raise ValueError(f"class_logits must be a non-empty list of (B, C) tensors, one per pattern, "
                         f"got {describe(class_logits)}")
    shape = tuple(class_logits[0].shape)
    for k, s in enumerate(class_logits):
        check_tensor(f"class_logits[{k}]", s, ndim=2, dtype_kind="float")
        check_shape(f"class_logits[{k}]", s, shape, expected="the shape of class_logits[0]")
    check_float("temperature", temperature, low=0.0, low_inclusive=False)
    w = torch.ones(len(class_logits)) if weights is None else torch.tensor([float(x) for x in weights])
    if w.numel() != len(class_logits) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(class_logits)} non-negative numbers, not all zero, "
                         f"got {list(weights) if weights is not None else None}")
    stacked = torch.stack([s.float() for s in class_logits])  # (K, B, C)
    mixed = (w.to(stacked)[:, None, None] * stacked).sum(0) / w.sum()  # (B, C)
    return (mixed / temperature).softmax(dim=-1)


def distillation_loss(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a student's logits (B, C) against soft targets (B, C) (rows summing to one):
    − Σ_c q_c log softmax(s)_c, averaged over the batch. It equals KL(q ‖ p) plus the targets'
    entropy, so it has the same gradient as the KL divergence."""
    check_tensor("student_logits", student_logits, ndim=2, dtype_kind="float")
    check_tensor("targets", targets, ndim=2, dtype_kind="float")
    check_shape("targets", targets, tuple(student_logits.shape), expected="(B, C) like student_logits")
    if not torch.allclose(targets.sum(-1), torch.ones_like(targets[:, 0]), atol=1e-4) or (targets < 0).any():
        raise ValueError("targets must be probabilities: non-negative rows that sum to 1 "
                         "(ensemble_targets makes them)")
    return -(targets * student_logits.float().log_softmax(dim=-1)).sum(-1).mean()
