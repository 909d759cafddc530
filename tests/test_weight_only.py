"""Weight-only int8/int4 quantization (minillm.weight_only): round-trip error within half a step,
the packing order, torch's fused CPU kernels against independent slow twins (fp32 and bf16, batch 1
and more, with and without bias, the fallback layout), a tiny quantized Llama close to its fp32
logits with KV-cached greedy decoding equal to recomputed decoding, weight bytes, and clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minillm.models.llama import LlamaConfig, LlamaForCausalLM
from minillm.weight_only import (Int4Linear, Int8Linear, dequantize_int4, dequantize_int8,
                                 perplexity, quantize_int4, quantize_int8, quantize_weights,
                                 weight_bytes)

BF16_ULP = 2.0 ** -8  # spacing of bf16 numbers in [1, 2): the kernels round their output to it


def randn(*shape, seed=0, std=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * std


def linear(K, N, bias=True, seed=0):
    layer = nn.Linear(K, N, bias=bias)
    with torch.no_grad():
        layer.weight.copy_(randn(N, K, seed=seed, std=0.1))
        if bias:
            layer.bias.copy_(randn(N, seed=seed + 1, std=0.1))
    return layer.requires_grad_(False)


def unpack(codes):
    """Our own reading of the packing: byte j of a row holds codes 2j (high) and 2j+1 (low)."""
    return torch.stack([codes.long() // 16, codes.long() % 16], dim=2).flatten(1)


def rounded(t, dtype):
    return t.to(dtype).float()


# ------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("shape", [(48, 64), (7, 13), (1, 1)])
def test_int8_round_trip_within_half_a_step(shape):
    w = randn(*shape, seed=1)
    w[0, :] = 0  # an all-zero row: scale 0, codes 0, exact
    q, scales = quantize_int8(w)
    assert q.dtype == torch.int8 and q.shape == w.shape and scales.shape == (shape[0],)
    assert int(q.abs().max()) <= 127 and not bool((q == -128).any())
    torch.testing.assert_close(scales, w.abs().amax(1) / 127)
    err = (w - dequantize_int8(q, scales)).abs()
    assert bool((err <= scales[:, None] / 2 * (1 + 1e-6) + 1e-7).all())
    nonzero = scales > 0
    assert bool((q[nonzero].abs().amax(1) == 127).all())  # each row's largest weight hits ±127
    assert bool((dequantize_int8(q, scales)[0] == 0).all())


@pytest.mark.parametrize("shape,group_size", [((48, 64), 32), ((16, 256), 64), ((5, 12), 4)])
def test_int4_round_trip_within_half_a_step(shape, group_size):
    w = randn(*shape, seed=2)
    w[0, :group_size] = 0.25  # a constant group: scale 0, the value kept exactly
    codes, scales, mins = quantize_int4(w, group_size)
    N, K = shape
    G = K // group_size
    assert codes.dtype == torch.uint8 and codes.shape == (N, K // 2)
    assert scales.shape == mins.shape == (N, G)
    groups = w.view(N, G, group_size)
    torch.testing.assert_close(mins, groups.amin(2))
    torch.testing.assert_close(scales, (groups.amax(2) - groups.amin(2)) / 15)
    deq = dequantize_int4(codes, scales, mins)
    err = (w - deq).abs().view(N, G, group_size)
    assert bool((err <= scales[..., None] / 2 * (1 + 1e-6) + 1e-6).all())
    assert float(deq[0, 0]) == 0.25 and float(scales[0, 0]) == 0
    q = unpack(codes).view(N, G, group_size)[scales > 0]  # (groups, g), the constant one left out
    assert bool((q.amin(1) == 0).all() and (q.amax(1) == 15).all())  # min and max: levels 0 and 15


def test_int4_packing_order_first_code_in_high_nibble():
    w = torch.arange(32.0).view(1, 32)  # min 0, scale 31/15: codes round(i · 15/31)
    codes, scales, mins = quantize_int4(w, 32)
    q = torch.round(torch.arange(32.0) * 15 / 31).long()
    assert codes[0, 0] == (q[0] << 4 | q[1]) and codes[0, 5] == (q[10] << 4 | q[11])
    torch.testing.assert_close(dequantize_int4(codes, scales, mins), q.float().view(1, 32) * 31 / 15 + 0)


# ------------------------------------------------------------------ fused kernels vs slow twins

SHAPES = [(64, 48), (576, 192), (128, 256)]  # (K, N)


@pytest.mark.parametrize("K,N", SHAPES)
@pytest.mark.parametrize("M", [1, 5])
@pytest.mark.parametrize("bias", [True, False])
def test_int8_kernel_matches_slow_twins(K, N, M, bias):
    lin = linear(K, N, bias, seed=K + N)
    x = randn(M, K, seed=3)
    q, scales = quantize_int8(lin.weight)
    b = lin.bias if bias else None
    for cd, tol in ((torch.float32, 1e-5), (torch.bfloat16, BF16_ULP)):
        layer = Int8Linear.from_linear(lin, compute_dtype=cd)
        assert layer.fused  # the kernel runs on this torch/CPU (the layer would fall back otherwise)
        with torch.inference_mode():
            fused, twin = layer(x), layer.forward_reference(x)
        # an independent twin: the same roundings (input and scales in cd), float32 arithmetic
        w = q.float() * rounded(scales, cd)[:, None]
        expected = rounded(F.linear(rounded(x, cd), w), cd) + (0 if b is None else b)
        assert fused.dtype == torch.float32 and fused.shape == (M, N)
        scale = float(expected.abs().max())
        torch.testing.assert_close(fused, expected, rtol=tol, atol=tol * scale)
        torch.testing.assert_close(twin, expected, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("K,N", SHAPES)
@pytest.mark.parametrize("M", [1, 5])
@pytest.mark.parametrize("group_size", [32, 64])
def test_int4_kernel_matches_slow_twins(K, N, M, group_size):
    lin = linear(K, N, True, seed=K + N)
    x = randn(M, K, seed=4)
    codes, scales, mins = quantize_int4(lin.weight, group_size)
    for cd, tol in ((torch.float32, 1e-5), (torch.bfloat16, BF16_ULP)):
        layer = Int4Linear.from_linear(lin, group_size, compute_dtype=cd)
        assert layer.fused and layer.layout == "cpu_kernel"
        assert torch.equal(layer.codes(), unpack(codes))  # the kernel's layout unpacks to our codes
        with torch.inference_mode():
            fused, twin = layer(x), layer.forward_reference(x)
        # the kernel's convention: (q - 8) · scale + zero, zero = min + 8 · scale, both in cd
        s = rounded(scales, cd).repeat_interleave(group_size, 1)
        z = rounded(mins + 8 * scales, cd).repeat_interleave(group_size, 1)
        w = (unpack(codes).float() - 8) * s + z
        expected = rounded(F.linear(rounded(x, cd), w), cd) + lin.bias
        scale = float(expected.abs().max())
        torch.testing.assert_close(fused, expected, rtol=tol, atol=tol * scale)
        torch.testing.assert_close(twin, expected, rtol=tol, atol=tol * scale)
        # and the twin is the format's own de-quantization, up to rounding the scales to cd
        torch.testing.assert_close(w, dequantize_int4(codes, scales, mins),
                                   rtol=0, atol=4e-2 if cd == torch.bfloat16 else 1e-6)


def test_3d_input_bf16_input_and_reference_flag():
    lin = linear(64, 32)
    x = randn(2, 3, 64, seed=5)
    for layer in (Int8Linear.from_linear(lin), Int4Linear.from_linear(lin)):
        with torch.inference_mode():
            y = layer(x)
            assert y.shape == (2, 3, 32)
            torch.testing.assert_close(y[1, 2], layer(x[1, 2:3])[0])  # rows are independent
            yb = layer(x.bfloat16())
            assert yb.dtype == torch.bfloat16
            layer.use_reference = True
            torch.testing.assert_close(layer(x), layer.forward_reference(x))
        assert "fused=True" in repr(layer)


def test_int4_falls_back_to_row_layout_where_the_kernel_cannot_run():
    for N, group_size in ((24, 32), (32, 16)):  # N not a multiple of 16; a group size it refuses
        lin = linear(64, N, seed=N)
        layer = Int4Linear.from_linear(lin, group_size)
        assert not layer.fused and layer.layout == "rows" and "fused=False" in repr(layer)
        codes, scales, mins = quantize_int4(lin.weight, group_size)
        assert torch.equal(layer.qweight, codes)
        x = randn(3, 64, seed=6)
        w = (unpack(codes).float() - 8) * rounded(scales, torch.bfloat16).repeat_interleave(group_size, 1) \
            + rounded(mins + 8 * scales, torch.bfloat16).repeat_interleave(group_size, 1)
        expected = rounded(F.linear(rounded(x, torch.bfloat16), w), torch.bfloat16) + lin.bias
        torch.testing.assert_close(layer(x), expected)


def test_layers_fall_back_to_the_slow_twin_without_the_kernels(monkeypatch):
    import minillm.weight_only as wo

    lin = linear(64, 32)
    x = randn(3, 64, seed=9)
    with torch.inference_mode():
        expected = {8: Int8Linear.from_linear(lin)(x), 4: Int4Linear.from_linear(lin)(x)}
    monkeypatch.delattr(torch, "_weight_int8pack_mm")  # as on a torch without the kernels
    monkeypatch.delattr(torch, "_weight_int4pack_mm_for_cpu")
    wo._kernel_works.cache_clear()
    try:
        for bits, layer in ((8, Int8Linear.from_linear(lin)), (4, Int4Linear.from_linear(lin))):
            assert not layer.fused and "fused=False" in repr(layer)
            with torch.inference_mode():
                torch.testing.assert_close(layer(x), expected[bits], rtol=BF16_ULP, atol=1e-3)
    finally:
        wo._kernel_works.cache_clear()  # the next layers probe the real kernels again


# ------------------------------------------------------------------------------- a tiny Llama


def tiny_llama(seed=0, std=0.2):
    """A tiny random Llama (tied head, q/k/v/o biases). std=0.02 is Hugging Face's initialisation
    (logits ~0.2, max ~1.3); std=0.2 gives sharp logits (max ~6), so greedy choices are not
    near-ties that any rounding flips."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig.tiny(tie_word_embeddings=True, attention_bias=True))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, std)
    return model.eval()


def test_tiny_llama_quantized_logits_close_to_fp32():
    model = tiny_llama(std=0.02)
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        expected = model(ids)
        bf16 = copy.deepcopy(model).to(torch.bfloat16)(ids).float()
    err = {}
    for bits in (8, 4):
        q = quantize_weights(copy.deepcopy(model), bits)
        assert sum(isinstance(m, (Int8Linear, Int4Linear)) for m in q.modules()) == 2 * 7 + 1
        assert not any(isinstance(m, nn.Linear) for m in q.modules())
        with torch.inference_mode():
            err[bits] = float((q(ids) - expected).abs().max() / expected.abs().max())
    # int8: each weight moves by at most 1/254 of its row's largest (0.4%), each kernel input and
    # output by at most 2^-9 (bf16, 0.2%): a few tenths of a percent per matrix product, and the
    # 15 products of this model partly average out (measured: 0.6%, the whole model in bf16: 0.4%).
    # int4: 16 levels per group of 32, steps ~14x coarser, and the logits move ~10x more (5.7%).
    bf16_err = float((bf16 - expected).abs().max() / expected.abs().max())
    assert err[8] < 0.02 and err[8] < 4 * bf16_err, (err, bf16_err)
    assert err[8] < err[4] < 0.2, err


def test_tiny_llama_cached_greedy_equals_recomputed_and_slow_twins():
    model = tiny_llama(std=0.2)
    ids = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(7))
    for bits in (8, 4):
        q = quantize_weights(copy.deepcopy(model), bits)
        cached = q.generate(ids, 12)
        assert cached.shape == (2, 18)
        assert torch.equal(cached, q.generate(ids, 12, use_cache=False))
        for m in q.modules():
            m.use_reference = True  # the whole model on the slow twins: the same tokens
        assert torch.equal(cached, q.generate(ids, 12))


def test_int8_fp32_compute_is_much_closer_than_bf16():
    model = tiny_llama(1, std=0.02)
    ids = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(8))
    with torch.inference_mode():
        expected = model(ids)
        err = {cd: float((quantize_weights(copy.deepcopy(model), 8, compute_dtype=cd)(ids) - expected)
                         .abs().max()) for cd in (torch.float32, torch.bfloat16)}
    assert err[torch.float32] < err[torch.bfloat16]


def test_weight_bytes_and_skip():
    model = tiny_llama()
    fp32 = weight_bytes(model)
    assert fp32 == 4 * model.num_params()  # the tied matrix once
    int8 = weight_bytes(quantize_weights(copy.deepcopy(model), 8))
    int4 = weight_bytes(quantize_weights(copy.deepcopy(model), 4))
    linear_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    # every linear weight: 4 bytes → 1 (int8) or 0.5 + 2 bf16 per 32 (int4); the embedding stays fp32
    assert int8 < fp32 and int4 < int8
    assert fp32 - int8 > 0.7 * (4 - 1) * (linear_params - 256 * 64)
    kept = quantize_weights(copy.deepcopy(model), 8, skip=("lm_head",))
    assert isinstance(kept.lm_head, nn.Linear) and kept.lm_head.weight is kept.model.embed_tokens.weight
    assert perplexity(model, torch.randint(0, 256, (1, 8))) > 1


# ------------------------------------------------------------------------------------- errors


def test_clear_errors():
    with pytest.raises(ValueError, match="2 dimensions"):
        quantize_int8(torch.randn(8))
    with pytest.raises(TypeError, match="float dtype"):
        quantize_int8(torch.ones(4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="finite"):
        quantize_int4(torch.tensor([[float("nan")] * 32]))
    with pytest.raises(ValueError, match="K=48 must be divisible by group_size=32"):
        quantize_int4(torch.randn(4, 48), 32)
    with pytest.raises(ValueError, match="even"):
        quantize_int4(torch.randn(4, 48), 3)
    with pytest.raises(TypeError, match="q must be int8"):
        dequantize_int8(torch.zeros(2, 2, dtype=torch.uint8), torch.ones(2))
    with pytest.raises(ValueError, match="one value per row"):
        dequantize_int8(torch.zeros(2, 2, dtype=torch.int8), torch.ones(3))
    with pytest.raises(ValueError, match="mins must have shape"):
        dequantize_int4(torch.zeros(2, 16, dtype=torch.uint8), torch.ones(2, 1), torch.ones(3, 1))
    with pytest.raises(TypeError, match="torch.nn.Linear"):
        Int8Linear.from_linear(nn.Conv1d(4, 4, 1))
    with pytest.raises(ValueError, match="compute_dtype"):
        Int8Linear.from_linear(nn.Linear(4, 4), compute_dtype=torch.float64)
    layer = Int8Linear.from_linear(nn.Linear(8, 4))
    with pytest.raises(ValueError, match=r"in_features=8\), got \(2, 7\)"):
        layer(torch.randn(2, 7))
    with pytest.raises(TypeError, match="float dtype"):
        layer(torch.ones(2, 8, dtype=torch.long))
    model = tiny_llama()
    with pytest.raises(ValueError, match="bits must be one of"):
        quantize_weights(model, 3)
    with pytest.raises(ValueError, match="'model.layers.0.self_attn.q_proj' has in_features=64, not "
                                         "divisible by group_size=96"):
        quantize_weights(copy.deepcopy(model), 4, group_size=96)
    with pytest.raises(TypeError, match="group_size must be an int"):
        quantize_weights(copy.deepcopy(model), 4, group_size=32.0)
    with pytest.raises(ValueError, match="no linear layer"):
        quantize_weights(model, 8, target=lambda name, m: False)
    with pytest.raises(TypeError, match="sequence of module names"):
        quantize_weights(model, 8, skip="lm_head")
