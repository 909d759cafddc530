"""Checks for chapter 13's exercises (LoRA and QLoRA): the forward pass of a LoRA linear layer,
merging the update into the frozen weight, NF4 block-wise quantization of a weight tensor, and the
number of weights LoRA trains.

Each check compares the learner's function with the package (``minillm.peft.LoraLinear`` — which
equals Hugging Face PEFT bit for bit, see ``tests/test_peft.py`` — and ``minillm.quant``) and, where
the answer is wrong, recomputes the usual mistakes on the same inputs (the scaling α/r forgotten,
α·r or α/√r instead of α/r, ΔW = B·A transposed, the absmax of the whole tensor instead of each
block, a uniform grid of 16 levels instead of NF4's, the frozen weight counted as trainable...) to
say which one it is.

``LoraLinear`` draws the initial values of A from the global random generator; the checks build it
inside ``torch.random.fork_rng``, so a learner's seeded notebook draws the same numbers before and
after a check.

Shape letters: I in_features, O out_features, r rank, N weights, nb blocks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import Case, CheckResult, compare, run_check
from .ch10 import _integer_result, _Recorder
from .ch11 import _diagnose, _dtype_name, _fork_rng, _Variants


def _lora_layer(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float, r: int):
    """The package's LoRA layer around a bias-free linear holding W, with A and B copied in."""
    from ..peft import LoraLinear

    O, I = W.shape
    with _fork_rng():
        layer = LoraLinear(nn.Linear(I, O, bias=False, dtype=W.dtype), r, alpha)
    with torch.no_grad():
        layer.base_layer.weight.copy_(W)
        layer.lora_A.weight.copy_(A)
        layer.lora_B.weight.copy_(B)
    return layer


def _explain_shape_errors(fn, explanation: str):
    """``fn`` with the message of a shape error extended by ``explanation`` (the traceback still
    points at the learner's line)."""
    if not callable(fn):
        return fn  # run_check says what it got

    def learner(*args):
        try:
            return fn(*args)
        except RuntimeError as exc:
            if exc.args and isinstance(exc.args[0], str) and (
                    "cannot be multiplied" in exc.args[0] or "must match the size" in exc.args[0]):
                exc.args = (f"{exc.args[0]} — {explanation}",) + exc.args[1:]
            raise
    learner.__signature__ = _signature(fn)
    return learner


def _signature(fn):
    import inspect

    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _scale_variants(alpha: float, r: int) -> list[tuple[str, float]]:
    """(sentence, wrong scaling) for the usual mistakes with α/r."""
    return [
        ("the scaling α/r is missing: the update is (alpha / r) · B·A x, not B·A x", 1.0),
        ("the update is scaled by α·r: it is α/r (a larger rank gets a *smaller* scale)", alpha * r),
        ("the update is scaled by r/α: it is α/r", r / alpha),
        ("the update is scaled by α/√r — that is rsLoRA (use_rslora=True); plain LoRA divides by r",
         alpha / math.sqrt(r)),
        ("alpha // r is integer division (8 // 3 = 2): compute alpha / r", float(alpha // r)),
    ]


# ----------------------------------------------------------------------------- 1. LoRA forward

def _ref_lora_forward(x, W, A, B, alpha, r):
    with torch.no_grad():
        return _lora_layer(W, A, B, alpha, r)(x)


def _lora_forward_variant(x, W, A, B, alpha, r, *, scale=None, delta_t=False, w_t=False, base=True,
                          lora=True):
    """W x + (α/r)·B(A x) written out, with one thing changed."""
    s = alpha / r if scale is None else scale
    out = (x @ W if w_t else x @ W.T) if base else 0
    if lora:
        delta = B @ A  # (O, I)
        out = out + s * (x @ (delta if delta_t else delta.T))
    return out


def _lora_forward_variants(x, W, A, B, alpha, r) -> _Variants:
    v = lambda **kw: lambda: _lora_forward_variant(x, W, A, B, alpha, r, **kw)  # noqa: E731
    out = [(sentence, v(scale=s)) for sentence, s in _scale_variants(alpha, r) if s != alpha / r]
    return out + [
        ("ΔW = B·A is (O, I) like W: multiply x by its transpose, x @ (B @ A).T = (x @ A.T) @ B.T",
         v(delta_t=True)),
        ("W is not transposed: nn.Linear stores a weight as (out_features, in_features), so the frozen "
         "part is x @ W.T", v(w_t=True)),
        ("the frozen part W x is missing: LoRA *adds* its update to the pretrained layer's output",
         v(base=False)),
        ("the LoRA branch is missing: add (alpha / r) · (x @ A.T) @ B.T", v(lora=False)),
    ]


def check_lora_forward(fn) -> CheckResult:
    """``fn(x, W, A, B, alpha, r)`` → ``x @ W.T + (alpha / r) · (x @ A.T) @ B.T`` for x (..., I),
    W (O, I), A (r, I), B (O, r): the output of ``minillm.peft.LoraLinear`` (= PEFT's LoRA layer)
    around a bias-free linear layer, in x's dtype."""
    g = torch.Generator().manual_seed(130)

    def case(shape, O, r, alpha, description, *, dtype=torch.float32, zero_b=False):
        I = shape[-1]
        x = torch.randn(*shape, generator=g)
        W = torch.randn(O, I, generator=g) / I ** 0.5
        A = torch.randn(r, I, generator=g) / I ** 0.5
        B = torch.zeros(O, r) if zero_b else torch.randn(O, r, generator=g) / r ** 0.5
        return Case((x.to(dtype), W.to(dtype), A.to(dtype), B.to(dtype), alpha, r), description=description)

    cases = [
        case((2, 5, 16), 24, 4, 8, "(B, T, I) = (2, 5, 16), O = 24, r = 4, alpha = 8: scaling 2"),
        case((3, 12), 12, 2, 16, "I = O = 12: W and B·A are square, so a missing transpose raises no error"),
        case((4, 10), 6, 3, 8, "r = 3, alpha = 8: the scaling 8/3 is not a whole number"),
        case((2, 3, 8), 8, 4, 16, "B = 0, as LoRA initialises it: the layer equals the frozen one exactly",
             zero_b=True),
        case((5, 16), 20, 1, 4, "float64, r = 1: the result stays float64", dtype=torch.float64),
    ]
    ref = _Recorder(_ref_lora_forward)

    def cmp(expected, got, **kw):
        if isinstance(got, torch.Tensor) and got.dtype != expected.dtype and got.shape == expected.shape:
            return (f"expected dtype {_dtype_name(expected.dtype)} like x, got {_dtype_name(got.dtype)}: "
                    f"compute in x's dtype")
        msg = compare(expected, got, atol=1e-5, rtol=1e-5)
        if msg is None:
            return None
        why = _diagnose(got, _lora_forward_variants(*ref.args), 1e-5)
        return f"{why} ({msg})" if why else msg

    learner = _explain_shape_errors(fn, "W is (O, I), A (r, I) and B (O, r), as nn.Linear stores weights "
                                        "(out_features, in_features): x @ W.T + (x @ A.T) @ B.T")
    return run_check("lora_forward", learner, ref, cases, compare_fn=cmp,
                     hint="return x @ W.T + (alpha / r) * ((x @ A.T) @ B.T) — A (r, I) maps x down to r "
                          "numbers, B (O, r) maps them up to O")


# ----------------------------------------------------------------------------- 2. merging

def _ref_lora_merge(W, A, B, alpha, r):
    layer = _lora_layer(W, A, B, alpha, r)
    layer.merge()
    return layer.base_layer.weight.detach().clone()


def _merge_variant(W, A, B, alpha, r, *, scale=None, transpose=False, base=1.0, delta_sign=1.0):
    s = alpha / r if scale is None else scale
    delta = B @ A  # (O, I)
    return base * W + delta_sign * s * (delta.T if transpose else delta)


def _merge_variants(W, A, B, alpha, r) -> _Variants:
    v = lambda **kw: lambda: _merge_variant(W, A, B, alpha, r, **kw)  # noqa: E731
    out = [(sentence, v(scale=s)) for sentence, s in _scale_variants(alpha, r) if s != alpha / r]
    return out + [
        ("ΔW is transposed: B (O, r) @ A (r, I) is (O, I), the shape of W — A.T @ B.T is its transpose",
         v(transpose=True)),
        ("this is only ΔW: the merged weight is W + ΔW", v(base=0.0)),
        ("ΔW was subtracted (that is unmerging): merging adds it, W + (alpha / r) · B @ A",
         v(delta_sign=-1.0)),
    ]


def check_lora_merge(fn) -> CheckResult:
    """``fn(W, A, B, alpha, r)`` → the merged weight ``W + (alpha / r) · B @ A`` (O, I), a new tensor
    (W itself unchanged), equal to ``minillm.peft.LoraLinear.merge`` (= PEFT's ``merge``)."""
    g = torch.Generator().manual_seed(131)

    def case(O, I, r, alpha, description, dtype=torch.float32):
        W = torch.randn(O, I, generator=g) / I ** 0.5
        A = torch.randn(r, I, generator=g) / I ** 0.5
        B = torch.randn(O, r, generator=g) / r ** 0.5
        return Case((W.to(dtype), A.to(dtype), B.to(dtype), alpha, r), description=description)

    cases = [
        case(24, 16, 4, 8, "W (24, 16), r = 4, alpha = 8: scaling 2"),
        case(12, 12, 2, 16, "a square W (12, 12): a transposed ΔW has the right shape but wrong values"),
        case(6, 10, 3, 8, "r = 3, alpha = 8: the scaling 8/3 is not a whole number"),
        case(384, 384, 8, 16, "one MiniLM query matrix (384, 384), r = 8, alpha = 16"),
        case(20, 16, 1, 4, "float64, r = 1: the result stays float64", dtype=torch.float64),
    ]
    ref = _Recorder(_ref_lora_merge)

    def cmp(expected, got, **kw):
        if isinstance(got, torch.Tensor) and got.dtype != expected.dtype and got.shape == expected.shape:
            return f"expected dtype {_dtype_name(expected.dtype)} like W, got {_dtype_name(got.dtype)}"
        msg = compare(expected, got, atol=1e-5, rtol=1e-5)
        if msg is None:
            return None
        why = _diagnose(got, _merge_variants(*ref.args), 1e-5)
        return f"{why} ({msg})" if why else msg

    learner = _explain_shape_errors(fn, "B (O, r) @ A (r, I) is (O, I), the shape of W")
    return run_check("lora_merge", learner, ref, cases, compare_fn=cmp,
                     hint="return W + (alpha / r) * (B @ A) — out of place, so that W can be restored "
                          "(unmerged) later")


# ----------------------------------------------------------------------------- 3. NF4 blocks

def _ref_nf4_blocks(w: torch.Tensor, code: torch.Tensor, block_size: int):
    """(indices (nb, block_size) int64, absmax (nb,) float32, de-quantized like w) from minillm.quant."""
    from ..quant import _nearest_level, dequantize_nf4, nf4_code_book, quantize_nf4

    blocks = w.detach().float().reshape(-1, block_size)  # (nb, block_size)
    absmax = blocks.abs().amax(dim=1)  # (nb,)
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    idx = _nearest_level(blocks.double() / safe.double().unsqueeze(1), code)  # (nb, block_size)
    deq = (code.float()[idx] * absmax.unsqueeze(1)).reshape(w.shape).to(w.dtype)
    if torch.equal(code, nf4_code_book()):  # NF4 itself: the package's quantizer says the same
        q = quantize_nf4(w, block_size)
        assert torch.equal(q.indices().view_as(idx), idx) and torch.equal(dequantize_nf4(q), deq)
    return idx, absmax, deq


def _nf4_variant(w, code, block_size, *, scope="block", grid=None, signed_max=False, columns=False,
                 rounding="nearest", times_absmax=True):
    """Block-wise absmax quantization written out, with one thing changed."""
    if columns and w.dim() != 2:
        raise ValueError("only a matrix has columns")
    src = w.T if columns else w
    blocks = src.float().reshape(-1, block_size)  # (nb, block_size)
    if scope == "tensor":
        absmax = blocks.abs().amax().expand(blocks.size(0))
    else:
        absmax = blocks.amax(dim=1) if signed_max else blocks.abs().amax(dim=1)
    x = blocks / torch.where(absmax != 0, absmax, torch.ones_like(absmax)).unsqueeze(1)
    levels = code if grid is None else grid
    if rounding == "floor":  # the level at or below x
        idx = (torch.searchsorted(levels.double().contiguous(), x.double().contiguous(), right=True) - 1).clamp(0, 15)
    else:
        idx = (x.unsqueeze(-1).double() - levels.double()).abs().argmin(-1)  # (nb, block_size)
    values = levels.float()[idx] * (absmax.unsqueeze(1) if times_absmax else 1)
    if columns:
        values = values.reshape(src.shape).T
    return idx, absmax, values.reshape(w.shape).to(w.dtype)


def _nf4_variants(w, code, block_size) -> _Variants:
    v = lambda **kw: lambda: _nf4_variant(w, code, block_size, **kw)  # noqa: E731
    uniform = torch.linspace(-1, 1, 16)
    return [
        ("the absmax was taken over the whole tensor: every block of block_size consecutive weights gets "
         "its own absmax, so one outlier only spoils its own block", v(scope="tensor")),
        ("the levels are evenly spaced (a uniform 4-bit grid, as int4 or Q4_1): round to the nearest of "
         "the 16 NF4 levels in `code`, which sit at normal quantiles", v(grid=uniform)),
        ("the levels are evenly spaced and the absmax covers the whole tensor: per block, and the nearest "
         "of the 16 NF4 levels in `code`", v(grid=uniform, scope="tensor")),
        ("the block's maximum is signed: the scale is the largest *magnitude*, w.abs().amax(), so that "
         "every w / absmax lies in [-1, 1]", v(signed_max=True)),
        ("the blocks run down the columns: a block is block_size consecutive values in row-major order, "
         "w.reshape(-1, block_size)", v(columns=True)),
        ("each weight went to the level at or below it: take the *nearest* level, "
         "(x[..., None] - code).abs().argmin(-1)", v(rounding="floor")),
        ("the de-quantized values were not multiplied back by their block's absmax: value = code[index] · "
         "absmax", v(times_absmax=False)),
    ]


def check_nf4_blocks(fn) -> CheckResult:
    """``fn(w, code, block_size)`` → ``(indices, absmax, dequantized)``: w cut into blocks of
    ``block_size`` consecutive (row-major) values; absmax (nb,) the largest magnitude of each block
    (float32); indices (nb, block_size) int64, the nearest level of ``code`` to each w / absmax (a block
    of zeros: the index of 0); dequantized ``code[indices] · absmax`` in w's shape and dtype. With the
    NF4 code book this is ``minillm.quant.quantize_nf4`` + ``dequantize_nf4`` (= bitsandbytes' NF4)."""
    from ..quant import nf4_code_book

    g = torch.Generator().manual_seed(132)
    code = nf4_code_book()
    zeros_inside = torch.randn(4, 64, generator=g) * 0.05
    zeros_inside[1] = 0.0  # one block of zeros (a pruned row)
    outlier = torch.randn(2, 128, generator=g) * 0.02
    outlier[0, 3] = 1.5  # one large weight in the first block
    cases = [
        Case((torch.randn(256, generator=g) * 0.05, code, 64), description="256 weights, 4 blocks of 64"),
        Case((outlier, code, 64),
             description="(2, 128) weights with one outlier: only its own block gets a large absmax"),
        Case((torch.randn(6, 32, generator=g) * 0.1, code, 64),
             description="(6, 32) weights: a block of 64 spans two rows (row-major order)"),
        Case((torch.randn(8, 16, generator=g), code, 16), description="block_size = 16, weights of scale 1"),
        Case((zeros_inside, code, 64),
             description="a block of 64 zeros: absmax 0, every index that of the level 0.0 (no NaN)"),
    ]
    ref = _Recorder(_ref_nf4_blocks)

    def cmp(expected, got, **kw):
        if isinstance(got, list):
            got = tuple(got)
        if not isinstance(got, tuple) or len(got) != 3:
            what = f"a {type(got).__name__}" + (f" of length {len(got)}" if isinstance(got, tuple) else "")
            return f"expected a tuple (indices, absmax, dequantized), got {what}"
        idx, absmax, deq = got
        zero_block = ("a block of zeros has absmax 0 and 0 / 0 is NaN: divide by torch.where(absmax > 0, "
                      "absmax, 1), so that its weights stay 0 and take the index of the level 0.0")
        if isinstance(deq, torch.Tensor) and deq.is_floating_point() and bool(deq.isnan().any()):
            return f"dequantized: got NaN — {zero_block}"
        msg = _integer_result(idx, "indices")
        if msg:
            return msg
        zero = expected[1] == 0  # (nb,) the blocks of zeros
        if (bool(zero.any()) and isinstance(idx, torch.Tensor) and idx.shape == expected[0].shape
                and torch.equal(idx[~zero], expected[0][~zero]) and not torch.equal(idx[zero], expected[0][zero])):
            return f"indices of the block of zeros: {zero_block} (got {idx[zero][0, :4].tolist()} …)"
        msg = (compare(expected[1], absmax, atol=1e-7, rtol=1e-6, path="absmax")
               or compare(expected[0], idx, path="indices")
               or compare(expected[2], deq, atol=1e-7, rtol=1e-5, path="dequantized"))
        if msg is None:
            return None
        why = _diagnose(got, _nf4_variants(*ref.args), 1e-7, 1e-5)
        return f"{why} ({msg})" if why else msg

    return run_check("nf4_blocks", fn, ref, cases, compare_fn=cmp,
                     hint="blocks = w.reshape(-1, block_size); absmax = blocks.abs().amax(dim=1); indices = "
                          "(x[..., None] - code).abs().argmin(-1) with x = blocks / absmax[:, None] (absmax 0 → "
                          "divide by 1); dequantized = (code[indices] * absmax[:, None]).reshape(w.shape)")


# ----------------------------------------------------------------------------- 4. counting

def _ref_lora_count(shapes, r) -> int:
    from ..peft import get_peft_model, LoraConfig

    model = nn.Sequential(*(nn.Linear(i, o, bias=False, device="meta") for i, o in shapes))
    with _fork_rng():
        peft_model = get_peft_model(model, LoraConfig(r=r, target_modules=r"\d+"))
    return peft_model.get_nb_trainable_parameters()[0]


def _count_variants(shapes, r) -> _Variants:
    total = lambda f: lambda: sum(f(i, o) for i, o in shapes)  # noqa: E731
    return [
        ("this is the size of the full update ΔW (in · out per layer): LoRA trains its two factors, "
         "A (r, in) and B (out, r) — r · (in + out) per layer", total(lambda i, o: i * o)),
        ("r · in · out counts a full matrix per rank: A is (r, in) and B is (out, r), so a layer has "
         "r · (in + out) trainable weights", total(lambda i, o: r * i * o)),
        ("only A (r, in) was counted: B (out, r) trains too", total(lambda i, o: r * i)),
        ("only B (out, r) was counted: A (r, in) trains too", total(lambda i, o: r * o)),
        ("the frozen weight (in · out) was counted: only A and B train, r · (in + out) per layer",
         total(lambda i, o: i * o + r * (i + o))),
        ("only the first layer was counted: add r · (in + out) for every layer of the list",
         lambda: r * (shapes[0][0] + shapes[0][1])),
        ("r² appears: A (r, in) and B (out, r) have r · in + out · r weights", total(lambda i, o: r * r * (i + o))),
    ]


def check_lora_count(fn) -> CheckResult:
    """``fn(shapes, r)`` → the number of weights LoRA of rank r trains on linear layers of the given
    ``(in_features, out_features)`` shapes: r · (in + out) per layer, an int — what
    ``print_trainable_parameters`` of ``minillm.peft`` (= PEFT) reports for those layers."""
    minilm_qv = [(384, 384)] * 12  # 6 layers × (query, value)
    minilm_all = [(384, 384)] * 24 + [(384, 1536), (1536, 384)] * 6
    cases = [
        Case(([(16, 24)], 4), description="one layer, in = 16, out = 24, r = 4"),
        Case((minilm_qv, 8), description="MiniLM's 12 query and value matrices (384 × 384), r = 8"),
        Case((minilm_all, 16), description="every linear layer of MiniLM's 6 blocks (q, k, v, o, up, down), r = 16"),
        Case(([(576, 576), (576, 192)], 1), description="SmolLM2's q_proj (576 → 576) and k_proj (576 → 192), r = 1"),
        Case(([(768, 2304)] * 12, 2), description="GPT-2's 12 fused c_attn layers (768 → 2,304), r = 2"),
    ]
    ref = _Recorder(_ref_lora_count)

    def cmp(expected, got, **kw):
        if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_floating_point():
            got = int(got)
        if isinstance(got, float) and got.is_integer():
            return f"expected an int, got the float {got!r}: count with integers (no / division)"
        msg = compare(expected, got, atol=0, rtol=0, path="count")
        if msg is None:
            return None
        why = _diagnose(got, _count_variants(*ref.args), 0, 0)
        return f"{why} ({msg})" if why else msg

    return run_check("lora_count", fn, ref, cases, compare_fn=cmp,
                     hint="return sum(r * (i + o) for i, o in shapes): A (r, in) + B (out, r) per layer")


__all__ = ["check_lora_count", "check_lora_forward", "check_lora_merge", "check_nf4_blocks"]
