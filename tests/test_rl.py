"""minillm.rl: GAE against its definition (a float64 double sum), PPO's clipped losses and GRPO's
advantages and loss against their formulas written out per element, the KL estimators against the exact
KL they estimate, the batched KV-cached sampler against its slow twin (one prompt at a time, no cache)
and against a recomputed forward, and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.models.gpt import GPT, GPTConfig
from minillm.models.llama import LlamaConfig, LlamaForCausalLM
from minillm.rl import (gae, grpo_advantages, grpo_loss, kl_penalty, masked_whiten, ppo_losses,
                        response_log_probs, sample_responses, sample_responses_naive, token_rewards)


def test_gae_equals_the_discounted_sum_of_td_errors():
    g = torch.Generator().manual_seed(0)
    B, T = 3, 7
    rewards, values = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    mask = torch.ones(B, T)
    mask[1, 5:] = 0  # row 1 ends after 5 tokens
    mask[2, 2:] = 0
    for gamma, lam in ((1.0, 0.95), (0.9, 0.8), (0.99, 1.0), (0.9, 0.0)):
        adv, ret = gae(rewards, values, mask, gamma=gamma, lam=lam)
        for b in range(B):
            n = int(mask[b].sum())
            r, v = rewards[b, :n].double().tolist(), values[b, :n].double().tolist() + [0.0]  # V after the end = 0
            delta = [r[t] + gamma * v[t + 1] - v[t] for t in range(n)]
            for t in range(n):
                want = sum((gamma * lam) ** k * delta[t + k] for k in range(n - t))
                assert adv[b, t].item() == pytest.approx(want, rel=1e-5, abs=1e-5)
                assert ret[b, t].item() == pytest.approx(want + v[t], rel=1e-5, abs=1e-5)
            assert (adv[b, n:] == 0).all()
    # λ = 1, γ = 1: the advantage is the reward-to-go minus the value (Monte Carlo)
    adv, _ = gae(rewards, values, gamma=1.0, lam=1.0)
    togo = rewards.flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(adv, togo - values)


def test_token_rewards_put_the_score_on_the_last_real_token():
    lp, ref = torch.full((2, 4), -1.0), torch.full((2, 4), -1.5)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float)
    r = token_rewards(torch.tensor([2.0, 3.0]), lp, ref, mask, kl_coef=0.1)
    want = torch.tensor([[-0.05, -0.05, -0.05, -0.05 + 2.0], [-0.05, -0.05 + 3.0, 0.0, 0.0]])
    torch.testing.assert_close(r, want)


def test_kl_estimators_are_unbiased_for_the_exact_kl():
    g = torch.Generator().manual_seed(0)
    p_logits, q_logits = torch.randn(12, generator=g), torch.randn(12, generator=g)
    logp, logq = p_logits.log_softmax(-1).double(), q_logits.log_softmax(-1).double()
    exact = (logp.exp() * (logp - logq)).sum()  # KL(p ‖ q)
    x = torch.multinomial(logp.exp(), 200_000, replacement=True, generator=g)  # samples from the policy p
    for kind in ("k1", "k3"):
        est = kl_penalty(logp[x], logq[x], kind)
        se = est.std() / math.sqrt(est.numel())
        assert abs(est.mean() - exact) < 4 * se, kind
    assert (kl_penalty(logp[x], logq[x], "k3") >= 0).all()  # k3 never goes negative; k1 does
    assert (kl_penalty(logp[x], logq[x], "k1") < 0).any()


def test_ppo_losses_equal_their_per_token_definition():
    g = torch.Generator().manual_seed(1)
    B, T = 4, 6
    old = torch.randn(B, T, generator=g) - 2
    new = (old + 0.4 * torch.randn(B, T, generator=g)).requires_grad_(True)
    adv = torch.randn(B, T, generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.2).float()
    values, old_values, returns = (torch.randn(B, T, generator=g) for _ in range(3))
    pg, vf, stats = ppo_losses(new, old, adv, mask, values=values, old_values=old_values, returns=returns,
                               clip_range=0.2, clip_range_value=0.3)
    terms, vterms, clipped = [], [], []
    for b in range(B):
        for t in range(T):
            if mask[b, t]:
                ratio = math.exp(new[b, t].item() - old[b, t].item())
                a = adv[b, t].item()
                terms.append(max(-a * ratio, -a * min(max(ratio, 0.8), 1.2)))
                clipped.append(-a * min(max(ratio, 0.8), 1.2) > -a * ratio)
                v, v0, R = values[b, t].item(), old_values[b, t].item(), returns[b, t].item()
                vc = v0 + min(max(v - v0, -0.3), 0.3)
                vterms.append(max((v - R) ** 2, (vc - R) ** 2))
    assert pg.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert vf.item() == pytest.approx(0.5 * sum(vterms) / len(vterms), rel=1e-5)
    assert stats["clipfrac"] == pytest.approx(sum(clipped) / len(clipped))
    # a clipped token passes no gradient: the ratio left the trust region in the advantage's direction
    pg.backward()
    ratio = (new - old).exp().detach()
    outside = ((adv > 0) & (ratio > 1.2)) | ((adv < 0) & (ratio < 0.8))
    assert outside.any() and (new.grad[outside] == 0).all()
    assert (new.grad[~outside & mask.bool()] != 0).all()


def test_grpo_advantages_and_loss_equal_their_definitions():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 2.0, 0.0, 1.0, 3.0])
    adv = grpo_advantages(rewards, group_size=4)
    for g in range(3):
        grp = rewards[4 * g:4 * g + 4].double().tolist()
        mean = sum(grp) / 4
        std = math.sqrt(sum((x - mean) ** 2 for x in grp) / 3)  # unbiased, as torch.std
        for i in range(4):
            assert adv[4 * g + i].item() == pytest.approx((grp[i] - mean) / (std + 1e-4), abs=1e-6)
    assert (adv[4:8] == 0).all()  # a group that all scored the same teaches nothing
    torch.testing.assert_close(grpo_advantages(rewards, 4, scale=False),
                               rewards - rewards.view(3, 4).mean(1).repeat_interleave(4))

    gen = torch.Generator().manual_seed(2)
    B, T = 3, 5
    old = torch.randn(B, T, generator=gen) - 1
    new = old + 0.3 * torch.randn(B, T, generator=gen)
    ref = old + 0.3 * torch.randn(B, T, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.float)
    a = torch.tensor([1.0, -0.5, 2.0])
    loss, stats = grpo_loss(new, old, ref, a, mask, clip_range=0.2, beta=0.04)
    per_seq = []
    for b in range(B):
        toks = []
        for t in range(int(mask[b].sum())):
            ratio = math.exp(new[b, t] - old[b, t])
            k3 = math.exp(ref[b, t] - new[b, t]) - (ref[b, t] - new[b, t]) - 1
            toks.append(-min(ratio * a[b].item(), min(max(ratio, 0.8), 1.2) * a[b].item()) + 0.04 * k3)
        per_seq.append(sum(toks) / len(toks))
    assert loss.item() == pytest.approx(sum(per_seq) / B, rel=1e-5)
    assert stats["kl"] >= 0


def test_whitening_has_zero_mean_unit_variance_on_the_mask():
    g = torch.Generator().manual_seed(3)
    x, mask = torch.randn(4, 9, generator=g) * 5 + 3, (torch.rand(4, 9, generator=g) > 0.3).float()
    w = masked_whiten(x, mask)
    vals = w[mask.bool()]
    assert vals.mean().abs() < 1e-5 and (vals.std() - 1).abs() < 1e-4


def tiny_models():
    torch.manual_seed(0)
    yield GPT(GPTConfig.tiny()).eval()
    yield LlamaForCausalLM(LlamaConfig.tiny()).eval()


@pytest.mark.parametrize("model", list(tiny_models()), ids=["gpt", "llama"])
def test_batched_cached_sampler_equals_its_slow_twin_and_a_recomputed_forward(model):
    V = model.config.vocab_size
    prompts = torch.randint(0, V, (4, 5), generator=torch.Generator().manual_seed(0))
    fast = sample_responses(model, prompts, 8, do_sample=False)
    slow = sample_responses_naive(model, prompts, 8, do_sample=False)
    assert torch.equal(fast.sequences, slow.sequences)  # greedy: the same tokens
    torch.testing.assert_close(fast.log_probs, slow.log_probs, rtol=1e-4, atol=1e-5)
    # sampled tokens: their log-probs equal those of one forward over the whole sequence (with grad)
    rollout = sample_responses(model, prompts, 8, temperature=0.7, generator=torch.Generator().manual_seed(1))
    again = sample_responses(model, prompts, 8, temperature=0.7, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rollout.sequences, again.sequences)  # a seed reproduces the rollout
    recomputed = response_log_probs(model, rollout.sequences, 8, temperature=0.7)
    torch.testing.assert_close(recomputed, rollout.log_probs, rtol=1e-4, atol=1e-4)
    assert (rollout.log_probs <= 0).all() and model.training is False
    # top-k renormalises over the k kept tokens: each sampled token is at least as likely as unfiltered
    topk = sample_responses(model, prompts, 8, temperature=0.7, top_k=5, generator=torch.Generator().manual_seed(1))
    full = response_log_probs(model, topk.sequences, 8, temperature=0.7)
    assert (topk.log_probs >= full - 1e-5).all() and (topk.log_probs > full + 1e-3).any()


def test_end_token_masks_the_rest_of_the_response():
    model = next(tiny_models())
    prompts = torch.randint(0, 65, (6, 3), generator=torch.Generator().manual_seed(2))
    ro = sample_responses(model, prompts, 12, generator=torch.Generator().manual_seed(3))
    eos = int(ro.responses[0, 2])  # a token that occurs: pretend it ends the response
    ro = sample_responses(model, prompts, 12, generator=torch.Generator().manual_seed(3), eos_token_id=eos)
    for b in range(6):
        hits = (ro.responses[b] == eos).nonzero().flatten().tolist()
        n = hits[0] + 1 if hits else 12
        assert ro.mask[b].tolist() == [1.0] * n + [0.0] * (12 - n)
        assert (ro.log_probs[b, n:] == 0).all()
    assert ro.lengths[0] <= 3


def test_bad_input_is_a_clear_error():
    model = next(tiny_models())
    with pytest.raises(ValueError, match="context window"):
        sample_responses(model, torch.zeros(1, 30, dtype=torch.long), 8)
    with pytest.raises(TypeError, match="GPT or LlamaForCausalLM"):
        sample_responses(torch.nn.Linear(2, 2), torch.zeros(1, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="whole number of groups"):
        grpo_advantages(torch.zeros(7), group_size=4)
    with pytest.raises(ValueError, match="group_size"):
        grpo_advantages(torch.zeros(4), group_size=1)
    with pytest.raises(ValueError, match="values must have the shape of rewards"):
        gae(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="kind must be"):
        kl_penalty(torch.zeros(3), torch.zeros(3), "k4")
    with pytest.raises(ValueError, match="one score per response"):
        token_rewards(torch.zeros(3), torch.zeros(2, 4), torch.zeros(2, 4), torch.ones(2, 4), 0.1)
    with pytest.raises(ValueError, match="one value per response"):
        grpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3), torch.ones(2, 3))


def test_value_model_from_a_reward_model_starts_at_its_score_and_reads_values_before_each_token():
    from minillm.preference import RewardModel
    from minillm.rl import ValueModel

    torch.manual_seed(0)
    body = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16))
    rm = RewardModel(body, 16)
    critic = ValueModel.from_reward_model(rm)
    seqs = torch.randint(0, 30, (3, 12))
    values = critic(seqs)  # (B, L)
    assert values.shape == (3, 12)
    torch.testing.assert_close(values[:, -1], rm(seqs))  # the critic starts as the reward model
    # a copy: training the critic leaves the reward model alone
    critic.head.weight.data.add_(1.0)
    assert not torch.allclose(critic(seqs)[:, -1], rm(seqs))
    # V_t is read at the position before response token t: the state holds only the tokens before it
    T = 4
    torch.testing.assert_close(critic.response_values(seqs, T), critic(seqs)[:, -T - 1:-1])
    prefix_only = torch.stack([critic(seqs[:, :p + 1])[:, -1] for p in range(12 - T - 1, 12 - 1)], dim=1)
    torch.testing.assert_close(critic.response_values(seqs, T), prefix_only, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="leaves no prompt"):
        critic.response_values(seqs, 12)
    with pytest.raises(TypeError, match="RewardModel"):
        ValueModel.from_reward_model(body)
