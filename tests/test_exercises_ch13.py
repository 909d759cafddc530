"""Chapter 13's exercise checks (minillm.checks.ch13): each fails on the usual mistakes and says which
one it is, passes correct answers written differently from the reference, agrees with the package
(minillm.peft, minillm.quant) and leaves the global random state alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minillm.checks import ch13
from minillm.quant import dequantize_nf4, nf4_code_book, quantize_nf4


def _forward(kind):
    """The LoRA layer's forward as a learner might write it, with one mistake."""
    def lora_forward(x, W, A, B, alpha, r):
        scale = {"no scaling": 1.0, "alpha*r": alpha * r, "r/alpha": r / alpha, "rslora": alpha / r ** 0.5,
                 "floor": alpha // r}.get(kind, alpha / r)
        base = x @ W if kind == "W not transposed" else x @ W.T
        if kind == "no base":
            base = 0
        if kind == "delta not transposed":
            update = x @ (B @ A)
        elif kind == "A B swapped":
            update = (x @ B) @ A
        else:
            update = (x @ A.T) @ B.T
        out = base + scale * update if kind != "no lora" else base
        return out.float() if kind == "float32" else out
    return lora_forward


def _merge(kind):
    """Merging as a learner might write it, with one mistake."""
    def lora_merge(W, A, B, alpha, r):
        scale = {"no scaling": 1.0, "alpha*r": alpha * r, "rslora": alpha / r ** 0.5}.get(kind, alpha / r)
        delta = A.T @ B.T if kind == "transposed" else B @ A
        if kind == "delta only":
            return scale * delta
        if kind == "subtract":
            return W - scale * delta
        if kind == "in place":
            W += scale * delta
            return W
        return W + scale * delta
    return lora_merge


def _nf4(kind):
    """Block-wise NF4 quantization as a learner might write it, with one mistake."""
    def nf4_blocks(w, code, block_size):
        blocks = (w.t() if kind == "columns" else w).reshape(-1, block_size)  # (nb, block_size)
        if kind == "whole tensor":
            absmax = blocks.abs().max().repeat(blocks.size(0))
        elif kind == "signed max":
            absmax = blocks.max(dim=1).values
        else:
            absmax = blocks.abs().amax(dim=1)
        x = blocks / (absmax[:, None] if kind == "no guard" else torch.where(absmax > 0, absmax, 1.0)[:, None])
        if kind == "uniform":
            idx = torch.round((x + 1) / 2 * 15).long()  # 16 evenly spaced levels on [-1, 1]
            levels = torch.linspace(-1, 1, 16)
        else:
            idx = (x[..., None] - code).abs().argmin(-1)
            levels = code
        if kind == "float indices":
            return idx.float(), absmax, (levels[idx] * absmax[:, None]).reshape(w.shape)
        values = levels[idx] if kind == "no absmax" else levels[idx] * absmax[:, None]
        if kind == "columns":
            return idx, absmax, values.reshape(w.t().shape).t()
        return idx, absmax, values.reshape(w.shape)
    return nf4_blocks


def _count(kind):
    def lora_count(shapes, r):
        per_layer = {"full update": lambda i, o: i * o, "r*i*o": lambda i, o: r * i * o,
                     "only A": lambda i, o: r * i, "frozen counted": lambda i, o: i * o + r * (i + o),
                     "r squared": lambda i, o: r * r * (i + o)}.get(kind, lambda i, o: r * (i + o))
        if kind == "first only":
            return per_layer(*shapes[0])
        total = sum(per_layer(i, o) for i, o in shapes)
        return float(total) if kind == "float" else total
    return lora_count


CH13_MISTAKES = [
    ("check_lora_forward", _forward("no scaling"), "the scaling α/r is missing"),
    ("check_lora_forward", _forward("alpha*r"), "the update is scaled by α·r"),
    ("check_lora_forward", _forward("r/alpha"), "the update is scaled by r/α"),
    ("check_lora_forward", _forward("rslora"), "that is rsLoRA"),
    ("check_lora_forward", _forward("floor"), "alpha // r is integer division"),
    ("check_lora_forward", _forward("delta not transposed"), "multiply x by its transpose"),
    ("check_lora_forward", _forward("W not transposed"), "W is not transposed"),
    ("check_lora_forward", _forward("W not transposed"), "cannot be multiplied (10x16 and 24x16) — W is (O, I)"),
    ("check_lora_forward", _forward("A B swapped"), "cannot be multiplied"),
    ("check_lora_forward", _forward("no base"), "the frozen part W x is missing"),
    ("check_lora_forward", _forward("no lora"), "the LoRA branch is missing"),
    ("check_lora_forward", _forward("float32"), "expected dtype float64 like x, got float32"),
    ("check_lora_merge", _merge("no scaling"), "the scaling α/r is missing"),
    ("check_lora_merge", _merge("alpha*r"), "the update is scaled by α·r"),
    ("check_lora_merge", _merge("rslora"), "that is rsLoRA"),
    ("check_lora_merge", _merge("transposed"), "ΔW is transposed"),
    ("check_lora_merge", _merge("transposed"), "— B (O, r) @ A (r, I) is (O, I), the shape of W"),
    ("check_lora_merge", _merge("delta only"), "this is only ΔW"),
    ("check_lora_merge", _merge("subtract"), "that is unmerging"),
    ("check_lora_merge", _merge("in place"), "your function modified its input `W` in place"),
    ("check_nf4_blocks", _nf4("whole tensor"), "the absmax was taken over the whole tensor"),
    ("check_nf4_blocks", _nf4("uniform"), "the levels are evenly spaced"),
    ("check_nf4_blocks", _nf4("signed max"), "the block's maximum is signed"),
    ("check_nf4_blocks", _nf4("columns"), "the blocks run down the columns"),
    ("check_nf4_blocks", _nf4("no absmax"), "not multiplied back by their block's absmax"),
    ("check_nf4_blocks", _nf4("no guard"), "a block of zeros has absmax 0"),
    ("check_nf4_blocks", _nf4("float indices"), "indices: expected integer ids"),
    ("check_nf4_blocks", lambda w, code, bs: _nf4("ok")(w, code, bs)[:2],
     "expected a tuple (indices, absmax, dequantized), got a tuple of length 2"),
    ("check_lora_count", _count("full update"), "this is the size of the full update ΔW"),
    ("check_lora_count", _count("r*i*o"), "r · in · out counts a full matrix per rank"),
    ("check_lora_count", _count("only A"), "only A (r, in) was counted"),
    ("check_lora_count", _count("frozen counted"), "the frozen weight (in · out) was counted"),
    ("check_lora_count", _count("r squared"), "r² appears"),
    ("check_lora_count", _count("first only"), "only the first layer was counted"),
    ("check_lora_count", _count("float"), "expected an int, got the float"),
]


@pytest.mark.parametrize("check,fn,phrase", CH13_MISTAKES,
                         ids=[f"13-{c}-{k}" for k, (c, _, _) in enumerate(CH13_MISTAKES)])
def test_ch13_check_names_the_mistake(check, fn, phrase, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch13, check)(fn)
    assert not result.passed, f"{check} passes a wrong function (expected it to say {phrase!r})"
    assert phrase in result.report(), result.report()


def _nf4_bucketize(w, code, block_size):
    """NF4 through torch.bucketize on the midpoints between levels (as minillm.quant does)."""
    blocks = w.reshape(-1, block_size)
    absmax = blocks.abs().amax(dim=1)
    x = blocks / absmax.clamp_min(torch.finfo(absmax.dtype).tiny)[:, None]
    idx = torch.bucketize(x.double(), ((code[1:] + code[:-1]) / 2).double())
    return idx, absmax, (code[idx] * absmax[:, None]).view_as(w)


@pytest.mark.parametrize("check,fn", [
    ("check_lora_forward", _forward("ok")),
    ("check_lora_forward", lambda x, W, A, B, alpha, r: F.linear(x, W + alpha / r * (B @ A))),  # merged
    ("check_lora_forward", lambda x, W, A, B, alpha, r: F.linear(x, W) + F.linear(F.linear(x, A), B) * (alpha / r)),
    ("check_lora_merge", _merge("ok")),
    ("check_lora_merge", lambda W, A, B, alpha, r: torch.addmm(W, B, A, alpha=alpha / r)),
    ("check_nf4_blocks", _nf4("ok")),
    ("check_nf4_blocks", _nf4_bucketize),
    ("check_lora_count", _count("ok")),
    ("check_lora_count", lambda shapes, r: r * sum(map(sum, shapes))),
], ids=["forward", "forward-merged", "forward-F.linear", "merge", "merge-addmm", "nf4", "nf4-bucketize",
        "count", "count-sum"])
def test_ch13_other_correct_answers_pass(check, fn, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch13, check)(fn)
    assert result.passed, result.report()


def test_ch13_the_checks_own_versions_equal_the_package():
    """The unchanged variants the checks diagnose with equal the package's LoRA layer and NF4
    quantizer, so a mistake is named only when it really is that mistake."""
    g = torch.Generator().manual_seed(0)
    x, W = torch.randn(3, 7, 16, generator=g), torch.randn(24, 16, generator=g)
    A, B = torch.randn(4, 16, generator=g), torch.randn(24, 4, generator=g)
    for alpha, r in [(8, 4), (16, 4), (5, 4)]:
        torch.testing.assert_close(ch13._lora_forward_variant(x, W, A, B, alpha, r),
                                   ch13._ref_lora_forward(x, W, A, B, alpha, r))
        torch.testing.assert_close(ch13._merge_variant(W, A, B, alpha, r), ch13._ref_lora_merge(W, A, B, alpha, r))
    code = nf4_code_book()
    for shape, block in [((4, 64), 64), ((6, 32), 64), ((8, 16), 16)]:
        w = torch.randn(*shape, generator=g)
        idx, absmax, deq = ch13._ref_nf4_blocks(w, code, block)
        q = quantize_nf4(w, block)
        assert torch.equal(idx.reshape(-1), q.indices()) and torch.equal(absmax, q.absmax)
        assert torch.equal(deq, dequantize_nf4(q))
        v_idx, v_absmax, v_deq = ch13._nf4_variant(w, code, block)
        assert torch.equal(v_idx, idx) and torch.equal(v_absmax, absmax) and torch.equal(v_deq, deq)
    assert ch13._ref_lora_count([(384, 384)] * 12, 8) == 73_728  # MiniLM's query and value, r = 8


def test_ch13_checks_leave_the_global_random_state_alone(monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert ch13.check_lora_forward(_forward("ok")).passed
    assert ch13.check_lora_merge(_merge("ok")).passed
    assert ch13.check_lora_count(_count("ok")).passed
    assert torch.equal(torch.get_rng_state(), state)
