"""GPT's Hugging Face forward interface — attention_mask, position_ids, inputs_embeds, past_key_values —
against transformers' GPT2LMHeadModel with the same weights (eager attention), and the fast SDPA
path against the explicit softmax with every kind of mask."""

from __future__ import annotations

import pytest
import torch

from minillm.attention import set_attention_impl
from minillm.models.gpt import GPT, GPTConfig, KVCache

transformers = pytest.importorskip("transformers")
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel  # noqa: E402

V, NL, NH, C, CTX = 65, 2, 4, 32, 32


def pair(seed: int = 0) -> tuple[GPT2LMHeadModel, GPT]:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=V, n_positions=CTX, n_embd=C, n_layer=NL, n_head=NH,
                        activation_function="gelu_new", bos_token_id=0, eos_token_id=None)
    config._attn_implementation = "eager"
    hf = GPT2LMHeadModel(config).eval()
    return hf, GPT.from_hf(hf)


def ids(shape, seed=1):
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def left_padded(seed=2):
    x = ids((3, 12), seed)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, :5] = 0  # row 0: 5 pads on the left
    mask[1, :1] = 0
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # real tokens count from 0
    return x, mask, position_ids


@torch.no_grad()
def test_left_padding_with_position_ids_matches_hf_and_the_unpadded_rows():
    hf, gpt = pair()
    x, mask, pos = left_padded()
    ours = gpt(x, attention_mask=mask, position_ids=pos)
    ref = hf(x, attention_mask=mask, position_ids=pos).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=0)
    assert torch.isfinite(ours).all()  # padded query rows stay finite (additive mask, as HF)
    # the padded row equals the same text run alone, unpadded
    alone = gpt(x[0:1, 5:])
    torch.testing.assert_close(ours[0, 5:], alone[0], atol=1e-5, rtol=0)


@torch.no_grad()
def test_inputs_embeds_equals_input_ids():
    hf, gpt = pair(3)
    x = ids((2, 10), 4)
    embeds = gpt.transformer.wte(x)
    torch.testing.assert_close(gpt(inputs_embeds=embeds), gpt(x), atol=0, rtol=0)
    torch.testing.assert_close(gpt(inputs_embeds=embeds), hf(inputs_embeds=embeds).logits,
                               atol=1e-5, rtol=0)


@torch.no_grad()
def test_prefix_past_key_values_match_hf_and_stay_unchanged():
    hf, gpt = pair(5)
    P, T, B = 4, 7, 2
    g = torch.Generator().manual_seed(6)
    past = [(torch.randn(B, NH, P, C // NH, generator=g), torch.randn(B, NH, P, C // NH, generator=g))
            for _ in range(NL)]
    before = [(k.clone(), v.clone()) for k, v in past]
    x = ids((B, T), 7)
    mask = torch.ones(B, P + T, dtype=torch.long)
    mask[1, P:P + 2] = 0  # left-padded real tokens after the prefix
    pos = torch.arange(P, P + T).expand(B, T)
    ours = gpt(x, attention_mask=mask, past_key_values=past)
    ref = hf(x, attention_mask=mask, position_ids=pos,
             cache=DynamicCache([(k.clone(), v.clone()) for k, v in past])).logits
    real = mask[:, P:].bool()
    torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=0)
    for (k, v), (k0, v0) in zip(past, before):  # read-only prefix
        assert torch.equal(k, k0) and torch.equal(v, v0)


@torch.no_grad()
def test_cache_and_prefix_paths_agree():
    """A KVCache filled by a first call equals passing that call's keys/values as a prefix."""
    _, gpt = pair(8)
    x = ids((2, 12), 9)
    cache = KVCache(gpt.config, batch_size=2)
    gpt(x[:, :5], past_key_values=cache)
    past = [(cache.k[i, :, :, :5].clone(), cache.v[i, :, :, :5].clone()) for i in range(NL)]
    via_cache = gpt(x[:, 5:], past_key_values=cache)
    via_prefix = gpt(x[:, 5:], past_key_values=past)
    torch.testing.assert_close(via_cache, via_prefix, atol=1e-6, rtol=0)
    torch.testing.assert_close(via_cache, gpt(x)[:, 5:], atol=1e-5, rtol=0)


def test_explicit_path_equals_sdpa_with_masks_prefix_and_gradients():
    _, fast = pair(10)
    slow = set_attention_impl(GPT(fast.config), "explicit")
    slow.load_state_dict(fast.state_dict())
    x, mask, pos = left_padded(11)
    past = [(torch.randn(3, NH, 2, C // NH), torch.randn(3, NH, 2, C // NH)) for _ in range(NL)]
    full_mask = torch.cat([torch.ones(3, 2, dtype=torch.long), mask], dim=1)
    outs = []
    for model in (fast, slow):
        model.zero_grad()
        logits = model(x, attention_mask=full_mask, position_ids=pos + 2, past_key_values=past)
        logits[mask.bool()].square().mean().backward()
        outs.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(outs[0][0][mask.bool()], outs[1][0][mask.bool()], atol=1e-5, rtol=0)
    for name, g in outs[0][1].items():
        torch.testing.assert_close(g, outs[1][1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_bad_interface_input_is_named():
    _, gpt = pair()
    x = ids((2, 5))
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        gpt()
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        gpt(x, inputs_embeds=torch.zeros(2, 5, C))
    with pytest.raises(ValueError, match="inputs_embeds must be float of shape"):
        gpt(inputs_embeds=torch.zeros(2, 5, C + 1))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, past \+ T\)"):
        gpt(x, attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="position_ids must be token ids in"):
        gpt(x, position_ids=torch.arange(CTX - 2, CTX + 3))
    with pytest.raises(ValueError, match="position_ids must have shape"):
        gpt(x, position_ids=torch.arange(4))
    with pytest.raises(ValueError, match="one \\(key, value\\) pair per layer"):
        gpt(x, past_key_values=[(torch.zeros(2, NH, 1, 8), torch.zeros(2, NH, 1, 8))])
    with pytest.raises(ValueError, match=r"past_key_values\[0\] must hold keys and values"):
        gpt(x, past_key_values=[(torch.zeros(2, NH, 1, 9), torch.zeros(2, NH, 1, 9))] * NL)
    with pytest.raises(ValueError, match="longer than the context window"):
        gpt(x, past_key_values=[(torch.zeros(2, NH, CTX, 8), torch.zeros(2, NH, CTX, 8))] * NL)
