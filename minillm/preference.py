"""Learning from preferences: sequence log-probabilities, a reward model with the Bradley–Terry loss,
and DPO (chapter 15).

* Bradley–Terry (1952): P(chosen ≻ rejected) = σ(r(x, y_c) − r(x, y_r)); a reward model r is trained by
  minimising −log σ(r_c − r_r) over human (here: gold-labelled) preference pairs (InstructGPT, Ouyang
  et al., 2022; TRL's ``RewardTrainer``).
* :class:`RewardModel` — a causal LM's body with a scalar head read at the last real token of each
  sequence: Hugging Face's ``GPT2ForSequenceClassification`` with ``num_labels=1``.
* DPO (Rafailov et al., 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward
  Model"): the policy's implicit reward is β·log(π(y|x)/π_ref(y|x)), and the Bradley–Terry loss on it
  trains the policy directly — no reward model, no sampling. :func:`dpo_loss` takes TRL's arguments in
  TRL's order and returns what TRL's ``dpo_loss`` returns.

Shape letters: B batch, T tokens, V vocabulary, C hidden size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .sft import IGNORE_INDEX
from .validation import check_float, check_int, check_same_length, check_tensor, describe

__all__ = ["token_log_probs", "sequence_log_probs", "bradley_terry_loss", "pairwise_accuracy",
           "scalar_head", "RewardModel", "dpo_loss", "check_same_vocabulary", "check_pairs"]


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) of each given token under logits of the same positions: (B, T, V), (B, T) →
    (B, T). A log-softmax and a gather, in float32."""
    check_tensor("logits", logits, ndim=3, dtype_kind="float")
    check_tensor("tokens", tokens, ndim=2, dtype_kind="int")
    if tokens.shape != logits.shape[:2]:
        raise ValueError(f"tokens must have shape (B, T) = {tuple(logits.shape[:2])} like the logits, "
                         f"got {tuple(tokens.shape)}")
    logp = logits.float().log_softmax(dim=-1)  # (B, T, V)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def sequence_log_probs(logits: torch.Tensor, labels: torch.Tensor, *, average: bool = False) -> torch.Tensor:
    """log π(y|x) of each row: the sum over the learned tokens (labels ≠ -100) of log p(label), with
    the logits at t predicting label t+1 (the SFT convention). logits (B, T, V), labels (B, T) → (B,).
    ``average`` divides by the number of learned tokens (a per-token mean). A row with no learned
    token is an error: a pair with an empty response has no log-probability to compare."""
    check_tensor("labels", labels, ndim=2, dtype_kind="int")
    target = labels[:, 1:]  # (B, T-1)
    keep = target != IGNORE_INDEX
    counts = keep.sum(dim=1)
    if bool((counts == 0).any()):
        rows = (counts == 0).nonzero().flatten().tolist()[:5]
        raise ValueError(f"rows {rows} have no response token (every label is -100): an empty "
                         "response has no log-probability")
    logp = token_log_probs(logits[:, :-1], target.clamp(min=0)) * keep  # (B, T-1)
    total = logp.sum(dim=1)
    return total / counts if average else total


def check_pairs(chosen: Sequence, rejected: Sequence) -> None:
    """Preference pairs must pair up: as many rejected answers as chosen ones (tensors: the same
    shape)."""
    if isinstance(chosen, torch.Tensor) and isinstance(rejected, torch.Tensor):
        if chosen.shape != rejected.shape:
            raise ValueError(f"chosen and rejected must pair up element by element: got shapes "
                             f"{tuple(chosen.shape)} and {tuple(rejected.shape)}")
    else:
        check_same_length(("chosen", "rejected"), chosen, rejected)


def bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, *,
                       margin: torch.Tensor | float | None = None) -> torch.Tensor:
    """The reward model's loss: mean of −log σ(r_c − r_r − margin) over the pairs (B,) — TRL's
    ``RewardTrainer`` loss (``margin`` as in LLaMA-2's reward model)."""
    check_tensor("chosen_rewards", chosen_rewards, ndim=1, dtype_kind="float")
    check_tensor("rejected_rewards", rejected_rewards, ndim=1, dtype_kind="float")
    check_pairs(chosen_rewards, rejected_rewards)
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def pairwise_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> float:
    """The fraction of pairs the reward model orders correctly (a tie counts half)."""
    check_pairs(chosen_rewards, rejected_rewards)
    diff = (chosen_rewards - rejected_rewards).float()
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


def scalar_head(body: nn.Module, hidden_size: int) -> nn.Linear:
    """A C → 1 head (no bias, normal(0, 0.02) as Hugging Face initialises a classification head) for a
    causal LM ``body`` whose ``hidden_states`` it will read; a body without them is a clear error."""
    if not hasattr(body, "hidden_states"):
        raise TypeError(f"body must be a minillm causal LM with a hidden_states method (GPT, Llama), got "
                        f"{type(body).__name__}")
    head = nn.Linear(check_int("hidden_size", hidden_size, low=1), 1, bias=False)
    nn.init.normal_(head.weight, std=0.02)
    return head


class RewardModel(nn.Module):
    """A scalar score for each sequence: a causal LM's final hidden states (``body.hidden_states``)
    → ``score`` (C → 1, no bias) at the last real token of each row. With right padding the last real
    token is the last 1 of ``attention_mask`` — what ``GPT2ForSequenceClassification`` reads (it finds
    it from ``pad_token_id``)."""

    def __init__(self, body: nn.Module, hidden_size: int):
        super().__init__()
        self.body = body
        self.score = scalar_head(body, hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) right-padded, attention_mask (B, T) → rewards (B,)."""
        h = self.body.hidden_states(input_ids, attention_mask=attention_mask)  # (B, T, C)
        if attention_mask is None:
            last = torch.full((h.size(0),), h.size(1) - 1, device=h.device)
        else:
            check_tensor("attention_mask", attention_mask, ndim=2)
            last = attention_mask.long().sum(dim=1) - 1  # (B,) right padding: the last real token
            if bool((last < 0).any()):
                raise ValueError("a row of attention_mask is all zeros: there is no token to score")
        h_last = h[torch.arange(h.size(0), device=h.device), last]  # (B, C)
        return self.score(h_last).squeeze(-1)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             reference_chosen_logps: torch.Tensor, reference_rejected_logps: torch.Tensor,
             beta: float = 0.1, *, label_smoothing: float = 0.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss of each pair, from the summed log-probabilities (B,) of the chosen and rejected
    responses under the policy and the frozen reference:

        h = (log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))
        loss = −(1 − ε)·log σ(β h) − ε·log σ(−β h)      (ε = ``label_smoothing``, cDPO)

    Returns ``(losses (B,), chosen_rewards (B,), rejected_rewards (B,))`` with the implicit rewards
    β·(log π − log π_ref) detached — TRL's ``DPOTrainer.dpo_loss`` (``loss_type="sigmoid"``)."""
    names = ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps",
             "reference_rejected_logps")
    args = (policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps)
    for name, a in zip(names, args):
        check_tensor(name, a, ndim=1, dtype_kind="float")
        if a.shape != policy_chosen_logps.shape:
            raise ValueError(f"{name} must have shape {tuple(policy_chosen_logps.shape)} like "
                             f"policy_chosen_logps (one summed log-probability per pair), got "
                             f"{tuple(a.shape)}")
    beta = check_float("beta", beta, low=0, low_inclusive=False)
    label_smoothing = check_float("label_smoothing", label_smoothing, low=0, high=0.5)
    chosen = policy_chosen_logps - reference_chosen_logps  # log-ratio of the chosen answer
    rejected = policy_rejected_logps - reference_rejected_logps
    h = chosen - rejected
    losses = (-F.logsigmoid(beta * h) * (1 - label_smoothing)
              - F.logsigmoid(-beta * h) * label_smoothing)
    return losses, beta * chosen.detach(), beta * rejected.detach()


def check_same_vocabulary(policy: nn.Module, reference: nn.Module) -> None:
    """A reference model must score the policy's tokens: the same vocabulary size (log-ratios of
    tokens from two different vocabularies mean nothing)."""
    def vocab(m: nn.Module) -> int | None:
        cfg = getattr(m, "config", None)
        return getattr(cfg, "vocab_size", None)

    vp, vr = vocab(policy), vocab(reference)
    if vp is None or vr is None:
        raise TypeError(f"policy and reference must be models with a config.vocab_size, got "
                        f"{describe(policy)} and {describe(reference)}")
    if vp != vr:
        raise ValueError(f"the reference model has vocab_size={vr} but the policy has {vp}: the "
                         f"reference must share the policy's tokenizer (use a frozen copy of the "
                         f"policy's starting point)")
