"""Checks for chapter 16's exercises (efficiency and scale): averaging gradients across data-parallel
ranks (the all-reduce behind DDP), int8 per-channel weight quantization and its inverse, greedy
speculative decoding's acceptance rule, and the distillation loss with a temperature.

Each check compares the learner's function with the package where the package has it
(``minillm.weight_only.quantize_int8`` / ``dequantize_int8``, ``minillm.speculative.greedy_accept``,
``minillm.distill.kd_loss``; the all-reduce's reference — sum over the ranks, then divide by the world
size, what ``torch.distributed.all_reduce`` with ``SUM`` followed by ``/ world_size`` does in DDP — is
written out here) and, where the answer is wrong, recomputes the usual mistakes on the same inputs (a
sum without the division, rank 0's gradient alone, a mean over the parameters; one scale per tensor or
per column, 255 or 128 levels, truncation or floor, no clamp; counting every matching guess, dropping
the target's token, the draft's token at the mismatch, comparing with the picks shifted by one; T²
missing, the KL backwards, the temperature on one side, a mean over every element...) to say which one
it is.

The checks draw their inputs from their own seeded generators and build no module, so a learner's
seeded notebook draws the same numbers before and after a check.

Shape letters: W world size (ranks), P parameters, N output rows (weights) or positions (logits), K
input columns, k draft tokens, V vocabulary.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F

from . import Case, CheckResult, compare, run_check
from .ch10 import _integer_result, _Recorder
from .ch11 import _diagnose, _dtype_name, _Variants
from .ch14 import _explain_errors, _non_finite


def _short_shape(t: Any) -> str:
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


# ----------------------------------------------------------------------------- 1. all-reduce

def _ref_all_reduce_mean(grads_per_rank: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Each parameter's gradient summed over the W ranks, then divided by W (DDP's all-reduce)."""
    W = len(grads_per_rank)
    return [torch.stack(list(per_rank)).sum(0) / W for per_rank in zip(*grads_per_rank)]  # P × (shape,)


def _all_reduce_variant(grads_per_rank, *, mode="mean"):
    """The all-reduce written out, with one thing changed."""
    W, P = len(grads_per_rank), len(grads_per_rank[0])
    summed = [torch.stack(list(per_rank)).sum(0) for per_rank in zip(*grads_per_rank)]
    if mode == "sum":
        return summed
    if mode == "divide by P":
        return [s / P for s in summed]
    if mode == "rank 0":
        return [g.clone() for g in grads_per_rank[0]]
    if mode == "rank 0 / W":
        return [g / W for g in grads_per_rank[0]]
    if mode == "over parameters":  # one mean per rank, over its P gradients (needs equal shapes)
        return [torch.stack(list(rank)).mean(0) for rank in grads_per_rank]
    return [s / W for s in summed]


def _all_reduce_variants(grads_per_rank) -> _Variants:
    v = lambda **kw: lambda: _all_reduce_variant(grads_per_rank, **kw)  # noqa: E731
    return [
        ("the gradients were summed over the ranks but not divided by the world size: each rank's loss is "
         "the mean over its own part of the batch, so the full batch's gradient is the *mean* of the ranks' "
         "gradients — divide the sum by W = len(grads_per_rank)", v(mode="sum")),
        ("the sum was divided by the number of parameters: divide by the number of ranks, W = "
         "len(grads_per_rank) (each parameter is averaged on its own)", v(mode="divide by P")),
        ("only rank 0's gradients came back: every rank's gradient must enter the average (rank 0 alone "
         "has seen only its part of the batch)", v(mode="rank 0")),
        ("only rank 0's gradients were used (divided by W): sum the gradients of *all* ranks, then divide by "
         "W", v(mode="rank 0 / W")),
        ("the mean ran over the parameters of each rank instead of over the ranks: average parameter p's "
         "gradient across the ranks, [mean of (g[p] for g in grads_per_rank) for each p] — zip(*grads_per_rank) "
         "groups them", v(mode="over parameters")),
    ]


def check_all_reduce_mean(fn) -> CheckResult:
    """``fn(grads_per_rank)`` → a list of P tensors: ``grads_per_rank[r][p]`` is rank r's gradient of
    parameter p; result[p] is the mean over the W ranks of parameter p's gradient (sum, then divide by
    W — what DDP's all-reduce leaves on every rank), in the gradients' shape and dtype."""
    g = torch.Generator().manual_seed(160)

    def grads(W, shapes, dtype=torch.float32):
        return [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(W)]

    def linear_halves():
        """The gradients of a linear layer's MSE on the two halves of a batch of 8 (float64)."""
        x, y = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randn(8, 2, generator=g, dtype=torch.float64)
        w = torch.randn(2, 4, generator=g, dtype=torch.float64).requires_grad_()
        b = torch.randn(2, generator=g, dtype=torch.float64).requires_grad_()
        per_rank = []
        for half in (slice(0, 4), slice(4, 8)):
            loss = ((x[half] @ w.T + b - y[half]) ** 2).mean()
            per_rank.append([t.detach() for t in torch.autograd.grad(loss, (w, b))])
        return per_rank

    cases = [
        Case((grads(2, [(4, 3), (3,), (2, 2)]),), description="W = 2 ranks, P = 3 parameters of different shapes"),
        Case((grads(4, [(3,), (2, 5)]),), description="W = 4 ranks, P = 2 parameters"),
        Case((grads(3, [(5,), (5,), (5,)]),), description="W = 3 ranks, P = 3 parameters of the same shape (5,)"),
        Case((grads(1, [(2, 3), (3,)]),), description="W = 1 rank: the mean is its own gradient"),
        Case((linear_halves(),), description="float64 gradients of a linear layer's loss on the two halves of a "
                                             "batch of 8: their mean is the full batch's gradient"),
    ]
    ref = _Recorder(_ref_all_reduce_mean)

    def cmp(expected, got, **kw):
        (grads_per_rank,) = ref.args
        W, P = len(grads_per_rank), len(expected)
        if isinstance(got, torch.Tensor):
            return (f"expected a list of {P} tensors, one per parameter, got one tensor of shape "
                    f"{tuple(got.shape)}: return [averaged gradient of parameter p for each p]")
        if not isinstance(got, (list, tuple)):
            return f"expected a list of {P} tensors, one per parameter, got {type(got).__name__}"
        if len(got) != P:
            why = _diagnose(list(got), _all_reduce_variants(grads_per_rank), 1e-6)
            return (why + f" (expected {P} tensors, got {len(got)})") if why else \
                (f"expected a list of {P} tensors, one per parameter, got {len(got)} (there are W = {W} ranks "
                 f"and P = {P} parameters)")
        for p, (e, t) in enumerate(zip(expected, got)):
            if isinstance(t, torch.Tensor) and t.shape == e.shape and t.dtype != e.dtype:
                return f"result[{p}]: expected dtype {_dtype_name(e.dtype)} like the gradients, got {_dtype_name(t.dtype)}"
        msg = compare(expected, list(got), atol=1e-6, rtol=1e-5, path="result")
        if msg is None:
            return None
        why = _diagnose(list(got), _all_reduce_variants(grads_per_rank), 1e-6)
        return f"{why} ({msg})" if why else msg

    learner = _explain_errors(fn, "the gradients of different parameters have different shapes: average each "
                              "parameter across the ranks, zip(*grads_per_rank) gives parameter p's W gradients "
                              "together", ("must match the size", "stack expects each tensor to be equal size"))
    return run_check("all_reduce_mean", learner, ref, cases, compare_fn=cmp,
                     hint="for each parameter, torch.stack([g[p] for g in grads_per_rank]).sum(0) / "
                          "len(grads_per_rank); zip(*grads_per_rank) walks the parameters")


# ----------------------------------------------------------------------------- 2. int8 per channel

def _ref_quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    from ..weight_only import quantize_int8

    return quantize_int8(w)


_AXES = ("row", "tensor", "column")
_ROUNDINGS = ("round", "floor", "trunc")
_LEVELS = (127, 128, 255)
_CLAMPS = ((-127, 127), None, (-128, 127))


def _quantize_variant(w, *, axis="row", signed=False, levels=127, rounding="round", clamp=(-127, 127),
                      cast=True):
    """int8 quantization written out, with some things changed: ``(q, scales)``. ``cast=False``
    keeps q as int64 (no wrap-around past ±127, as a learner who forgot int8 sees it)."""
    x = w.detach().float()
    mag = x if signed else x.abs()
    if axis == "row":
        scales = mag.amax(dim=1) / levels  # (N,)
        div = scales[:, None]
    elif axis == "column":
        scales = mag.amax(dim=0) / levels  # (K,)
        div = scales[None, :]
    else:
        scales = mag.amax() / levels  # ()
        div = scales
    div = torch.where(div > 0, div, torch.ones_like(div))
    r = {"round": torch.round, "floor": torch.floor, "trunc": torch.trunc}[rounding](x / div)
    if clamp is not None:
        r = r.clamp(*clamp)
    q = r.to(torch.int8) if cast else r.to(torch.int64)
    return q, scales


def _int8_parts(axis, signed, levels, rounding, clamp) -> list[str]:
    """The sentences for what differs from the right recipe."""
    parts = []
    if axis == "tensor":
        parts.append("one scale for the whole tensor (per-tensor): per-channel int8 gives each output row n its "
                     "own scale max|w[n]| / 127, w.abs().amax(dim=1) / 127 — so a row of small weights keeps its "
                     "precision")
    if axis == "column":
        parts.append("the scales are per input channel (column, amax(dim=0)): per-channel int8 means one scale per "
                     "*output* row of w (N, K), w.abs().amax(dim=1)")
    if signed:
        parts.append("the scale uses the largest weight, not the largest |weight|: a row whose biggest magnitude is "
                     "negative gets too small a scale — w.abs().amax(dim=1)")
    if levels == 255:
        parts.append("the scale divides by 255: symmetric int8 maps max|w_row| to the code 127, so scale = "
                     "max|w_row| / 127 (255 steps would need codes −255 … 255)")
    if levels == 128:
        parts.append("the scale divides by 128: the largest |weight| must map to 127, int8's largest code, so "
                     "scale = max|w_row| / 127 (−128 stays unused so that the range is symmetric)")
    if rounding == "floor":
        parts.append("q is rounded down (floor): round to the nearest code, torch.round(w / scale) — floor "
                     "errs by up to a whole step, always in the same direction")
    if rounding == "trunc":
        parts.append("q is truncated toward zero (a float cast with .to(torch.int8) drops the fraction): round "
                     "first, torch.round(w / scale), then cast")
    if clamp is None:
        parts.append("q is not clamped to [−127, 127]: codes past 127 wrap around when cast to int8 (128 → −128) "
                     "— .clamp(-127, 127) before the cast")
    if clamp == (-128, 127):
        parts.append("q is clamped to [−128, 127]: symmetric int8 uses [−127, 127]")
    return parts


def _int8_diagnosis(w: torch.Tensor, q_got: torch.Tensor) -> str | None:
    """The smallest set of known mistakes whose codes equal ``q_got``, as one sentence, or None."""
    got = q_got.detach().to(torch.int64)
    combos = []
    for axis, signed, levels, rounding, clamp in itertools.product(_AXES, (False, True), _LEVELS, _ROUNDINGS,
                                                                   _CLAMPS):
        parts = _int8_parts(axis, signed, levels, rounding, clamp)
        if parts:
            combos.append((len(parts), parts, dict(axis=axis, signed=signed, levels=levels, rounding=rounding,
                                                   clamp=clamp)))
    combos.sort(key=lambda c: c[0])
    for _, parts, kw in combos:
        for cast in (True, False):
            q, _ = _quantize_variant(w, cast=cast, **kw)
            if q.shape == got.shape and torch.equal(q.to(torch.int64), got):
                return "; and ".join(parts)
    return None


def _codes_equal(expected: torch.Tensor, got: torch.Tensor, w: torch.Tensor, scales: torch.Tensor) -> bool:
    """The codes agree, except by one where w / scale lies within 1e-3 of a rounding tie (w / scale
    and w · (127 / max) may round differently there)."""
    x = w.detach().double() / torch.where(scales > 0, scales, torch.ones_like(scales)).double()[:, None]
    tie = ((x.abs() - x.abs().floor()) - 0.5).abs() < 1e-3
    diff = (expected.to(torch.int64) - got.to(torch.int64)).abs()
    return bool(((diff == 0) | (tie & (diff == 1))).all())


def check_quantize_int8(fn) -> CheckResult:
    """``fn(w)`` → ``(q, scales)`` for a float weight w (N, K): symmetric int8 per output row, scales
    (N,) = max|w_row| / 127 (0 for an all-zero row), q = round(w / scale) clamped to [-127, 127] as
    int8 (N, K), 0 where the scale is 0 — ``minillm.weight_only.quantize_int8``."""
    g = torch.Generator().manual_seed(161)

    def rows_of_sizes(sizes, K):
        return torch.randn(len(sizes), K, generator=g) * torch.tensor(sizes)[:, None]

    def negative_peaks(N, K):
        w = torch.randn(N, K, generator=g) * 0.1
        w[torch.arange(N), torch.randint(0, K, (N,), generator=g)] = -torch.rand(N, generator=g) - 1  # |·| > 1
        return w

    zero_row = torch.randn(3, 5, generator=g)
    zero_row[1] = 0
    outliers = torch.randn(6, 16, generator=g) * 0.02
    outliers[2, 7], outliers[4, 0] = 3.0, -2.5
    cases = [
        Case((rows_of_sizes([0.01, 0.1, 1.0, 10.0], 8),), description="N = 4, K = 8, rows of very different sizes"),
        Case((outliers,), description="N = 6, K = 16, small weights with two outliers (rows 2 and 4)"),
        Case((zero_row,), description="N = 3, K = 5, row 1 all zeros (a pruned output channel): its scale is 0 and "
                                      "its codes are 0"),
        Case((negative_peaks(5, 4),), description="N = 5, K = 4, every row's largest |weight| is negative"),
        Case((torch.randn(2, 32, generator=g),), description="N = 2, K = 32"),
    ]
    ref = _Recorder(_ref_quantize_int8)

    def cmp(expected, got, **kw):
        (w,) = ref.args
        N, K = w.shape
        q_ref, s_ref = expected
        got = tuple(got) if isinstance(got, list) else got
        if not (isinstance(got, tuple) and len(got) == 2):
            what = f"a {type(got).__name__}" + (f" of length {len(got)}" if isinstance(got, tuple) else "")
            return f"expected a pair (q, scales), got {what}"
        q, s = got
        if not isinstance(q, torch.Tensor) or not isinstance(s, torch.Tensor):
            return (f"expected q and scales as tensors, got ({type(q).__name__}, {type(s).__name__}); "
                    f"a Python float scale is one scale for the whole tensor — per-channel needs one per row, (N,)")
        if q.shape != q_ref.shape:
            return f"q: expected shape (N, K) = {(N, K)} like w, got {tuple(q.shape)}"
        if q.is_floating_point() and bool(q.isnan().any()):
            return (f"q: got NaN at {int(q.isnan().sum())} positions — an all-zero row has scale 0 and 0 / 0 = NaN: "
                    f"divide by 1 where the scale is 0 (torch.where(scales > 0, scales, 1)), so its codes are 0")
        why = None
        if not _codes_equal(q_ref, q, w, s_ref):
            zero_rows = (w == 0).all(dim=1)
            if zero_rows.any() and bool((q[zero_rows].to(torch.int64) != 0).any()):
                return ("q: an all-zero row got codes other than 0 — its scale is 0, and w / 0 is 0 / 0 = NaN, which "
                        "the cast turns into garbage: divide by 1 where the scale is 0 (torch.where(scales > 0, "
                        "scales, 1)), so the row's codes are 0")
            why = _int8_diagnosis(w, q)
            msg = compare(q_ref.to(torch.int64), q.to(torch.int64), path="q")
            return f"{why} ({msg})" if why else msg
        if s.dim() == 0 or s.numel() == 1:
            return (f"scales: got a single number, one scale for the whole tensor (per-tensor): per-channel int8 "
                    f"gives each of the N = {N} output rows its own scale, w.abs().amax(dim=1) / 127, shape (N,)")
        if tuple(s.shape) == (N, 1):
            return f"scales: expected shape (N,) = ({N},), got {tuple(s.shape)}: amax(dim=1) without keepdim"
        if s.dim() == 1 and s.numel() == K and K != N:
            return (f"scales: expected shape (N,) = ({N},), one per output row, got ({K},): those are per input "
                    f"channel (column) scales, amax(dim=0) — use w.abs().amax(dim=1) / 127")
        if not s.is_floating_point():
            return f"scales: expected a float tensor, got dtype {_dtype_name(s.dtype)}"
        if tuple(s.shape) == (N,):
            inverse = torch.where(s_ref > 0, 1 / s_ref.double(), torch.zeros_like(s_ref, dtype=torch.float64))
            if s_ref.gt(0).any() and compare(inverse, s.double(), atol=1e-6, rtol=1e-4) is None:
                return ("scales: these are 127 / max|w_row|, the inverse of the scale: a scale is what a code is "
                        "multiplied by to get the weight back, max|w_row| / 127 (w ≈ q · scale)")
            zero_rows = (w == 0).all(dim=1)
            if zero_rows.any() and bool((s[zero_rows].abs() > 1e-6).any()):
                return ("scales: an all-zero row's scale should stay 0 (max|w_row| / 127 = 0): replace it by 1 only "
                        "inside the division, w / torch.where(scales > 0, scales, 1)")
        msg = compare(s_ref, s, atol=1e-6, rtol=1e-5, path="scales")
        if msg:
            return msg
        if q.dtype != torch.int8:
            return (f"q: the codes are right but their dtype is {_dtype_name(q.dtype)}: store them as int8, "
                    f".to(torch.int8) — one byte per weight is the point of int8")
        return None

    return run_check("quantize_int8", fn, ref, cases, compare_fn=cmp,
                     hint="scales = w.abs().amax(dim=1) / 127; safe = torch.where(scales > 0, scales, 1); "
                          "q = torch.round(w / safe[:, None]).clamp(-127, 127).to(torch.int8)")


def _ref_dequantize_int8(q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    from ..weight_only import dequantize_int8

    return dequantize_int8(q, scales)


def _dequantize_variants(q, scales) -> _Variants:
    qf, s = q.float(), scales.float()
    return [
        ("the codes were divided by the scale: the weight is the code *times* its row's scale, q · scale",
         lambda: qf / s[:, None]),
        ("the scales were applied per column (scales broadcast along the last dimension): scales (N,) has one "
         "value per row — scales[:, None] (or .unsqueeze(1))", lambda: qf * s[None, :]),
        ("the result was divided by 127 again: the scale already is max|w_row| / 127, so the weight is q · scale",
         lambda: qf * s[:, None] / 127),
        ("the result was multiplied by 127: the scale already is max|w_row| / 127, so the weight is q · scale",
         lambda: qf * s[:, None] * 127),
    ]


def check_dequantize_int8(fn) -> CheckResult:
    """``fn(q, scales)`` → float32 (N, K): each int8 code times its row's scale, ``q · scales[:, None]``
    — ``minillm.weight_only.dequantize_int8``."""
    from ..weight_only import quantize_int8

    g = torch.Generator().manual_seed(162)
    zero_row = torch.randn(3, 5, generator=g)
    zero_row[2] = 0
    cases = [
        Case(quantize_int8(torch.randn(4, 8, generator=g)), description="N = 4, K = 8"),
        Case(quantize_int8(torch.randn(6, 6, generator=g) * torch.arange(1, 7)[:, None]),
             description="N = K = 6, rows of growing size"),
        Case(quantize_int8(zero_row), description="N = 3, K = 5, row 2 all zeros (scale 0): its weights are 0"),
        Case(quantize_int8(torch.randn(2, 64, generator=g) * 0.02), description="N = 2, K = 64, small weights"),
    ]
    ref = _Recorder(_ref_dequantize_int8)

    def cmp(expected, got, **kw):
        q, scales = ref.args
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and not got.is_floating_point():
            return (f"expected float32 weights, got dtype {_dtype_name(got.dtype)}: the product of the codes and "
                    f"the scales is a float — don't cast it back to the codes' dtype")
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype != expected.dtype:
            return f"expected dtype float32 (the package's default), got {_dtype_name(got.dtype)}"
        msg = compare(expected, got, atol=1e-6, rtol=1e-5, path="weights")
        if msg is None:
            return None
        why = _diagnose(got, _dequantize_variants(q, scales), 1e-6)
        return f"{why} ({msg})" if why else msg

    learner = _explain_errors(fn, "scales (N,) holds one value per row of q (N, K): scales[:, None] multiplies "
                              "each row by its own scale", ("must match the size",))
    return run_check("dequantize_int8", learner, ref, cases, compare_fn=cmp,
                     hint="q.float() * scales[:, None]")


# ----------------------------------------------------------------------------- 3. greedy acceptance

def _ref_greedy_accept(proposed: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    from ..speculative import greedy_accept

    return greedy_accept(proposed, picks)


def _leading(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading entries of a and b (same length) are equal."""
    return int((a == b).long().cumprod(dim=0).sum())


def _accept_variants(proposed, picks) -> _Variants:
    k = proposed.numel()
    a = _leading(proposed, picks[:-1])
    matches = int((proposed == picks[:-1]).sum())
    shifted = _leading(proposed, picks[1:])
    return [
        ("every matching guess was counted, not only the leading run: a guess after the first mismatch was "
         "made from a wrong prefix and counts for nothing — stop at the first mismatch (cumprod of the "
         "matches, or a loop with break)", lambda: picks[:matches + 1]),
        ("the target's own token is missing: after the accepted guesses comes the target's pick there, "
         "picks[a] — its correction at the first mismatch, or its bonus token after k right guesses",
         lambda: picks[:a]),
        ("the target's own token is missing: after the accepted guesses comes the target's pick there, "
         "picks[a] — its correction at the first mismatch, or its bonus token after k right guesses",
         lambda: proposed[:a]),
        ("the draft's token was kept at the first mismatch: that guess was wrong — the target's pick there, "
         "picks[a], replaces it", lambda: proposed[:a + 1] if a < k else torch.cat([proposed, picks[k:]])),
        ("the guesses were compared with picks[1:] (off by one): picks[i] is the target's choice for the "
         "position of proposed[i] (it was computed from the tokens before it), so compare proposed with "
         "picks[:-1]", lambda: picks[:shifted + 1]),
        ("the guesses were compared with picks[1:] (off by one): picks[i] is the target's choice for the "
         "position of proposed[i] (it was computed from the tokens before it), so compare proposed with "
         "picks[:-1]", lambda: picks[1:shifted + 2]),
    ]


def check_greedy_accept(fn) -> CheckResult:
    """``fn(proposed, picks)`` → the tokens one round of greedy speculative decoding adds: proposed (k,)
    are the draft's guesses, picks (k+1,) the target's argmax at each of those positions and one more;
    returns picks[:a + 1] (a tensor), a = the number of *leading* guesses equal to the target's picks —
    ``minillm.speculative.greedy_accept``."""
    g = torch.Generator().manual_seed(163)
    t = lambda *v, dtype=torch.long: torch.tensor(v, dtype=dtype)  # noqa: E731
    long_proposed = torch.randint(0, 50, (6,), generator=g, dtype=torch.int32)
    long_picks = torch.cat([long_proposed[:3], (long_proposed[3:4] + 1) % 50, long_proposed[4:],
                            torch.randint(0, 50, (1,), generator=g, dtype=torch.int32)])
    cases = [
        Case((t(5, 9, 2, 7), t(5, 9, 4, 7, 3)),
             description="the first two guesses are right, the third is not (the fourth matches again)"),
        Case((t(1, 2, 3), t(1, 2, 3, 8)), description="all k = 3 guesses right: k + 1 tokens, the last the target's "
                                                      "bonus token"),
        Case((t(4, 4, 6, 1), t(3, 4, 6, 1, 0)), description="the first guess is wrong, the later ones match: only "
                                                            "the target's token"),
        Case((t(7), t(7, 2)), description="k = 1, the guess is right"),
        Case((t(6, 8, 8, 5), t(2, 6, 8, 1, 9)), description="the first guess is wrong; the guesses equal the picks "
                                                            "shifted by one"),
        Case((long_proposed, long_picks), description="k = 6, int32 tokens, three guesses right"),
    ]
    ref = _Recorder(_ref_greedy_accept)

    def cmp(expected, got, **kw):
        if isinstance(got, (list, tuple)):
            return (f"expected a tensor of token ids, got a {type(got).__name__}: return a slice of picks, "
                    f"picks[:n] (or torch.tensor(tokens))")
        if isinstance(got, torch.Tensor) and got.dim() != 1:
            return f"expected a 1-D tensor of token ids, shape (n,), got shape {tuple(got.shape)}"
        msg = _integer_result(got, "tokens") or compare(expected, got, path="tokens")
        if msg is None:
            return None
        why = _diagnose(got, _accept_variants(*ref.args), 0)
        return f"{why} ({msg})" if why else msg

    return run_check("greedy_accept", fn, ref, cases, compare_fn=cmp,
                     hint="a = the number of leading i with proposed[i] == picks[i] (stop at the first mismatch); "
                          "return picks[:a + 1]")


# ----------------------------------------------------------------------------- 4. distillation

def _ref_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    from ..distill import kd_loss

    return kd_loss(student_logits, teacher_logits, temperature)


def _kd_variant(student_logits, teacher_logits, T, *, t_student=None, t_teacher=None, factor=None,
                direction="teacher", reduce="batchmean", input_probs=False):
    """T² · KL(teacher ‖ student) at temperature T written out (float64), with one thing changed."""
    t_student = T if t_student is None else t_student
    t_teacher = T if t_teacher is None else t_teacher
    factor = T * T if factor is None else factor
    log_q = F.log_softmax(student_logits.double() / t_student, dim=-1)  # (N, V)
    log_p = F.log_softmax(teacher_logits.double() / t_teacher, dim=-1)  # (N, V)
    if input_probs:  # F.kl_div(softmax(s / T), log_p, log_target=True)
        elem = log_p.exp() * (log_p - log_q.exp())
    elif direction == "teacher":
        elem = log_p.exp() * (log_p - log_q)
    else:
        elem = log_q.exp() * (log_q - log_p)
    N = elem.size(0)
    total = {"batchmean": elem.sum() / N, "mean": elem.mean(), "sum": elem.sum()}[reduce]
    return (total * factor).float()


def _kd_variants(student_logits, teacher_logits, T) -> _Variants:
    v = lambda **kw: lambda: _kd_variant(student_logits, teacher_logits, T, **kw)  # noqa: E731
    return [
        ("the T² factor is missing: multiply the KL by temperature ** 2 — dividing the logits by T shrinks the "
         "soft loss's gradients by 1/T², and T² brings them back to the size of the hard loss's", v(factor=1.0)),
        ("the KL was multiplied by T, not T²: dividing the logits by T shrinks the gradients by 1/T², so multiply "
         "by temperature ** 2", v(factor=T)),
        ("the KL runs the wrong way, KL(student ‖ teacher): distillation uses KL(teacher ‖ student) = Σ p·(log p "
         "− log q) with p the teacher's distribution — F.kl_div(input, target) computes KL(target ‖ input), so "
         "the student's log-probabilities are the input", v(direction="student")),
        ("the temperature divides only the student's logits: divide both the student's and the teacher's by T",
         v(t_teacher=1.0)),
        ("the temperature divides only the student's logits: divide both the student's and the teacher's by T",
         v(t_teacher=1.0, factor=1.0)),
        ("the temperature divides only the teacher's logits: divide both the student's and the teacher's by T",
         v(t_student=1.0)),
        ("the temperature divides only the teacher's logits: divide both the student's and the teacher's by T",
         v(t_student=1.0, factor=1.0)),
        ("the logits were not divided by the temperature: softmax(student / T) and softmax(teacher / T)",
         v(t_student=1.0, t_teacher=1.0)),
        ("the KL was averaged over all N·V elements ('mean'): average over the N positions only — sum over the "
         "vocabulary, then mean over positions (F.kl_div's reduction='batchmean')", v(reduce="mean")),
        ("the KL was summed over the positions ('sum'): average over the N positions (F.kl_div's "
         "reduction='batchmean')", v(reduce="sum")),
        ("F.kl_div got the student's probabilities as its input: the input must be log-probabilities, "
         "F.log_softmax(student_logits / T, dim=-1)", v(input_probs=True)),
    ]


def check_kd_loss(fn) -> CheckResult:
    """``fn(student_logits, teacher_logits, temperature)`` → a 0-dim tensor: T² · KL(softmax(teacher/T) ‖
    softmax(student/T)), summed over the vocabulary and averaged over the N positions (F.kl_div's
    'batchmean') — ``minillm.distill.kd_loss``."""
    g = torch.Generator().manual_seed(164)

    def logits(N, V, scale=2.0):
        return torch.randn(N, V, generator=g) * scale

    cases = [
        Case((logits(4, 10), logits(4, 10), 2.0), description="N = 4 positions, V = 10, T = 2"),
        Case((logits(6, 32), logits(6, 32, 6.0), 4.0), description="N = 6, V = 32, a confident teacher, T = 4"),
        Case((logits(3, 8), logits(3, 8), 0.5), description="N = 3, V = 8, T = 0.5 (sharper than the model)"),
        Case((logits(5, 16), logits(5, 16), 1.0), description="T = 1: the plain KL"),
        Case((logits(4, 12, 100.0), logits(4, 12, 100.0), 2.0),
             description="logits of a few hundred: softmax underflows to 0 and its log is −inf; log_softmax does not"),
    ]
    ref = _Recorder(_ref_kd_loss)

    def cmp(expected, got, **kw):
        student, teacher, T = ref.args
        N = student.size(0)
        if isinstance(got, (int, float)) and not isinstance(got, bool):
            return (f"expected a tensor, got the Python number {got!r}: return the tensor (the loss must carry the "
                    f"gradient back to the student), not .item()")
        if not isinstance(got, torch.Tensor):
            return f"expected a 0-dim tensor (the loss), got {type(got).__name__}"
        if got.dim() == 1 and got.numel() == N and N > 1:
            return (f"expected a single number (a 0-dim tensor), got shape {tuple(got.shape)}, one loss per "
                    f"position: take the mean over the positions")
        if got.dim() == 2:
            return (f"expected a single number (a 0-dim tensor), got shape {tuple(got.shape)}: sum over the "
                    f"vocabulary, then average over the positions")
        if got.dim() > 0 and got.numel() == 1:
            return f"expected a 0-dim tensor (shape ()), got shape {tuple(got.shape)}: reduce without keepdim"
        if got.dim() == 0 and got.is_floating_point() and not bool(torch.isfinite(got)):
            return (f"got {float(got)}: either F.kl_div got log-probabilities as its target without log_target=True "
                    f"(it then takes their log, and the log of a negative number is NaN) — F.kl_div with "
                    f"log-probabilities as the target needs log_target=True; or a probability underflowed to 0 and "
                    f"its log is −inf (0 · −inf = NaN) — use F.log_softmax for the log-probabilities")
        msg = _non_finite(expected, got, "loss", "use F.log_softmax")
        if msg:
            return msg
        msg = compare(expected, got, atol=1e-5, rtol=1e-4, path="loss")
        if msg is None:
            return None
        why = _diagnose(got, _kd_variants(student, teacher, T), 1e-5, 1e-4)
        return f"{why} ({msg})" if why else msg

    return run_check("kd_loss", fn, ref, cases, compare_fn=cmp,
                     hint="log_q = F.log_softmax(student_logits / T, -1); log_p = F.log_softmax(teacher_logits / T, -1); "
                          "(log_p.exp() * (log_p - log_q)).sum(-1).mean() * T ** 2")


__all__ = ["check_all_reduce_mean", "check_dequantize_int8", "check_greedy_accept", "check_kd_loss",
           "check_quantize_int8"]
