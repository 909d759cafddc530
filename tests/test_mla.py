"""minillm.mla: multi-head latent attention equals Hugging Face's ``DeepseekV3Attention`` on the same
weights (outputs and cache contents, with and without low-rank queries, both RoPE layouts, padding,
cached decoding); cached decoding equals recomputing the sequence; the absorbed inference form
equals the expanded one; the explicit softmax equals SDPA; the KV-cache arithmetic matches hand
counts and the bytes the module really keeps."""

from __future__ import annotations

import pytest
import torch

from minillm.attention import set_attention_impl
from minillm.mla import (MLACache, MLAConfig, MultiHeadLatentAttention, kv_cache_bytes_per_token,
                         kv_cache_table)

dsv3 = pytest.importorskip("transformers.models.deepseek_v3.modeling_deepseek_v3")

SIZES = dict(hidden_size=64, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8)


def _hf_config(q_lora_rank: int | None, rope_interleave: bool = True, attention_bias: bool = False):
    from transformers import DeepseekV3Config

    return DeepseekV3Config(num_attention_heads=4, num_key_value_heads=4, q_lora_rank=q_lora_rank,
                            rope_interleave=rope_interleave, attention_bias=attention_bias,
                            num_hidden_layers=1, vocab_size=16, intermediate_size=32,
                            moe_intermediate_size=16, n_routed_experts=4, n_group=1, topk_group=1,
                            num_experts_per_tok=2,
                            attn_implementation="eager", **SIZES)


def _pair(q_lora_rank: int | None = 32, rope_interleave: bool = True, attention_bias: bool = False,
          seed: int = 0):
    torch.manual_seed(seed)
    hf_config = _hf_config(q_lora_rank, rope_interleave, attention_bias)
    hf = dsv3.DeepseekV3Attention(hf_config, layer_idx=0).eval()
    with torch.no_grad():  # HF leaves norms at one and biases at zero until _init_weights: draw them all
        for name, p in hf.named_parameters():
            p.normal_(1.0 if "layernorm" in name else 0.0, 0.2)
    ours = MultiHeadLatentAttention(MLAConfig.from_hf(hf_config)).eval()
    ours.load_state_dict(hf.state_dict())
    return ours, hf, hf_config


def _hf_forward(hf, hf_config, x, position_ids, attention_mask=None, cache=None):
    """One DeepseekV3Attention call set up as DeepseekV3Model.forward sets up its layers."""
    from transformers.masking_utils import create_causal_mask

    position_embeddings = dsv3.DeepseekV3RotaryEmbedding(hf_config)(x, position_ids)
    mask = create_causal_mask(config=hf_config, inputs_embeds=x, attention_mask=attention_mask, cache=cache,
                              position_ids=position_ids)
    with torch.no_grad():
        return hf(x, position_embeddings=position_embeddings, attention_mask=mask, cache=cache)[0]


@pytest.mark.parametrize("q_lora_rank, rope_interleave, attention_bias",
                         [(32, True, False), (None, True, False), (32, False, True), (None, False, False)])
def test_equals_deepseek_v3_attention_and_caches_what_hf_caches(q_lora_rank, rope_interleave, attention_bias):
    from transformers import DynamicCache

    ours, hf, hf_config = _pair(q_lora_rank, rope_interleave, attention_bias)
    assert (ours.q_proj if q_lora_rank is None else ours.q_b_proj) is not None
    x = torch.randn(2, 7, 64)
    position_ids = torch.arange(7)[None] + torch.tensor([[0], [5]])  # rows start at different positions
    hf_cache = DynamicCache(config=hf_config)
    ref = _hf_forward(hf, hf_config, x, position_ids, cache=hf_cache)
    with torch.no_grad():
        out, cache = ours(x, position_ids=position_ids)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # the cache is HF's, tensor for tensor: the normalised latent and the rotated shared RoPE key
    assert isinstance(cache, MLACache) and cache.c_kv.shape == (2, 7, 16) and cache.k_rope.shape == (2, 7, 4)
    torch.testing.assert_close(cache.c_kv, hf_cache.layers[0].keys[:, 0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cache.k_rope, hf_cache.layers[0].values[:, 0], rtol=1e-6, atol=1e-6)
    with torch.no_grad():  # RoPE sees only relative positions: a common shift changes nothing, spreading does
        shifted, _ = ours(x, position_ids=position_ids + 3)
        spread, _ = ours(x, position_ids=2 * position_ids)
    torch.testing.assert_close(shifted, out, rtol=1e-5, atol=1e-5)
    assert (spread - out).abs().max() > 1e-3


def test_padding_mask_equals_hf():
    ours, hf, hf_config = _pair()
    x = torch.randn(2, 6, 64)
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])  # row 1 left-padded
    position_ids = (keep.cumsum(-1) - 1).clamp(min=0)  # as generate() numbers left-padded rows
    ref = _hf_forward(hf, hf_config, x, position_ids, attention_mask=keep)
    with torch.no_grad():
        out, _ = ours(x, position_ids=position_ids, attention_mask=keep)
        unmasked, _ = ours(x, position_ids=position_ids)
    real = keep.bool()  # a padded query sees no key at all: its row is undefined, compare real tokens
    torch.testing.assert_close(out[real], ref[real], rtol=1e-5, atol=1e-5)
    assert (unmasked[1, 2:] - out[1, 2:]).abs().max() > 1e-3  # the mask did hide the padding
    torch.testing.assert_close(unmasked[0], out[0])


@pytest.mark.parametrize("absorbed", [False, True])
@pytest.mark.parametrize("q_lora_rank", [32, None])
def test_cached_decoding_equals_full_recompute_and_hf(absorbed, q_lora_rank):
    from transformers import DynamicCache

    ours, hf, hf_config = _pair(q_lora_rank, seed=1)
    run = ours.forward_absorbed if absorbed else ours.forward
    x = torch.randn(2, 8, 64)
    with torch.no_grad():
        full, full_cache = ours(x)
        out, cache = run(x[:, :5])  # prefill 5 tokens, then 3 single-token steps
        steps = [out]
        for t in range(5, 8):
            out, cache = run(x[:, t:t + 1], cache=cache)
            steps.append(out)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    assert cache.c_kv.shape == (2, 8, 16) and cache.k_rope.shape == (2, 8, 4)  # nothing per head is kept
    torch.testing.assert_close(cache.c_kv, full_cache.c_kv, rtol=1e-6, atol=1e-6)

    hf_cache = DynamicCache(config=hf_config)
    hf_steps = [_hf_forward(hf, hf_config, x[:, :5], torch.arange(5)[None], cache=hf_cache)]
    for t in range(5, 8):
        hf_steps.append(_hf_forward(hf, hf_config, x[:, t:t + 1], torch.tensor([[t]]), cache=hf_cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), torch.cat(hf_steps, dim=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("q_lora_rank, attention_bias", [(32, False), (None, True)])
def test_absorbed_form_equals_expanded_form_and_gradients_match(q_lora_rank, attention_bias):
    ours, _, _ = _pair(q_lora_rank, attention_bias=attention_bias, seed=2)
    x = torch.randn(2, 6, 64)
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # right padding: every row sees a key
    expanded, cache_e = ours(x, attention_mask=keep)
    absorbed, cache_a = ours.forward_absorbed(x, attention_mask=keep)
    torch.testing.assert_close(absorbed, expanded, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache_a.c_kv, cache_e.c_kv)
    weights = [ours.kv_b_proj.weight, ours.o_proj.weight, ours.kv_a_proj_with_mqa.weight]
    g_e = torch.autograd.grad(expanded.square().sum(), weights)
    g_a = torch.autograd.grad(absorbed.square().sum(), weights)
    for a, b in zip(g_a, g_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("absorbed", [False, True])
def test_explicit_softmax_equals_sdpa(absorbed):
    ours, _, _ = _pair(seed=3)
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        _, cache = ours(x[:, :3])
        run = ours.forward_absorbed if absorbed else ours.forward
        fast = run(x[:, 3:], cache=cache)[0]  # 2 queries after 3 cached keys: the causal offset matters
        set_attention_impl(ours, "explicit")
        assert ours.explicit_attention
        slow = run(x[:, 3:], cache=cache)[0]
    torch.testing.assert_close(slow, fast, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(num_heads=0), ValueError, "num_heads"),
    (dict(kv_lora_rank=0), ValueError, "kv_lora_rank"),
    (dict(q_lora_rank=0), ValueError, "q_lora_rank"),
    (dict(qk_rope_head_dim=3), ValueError, "qk_rope_head_dim must be even"),
    (dict(v_head_dim=-1), ValueError, "v_head_dim"),
    (dict(rope_theta=0.0), ValueError, "rope_theta"),
    (dict(rms_norm_eps=0.0), ValueError, "rms_norm_eps"),
    (dict(hidden_size=64.0), TypeError, "hidden_size"),
    (dict(attention_bias=1), TypeError, "attention_bias"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 40.0, "mscale_all_dim": 1.0}), NotImplementedError,
     "rope_scaling"),
])
def test_bad_config_raises_naming_the_value(kwargs, error, match):
    with pytest.raises(error, match=match):
        MLAConfig(**kwargs)


def test_yarn_from_hf_and_bad_inputs_raise():
    hf_config = _hf_config(32)
    hf_config.rope_parameters = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0,
                                 "original_max_position_embeddings": 4096, "mscale_all_dim": 1.0}
    with pytest.raises(NotImplementedError, match="YaRN"):
        MLAConfig.from_hf(hf_config)
    hf_config = _hf_config(32)
    hf_config.rms_norm_eps = 1e-3  # the decoder's norms; DeepseekV3Attention's own two stay at 1e-6
    assert MLAConfig.from_hf(hf_config).rms_norm_eps == 1e-6
    assert dsv3.DeepseekV3Attention(hf_config, 0).kv_a_layernorm.variance_epsilon == 1e-6
    layer = MultiHeadLatentAttention(MLAConfig())
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 64\)"):
        layer(torch.randn(1, 3, 32))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        layer(torch.randn(1, 3, 64), attention_mask=torch.ones(1, 4))
    with pytest.raises(ValueError, match="position_ids must have shape"):
        layer(torch.randn(2, 3, 64), position_ids=torch.zeros(3, 3, dtype=torch.long))
    _, cache = layer(torch.randn(1, 3, 64))
    with pytest.raises(ValueError, match="cache holds c_kv"):
        layer(torch.randn(2, 1, 64), cache=cache)


def test_kv_cache_arithmetic_by_hand():
    smol = dict(n_layers=30, n_heads=9, head_dim=64)  # SmolLM2-135M: 30 layers, 9 heads of 64, 3 KV heads
    assert kv_cache_bytes_per_token("mha", **smol) == 2 * 30 * 9 * 64 * 2 == 69120
    assert kv_cache_bytes_per_token("gqa", n_kv_heads=3, **smol) == 23040
    assert kv_cache_bytes_per_token("mqa", **smol) == 7680
    assert kv_cache_bytes_per_token("mla", n_layers=30, n_heads=9, kv_lora_rank=256, qk_rope_head_dim=32) \
        == 30 * 288 * 2 == 17280
    # DeepSeek-V3: 61 layers, 128 heads of 128; MLA caches 512 + 64 values per layer, MHA would cache 32768
    v3_mla = kv_cache_bytes_per_token("mla", n_layers=61, n_heads=128, kv_lora_rank=512, qk_rope_head_dim=64)
    v3_mha = kv_cache_bytes_per_token("mha", n_layers=61, n_heads=128, head_dim=128)
    assert (v3_mla, v3_mha) == (70272, 3997696) and round(v3_mha / v3_mla, 1) == 56.9
    assert kv_cache_bytes_per_token("mha", bytes_per_value=4, **smol) == 138240

    rows = kv_cache_table(n_kv_heads=3, **smol)
    assert [r["attention"] for r in rows] == ["MHA", "GQA", "MQA", "MLA"]
    assert [r["bytes per token"] for r in rows] == [69120, 23040, 7680, 17280]
    assert [r["values per token"] for r in rows] == [34560, 11520, 3840, 8640]
    assert rows[3]["vs MHA"] == 0.25 and rows[3]["cached per layer"] == "latent 256 + RoPE key 32"

    for kwargs, match in [(dict(kind="gqa", **smol), "needs n_kv_heads"),
                          (dict(kind="gqa", n_kv_heads=4, **smol), "must divide"),
                          (dict(kind="mha", n_kv_heads=3, **smol), "means n_kv_heads=9"),
                          (dict(kind="mqa", n_kv_heads=2, **smol), "means n_kv_heads=1"),
                          (dict(kind="xla", **smol), "kind must be one of")]:
        with pytest.raises(ValueError, match=match):
            kv_cache_bytes_per_token(**kwargs)
    with pytest.raises(TypeError, match="kv_lora_rank"):
        kv_cache_bytes_per_token("mla", n_layers=30, n_heads=9, qk_rope_head_dim=32)


def test_cache_tensors_are_the_size_the_arithmetic_says():
    # one MLA layer at SmolLM2's width with the table's MLA sizes, in bf16
    config = MLAConfig(hidden_size=576, num_heads=9, q_lora_rank=None, kv_lora_rank=256, qk_nope_head_dim=64,
                       qk_rope_head_dim=32, v_head_dim=64)
    layer = MultiHeadLatentAttention(config).to(torch.bfloat16).eval()
    B, T = 2, 5
    with torch.no_grad():
        _, cache = layer(torch.randn(B, T, 576, dtype=torch.bfloat16))
        _, cache = layer.forward_absorbed(torch.randn(B, 1, 576, dtype=torch.bfloat16), cache=cache)
    per_token = kv_cache_bytes_per_token("mla", n_layers=1, n_heads=9, kv_lora_rank=256, qk_rope_head_dim=32)
    assert cache.c_kv.dtype == torch.bfloat16 and cache.nbytes() == B * (T + 1) * per_token == 6912
    # thirty such layers: the table's 17280 bytes per token; HF's cache of the small pair holds the same
    mla_row = kv_cache_table(n_layers=30, n_heads=9, head_dim=64, n_kv_heads=3)[3]
    assert 30 * per_token == mla_row["bytes per token"] == 17280
    from transformers import DynamicCache

    ours, hf, hf_config = _pair()
    x = torch.randn(1, 4, 64)
    hf_cache = DynamicCache(config=hf_config)
    _hf_forward(hf, hf_config, x, torch.arange(4)[None], cache=hf_cache)
    _, cache = ours(x)
    hf_bytes = sum(t.numel() * t.element_size() for t in (hf_cache.layers[0].keys, hf_cache.layers[0].values))
    fp32 = kv_cache_bytes_per_token("mla", n_layers=1, n_heads=4, kv_lora_rank=16, qk_rope_head_dim=4,
                                    bytes_per_value=4)
    assert cache.nbytes() == hf_bytes == 4 * fp32 == 320
