"""Knowledge distillation: a small student learns from a big teacher's whole next-token distribution.

Training on text alone tells the student one thing per position: which token came next. The teacher
knows more — how likely *every* token was ("dark knowledge", Hinton, Vinyals & Dean 2015). The student
is trained on a mix of the two:

    loss = alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T))  +  (1 − alpha) · CE(student, next token)

A temperature T > 1 flattens both distributions so the small probabilities (which wrong tokens are
*nearly* right) carry weight; the T² keeps the soft term's gradients the same size as the hard term's
when T changes. ``alpha = 0`` is plain training on the text.

A 49,152-way distribution for every training position is too big to keep (a few hundred thousand
positions would take tens of GB), so :func:`teacher_topk` keeps the teacher's top k log-probabilities
and :func:`sparse_kd_loss` renormalises them over those k tokens ("top-k" or sparse distillation). With
k = V it equals :func:`kd_loss` exactly (tested).

:func:`student_from_teacher` builds a narrow Llama with the teacher's tokenizer and starts its embedding
from the teacher's own, projected onto its top principal directions: the few hundred thousand training
tokens could never teach 49,152 embeddings from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .models.llama import LlamaConfig, LlamaForCausalLM
from .validation import check_float, check_int, check_shape, check_tensor


def _check_temperature(temperature: float) -> float:
    temperature = check_float("temperature", temperature)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return temperature


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0, *,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over positions.

    student_logits, teacher_logits: (..., V) with the same shape. mask: (...) bool, the positions
    that count (default: all). Equals ``F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True,
    reduction="batchmean") · T²`` on 2-D inputs.
    """
    T = _check_temperature(temperature)
    check_tensor("student_logits", student_logits, ndim=(2, 3))
    check_shape("teacher_logits", teacher_logits, tuple(student_logits.shape),
                expected="the shape of student_logits")
    log_q = F.log_softmax(student_logits.float() / T, dim=-1)  # (..., V)
    log_p = F.log_softmax(teacher_logits.float() / T, dim=-1)  # (..., V)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (...)
    return _masked_mean(kl, mask) * T * T


def sparse_kd_loss(student_logits: torch.Tensor, teacher_values: torch.Tensor,
                   teacher_indices: torch.Tensor, temperature: float = 2.0, *,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`kd_loss` with the teacher known only on its top k tokens.

    teacher_values (..., k): the teacher's logits (or log-probabilities: a constant shift changes
    nothing) at teacher_indices (..., k). The teacher's distribution at temperature T is renormalised
    over those k tokens; the student's log-probabilities are its full softmax read at the same tokens,
    so the mass it puts elsewhere is still penalised (it lowers every log q it is read at).
    """
    T = _check_temperature(temperature)
    check_tensor("student_logits", student_logits, ndim=(2, 3))
    lead = tuple(student_logits.shape[:-1])
    check_tensor("teacher_values", teacher_values, ndim=len(lead) + 1)
    check_shape("teacher_indices", teacher_indices, tuple(teacher_values.shape),
                expected="the shape of teacher_values")
    if tuple(teacher_values.shape[:-1]) != lead:
        raise ValueError(f"teacher_values has shape {tuple(teacher_values.shape)} but student_logits "
                         f"has {tuple(student_logits.shape)}: their leading dimensions must agree")
    log_q = F.log_softmax(student_logits.float() / T, dim=-1)  # (..., V)
    log_q = log_q.gather(-1, teacher_indices.long())  # (..., k)
    log_p = F.log_softmax(teacher_values.float() / T, dim=-1)  # (..., k), renormalised over the k
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (...)
    return _masked_mean(kl, mask) * T * T


def _masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.mean()
    check_shape("mask", mask, tuple(x.shape), expected="the logits' shape without the vocabulary")
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class DistillLoss:
    """The parts of :func:`distillation_loss`, kept apart for logging."""
    total: torch.Tensor  # what is back-propagated
    soft: torch.Tensor  # T²·KL to the teacher (0 when alpha = 0 and no teacher was given)
    hard: torch.Tensor  # cross-entropy on the next token


def distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor, *,
                      teacher_logits: torch.Tensor | None = None,
                      teacher_topk: tuple[torch.Tensor, torch.Tensor] | None = None,
                      temperature: float = 2.0, alpha: float = 0.5,
                      ignore_index: int = -100) -> DistillLoss:
    """alpha · (soft loss against the teacher) + (1 − alpha) · cross-entropy on ``labels``.

    student_logits (B, T, V); labels (B, T) next-token ids, ``ignore_index`` where nothing counts.
    Give the teacher as full ``teacher_logits`` (B, T, V) or as ``teacher_topk`` = (values, indices),
    each (B, T, k), from :func:`teacher_topk`. ``alpha = 0`` needs no teacher: plain LM training.
    """
    alpha = check_float("alpha", alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (the weight of the teacher's soft targets), got {alpha}")
    check_tensor("student_logits", student_logits, ndim=3)
    check_shape("labels", labels, tuple(student_logits.shape[:2]), expected="(B, T) like the logits")
    if teacher_logits is not None and teacher_topk is not None:
        raise ValueError("give the teacher as teacher_logits or as teacher_topk, not both")
    mask = labels != ignore_index  # (B, T)
    hard = F.cross_entropy(student_logits.flatten(0, 1).float(), labels.flatten(),
                           ignore_index=ignore_index)
    if teacher_logits is not None:
        soft = kd_loss(student_logits, teacher_logits, temperature, mask=mask)
    elif teacher_topk is not None:
        soft = sparse_kd_loss(student_logits, *teacher_topk, temperature, mask=mask)
    elif alpha > 0:
        raise ValueError(f"alpha={alpha} weighs a teacher's soft targets, but no teacher_logits or "
                         f"teacher_topk was given (alpha=0 trains on the text alone)")
    else:
        soft = hard.new_zeros(())
    return DistillLoss(alpha * soft + (1 - alpha) * hard, soft.detach(), hard.detach())


@torch.inference_mode()
def teacher_topk(teacher: nn.Module, ids: torch.Tensor, k: int = 32, *, batch_size: int = 8,
                 progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's top ``k`` next-token log-probabilities at every position of ``ids`` (N, T).

    Returns (values float32, indices int32), each (N, T, k), sorted from the most likely token.
    Rows are run ``batch_size`` at a time in the teacher's own dtype (bf16 halves the time on CPUs
    with bf16 units); log-probabilities are computed in float32.
    """
    check_tensor("ids", ids, ndim=2)
    k = check_int("k", k, low=1, high=teacher.config.vocab_size)
    batch_size = check_int("batch_size", batch_size, low=1)
    N, T = ids.shape
    values = torch.empty(N, T, k, dtype=torch.float32)
    indices = torch.empty(N, T, k, dtype=torch.int32)
    starts = range(0, N, batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="teacher top-k", unit="batch")
    for start in starts:
        rows = ids[start:start + batch_size]
        logp = F.log_softmax(teacher(rows).float(), dim=-1)  # (b, T, V)
        top = logp.topk(k, dim=-1)
        values[start:start + len(rows)] = top.values
        indices[start:start + len(rows)] = top.indices.int()
    return values, indices


def pca_embedding(embedding: torch.Tensor, width: int, std: float = 0.02) -> torch.Tensor:
    """``embedding`` (V, C) projected on its top ``width`` principal directions: (V, width).

    The projection keeps as much of the rows' variance as ``width`` dimensions can; it is rescaled to
    entries of standard deviation ``std`` (the usual initial scale: with a tied output layer, the
    teacher's own scale would start the student with huge logits).
    """
    check_tensor("embedding", embedding, ndim=2)
    width = check_int("width", width, low=1, high=embedding.size(1))
    E = embedding.double()
    centred = E - E.mean(0, keepdim=True)
    # the principal directions are the eigenvectors of the (C, C) covariance, largest first; eigh is
    # exact and deterministic (no random sketch), and its signs are fixed here by the largest entry
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    top = vectors[:, -width:].flip(1)  # (C, width)
    top = top * top.gather(0, top.abs().argmax(0, keepdim=True)).sign()
    projected = (E @ top).float()  # (V, width)
    return projected * (std / projected.std().clamp(min=1e-12))


def student_from_teacher(teacher: LlamaForCausalLM, *, hidden_size: int = 192, num_layers: int = 6,
                         num_heads: int = 4, intermediate_size: int = 512,
                         max_position_embeddings: int = 256, seed: int = 0) -> LlamaForCausalLM:
    """A narrow Llama with the teacher's vocabulary, its tied embedding started from the teacher's
    (:func:`pca_embedding`); every other weight is freshly initialised with ``seed``."""
    if not isinstance(teacher, LlamaForCausalLM):
        raise TypeError(f"teacher must be a minillm LlamaForCausalLM, got {type(teacher).__name__}")
    tc = teacher.config
    config = LlamaConfig(vocab_size=tc.vocab_size, hidden_size=hidden_size,
                         intermediate_size=intermediate_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_heads, num_key_value_heads=num_heads,
                         max_position_embeddings=max_position_embeddings, rms_norm_eps=tc.rms_norm_eps,
                         rope_theta=tc.rope_theta, tie_word_embeddings=True,
                         bos_token_id=tc.bos_token_id, eos_token_id=tc.eos_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        student = LlamaForCausalLM(config)
    with torch.no_grad():
        student.model.embed_tokens.weight.copy_(
            pca_embedding(teacher.model.embed_tokens.weight.detach(), hidden_size))
    return student


__all__ = ["kd_loss", "sparse_kd_loss", "distillation_loss", "DistillLoss", "teacher_topk",
           "pca_embedding", "student_from_teacher"]
