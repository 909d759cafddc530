"""minillm.moe: the mixture-of-experts feed-forward equals Hugging Face's Qwen2-MoE block on the same
weights, the sparse expert loop equals its dense slow twin, and the load-balancing loss equals
transformers' ``load_balancing_loss_func``; ALiBi (minillm.positional) equals BLOOM's."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.attention import attend, causal_mask
from minillm.moe import MoEConfig, MoEFeedForward, expert_load, load_balancing_loss
from minillm.positional import alibi_bias, alibi_slopes

qwen2_moe = pytest.importorskip("transformers.models.qwen2_moe.modeling_qwen2_moe")


def _pair(norm_topk_prob: bool, shared: int = 48, seed: int = 0):
    from transformers import Qwen2MoeConfig

    torch.manual_seed(seed)
    hf_config = Qwen2MoeConfig(hidden_size=32, num_experts=6, num_experts_per_tok=2, moe_intermediate_size=16,
                               shared_expert_intermediate_size=shared, norm_topk_prob=norm_topk_prob,
                               hidden_act="silu")
    hf = qwen2_moe.Qwen2MoeSparseMoeBlock(hf_config).eval()
    for p in hf.parameters():  # HF leaves some weights at zero until _init_weights: draw them all
        torch.nn.init.normal_(p, std=0.3)
    ours = MoEFeedForward(MoEConfig(hidden_size=32, num_experts=6, num_experts_per_tok=2, moe_intermediate_size=16,
                                    shared_expert_intermediate_size=shared, norm_topk_prob=norm_topk_prob)).eval()
    state = hf.state_dict()
    if not shared:  # HF builds a zero-width shared expert; ours has none
        state = {k: v for k, v in state.items() if not k.startswith("shared_expert")}
    ours.load_state_dict(state)
    return ours, hf


@pytest.mark.parametrize("norm_topk_prob", [False, True])
def test_moe_block_equals_qwen2_moe(norm_topk_prob):
    ours, hf = _pair(norm_topk_prob)
    x = torch.randn(3, 7, 32)
    out, logits = ours(x)
    with torch.no_grad():
        ref = hf(x)
        ref_logits = hf.gate(x.reshape(-1, 32))[0]
    assert out.shape == (3, 7, 32) and logits.shape == (21, 6)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_sparse_expert_loop_equals_dense_twin_and_gradients_match():
    ours, _ = _pair(True)
    x = torch.randn(2, 9, 32, requires_grad=True)
    sparse, _ = ours(x)
    dense, _ = ours(x, dense=True)
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-6)
    g_sparse = torch.autograd.grad(sparse.square().sum(), [x, ours.experts.gate_up_proj])
    g_dense = torch.autograd.grad(ours(x, dense=True)[0].square().sum(), [x, ours.experts.gate_up_proj])
    for a, b in zip(g_sparse, g_dense):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_each_token_uses_exactly_k_experts():
    ours, _ = _pair(False, shared=0)
    assert ours.shared_expert is None
    x = torch.randn(1, 5, 32)
    _, logits = ours(x)
    chosen = logits.softmax(-1).topk(2, dim=-1).indices
    # zero every expert a token did not choose: its output must not change
    for t in range(5):
        single = x[:, t:t + 1]
        full, _ = ours(single)
        keep = set(chosen[t].tolist())
        with torch.no_grad():
            saved = ours.experts.down_proj.clone()
            for e in range(6):
                if e not in keep:
                    ours.experts.down_proj[e].zero_()
            masked, _ = ours(single)
            ours.experts.down_proj.copy_(saved)
        torch.testing.assert_close(full, masked)


@pytest.mark.parametrize("masked", [False, True])
def test_load_balancing_loss_equals_transformers(masked):
    torch.manual_seed(1)
    layers = tuple(torch.randn(2 * 6, 8) * 2 for _ in range(3))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]) if masked else None
    ours = load_balancing_loss(layers, top_k=2, attention_mask=mask)
    ref = qwen2_moe.load_balancing_loss_func(layers, num_experts=8, top_k=2, attention_mask=mask)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-6, atol=1e-6)


def test_load_balancing_loss_is_k_when_uniform_and_larger_when_collapsed():
    E, k, N = 4, 2, 4000
    uniform = torch.zeros(N, E) + 1e-3 * torch.randn(N, E)  # ties broken at random: every expert used
    assert abs(float(load_balancing_loss(uniform, k)) - k) < 0.02
    collapsed = torch.zeros(N, E)
    collapsed[:, :2] = 10.0  # every token routes to experts 0 and 1 with all the probability
    assert float(load_balancing_loss(collapsed, k)) > 1.9 * k
    load = expert_load(collapsed, k)
    assert torch.allclose(load, torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert math.isclose(float(expert_load(uniform, k).sum()), 1.0, rel_tol=1e-6)


def test_moe_bad_input():
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        MoEConfig(num_experts=4, num_experts_per_tok=5)
    block = MoEFeedForward(MoEConfig(hidden_size=16))
    with pytest.raises(ValueError, match=r"shape \(B, T, 16\)"):
        block(torch.randn(4, 16))
    with pytest.raises(ValueError, match="router_logits is empty"):
        load_balancing_loss([], 2)
    with pytest.raises(ValueError, match="attention_mask has 3 positions"):
        load_balancing_loss(torch.randn(4, 8), 2, attention_mask=torch.ones(3))


# ----------------------------------------------------------------------------- ALiBi


@pytest.mark.parametrize("n_heads", [1, 4, 8, 12, 16, 20])
def test_alibi_slopes_equal_bloom(n_heads):
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    mask = torch.ones(1, 5)
    ref = build_alibi_tensor(mask, n_heads, torch.float32).view(n_heads, 5)[:, 1]  # slope · position 1
    torch.testing.assert_close(alibi_slopes(n_heads), ref)


def test_alibi_attention_equals_bloom_bias_under_softmax():
    """Our relative bias −m(i−j) and BLOOM's m·j differ by a constant per query row: with the same
    causal mask, softmax makes the attention outputs equal."""
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    torch.manual_seed(0)
    B, nh, T, hs = 2, 4, 9, 8
    q, k, v = (torch.randn(B, nh, T, hs) for _ in range(3))
    ours, _ = attend(q, k, v, bias=alibi_bias(nh, T), causal=True, explicit=True)
    bloom = build_alibi_tensor(torch.ones(B, T), nh, torch.float32).view(B, nh, 1, T)
    ref, _ = attend(q, k, v, bias=bloom.expand(B, nh, T, T), causal=True, explicit=True)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    fast, _ = attend(q, k, v, bias=alibi_bias(nh, T), causal=True)  # SDPA path = explicit path
    torch.testing.assert_close(fast, ours, rtol=1e-5, atol=1e-6)


def test_alibi_bias_with_a_cache_is_the_last_rows_of_the_full_bias():
    full = alibi_bias(4, 10)
    torch.testing.assert_close(alibi_bias(4, 3, 10), full[:, :, -3:])
    assert alibi_bias(2, 4)[0, 0].diagonal().abs().max() == 0  # distance 0 on the diagonal
    assert bool((alibi_bias(2, 4)[0, 0].masked_fill(~causal_mask(4), 0) <= 0).all())
    with pytest.raises(ValueError, match="S must be >= 3"):
        alibi_bias(2, 3, 2)
