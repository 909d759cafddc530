"""Checks for chapter 11's exercises (modern LLMs): LLaMA's SwiGLU feed-forward, rotary position
embedding in Hugging Face's half-split layout, grouped-query attention's ``repeat_kv``, the top-k
router of a mixture of experts, and the Switch Transformer's load-balancing loss.

Each check compares the learner's function with the package's reference (``minillm.moe.SwiGLU``,
``minillm.models.llama.rope_cos_sin`` + ``apply_rope``, ``minillm.models.llama.repeat_kv``,
``minillm.moe.TopKRouter``, ``minillm.moe.load_balancing_loss``) and, where the answer is wrong,
recomputes the usual mistakes on the same inputs (gate and up swapped, GELU for SiLU, interleaved
RoPE pairs, the rotation turned backwards, heads tiled instead of repeated in place, a softmax over
only the k kept logits, the factor E forgotten...) to say which one it is.

The modules the references are built from draw their initial weights from the global random
generator; the checks build them inside ``torch.random.fork_rng``, so a learner's seeded notebook
draws the same numbers before and after a check.

Shape letters: B batch, T tokens, C model width, I feed-forward width, nh query heads, nkv key/value
heads, hd head size, N tokens (B·T flattened), E experts, k experts per token.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from . import Case, CheckResult, compare, run_check
from .ch10 import _integer_result, _low_precision_tolerance, _matches, _Recorder

_Variants = Iterable[tuple[str, Callable[[], Any]]]


def _diagnose(got: Any, variants: _Variants, atol: float, rtol: float = 1e-5) -> str | None:
    """The first known mistake whose result equals ``got`` (its sentence), or None. Unlike chapter
    10's, ``variants`` is a sequence of pairs, so one sentence may name several ways to make it."""
    for sentence, make in variants:
        try:
            wrong = make()
        except Exception:  # noqa: BLE001 — a variant that does not apply to this case
            continue
        if _matches(wrong, got, atol, rtol):
            return sentence
    return None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _fork_rng():
    """Module construction draws from the global generator; keep the learner's state as it was."""
    return torch.random.fork_rng(devices=[])


# ----------------------------------------------------------------------------- 1. SwiGLU

def _ref_swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor
                ) -> torch.Tensor:
    from ..moe import SwiGLU

    I, C = w_gate.shape
    with _fork_rng():
        mlp = SwiGLU(C, I).to(x.dtype)
    with torch.no_grad():
        mlp.gate_proj.weight.copy_(w_gate)
        mlp.up_proj.weight.copy_(w_up)
        mlp.down_proj.weight.copy_(w_down)
        return mlp(x)


def _swiglu_variant(x, w_gate, w_up, w_down, *, act="silu", swap=False, where="gate", combine="mul",
                    transpose=True, transpose_down=True, down=True):
    """SwiGLU written out, with one thing changed."""
    act_fn = {"silu": F.silu, "sigmoid": torch.sigmoid, "gelu": F.gelu, "relu": F.relu,
              "gelu_tanh": lambda z: F.gelu(z, approximate="tanh"), "none": lambda z: z}[act]
    g = x @ w_gate.T if transpose else x @ w_gate  # (..., I)
    u = x @ w_up.T if transpose else x @ w_up  # (..., I)
    if swap:
        g, u = u, g
    if where == "product":
        h = act_fn(g * u)
    elif where == "both":
        h = act_fn(g) * act_fn(u)
    elif where == "gate only":
        h = act_fn(g)
    else:
        h = act_fn(g) * u if combine == "mul" else act_fn(g) + u
    if not down:
        return h
    return h @ w_down.T if transpose and transpose_down else h @ w_down  # (..., C)


def _swiglu_variants(x, w_gate, w_up, w_down) -> _Variants:
    v = lambda **kw: lambda: _swiglu_variant(x, w_gate, w_up, w_down, **kw)  # noqa: E731
    linear = ("nn.Linear stores a weight as (out_features, in_features): multiply by its transpose, "
              "x @ w.T (or F.linear(x, w))")
    return [
        ("gate and up are swapped: SiLU goes on x @ w_gate.T, and that gate multiplies x @ w_up.T",
         v(swap=True)),
        ("the gate is a sigmoid (that is GLU): SwiGLU's gate is SiLU, z·σ(z) — F.silu", v(act="sigmoid")),
        ("the gate is GELU (that is GEGLU, T5 v1.1's feed-forward from chapter 10): LLaMA's is SiLU — F.silu",
         v(act="gelu")),
        ("the gate is GELU (tanh approximation, that is GEGLU): LLaMA's is SiLU — F.silu",
         v(act="gelu_tanh")),
        ("the gate is ReLU (that is ReGLU): LLaMA's is SiLU — F.silu", v(act="relu")),
        ("SiLU was applied to the product: only the gate goes through SiLU, "
         "silu(x @ w_gate.T) * (x @ w_up.T)", v(where="product")),
        ("SiLU was applied to the up projection too: only the gate goes through SiLU", v(where="both")),
        ("the up projection is missing: silu(x @ w_gate.T) multiplies x @ w_up.T element by element",
         v(where="gate only")),
        ("the SiLU is missing: without it the layer is only a product of two linear maps", v(act="none")),
        ("the gate and the up projection are added: SwiGLU multiplies them element by element",
         v(combine="add")),
        ("the down projection is missing: multiply the (…, I) hidden vector by w_down.T to come back to "
         "width C", v(down=False)),
        (f"the weights are not transposed: {linear}", v(transpose=False)),
        (f"w_down is not transposed: {linear}", v(transpose_down=False)),
    ]


def check_swiglu(fn) -> CheckResult:
    """``fn(x, w_gate, w_up, w_down)`` → ``(silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T``, the
    LLaMA/Qwen/DeepSeek feed-forward with ``nn.Linear``'s weight layout (w_gate, w_up (I, C); w_down
    (C, I)), as ``minillm.moe.SwiGLU`` (= ``minillm.models.llama.LlamaMLP``, ``transformers``'
    ``LlamaMLP``); same shape and dtype as ``x``."""
    g = torch.Generator().manual_seed(11)

    def case(shape, I, description, scale=1.0, dtype=torch.float32):
        C = shape[-1]
        x = torch.randn(*shape, generator=g) * scale
        w = [torch.randn(I, C, generator=g) / C ** 0.5, torch.randn(I, C, generator=g) / C ** 0.5,
             torch.randn(C, I, generator=g) / I ** 0.5]
        return Case((x.to(dtype), *(t.to(dtype) for t in w)), description=description)

    cases = [
        case((2, 5, 16), 24, "(B, T, C) = (2, 5, 16), I = 24"),
        case((7, 8), 8, "C = I = 8: every matrix is square, so a missing transpose raises no error"),
        case((1, 3, 12), 20, "float64 x and weights: the result stays float64", dtype=torch.float64),
        case((12,), 32, "one token of shape (C,) = (12,), I = 32 (LLaMA's I ≈ 8/3 · C)"),
        case((2, 4, 16), 40, "activations 4× larger: the gate's shape matters", scale=4.0),
    ]
    ref = _Recorder(_ref_swiglu)

    def learner(x, w_gate, w_up, w_down):
        try:
            return fn(x, w_gate, w_up, w_down)
        except RuntimeError as exc:  # say why x @ w fails; the traceback still points at the line
            if exc.args and isinstance(exc.args[0], str) and (
                    "cannot be multiplied" in exc.args[0] or "size mismatch" in exc.args[0]):
                exc.args = (exc.args[0] + " — nn.Linear stores a weight as (out_features, in_features):"
                            " multiply by its transpose, x @ w.T",) + exc.args[1:]
            raise

    def cmp(expected, got, **kw):
        if isinstance(got, torch.Tensor) and got.dtype != expected.dtype and got.shape == expected.shape:
            return (f"expected dtype {_dtype_name(expected.dtype)} like x, got {_dtype_name(got.dtype)}: "
                    f"compute in x's dtype (no .float())")
        msg = compare(expected, got, atol=1e-5, rtol=1e-5)
        if msg is None:
            return None
        why = _diagnose(got, _swiglu_variants(*ref.args), 1e-5)
        return f"{why} ({msg})" if why else msg

    return run_check("swiglu", learner, ref, cases, compare_fn=cmp,
                     hint="gate = x @ w_gate.T and up = x @ w_up.T are (..., I); "
                          "return (F.silu(gate) * up) @ w_down.T")


# ----------------------------------------------------------------------------- 2. RoPE

def _ref_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    from ..models.llama import apply_rope, rope_cos_sin

    cos, sin = rope_cos_sin(positions, x.size(-1), theta, dtype=x.dtype)  # (T, hd) each
    return apply_rope(x, cos, sin)


def _rope_variant(x, positions, theta, *, layout="half", sign=1.0, exponent=2.0, offset=0,
                  ignore_positions=False, swap=False, first_half_only=False, table="cat",
                  theta_used=None, low_precision_angles=False):
    """Rotary embedding written out (half-split pairs unless ``layout="interleaved"``), with one
    thing changed. ``exponent``: pair i turns by position · theta^(-exponent·i/hd) (2 is right)."""
    hd, T = x.size(-1), x.size(-2)
    half = hd // 2
    theta = theta if theta_used is None else theta_used
    pos = torch.arange(T, device=x.device) if ignore_positions else positions
    pos = (pos + offset).float()
    inv_freq = 1.0 / theta ** (exponent * torch.arange(half, dtype=torch.float32, device=x.device) / hd)  # (hd/2,)
    if low_precision_angles:
        angles = (pos.to(x.dtype)[:, None] * inv_freq.to(x.dtype)).float()
    else:
        angles = pos[:, None] * inv_freq  # (T, hd/2)
    if layout == "interleaved":  # pair i = channels (2i, 2i + 1)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]  # (B, nh, T, hd/2) each
        out = torch.stack((even * cos - sign * odd * sin, odd * cos + sign * even * sin), dim=-1)
        return out.flatten(-2)  # (B, nh, T, hd)
    emb = torch.cat((angles, angles), -1) if table == "cat" else angles.repeat_interleave(2, -1)  # (T, hd)
    cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)  # rotate_half
    if first_half_only:
        return torch.cat((x1 * cos[..., :half] - x2 * sin[..., :half], x2), dim=-1)
    if swap:
        return x * sin + rotated * cos
    return x * cos + sign * rotated * sin


def _rope_variants(x, positions, theta) -> _Variants:
    v = lambda **kw: lambda: _rope_variant(x, positions, theta, **kw)  # noqa: E731
    return [
        ("you rotated neighbouring channels (2i, 2i + 1) — Meta's original layout; Hugging Face's "
         "(and this course's) pairs channel i with channel i + hd/2, the two halves of the head "
         "(rotate_half)", v(layout="interleaved")),
        ("the rotation turns the wrong way: (x_i, x_{i+hd/2}) becomes (x_i·cos − x_{i+hd/2}·sin, "
         "x_{i+hd/2}·cos + x_i·sin), i.e. x·cos + rotate_half(x)·sin with rotate_half(x) = cat(−x2, x1)",
         v(sign=-1.0)),
        ("you rotated neighbouring channels (2i, 2i + 1), and the wrong way: pair channel i with "
         "channel i + hd/2 and use x·cos + rotate_half(x)·sin", v(layout="interleaved", sign=-1.0)),
        ("the frequencies are theta^(−i/hd): pair i turns by position · theta^(−2i/hd), "
         "i = 0 … hd/2 − 1 (torch.arange(0, hd, 2) / hd)", v(exponent=1.0)),
        ("the frequencies grow with i: pair i turns by position · theta^(−2i/hd) — one over "
         "theta ** (torch.arange(0, hd, 2) / hd)", v(exponent=-2.0)),
        ("the positions are off by one: the token at position 0 is not rotated at all (angle 0)",
         v(offset=1)),
        ("the positions argument is ignored: rotate each token by its given position — they need not "
         "start at 0 (decoding with a cache continues where the prompt ended)", v(ignore_positions=True)),
        ("cos and sin are swapped: x·cos + rotate_half(x)·sin", v(swap=True)),
        ("only the first half was rotated: the second half must become x2·cos + x1·sin",
         v(first_half_only=True)),
        ("the angle table is interleaved ([a0, a0, a1, a1, …], repeat_interleave), which belongs to the "
         "interleaved layout; with halves, write the hd/2 angles twice one after the other: "
         "torch.cat((angles, angles), -1)", v(table="interleave")),
        ("the theta argument is ignored (a fixed 10000?): SmolLM2 uses 100,000, Llama 3 500,000",
         v(theta_used=10000.0)),
        ("the angles were computed in low precision: compute position · inv_freq, cos and sin in float32 "
         "and cast only the cos/sin tables to x's dtype (bfloat16 keeps about 3 significant digits)",
         v(low_precision_angles=True)),
    ]


RELATIVE_POSITIONS = torch.tensor([0, 1, 2, 3, 100, 101, 102, 103])  # the relative case's positions


def _not_a_rotation(x: torch.Tensor, positions: torch.Tensor, got: Any) -> str | None:
    """A sentence if ``got`` cannot be a rotation of ``x``: the lengths changed, or (in the relative
    case, head 0 = one query, head 1 = one key at every position) q·k is not a function of the
    distance."""
    if not isinstance(got, torch.Tensor) or got.shape != x.shape or not got.is_floating_point():
        return None
    xn, gn = x.double().norm(dim=-1), got.double().norm(dim=-1)
    if not torch.allclose(gn, xn, rtol=2e-2, atol=1e-3):
        where = tuple(int(i) for i in torch.unravel_index((gn - xn).abs().argmax(), xn.shape))
        return (f"the length of a head vector changed (‖x‖ = {float(xn[where]):.4g}, your result "
                f"{float(gn[where]):.4g} at {where}): a rotation keeps lengths — each pair "
                f"(x_i, x_{{i+hd/2}}) must be turned by cos and sin of one angle")
    if x.size(1) == 2 and positions.shape == RELATIVE_POSITIONS.shape and torch.equal(positions, RELATIVE_POSITIONS):
        q, k = got[0, 0].double(), got[0, 1].double()  # (T, hd): the query / the key at every position
        scores = q @ k.T  # (T, T): q at position t · k at position s
        near, far = scores[:4, :4], scores[4:, 4:]  # both moved by 100
        if not torch.allclose(near, far, rtol=1e-3, atol=1e-3):
            return (f"q·k is not a function of the distance: the query at position 1 and the key at "
                    f"position 0 score {float(near[1, 0]):.4g}, at positions 101 and 100 they score "
                    f"{float(far[1, 0]):.4g}; turning both by angles proportional to their positions "
                    f"keeps their product when both move by the same amount")
    return None


def check_apply_rope(fn) -> CheckResult:
    """``fn(x, positions, theta)`` → x (B, nh, T, hd) rotated by RoPE in Hugging Face's half-split
    ("rotate_half") layout: pair i = channels (i, i + hd/2) turns by positions[t] · theta^(−2i/hd);
    angles in float32, result in x's dtype. Equal to ``minillm.models.llama.rope_cos_sin`` +
    ``apply_rope`` (= ``transformers``' ``apply_rotary_pos_emb``)."""
    g = torch.Generator().manual_seed(12)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)
    same = torch.stack([q.expand(8, 16), k.expand(8, 16)])[None]  # (1, 2, 8, 16): q in head 0, k in head 1
    cases = [
        Case((torch.randn(2, 3, 6, 8, generator=g), torch.arange(6), 10000.0),
             description="(B, nh, T, hd) = (2, 3, 6, 8), positions 0..5, theta = 10,000 (LLaMA)"),
        Case((torch.randn(1, 2, 5, 16, generator=g), torch.arange(7, 12), 100000.0),
             description="positions 7..11 (decoding after a 7-token prompt), SmolLM2's theta = 100,000"),
        Case((torch.randn(1, 4, 4, 32, generator=g), torch.tensor([0, 3, 50, 1000]), 500000.0),
             description="scattered positions up to 1,000, Llama 3's theta = 500,000"),
        Case((same, RELATIVE_POSITIONS.clone(), 10000.0),
             description="one query (head 0) and one key (head 1) at positions 0..3 and 100..103: "
                         "q·k must depend only on the distance"),
        Case((torch.randn(2, 2, 8, 8, generator=g).bfloat16(), torch.arange(0, 64, 9), 10000.0),
             description="bfloat16 x at positions 0, 9, …, 63: the result stays bfloat16"),
    ]
    ref = _Recorder(_ref_rope)

    def cmp(expected, got, **kw):
        if isinstance(got, torch.Tensor) and got.dtype != expected.dtype and got.shape == expected.shape:
            return (f"expected dtype {_dtype_name(expected.dtype)} like x, got {_dtype_name(got.dtype)}: "
                    f"compute the angles in float32, then cast cos and sin to x.dtype before multiplying "
                    f"(x * a float32 table is float32)")
        atol, rtol = _low_precision_tolerance(expected.dtype)
        atol, rtol = max(atol, 1e-3), max(rtol, 1e-4)  # angles of ~1,000 radians carry ~1e-4 of float32 rounding
        msg = compare(expected, got, atol=atol, rtol=rtol)
        if msg is None:
            return None
        x, positions, _ = ref.args
        why = _diagnose(got, _rope_variants(*ref.args), atol, rtol) or _not_a_rotation(x, positions, got)
        return f"{why} ({msg})" if why else msg

    return run_check("apply_rope", fn, ref, cases, compare_fn=cmp,
                     hint="inv_freq = 1 / theta ** (torch.arange(0, hd, 2).float() / hd); angles = "
                          "positions[:, None].float() * inv_freq (T, hd/2); emb = torch.cat((angles, angles), -1); "
                          "x1, x2 = the halves of x; return x * emb.cos() + torch.cat((-x2, x1), -1) * emb.sin() "
                          "(cos/sin cast to x.dtype)")


# ----------------------------------------------------------------------------- 3. repeat_kv

def _repeat_kv_variants(x, n_rep) -> _Variants:
    B, nkv, T, hd = x.shape
    wrong_dim = ("the repeat runs over the wrong dimension: repeat the heads, dim 1 of (B, nkv, T, hd), "
                 "to get (B, nkv · n_rep, T, hd)")
    return [
        ("the heads are tiled (kv0, kv1, kv0, kv1, …), as x.repeat(1, n_rep, 1, 1) does: each key/value "
         "head must be repeated n_rep times in a row (kv0, kv0, kv1, kv1, …), because query heads "
         "h·n_rep … h·n_rep + n_rep − 1 form the group of key/value head h — use "
         "x.repeat_interleave(n_rep, dim=1), or x[:, :, None].expand(B, nkv, n_rep, T, hd).reshape(...)",
         lambda: x.repeat(1, n_rep, 1, 1)),
        ("expand added a dimension, (B, nkv, n_rep, T, hd): reshape it to (B, nkv · n_rep, T, hd)",
         lambda: x[:, :, None].expand(B, nkv, n_rep, T, hd)),
        ("n_rep is ignored: the result must have nkv · n_rep heads", lambda: x),
        (wrong_dim, lambda: x.repeat_interleave(n_rep, dim=0)),
        (wrong_dim, lambda: x.repeat(n_rep, 1, 1, 1)),
        (wrong_dim, lambda: x.repeat_interleave(n_rep, dim=2)),
        (wrong_dim, lambda: x.repeat(1, 1, n_rep, 1)),
        (wrong_dim, lambda: x.repeat_interleave(n_rep, dim=3)),
        (wrong_dim, lambda: x.repeat(1, 1, 1, n_rep)),
        ("the repeated copies sit in the wrong place: expand a new dimension *after* the heads, "
         "x[:, :, None] → (B, nkv, n_rep, T, hd), then reshape — a new dimension in front of the heads "
         "tiles them", lambda: x[:, None].expand(B, n_rep, nkv, T, hd).reshape(B, nkv * n_rep, T, hd)),
    ]


def check_repeat_kv(fn) -> CheckResult:
    """``fn(x, n_rep)`` → (B, nkv · n_rep, T, hd): every key/value head of x (B, nkv, T, hd) repeated
    n_rep times in a row, so head h serves query heads h·n_rep … h·n_rep + n_rep − 1; equal to
    ``minillm.models.llama.repeat_kv`` (= ``transformers``' ``repeat_kv``)."""
    from ..models.llama import repeat_kv

    g = torch.Generator().manual_seed(13)
    cases = [
        Case((torch.randn(2, 2, 5, 4, generator=g), 3), description="2 key/value heads for 6 query heads"),
        Case((torch.randn(1, 3, 4, 64, generator=g), 3),
             description="SmolLM2-135M: 3 key/value heads of size 64 serve 9 query heads"),
        Case((torch.randn(2, 1, 3, 8, generator=g), 4),
             description="multi-query attention: one key/value head for 4 query heads"),
        Case((torch.randn(1, 4, 3, 8, generator=g), 1),
             description="n_rep = 1 (plain multi-head attention): unchanged"),
        Case((torch.randn(3, 4, 2, 6, generator=g), 2), description="4 key/value heads for 8 query heads"),
    ]
    ref = _Recorder(repeat_kv)

    def cmp(expected, got, **kw):
        msg = compare(expected, got, atol=0, rtol=0)
        if msg is None:
            return None
        why = _diagnose(got, _repeat_kv_variants(*ref.args), 0, 0)
        return f"{why} ({msg})" if why else msg

    return run_check("repeat_kv", fn, ref, cases, compare_fn=cmp,
                     hint="B, nkv, T, hd = x.shape; return x[:, :, None].expand(B, nkv, n_rep, T, hd)"
                          ".reshape(B, nkv * n_rep, T, hd) — or x.repeat_interleave(n_rep, dim=1)")


# ----------------------------------------------------------------------------- 4. top-k routing

def _ref_route(router_logits: torch.Tensor, k: int, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The package's router on the logits themselves: its weight is the identity (E, E), so its
    linear map returns the logits unchanged (x·1 + 0 is exact)."""
    from ..moe import MoEConfig, TopKRouter

    E = router_logits.size(-1)
    config = MoEConfig(hidden_size=E, num_experts=E, num_experts_per_tok=k, norm_topk_prob=normalize)
    with _fork_rng():
        router = TopKRouter(config).to(router_logits.dtype)
    with torch.no_grad():
        router.weight.copy_(torch.eye(E))
        _, weights, experts = router(router_logits)
    return weights, experts


def _route_variant(logits, k, normalize, *, renormalize=None, softmax_dim=-1, topk_dim=-1,
                   weights="probs", order="prob", largest=True):
    """Top-k routing written out, with one thing changed."""
    renormalize = normalize if renormalize is None else renormalize
    scores = logits.float().log_softmax(softmax_dim) if weights == "log" else logits.float().softmax(softmax_dim)
    w, e = scores.topk(k, dim=topk_dim, largest=largest)  # (N, k) each
    if weights == "logits":
        w = logits.float().gather(topk_dim, e)
    if renormalize:
        w = w / w.sum(dim=-1, keepdim=True)
    if order == "id":  # experts by id, each weight still with its expert
        e, idx = e.sort(dim=-1)
        w = w.gather(-1, idx)
    elif order == "id only":  # experts by id, weights left in probability order
        e = e.sort(dim=-1).values
    return w.to(logits.dtype), e


def _route_variants(logits, k, normalize) -> _Variants:
    v = lambda **kw: lambda: _route_variant(logits, k, normalize, **kw)  # noqa: E731
    sorted_ids = ("the experts are sorted by id: return them as topk does, most probable first "
                  "(weights[:, 0] ≥ weights[:, 1] ≥ …)")
    return [
        ("with normalize=False the weights are the k largest probabilities of the softmax over all E "
         "experts, left as they are (they sum to less than 1); a softmax over only the k kept logits "
         "renormalises them — that is normalize=True" if not normalize else
         "normalize=True: divide the k kept probabilities by their sum, so each token's weights sum to 1",
         v(renormalize=not normalize)),
        ("the softmax runs over the tokens (dim 0): each token's probabilities over the E experts must "
         "sum to 1 — softmax(dim=-1)", v(softmax_dim=0)),
        ("the top k were taken over the tokens (dim 0): each token (row) picks its own k experts — "
         "topk(k, dim=-1), giving (N, k)", v(topk_dim=0)),
        ("the softmax and the top k run over the tokens (dim 0): each token (row) picks its own k "
         "experts — softmax(dim=-1), topk(k, dim=-1)", v(softmax_dim=0, topk_dim=0)),
        ("the weights are raw logits: take the softmax first, then keep the k largest probabilities",
         v(weights="logits")),
        ("the weights are log-probabilities: use softmax, not log_softmax", v(weights="log")),
        (sorted_ids, v(order="id")),
        (sorted_ids, v(order="id only")),
        ("these are the k *least* likely experts: keep the largest probabilities (topk, largest=True)",
         v(largest=False)),
    ]


def _separated_logits(N: int, E: int, g: torch.Generator) -> torch.Tensor:
    """(N, E) logits whose experts are ranked without near-ties (gaps ≥ 0.3), also in bfloat16."""
    ranks = torch.stack([torch.randperm(E, generator=g) for _ in range(N)]).float()  # (N, E)
    gap = 0.3 + 0.7 * torch.rand(N, 1, generator=g)
    return ranks * gap + torch.randn(N, 1, generator=g) - E * gap / 2


def check_top_k_route(fn) -> CheckResult:
    """``fn(router_logits, k, normalize)`` → ``(weights, experts)``, both (N, k): each token's k most
    probable experts (most probable first) and their router probabilities — softmax over the E
    experts in float32, top k, divided by their sum if ``normalize`` — with the weights cast back to
    the logits' dtype; equal to ``minillm.moe.TopKRouter`` (= ``transformers``' Qwen2-MoE routing)."""
    g = torch.Generator().manual_seed(14)
    cases = [
        Case((_separated_logits(6, 8, g), 2, False),
             description="6 tokens, 8 experts, k = 2, normalize=False (Qwen1.5-MoE, Qwen2-MoE)"),
        Case((_separated_logits(5, 8, g), 2, True),
             description="5 tokens, 8 experts, k = 2, normalize=True (Mixtral)"),
        Case((_separated_logits(4, 16, g), 4, False), description="4 tokens, 16 experts, k = 4, normalize=False"),
        Case((_separated_logits(7, 4, g), 1, False),
             description="k = 1 (Switch Transformer): one expert per token, normalize=False"),
        Case((_separated_logits(6, 8, g).bfloat16(), 2, True),
             description="bfloat16 logits, k = 2, normalize=True: weights come back in bfloat16"),
    ]
    ref = _Recorder(_ref_route)

    def cmp(expected, got, **kw):
        if isinstance(got, list):
            got = tuple(got)
        if not isinstance(got, tuple) or len(got) != 2:
            what = f"a {type(got).__name__}" + (f" of length {len(got)}" if isinstance(got, tuple) else "")
            return f"expected a pair (weights, experts), got {what}"
        w, e = got
        if (isinstance(w, torch.Tensor) and not w.is_floating_point() and w.dtype != torch.bool
                and isinstance(e, torch.Tensor) and e.is_floating_point()):
            return "weights and experts are swapped: return (weights, experts), the weights first"
        msg = _integer_result(e, "experts")
        if msg:
            return msg
        if isinstance(w, torch.Tensor) and w.dtype != expected[0].dtype and w.shape == expected[0].shape:
            return (f"weights: expected dtype {_dtype_name(expected[0].dtype)} like router_logits, got "
                    f"{_dtype_name(w.dtype)}: route in float32, then cast the weights back "
                    f"(.to(router_logits.dtype))")
        atol, rtol = _low_precision_tolerance(expected[0].dtype)
        msg = compare(expected[0], w, atol=atol, rtol=rtol, path="weights") or \
            compare(expected[1], e, path="experts")
        if msg is None:
            return None
        why = _diagnose(got, _route_variants(*ref.args), atol, rtol)
        return f"{why} ({msg})" if why else msg

    return run_check("top_k_route", fn, ref, cases, compare_fn=cmp,
                     hint="probs = router_logits.float().softmax(dim=-1); weights, experts = probs.topk(k, "
                          "dim=-1); if normalize: weights = weights / weights.sum(-1, keepdim=True); "
                          "return weights.to(router_logits.dtype), experts")


# ----------------------------------------------------------------------------- 5. load balancing

def _balance_variant(logits, k, *, factor=True, p_chosen_only=False, f_over_k=False, top1=False,
                     softmax_dim=-1, p_from_logits=False, f_counts=False):
    """Switch Transformer's E · Σ_e f_e · P_e written out, with one thing changed."""
    N, E = logits.shape
    probs = logits.float().softmax(softmax_dim)  # (N, E)
    chosen = F.one_hot(probs.topk(1 if top1 else k, dim=-1).indices, E).float().sum(1)  # (N, E): 1 if chosen
    f = chosen.sum(0) / (1 if f_counts else N) / (k if f_over_k else 1)  # (E,)
    P = (probs * chosen if p_chosen_only else logits.float() if p_from_logits else probs).mean(0)  # (E,)
    return (E if factor else 1) * (f * P).sum()


def _balance_variants(logits, k) -> _Variants:
    v = lambda **kw: lambda: _balance_variant(logits, k, **kw)  # noqa: E731
    return [
        ("the factor E (the number of experts) is missing — or you averaged over the experts instead of "
         "summing: E · Σ_e f_e · P_e is k when the load is uniform", v(factor=False)),
        ("P_e must average expert e's router probability over *all* tokens, not only over the tokens "
         "that chose it", v(p_chosen_only=True)),
        ("f_e was divided by k: f_e is the share of tokens that have expert e among their k, so the "
         "f_e sum to k", v(f_over_k=True)),
        ("f_e counts only each token's first choice: count expert e for every token that has it among "
         "its top k", v(top1=True)),
        ("the softmax runs over the tokens (dim 0): each token's router probabilities over the E experts "
         "sum to 1 — softmax(dim=-1)", v(softmax_dim=0)),
        ("P_e averages the logits: average the probabilities (softmax over the experts)",
         v(p_from_logits=True)),
        ("f_e is a fraction of the tokens: divide the counts by N", v(f_counts=True)),
    ]


def check_load_balancing_loss(fn) -> CheckResult:
    """``fn(router_logits, k)`` → the 0-d tensor ``E · Σ_e f_e · P_e`` for router logits (N, E):
    f_e the share of tokens with expert e among their top k (Σ f_e = k), P_e the mean router
    probability of expert e (softmax in float32); equal to ``minillm.moe.load_balancing_loss``
    (= ``transformers``' ``load_balancing_loss_func``)."""
    from ..moe import load_balancing_loss

    g = torch.Generator().manual_seed(15)
    collapsed = torch.randn(16, 8, generator=g) + torch.tensor([3.0, 2.5, 0, 0, 0, 0, 0, 0])
    cases = [
        Case((torch.randn(12, 4, generator=g), 1), description="Switch Transformer: 12 tokens, 4 experts, k = 1"),
        Case((torch.randn(20, 8, generator=g) * 2, 2), description="20 tokens, 8 experts, k = 2"),
        Case((collapsed, 2), description="collapse: most tokens prefer experts 0 and 1 — the loss is large"),
        Case((torch.randn(64, 8, generator=g) * 0.01, 2),
             description="near-uniform routing: the loss is close to k = 2"),
        Case((torch.randn(10, 16, generator=g), 4), description="16 experts, k = 4 (fine-grained experts)"),
    ]
    ref = _Recorder(load_balancing_loss)

    def cmp(expected, got, **kw):
        if isinstance(got, (int, float)) and not isinstance(got, bool):
            return (f"expected the loss as a 0-d tensor (the router learns from its gradient), got a "
                    f"{type(got).__name__}")
        msg = compare(expected, got, atol=1e-6, rtol=1e-5, path="loss")
        if msg is None:
            return None
        why = _diagnose(got, _balance_variants(*ref.args), 1e-6, 1e-5)
        return f"{why} ({msg})" if why else msg

    return run_check("load_balancing_loss", fn, ref, cases, compare_fn=cmp,
                     hint="probs = router_logits.float().softmax(-1) (N, E); chosen = F.one_hot(probs.topk(k, "
                          "dim=-1).indices, E).float().sum(1) (N, E); f = chosen.mean(0); P = probs.mean(0); "
                          "return E * (f * P).sum()")


__all__ = ["check_apply_rope", "check_load_balancing_loss", "check_repeat_kv", "check_swiglu",
           "check_top_k_route"]
