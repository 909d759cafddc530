"""Reinforcement learning for language models: rollouts, KL to a reference, GAE, PPO and GRPO
(chapter 15).

The policy is the LM; an episode is one response; an action is one token. A reward arrives once, when
the response ends (a reward model's or a verifier's score); RLHF (InstructGPT, Ouyang et al., 2022)
adds at every token a penalty −β·KL(π‖π_ref) that keeps the policy near its starting point:

* :func:`sample_responses` — batched, KV-cached sampling that also returns each token's
  log-probability (:func:`sample_responses_naive` is its slow twin: one prompt at a time, the whole
  sequence recomputed every step);
* :func:`kl_penalty` — the per-token estimators k1 = log π − log π_ref and k3 = r − 1 − log r with
  r = π_ref/π (Schulman, "Approximating KL Divergence", 2020; GRPO uses k3);
* :func:`token_rewards` — −β·k1 at every token plus the sequence's score at its last token;
* :func:`gae` — generalised advantage estimation (Schulman et al., 2016): A_t = Σ_l (γλ)^l δ_{t+l},
  δ_t = r_t + γ V_{t+1} − V_t;
* :class:`ValueModel` — the critic: a value V_t for every position (a body and a scalar head; it
  can start as a copy of the reward model, as in InstructGPT);
* :func:`ppo_losses` — PPO's clipped surrogate and clipped value loss (Schulman et al., 2017);
* :func:`grpo_advantages`, :func:`grpo_loss` — GRPO (Shao et al., 2024, DeepSeekMath): no value model;
  each prompt gets G responses and a response's advantage is its reward standardised within its
  group.

Shape letters: B batch (responses), T response tokens, G group size, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .models.gpt import GPT, KVCache as GPTCache
from .models.llama import KVCache as LlamaCache, LlamaForCausalLM
from .preference import RewardModel, scalar_head, token_log_probs
from .sampling import check_generate_args, process_logits
from .validation import check_float, check_int, check_tensor

__all__ = ["Rollout", "sample_responses", "sample_responses_naive", "response_log_probs",
           "kl_penalty", "token_rewards", "masked_mean", "masked_whiten", "gae", "ValueModel", "ppo_losses",
           "grpo_advantages", "grpo_loss"]


# ---------------------------------------------------------------- rollouts

@dataclass
class Rollout:
    """Sampled responses: ``sequences`` (B, P+T) = prompts then responses; ``responses`` (B, T);
    ``log_probs`` (B, T) the sampling policy's log-probability of each response token (temperature
    applied); ``mask`` (B, T) 1 up to and including the end token, 0 after it."""
    sequences: torch.Tensor
    responses: torch.Tensor
    log_probs: torch.Tensor
    mask: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) the number of tokens of each response (its end token included)."""
        return self.mask.sum(dim=1).long()


def _new_cache(model: nn.Module, B: int, max_len: int, device, dtype):
    if isinstance(model, GPT):
        return GPTCache(model.config, B, max_len, device=device, dtype=dtype)
    if isinstance(model, LlamaForCausalLM):
        return LlamaCache(model.config, B, max_len, device=device, dtype=dtype)
    raise TypeError(f"model must be a minillm GPT or LlamaForCausalLM, got {type(model).__name__}")


def _check_prompts(model: nn.Module, prompts: torch.Tensor, max_new_tokens: int) -> None:
    if not isinstance(model, (GPT, LlamaForCausalLM)):
        raise TypeError(f"model must be a minillm GPT or LlamaForCausalLM, got {type(model).__name__}")
    check_tensor("prompts", prompts, ndim=2, dtype_kind="int")
    if prompts.size(1) == 0:
        raise ValueError(f"prompts must hold at least one token, got shape {tuple(prompts.shape)}")
    cfg = model.config
    limit = getattr(cfg, "block_size", None) or cfg.max_position_embeddings
    if prompts.size(1) + max_new_tokens > limit:
        raise ValueError(f"prompt ({prompts.size(1)} tokens) + max_new_tokens ({max_new_tokens}) is "
                         f"longer than the model's context window ({limit})")


def _check_sampling(model, prompts, max_new_tokens, temperature, top_k) -> None:
    check_generate_args(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k)
    check_int("max_new_tokens", max_new_tokens, low=1)
    _check_prompts(model, prompts, max_new_tokens)


def _pick(logits: torch.Tensor, temperature, top_k, do_sample, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token logits (B, V) → (tokens (B, 1), their log-probabilities (B, 1)) under the
    distribution they are drawn from (after temperature and top-k); argmax when not sampling."""
    logp = process_logits(logits.float(), temperature=temperature, top_k=top_k).log_softmax(dim=-1)
    nxt = (torch.multinomial(logp.exp(), 1, generator=generator) if do_sample
           else logp.argmax(dim=-1, keepdim=True))
    return nxt, logp.gather(-1, nxt)


def _finish(prompts, tokens, logps, eos_token_id) -> Rollout:
    responses = torch.cat(tokens, dim=1)  # (B, T)
    log_probs = torch.cat(logps, dim=1)
    if eos_token_id is None:
        mask = torch.ones_like(log_probs)
    else:  # keep tokens up to and including the first end token
        is_end = (responses == eos_token_id).long()
        mask = (is_end.cumsum(dim=1) - is_end == 0).float()  # no end token strictly before
    return Rollout(torch.cat([prompts, responses], dim=1), responses, log_probs * mask, mask)


@torch.no_grad()
def sample_responses(model: nn.Module, prompts: torch.Tensor, max_new_tokens: int, *,
                     temperature: float = 1.0, top_k: int | None = None, do_sample: bool = True,
                     eos_token_id: int | None = None, generator: torch.Generator | None = None
                     ) -> Rollout:
    """Sample one response per prompt row (B, P) — prompts of equal length, e.g. each repeated G
    times for GRPO — with a key/value cache: the prompt is read once, then one token per step for
    the whole batch. Returns a :class:`Rollout`; its ``log_probs`` are those of the distribution the
    tokens were drawn from (after temperature and top-k), what PPO's ratio needs as π_old."""
    _check_sampling(model, prompts, max_new_tokens, temperature, top_k)
    was_training = model.training
    model.eval()
    try:
        B, P = prompts.shape
        weight = next(model.parameters())
        cache = _new_cache(model, B, P + max_new_tokens, prompts.device, weight.dtype)
        logits = model(prompts, past_key_values=cache)[:, -1]  # (B, V)
        tokens, logps = [], []
        for step in range(max_new_tokens):
            nxt, logp = _pick(logits, temperature, top_k, do_sample, generator)  # (B, 1) each
            tokens.append(nxt)
            logps.append(logp)
            if step + 1 < max_new_tokens:
                logits = model(nxt, past_key_values=cache)[:, -1]
    finally:
        model.train(was_training)
    return _finish(prompts, tokens, logps, eos_token_id)


@torch.no_grad()
def sample_responses_naive(model: nn.Module, prompts: torch.Tensor, max_new_tokens: int, *,
                           temperature: float = 1.0, top_k: int | None = None, do_sample: bool = True,
                           eos_token_id: int | None = None, generator: torch.Generator | None = None
                           ) -> Rollout:
    """The slow twin of :func:`sample_responses`: one prompt at a time, the whole sequence run
    through the model at every step (no cache). Greedy outputs and log-probabilities are equal."""
    _check_sampling(model, prompts, max_new_tokens, temperature, top_k)
    was_training = model.training
    model.eval()
    rows = []
    try:
        for b in range(prompts.size(0)):
            seq = prompts[b:b + 1]
            toks, lps = [], []
            for _ in range(max_new_tokens):
                logits = model(seq)[:, -1]  # (1, V) recomputed from the start
                nxt, logp = _pick(logits, temperature, top_k, do_sample, generator)
                toks.append(nxt)
                lps.append(logp)
                seq = torch.cat([seq, nxt], dim=1)
            rows.append((torch.cat(toks, 1), torch.cat(lps, 1)))
    finally:
        model.train(was_training)
    return _finish(prompts, [torch.cat([r[0] for r in rows])], [torch.cat([r[1] for r in rows])],
                   eos_token_id)


def response_log_probs(model: nn.Module, sequences: torch.Tensor, response_length: int, *,
                       temperature: float = 1.0) -> torch.Tensor:
    """log π(token) of the last ``response_length`` tokens of each row of ``sequences`` (B, P+T),
    from one forward pass (with gradients, for the policy update): (B, T), under the full softmax at
    ``temperature`` — the one the tokens were sampled at (and sample without top-k for RL), or the
    ratio to π_old is off from the first step."""
    check_tensor("sequences", sequences, ndim=2, dtype_kind="int")
    T = check_int("response_length", response_length, low=1)
    if T >= sequences.size(1):
        raise ValueError(f"response_length={T} leaves no prompt in sequences of length "
                         f"{sequences.size(1)}")
    temperature = check_float("temperature", temperature, low=0, low_inclusive=False)
    logits = model(sequences)[:, -T - 1:-1].float() / temperature  # (B, T, V): logits at t predict t+1
    return token_log_probs(logits, sequences[:, -T:])


# ---------------------------------------------------------------- KL and rewards

def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (over all, or along ``dim``)."""
    if mask.shape != x.shape:
        raise ValueError(f"mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}")
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """Standardise ``x`` over the masked positions: (x − mean) / std (the unbiased variance, as in
    TRL's ``masked_whiten``); ``shift_mean=False`` keeps the mean (only rescales)."""
    mean = masked_mean(x, mask)
    centred = x - mean
    n = mask.sum()
    if n < 2:
        raise ValueError("whitening needs at least 2 masked positions")
    var = masked_mean(centred ** 2, mask) * n / (n - 1)
    out = centred * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def kl_penalty(log_probs: torch.Tensor, ref_log_probs: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π‖π_ref) from the sampled tokens' log-probabilities (same shape):
    ``"k1"`` log π − log π_ref (unbiased, can be negative), ``"k3"`` r − 1 − log r with
    r = π_ref/π (unbiased and never negative), ``"k2"`` ½(log r)²."""
    check_tensor("log_probs", log_probs, dtype_kind="float")
    check_tensor("ref_log_probs", ref_log_probs, dtype_kind="float")
    if log_probs.shape != ref_log_probs.shape:
        raise ValueError(f"ref_log_probs must have the shape of log_probs {tuple(log_probs.shape)}, "
                         f"got {tuple(ref_log_probs.shape)}")
    log_r = ref_log_probs - log_probs
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r ** 2
    if kind == "k3":
        return log_r.exp() - 1 - log_r
    raise ValueError(f"kind must be 'k1', 'k2' or 'k3', got {kind!r}")


def token_rewards(scores: torch.Tensor, log_probs: torch.Tensor, ref_log_probs: torch.Tensor,
                  mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """RLHF's reward of each token (B, T): −β·(log π − log π_ref) everywhere, plus the sequence's
    score (B,) at its last real token (InstructGPT; TRL's PPO)."""
    check_tensor("scores", scores, ndim=1, dtype_kind="float")
    kl_coef = check_float("kl_coef", kl_coef, low=0)
    if scores.size(0) != log_probs.size(0):
        raise ValueError(f"scores must hold one score per response ({log_probs.size(0)}), got "
                         f"{scores.size(0)}")
    rewards = -kl_coef * kl_penalty(log_probs, ref_log_probs, "k1") * mask  # (B, T)
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # (B,)
    return rewards.scatter_add(1, last[:, None], scores[:, None].to(rewards.dtype))


# ---------------------------------------------------------------- PPO

def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None, *,
        gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens: rewards, values (B, T) (V_t the value
    model's estimate before token t), mask (B, T) (1 = real token; the episode ends at the last one,
    where V_{T} = 0). Returns (advantages, returns = advantages + values), both (B, T), computed by the
    backward recursion A_t = δ_t + γλ·A_{t+1}."""
    check_tensor("rewards", rewards, ndim=2, dtype_kind="float")
    check_tensor("values", values, ndim=2, dtype_kind="float")
    if values.shape != rewards.shape:
        raise ValueError(f"values must have the shape of rewards {tuple(rewards.shape)}, got "
                         f"{tuple(values.shape)}")
    gamma = check_float("gamma", gamma, low=0, high=1)
    lam = check_float("lam", lam, low=0, high=1)
    mask = torch.ones_like(rewards) if mask is None else mask.to(rewards.dtype)
    if mask.shape != rewards.shape:
        raise ValueError(f"mask must have the shape of rewards {tuple(rewards.shape)}, got {tuple(mask.shape)}")
    T = rewards.size(1)
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        # past the end (mask 0) nothing is earned and nothing follows: the recursion restarts at 0
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = (delta + gamma * lam * next_adv) * mask[:, t]
        advantages[:, t] = adv
        next_adv = adv
        next_value = values[:, t] * mask[:, t]
    return advantages, advantages + values * mask


class ValueModel(nn.Module):
    """PPO's critic: an estimate V_t of the return from every position — a causal LM's final hidden
    states (``body.hidden_states``) → ``head`` (C → 1). :meth:`response_values` reads the values
    before each response token, the V_t :func:`gae` expects."""

    def __init__(self, body: nn.Module, hidden_size: int):
        super().__init__()
        self.body = body
        self.head = scalar_head(body, hidden_size)

    @classmethod
    def from_reward_model(cls, reward_model: RewardModel) -> "ValueModel":
        """A critic that starts as a copy of the reward model (InstructGPT): its value at a sequence's
        last token is the reward model's score."""
        import copy

        if not isinstance(reward_model, RewardModel):
            raise TypeError(f"reward_model must be a minillm.preference.RewardModel, got "
                            f"{type(reward_model).__name__}")
        critic = cls(copy.deepcopy(reward_model.body), reward_model.score.in_features)
        critic.head.load_state_dict(reward_model.score.state_dict())
        return critic.to(next(reward_model.parameters()).device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, L) → values (B, L), one per position (float32)."""
        h = self.body.hidden_states(input_ids, attention_mask=attention_mask)  # (B, L, C)
        return self.head(h).squeeze(-1).float()

    def response_values(self, sequences: torch.Tensor, response_length: int) -> torch.Tensor:
        """V_t before each of the last ``response_length`` tokens of ``sequences`` (B, P+T): the values
        at positions P-1 … P+T-2, where the state holds everything before token t. (B, T)."""
        T = check_int("response_length", response_length, low=1)
        if T >= sequences.size(1):
            raise ValueError(f"response_length={T} leaves no prompt in sequences of length "
                             f"{sequences.size(1)}")
        return self(sequences)[:, -T - 1:-1]


def _clipped_surrogate(log_probs, old_log_probs, advantages, clip_range
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's per-token loss max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) and a float mask of the tokens where the
    clipped term won (they pass no gradient)."""
    clip_range = check_float("clip_range", clip_range, low=0, low_inclusive=False)
    ratio = (log_probs - old_log_probs).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def ppo_losses(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
               mask: torch.Tensor, *, values: torch.Tensor | None = None,
               old_values: torch.Tensor | None = None, returns: torch.Tensor | None = None,
               clip_range: float = 0.2, clip_range_value: float = 0.2
               ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, float]]:
    """PPO's losses over the masked tokens (all (B, T)):

        policy: mean of max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)),  ρ = exp(log π − log π_old)
        value:  ½·mean of max((V − R)², (clip(V, V_old ± ε_v) − R)²)   (when values are given)

    Returns (policy loss, value loss or None, stats: ``clipfrac`` the share of tokens whose ratio
    was clipped, ``approx_kl`` ½·mean (log ρ)²)."""
    for name, t in (("old_log_probs", old_log_probs), ("advantages", advantages), ("mask", mask)):
        if t.shape != log_probs.shape:
            raise ValueError(f"{name} must have the shape of log_probs {tuple(log_probs.shape)}, got "
                             f"{tuple(t.shape)}")
    per_token, was_clipped = _clipped_surrogate(log_probs, old_log_probs, advantages, clip_range)
    pg_loss = masked_mean(per_token, mask)
    stats = {"clipfrac": float(masked_mean(was_clipped, mask)),
             "approx_kl": float(masked_mean(0.5 * (log_probs - old_log_probs).detach() ** 2, mask))}
    vf_loss = None
    if values is not None:
        if old_values is None or returns is None:
            raise ValueError("the value loss needs values, old_values and returns together")
        v_clipped = old_values + (values - old_values).clamp(-clip_range_value, clip_range_value)
        vf_loss = 0.5 * masked_mean(torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2), mask)
    return pg_loss, vf_loss, stats


# ---------------------------------------------------------------- GRPO

def grpo_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool = True,
                    eps: float = 1e-4) -> torch.Tensor:
    """GRPO's advantage of each response: its reward minus the mean reward of its group (the G
    responses to the same prompt, consecutive in ``rewards`` (B·G,)), divided by the group's standard
    deviation (unbiased, + ``eps``) when ``scale`` — TRL's ``GRPOTrainer``. A group whose responses all
    score the same has advantage 0: nothing to learn from it. Returns (B·G,)."""
    check_tensor("rewards", rewards, ndim=1, dtype_kind="float")
    G = check_int("group_size", group_size, low=2)
    if rewards.numel() % G:
        raise ValueError(f"rewards holds {rewards.numel()} values, not a whole number of groups of "
                         f"group_size={G}")
    grouped = rewards.view(-1, G)  # (B, G)
    adv = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (grouped.std(dim=1, keepdim=True) + eps)
    return adv.reshape(-1)


def grpo_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, ref_log_probs: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, *, clip_range: float = 0.2,
              beta: float = 0.04) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO's objective (DeepSeekMath, eq. 3), to minimise: per token −min(ρ·A, clip(ρ)·A) + β·k3(π‖π_ref),
    averaged over each response's tokens, then over responses. log-probs and mask (B, T), advantages
    (B,) (one per response, shared by its tokens). Returns (loss, stats: ``kl`` the mean k3,
    ``clipfrac``)."""
    check_tensor("advantages", advantages, ndim=1, dtype_kind="float")
    if advantages.size(0) != log_probs.size(0):
        raise ValueError(f"advantages must hold one value per response ({log_probs.size(0)}), got "
                         f"{advantages.size(0)}")
    beta = check_float("beta", beta, low=0)
    A = advantages[:, None].expand_as(log_probs)  # (B, T) every token shares its response's advantage
    surrogate, was_clipped = _clipped_surrogate(log_probs, old_log_probs, A, clip_range)
    kl = kl_penalty(log_probs, ref_log_probs, "k3")
    loss = masked_mean(surrogate + beta * kl, mask, dim=1).mean()  # sequence mean, then batch mean
    return loss, {"kl": float(masked_mean(kl.detach(), mask)), "clipfrac": float(masked_mean(was_clipped, mask))}
