"""Mixture of experts (混合专家): a feed-forward layer with many experts, of which each token uses a few.

DeepSeek-V2/V3, Qwen-MoE, Mixtral and Switch Transformer replace the dense feed-forward of some
blocks with this layer:

1. a **router** (``gate``, one linear map) scores every expert for every token; softmax turns the
   scores into probabilities and each token keeps its ``top_k`` experts (optionally renormalised
   so their weights sum to 1);
2. each **routed expert** is an ordinary SwiGLU feed-forward, run only on the tokens routed to it,
   and its output is scaled by the token's routing weight;
3. a **shared expert** (DeepSeekMoE, Qwen-MoE) runs on every token, here behind a sigmoid gate as in
   Qwen2-MoE, and holds what all tokens need, so the routed experts can specialise.

Parameters grow with the number of experts, compute per token only with ``top_k``: that is the
point. The risk is collapse — the router sends everything to a few experts, which then get all the
gradient. :func:`load_balancing_loss` (Switch Transformer, Fedus et al. 2022, eqs. 4–6) is
``E · Σ_e f_e · P_e`` with f_e the share of tokens that chose expert e among their k and P_e its mean
router probability: k when the load is uniform (Σ f_e = k), growing as the load concentrates.

Parameter names and layout are Hugging Face's ``Qwen2MoeSparseMoeBlock`` (``gate.weight``,
``experts.gate_up_proj`` (E, 2I, C), ``experts.down_proj`` (E, C, I), ``shared_expert.*``,
``shared_expert_gate.weight``), so its weights load with ``load_state_dict`` and the parity tests
compare outputs directly.

Shape letters: N tokens (B·T flattened), C model width, E experts, k experts per token, I expert
inner width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .validation import check_int

__all__ = ["MoEConfig", "TopKRouter", "Experts", "SwiGLU", "MoEFeedForward", "load_balancing_loss",
           "expert_load"]


@dataclass
class MoEConfig:
    hidden_size: int = 64
    num_experts: int = 8
    num_experts_per_tok: int = 2  # top_k
    moe_intermediate_size: int = 32  # each routed expert's inner width
    shared_expert_intermediate_size: int = 64  # 0: no shared expert
    norm_topk_prob: bool = False  # renormalise the kept probabilities to sum to 1

    def __post_init__(self) -> None:
        check_int("hidden_size", self.hidden_size, low=1)
        check_int("num_experts", self.num_experts, low=1)
        check_int("num_experts_per_tok", self.num_experts_per_tok, low=1, high=self.num_experts)
        check_int("moe_intermediate_size", self.moe_intermediate_size, low=1)
        check_int("shared_expert_intermediate_size", self.shared_expert_intermediate_size, low=0)


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` — the Llama/Qwen/DeepSeek feed-forward (Shazeer 2020)."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TopKRouter(nn.Module):
    """Scores experts per token; returns (logits (N, E), weights (N, k), experts (N, k))."""

    def __init__(self, config: MoEConfig):
        super().__init__()
        self.top_k, self.norm_topk_prob = config.num_experts_per_tok, config.norm_topk_prob
        self.weight = nn.Parameter(torch.zeros(config.num_experts, config.hidden_size))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = F.linear(x, self.weight)  # (N, E)
        probs = logits.softmax(dim=-1, dtype=torch.float32)  # routing in fp32 whatever the model's dtype
        weights, experts = probs.topk(self.top_k, dim=-1)  # (N, k), (N, k)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, weights.to(x.dtype), experts


class Experts(nn.Module):
    """E SwiGLU experts stored as two 3-D tensors (one batched weight per projection)."""

    def __init__(self, config: MoEConfig):
        super().__init__()
        E, C, I = config.num_experts, config.hidden_size, config.moe_intermediate_size
        self.num_experts = E
        self.gate_up_proj = nn.Parameter(torch.randn(E, 2 * I, C) * 0.02)  # [gate; up] per expert
        self.down_proj = nn.Parameter(torch.randn(E, C, I) * 0.02)

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert ``e`` applied to x (n, C) → (n, C)."""
        gate, up = F.linear(x, self.gate_up_proj[e]).chunk(2, dim=-1)  # (n, I) each
        return F.linear(F.silu(gate) * up, self.down_proj[e])

    def forward(self, x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x (N, C); experts, weights (N, k) → Σ over each token's k experts of weight · expert(x)."""
        out = torch.zeros_like(x)
        for e in experts.unique().tolist():  # only the experts some token chose
            token, slot = (experts == e).nonzero(as_tuple=True)  # which tokens, in which of their k slots
            y = self.expert(e, x[token]) * weights[token, slot, None]  # (n_e, C)
            out.index_add_(0, token, y.to(out.dtype))
        return out

    def forward_dense(self, x: torch.Tensor, experts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The slow twin of :meth:`forward`: every expert on every token, weighted by a (N, E) matrix
        that is zero outside each token's top k (tests check the two agree)."""
        dense = torch.zeros(x.size(0), self.num_experts, dtype=x.dtype, device=x.device)
        dense.scatter_(1, experts, weights.to(x.dtype))  # (N, E)
        all_out = torch.stack([self.expert(e, x) for e in range(self.num_experts)], dim=1)  # (N, E, C)
        return (dense[..., None] * all_out).sum(dim=1)


class MoEFeedForward(nn.Module):
    """The mixture-of-experts feed-forward block: routed experts + an optional gated shared expert.

    ``forward(x)`` takes (B, T, C) and returns (output (B, T, C), router logits (B·T, E)); keep the
    logits of every layer for :func:`load_balancing_loss` and :func:`expert_load`.
    """

    def __init__(self, config: MoEConfig):
        super().__init__()
        self.config = config
        self.gate = TopKRouter(config)
        self.experts = Experts(config)
        if config.shared_expert_intermediate_size:
            self.shared_expert = SwiGLU(config.hidden_size, config.shared_expert_intermediate_size)
            self.shared_expert_gate = nn.Linear(config.hidden_size, 1, bias=False)
        else:
            self.shared_expert = self.shared_expert_gate = None

    def forward(self, x: torch.Tensor, *, dense: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.size(-1) != self.config.hidden_size:
            raise ValueError(f"x must have shape (B, T, {self.config.hidden_size}), got {tuple(x.shape)}")
        B, T, C = x.shape
        flat = x.reshape(-1, C)  # (N, C)
        logits, weights, experts = self.gate(flat)
        routed = (self.experts.forward_dense if dense else self.experts)(flat, experts, weights)
        if self.shared_expert is not None:
            routed = routed + torch.sigmoid(self.shared_expert_gate(flat)) * self.shared_expert(flat)
        return routed.reshape(B, T, C), logits


def _flat_mask(attention_mask: torch.Tensor | None, N: int) -> torch.Tensor | None:
    if attention_mask is None:
        return None
    mask = attention_mask.reshape(-1).float()
    if mask.numel() != N:
        raise ValueError(f"attention_mask has {mask.numel()} positions but the router saw {N} tokens")
    return mask


def expert_load(router_logits: torch.Tensor, top_k: int, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Share of the routing slots each expert received, shape (E,), summing to 1 (padding excluded)."""
    N, E = router_logits.shape
    chosen = router_logits.float().softmax(-1).topk(top_k, dim=-1).indices  # (N, k)
    counts = F.one_hot(chosen, E).float().sum(1)  # (N, E): 1 where the token chose the expert
    mask = _flat_mask(attention_mask, N)
    if mask is not None:
        counts = counts * mask[:, None]
    return counts.sum(0) / counts.sum()


def load_balancing_loss(router_logits: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...],
                        top_k: int, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Switch Transformer's auxiliary loss ``E · Σ_e f_e · P_e`` over all layers' router logits.

    f_e: fraction of tokens that have expert e among their top k (Σ f_e = k; Switch's k = 1);
    P_e: mean router probability of expert e. Tokens of every layer are pooled, as Hugging Face's
    ``load_balancing_loss_func`` does (equal to it, tested). Perfectly uniform routing gives k; the
    gradient flows through P_e (f_e is a count). Multiply by a small coefficient (0.01) in the loss.
    """
    layers = [router_logits] if isinstance(router_logits, torch.Tensor) else list(router_logits)
    if not layers:
        raise ValueError("router_logits is empty: pass each MoE layer's (N, E) router logits")
    E = layers[0].size(-1)
    check_int("top_k", top_k, low=1, high=E)
    chosen_sum = torch.zeros(E, device=layers[0].device)
    prob_sum = torch.zeros(E, device=layers[0].device)
    rows = 0.0
    for logits in layers:
        probs = logits.float().softmax(-1)  # (N, E)
        chosen = F.one_hot(probs.topk(top_k, dim=-1).indices, E).float().sum(1)  # (N, E)
        mask = _flat_mask(attention_mask, logits.size(0))
        if mask is not None:
            chosen, probs = chosen * mask[:, None], probs * mask[:, None]
        chosen_sum, prob_sum = chosen_sum + chosen.sum(0), prob_sum + probs.sum(0)
        rows = rows + (logits.size(0) if mask is None else mask.sum())
    f = chosen_sum / rows  # (E,), sums to k
    P = prob_sum / rows  # (E,), sums to 1
    return E * (f * P).sum()
