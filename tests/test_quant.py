"""NF4 quantization (minillm.quant, QLoRA): the code book against the paper's published values and
bitsandbytes, quantize/de-quantize against a float64 brute-force nearest-level reference, packing
and measured bits per parameter, double quantization, Linear4bit against nn.Linear, byte-for-byte
parity with bitsandbytes' CPU NF4, NF4 against a uniform 4-bit grid, QLoRA on a tiny Llama through
minillm.peft, and clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minillm.models.llama import LlamaConfig, LlamaForCausalLM
from minillm.peft import LoraConfig, LoraLinear, get_peft_model
from minillm.quant import (Linear4bit, NF4Tensor, dequantize_model, dequantize_nf4, nf4_code_book,
                           quantize_model, quantize_nf4)

# QLoRA (Dettmers et al., 2023), appendix: the NF4 data type's 16 values
PAPER_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
             -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
             0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
             0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def brute_force(w: torch.Tensor, code: torch.Tensor, block_size: int):
    """Float64 reference: (level index (N,), block absmax (nb,), de-quantized float32 (N,)) with the
    nearest level found by argmin over all 16 distances."""
    flat = w.reshape(-1).double()
    n = flat.numel()
    blocks = F.pad(flat, (0, -n % block_size)).view(-1, block_size)
    absmax = blocks.abs().amax(dim=1)
    x = blocks / torch.where(absmax > 0, absmax, torch.ones_like(absmax)).unsqueeze(1)
    idx = (x.unsqueeze(-1) - code.double()).abs().argmin(dim=-1)  # (nb, block_size)
    deq = code.float()[idx] * absmax.float().unsqueeze(1)  # float32, as dequantize_nf4 computes
    return idx.reshape(-1)[:n], absmax.float(), deq.reshape(-1)[:n]


def test_code_book_is_the_papers():
    code = nf4_code_book()
    assert code.dtype == torch.float32 and code.shape == (16,)
    torch.testing.assert_close(code, torch.tensor(PAPER_NF4), rtol=0, atol=1e-6)
    assert bool((code[1:] > code[:-1]).all())  # strictly increasing
    assert int((code == 0).sum()) == 1 and code[0] == -1 and code[-1] == 1
    assert int((code > 0).sum()) == 8 and int((code < 0).sum()) == 7  # the extra positive level


@pytest.mark.parametrize("shape,block_size,dtype", [((48, 64), 64, torch.float32),
                                                    ((50, 77), 64, torch.float32),  # a short last block
                                                    ((33, 31), 16, torch.bfloat16)])
def test_dequantized_values_are_nearest_level_times_absmax(shape, block_size, dtype):
    w = randn(*shape, seed=1, dtype=dtype)
    code = nf4_code_book()
    q = quantize_nf4(w, block_size)
    ref_idx, ref_absmax, ref = brute_force(w, code, block_size)
    assert torch.equal(q.absmax, ref_absmax)
    assert torch.equal(q.indices(), ref_idx)
    d = dequantize_nf4(q)
    assert d.shape == w.shape and d.dtype == dtype
    assert torch.equal(d, ref.view(shape).to(dtype))
    # the rounding error is at most half the widest gap between levels, times the block's absmax
    err = (d.float() - w.float()).reshape(-1)
    err = F.pad(err, (0, -err.numel() % block_size)).view(-1, block_size).abs()
    half_gap = float((code[1:] - code[:-1]).max()) / 2
    assert bool((err <= half_gap * ref_absmax.unsqueeze(1) * (1 + 1e-6)).all())
    # the element that set each block's absmax maps to ±1 and comes back exactly
    blocks = F.pad(w.float().reshape(-1), (0, -w.numel() % block_size)).view(-1, block_size)
    dblocks = F.pad(d.float().reshape(-1), (0, -w.numel() % block_size)).view(-1, block_size)
    at = blocks.abs().argmax(dim=1, keepdim=True)
    assert torch.equal(dblocks.gather(1, at), blocks.gather(1, at))


def test_packing_and_measured_bits_per_parameter():
    w = randn(256, 1024, seed=2)  # 262,144 weights: 4,096 blocks of 64, 16 blocks of 256 scales
    q = quantize_nf4(w)
    c = q.codes
    assert c.dtype == torch.uint8 and c.numel() == w.numel() // 2
    unpacked = torch.stack([c.long() >> 4, c.long() & 0xF], dim=1).reshape(-1)  # high nibble first
    ref_idx, _, _ = brute_force(w, nf4_code_book(), 64)
    assert torch.equal(unpacked, ref_idx)
    assert q.nbytes == c.numel() + 4 * q.absmax.numel()
    assert q.bits_per_parameter == 4.5  # 4 + 32/64
    dq = quantize_nf4(w, double_quant=True)
    assert dq.absmax.dtype == torch.int8 and dq.absmax_scale.numel() == 16
    assert dq.bits_per_parameter < 4.2
    assert dq.bits_per_parameter == pytest.approx(4 + 8 / 64 + 32 / (64 * 256) + 32 / w.numel())
    assert torch.equal(dq.codes, q.codes)  # double quantization only touches the scales
    odd = quantize_nf4(randn(3, 7))  # 21 weights: 11 bytes, the last low nibble is padding
    assert odd.codes.numel() == 11 and dequantize_nf4(odd).shape == (3, 7)


def test_double_quant_and_linear4bit():
    w = randn(64, 1024, seed=3)  # 1,024 absmax values: 4 blocks of 256
    q, dq = quantize_nf4(w), quantize_nf4(w, double_quant=True)
    step = dq.absmax_scale / 127  # the int8 step of each block of 256 scales
    err = (dq.scales() - q.absmax).view(-1, 256).abs()
    assert bool((err <= step.unsqueeze(1) / 2 + 1e-6 * q.absmax.max()).all())
    assert float(err.max()) > 0  # the scales really were rounded
    assert torch.equal(dq.indices(), q.indices())

    torch.manual_seed(0)
    linear = nn.Linear(256, 96)
    layer = Linear4bit.from_linear(linear, double_quant=True)
    assert list(layer.parameters()) and not any(p.requires_grad for p in layer.parameters())
    x = randn(4, 5, 256, seed=4)
    y, y_ref = layer(x), linear(x).detach()
    w_q = dequantize_nf4(layer.weight_q)
    assert torch.equal(y, F.linear(x, w_q, linear.bias))  # the forward is exactly this
    # |(W - W_q) x| <= |W - W_q| |x| element by element, and the relative error is NF4's ~10%
    bound = x.abs() @ (linear.weight - w_q).abs().T.detach()
    assert bool(((y - y_ref).abs() <= bound + 1e-5).all())
    assert float((y - y_ref).norm() / y_ref.norm()) < 0.15
    assert torch.equal(layer.weight, w_q)
    fresh = Linear4bit.from_linear(nn.Linear(256, 96), double_quant=True)
    fresh.load_state_dict(layer.state_dict())  # codes and scales are the state
    assert torch.equal(fresh(x), y)
    plain = layer.to_linear()
    assert type(plain) is nn.Linear and torch.equal(plain(x), y)


def test_bitsandbytes_parity():
    bnb_f = pytest.importorskip("bitsandbytes.functional")
    assert torch.equal(bnb_f.get_4bit_type("nf4", device="cpu"), nf4_code_book())
    midpoints = (nf4_code_book()[1:] + nf4_code_book()[:-1]).double() / 2
    for shape, dtype in [((128, 256), torch.float32), ((33, 65), torch.bfloat16), ((7, 13), torch.float16)]:
        w = randn(*shape, seed=5, dtype=dtype)
        try:
            packed, state = bnb_f.quantize_4bit(w, blocksize=64, quant_type="nf4",
                                                compress_statistics=False)
        except (RuntimeError, NotImplementedError) as e:  # a bitsandbytes build without CPU NF4
            pytest.skip(f"bitsandbytes' quantize_4bit does not run on CPU here: {e}")
        q = quantize_nf4(w, 64)
        assert torch.equal(state.absmax, q.absmax)
        bytes_differ = packed.reshape(-1) != q.codes
        if bool(bytes_differ.any()):
            # bitsandbytes scales in float32 (x · (1/absmax)), here in float64: only values on a
            # midpoint to float32 precision may take the other level
            _, absmax, _ = brute_force(w, nf4_code_book(), 64)
            x = w.double().reshape(-1) / absmax.double().repeat_interleave(64)[:w.numel()]
            near = ((x.unsqueeze(1) - midpoints).abs().amin(dim=1) < 1e-6)
            near = F.pad(near, (0, near.numel() % 2)).view(-1, 2).any(dim=1)
            assert bool((~bytes_differ | near).all())
        else:
            assert torch.equal(bnb_f.dequantize_4bit(packed, state), dequantize_nf4(q))


def test_nf4_beats_a_uniform_grid_on_normal_weights():
    code, uniform = nf4_code_book(), torch.linspace(-1, 1, 16)
    normal = randn(512, 512, seed=6)
    mse = {name: float((brute_force(normal, c, 64)[2] - normal.reshape(-1)).pow(2).mean())
           for name, c in (("nf4", code), ("uniform", uniform))}
    assert mse["nf4"] < mse["uniform"]
    assert float((dequantize_nf4(quantize_nf4(normal)) - normal).pow(2).mean()) == pytest.approx(mse["nf4"])
    # the advantage comes from the normal shape: on uniformly distributed weights the even grid wins
    flat = torch.rand(512, 512, generator=torch.Generator().manual_seed(7)) * 2 - 1
    mse_flat = {name: float((brute_force(flat, c, 64)[2] - flat.reshape(-1)).pow(2).mean())
                for name, c in (("nf4", code), ("uniform", uniform))}
    assert mse_flat["uniform"] < mse_flat["nf4"]


def test_qlora_on_a_tiny_llama():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig.tiny()).eval()
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        full = model(ids)
        quantized = quantize_model(copy.deepcopy(model))
        logits_q = quantized(ids)
    names = [n for n, m in quantized.named_modules() if isinstance(m, Linear4bit)]
    assert len(names) == 2 * 7 and not any("lm_head" in n for n in names)  # q k v o gate up down
    assert float((logits_q - full).norm() / full.norm()) < 0.5  # close to, not equal to, fp32
    assert not torch.equal(logits_q, full)

    qlora = get_peft_model(quantized, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    layer = qlora.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, LoraLinear) and isinstance(layer.base_layer, Linear4bit)
    trainable = [n for n, p in qlora.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * 2 * 2  # 2 layers × (q, v) × (A, B)
    with torch.no_grad():
        assert torch.equal(qlora(ids), logits_q)  # B = 0: exactly the quantized model

    codes = layer.base_layer.codes.clone()
    opt = torch.optim.AdamW([p for p in qlora.parameters() if p.requires_grad], lr=1e-2)
    loss0 = F.cross_entropy(qlora(ids)[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1))
    loss0.backward()
    opt.step()
    with torch.no_grad():
        loss1 = F.cross_entropy(qlora(ids)[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1))
    assert loss1.item() != loss0.item()
    assert torch.equal(layer.base_layer.codes, codes)  # the 4-bit base stays frozen

    with torch.no_grad():
        trained = qlora(ids)
    with pytest.raises(AttributeError, match="dequantize_model"):
        qlora.merge_and_unload()  # refused before anything is changed
    assert not layer.merged
    merged = dequantize_model(qlora).merge_and_unload()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids), trained, rtol=1e-5, atol=1e-5)


def test_errors_and_edge_cases():
    with pytest.raises(TypeError, match="float"):
        quantize_nf4(torch.arange(64))
    with pytest.raises(ValueError, match="block_size"):
        quantize_nf4(randn(64), block_size=0)
    with pytest.raises(ValueError, match="finite"):
        quantize_nf4(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="at least one"):
        quantize_nf4(torch.zeros(0))
    with pytest.raises(TypeError, match="NF4Tensor"):
        dequantize_nf4(randn(4))
    zeros = quantize_nf4(torch.zeros(2, 64), double_quant=True)  # absmax 0: no division by zero
    assert torch.equal(dequantize_nf4(zeros), torch.zeros(2, 64))
    assert isinstance(zeros, NF4Tensor)
    tied = LlamaForCausalLM(LlamaConfig.tiny(tie_word_embeddings=True))
    with pytest.raises(ValueError, match="lm_head"):
        quantize_model(tied, skip=())
    with pytest.raises(ValueError, match="no linear layer"):
        quantize_model(tied, target=lambda name, module: False)
    with pytest.raises(TypeError, match="nn.Linear"):
        Linear4bit.from_linear(nn.Conv1d(2, 2, 1))


def test_linear4bit_backward_equals_the_dequantized_linear_and_saves_no_float_weight():
    # The custom autograd function de-quantizes again in the backward instead of saving the
    # full-precision weight: same gradients as F.linear on the de-quantized weight, less saved memory.
    torch.manual_seed(0)
    layer = Linear4bit.from_linear(nn.Linear(256, 128), double_quant=True)
    w = dequantize_nf4(layer.weight_q)  # (O, I)
    x = torch.randn(2, 5, 256, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    bias = layer.bias.detach().clone().requires_grad_(True)
    layer.bias.requires_grad_(True)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = layer(x)
    ref = F.linear(x_ref, w, bias)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(layer.bias.grad, bias.grad)
    assert not any(t.numel() >= w.numel() for t in saved), "a full-size weight was saved for backward"
