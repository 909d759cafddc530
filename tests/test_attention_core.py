"""The shared attention core (minillm.attention.attend): SDPA fast path vs the explicit softmax,
bool vs additive masks, additive bias, prefix keys/values, grouped-query heads, causal alignment."""

from __future__ import annotations

import itertools

import pytest
import torch

from minillm.attention import additive_mask, attend, causal_mask, set_attention_impl
from minillm.models.gpt import GPT, GPTConfig

B, NH, T, HS = 2, 4, 6, 8


def qkv(T=T, S=T, nkv=NH, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, NH, T, HS, generator=g)
    k = torch.randn(B, nkv, S, HS, generator=g)
    v = torch.randn(B, nkv, S, HS, generator=g)
    return q, k, v


def reference(q, k, v, allowed=None, add=None, scale=None):
    """float64, one head and one query at a time: the definition, nothing shared with attend."""
    q, k, v = q.double(), k.double(), v.double()
    rep = q.size(1) // k.size(1)
    out = torch.empty_like(q)
    scale = q.size(-1) ** -0.5 if scale is None else scale
    for b, h, t in itertools.product(range(q.size(0)), range(q.size(1)), range(q.size(2))):
        kh, vh = k[b, h // rep], v[b, h // rep]
        s = kh @ q[b, h, t] * scale
        if add is not None:
            s = s + add.double().expand(q.size(0), q.size(1), q.size(2), k.size(2))[b, h, t]
        if allowed is not None:
            a = allowed.expand(q.size(0), q.size(1), q.size(2), k.size(2))[b, h, t]
            s = s.masked_fill(~a, float("-inf"))
        out[b, h, t] = torch.softmax(s, -1) @ vh
    return out.float()


@pytest.mark.parametrize("explicit", [False, True])
def test_causal_padding_bias_and_scale_match_the_definition(explicit):
    q, k, v = qkv(seed=1)
    pad = torch.ones(B, 1, 1, T, dtype=torch.bool)
    pad[0, ..., :2] = False  # left padding in row 0
    bias = torch.randn(1, NH, T, T, generator=torch.Generator().manual_seed(2))
    allowed = pad & causal_mask(T)
    allowed[0, :, :2] = True  # padded queries have no visible keys: let them see themselves
    for kw, ref_allowed, ref_add in [
        (dict(causal=True), causal_mask(T), None),
        (dict(mask=allowed), allowed, None),
        (dict(mask=additive_mask(allowed)), allowed, None),
        (dict(mask=allowed, bias=bias, scale=1.0), allowed, bias),
        (dict(mask=pad[1:].expand(B, 1, 1, T), causal=True, bias=bias), causal_mask(T), bias),
    ]:
        out, _ = attend(q, k, v, explicit=explicit, **kw)
        ref = reference(q, k, v, ref_allowed, ref_add, kw.get("scale"))
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_fast_and_explicit_paths_agree_with_gradients():
    q, k, v = (t.requires_grad_() for t in qkv(seed=3))
    bias = torch.randn(1, NH, T, T)
    grads = []
    for explicit in (False, True):
        out, _ = attend(q, k, v, causal=True, bias=bias, explicit=explicit)
        g = torch.autograd.grad(out.square().sum(), (q, k, v))
        grads.append((out.detach(), g))
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-5, rtol=0)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("explicit", [False, True])
def test_prefix_equals_concatenated_keys_and_stays_visible_under_causal(explicit):
    q, k, v = qkv(T=T, S=T, seed=4)
    pk, pv = torch.randn(B, NH, 3, HS), torch.randn(B, NH, 3, HS)
    pad = torch.ones(B, 1, 1, T, dtype=torch.bool)
    pad[1, ..., 0] = False
    out, _ = attend(q, k, v, mask=pad, causal=True, prefix=(pk, pv), explicit=explicit)
    full_k, full_v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
    allowed = torch.cat([torch.ones(B, 1, 1, 3, dtype=torch.bool), pad], -1) & causal_mask(T, T + 3)
    torch.testing.assert_close(out, reference(q, full_k, full_v, allowed), atol=1e-5, rtol=0)


@pytest.mark.parametrize("explicit", [False, True])
def test_grouped_query_heads_share_keys(explicit):
    q, k, v = qkv(nkv=2, seed=5)
    out, _ = attend(q, k, v, causal=True, explicit=explicit)
    torch.testing.assert_close(out, reference(q, k, v, causal_mask(T)), atol=1e-5, rtol=0)


def test_causal_after_a_cache_aligns_bottom_right():
    q, k, v = qkv(T=2, S=7, seed=6)
    for explicit in (False, True):
        out, w = attend(q, k, v, causal=True, explicit=explicit, need_weights=explicit)
        torch.testing.assert_close(out, reference(q, k, v, causal_mask(2, 7)), atol=1e-5, rtol=0)
    assert (w[..., 0, 6] == 0).all() and (w[..., 1, 6] > 0).all()


def test_bad_input_is_named():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="bool tensor"):
        attend(q, k, v, mask=torch.ones(B, 1, 1, T, dtype=torch.long))
    with pytest.raises(TypeError, match="bias must be a float"):
        attend(q, k, v, bias=torch.ones(1, NH, T, T, dtype=torch.long))
    with pytest.raises(ValueError, match="cannot share 3"):
        attend(q, k[:, :3], v[:, :3])
    with pytest.raises(ValueError, match="4-D"):
        attend(q[0], k, v)
    with pytest.raises(ValueError, match="prefix keys/values"):
        attend(q, k, v, prefix=(torch.randn(B, NH, 2, HS + 1), torch.randn(B, NH, 2, HS + 1)))
    with pytest.raises(ValueError, match="'sdpa' or 'explicit'"):
        set_attention_impl(GPT(GPTConfig.tiny()), "flash")
    with pytest.raises(ValueError, match="no attention layers"):
        set_attention_impl(torch.nn.Linear(2, 2), "explicit")
