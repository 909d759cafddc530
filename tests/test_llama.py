"""Llama / Qwen2 / Qwen3 decoder (chapter 11): parity with Hugging Face on tiny random configs
(logits with and without left padding, greedy, beam and end-of-text generation), state-dict keys,
RoPE and GQA pieces, KV cache vs full recompute, SDPA vs explicit attention with gradients,
prefix keys/values, save/load round trips through transformers, and bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from minillm.attention import set_attention_impl
from minillm.models.llama import (KVCache, LlamaConfig, LlamaForCausalLM, apply_rope, repeat_kv,
                                  rope_cos_sin)

transformers = pytest.importorskip("transformers")
from transformers import (AutoModelForCausalLM, LlamaForCausalLM as HFLlama,  # noqa: E402
                          Qwen2ForCausalLM, Qwen3ForCausalLM)

V = 96  # vocabulary of the tiny models
HF = {"llama": (transformers.LlamaConfig, HFLlama), "qwen2": (transformers.Qwen2Config, Qwen2ForCausalLM),
      "qwen3": (transformers.Qwen3Config, Qwen3ForCausalLM)}
# tiny configurations: GQA and MHA, tied and untied heads, biases, Qwen3's separate head_dim
CASES = {
    "llama-gqa": ("llama", dict(num_key_value_heads=2)),
    "llama-mha-tied": ("llama", dict(num_key_value_heads=4, tie_word_embeddings=True)),
    "llama-bias": ("llama", dict(attention_bias=True, rope_theta=500.0)),
    "qwen2": ("qwen2", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen3": ("qwen3", dict(num_key_value_heads=2, head_dim=16, attention_bias=True)),
}


def hf_model(case: str = "llama-gqa", seed: int = 0, **overrides):
    """A random transformers model of one of CASES, eager attention, eval mode. Norm gains and
    biases are perturbed: at their initial values (1 and 0) a model would hide bugs in them."""
    model_type, kw = CASES[case]
    config_cls, model_cls = HF[model_type]
    cfg = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
               rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=None, pad_token_id=None,
               tie_word_embeddings=False)
    cfg.update(kw, **overrides)
    torch.manual_seed(seed)
    config = config_cls(**cfg)
    config._attn_implementation = "eager"  # explicit softmax: the exact reference path
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.2 * torch.randn_like(p))
    return model


def tokens(shape, seed=0):
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def left_padding(B: int, T: int, pads: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention_mask, position_ids) of a left-padded batch, positions counting real tokens (HF)."""
    mask = torch.ones(B, T, dtype=torch.long)
    for row, n in enumerate(pads):
        mask[row, :n] = 0
    return mask, (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_hf_with_and_without_left_padding(case):
    hf = hf_model(case)
    ours = LlamaForCausalLM.from_hf(hf)
    assert set(ours.state_dict()) == set(hf.state_dict())  # HF's names, key for key
    x = tokens((3, 20), seed=1)
    mask, pos = left_padding(3, 20, [0, 4, 11])
    real = mask.bool()
    with torch.no_grad():
        expected = hf(x).logits
        expected_padded = hf(x, attention_mask=mask, position_ids=pos).logits
        got = ours(x)  # SDPA
        got_padded = ours(x, attention_mask=mask, position_ids=pos)
        set_attention_impl(ours, "explicit")
        got_explicit = ours(x)
        got_explicit_padded = ours(x, attention_mask=mask, position_ids=pos)
    assert got.shape == (3, 20, V)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_explicit, expected, atol=1e-5, rtol=0)
    # padded positions predict nothing (their query sees only padding): compare real tokens
    torch.testing.assert_close(got_padded[real], expected_padded[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(got_explicit_padded[real], expected_padded[real], atol=1e-5, rtol=0)
    # left padding changes nothing for the real tokens: row 2 equals its unpadded prompt
    with torch.no_grad():
        alone = ours(x[2:, 11:])
    torch.testing.assert_close(got_explicit_padded[2, 11:], alone[0], atol=1e-5, rtol=0)


def test_tied_and_untied_heads():
    tied = LlamaForCausalLM.from_hf(hf_model("llama-mha-tied"))
    untied = LlamaForCausalLM.from_hf(hf_model("llama-gqa"))
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    assert not torch.equal(untied.lm_head.weight, untied.model.embed_tokens.weight)
    small = {t: LlamaForCausalLM(LlamaConfig.tiny(tie_word_embeddings=t)) for t in (True, False)}
    assert small[False].num_params() - small[True].num_params() == 256 * 64  # counted once if tied


def test_gqa_and_bias_layouts():
    gqa = LlamaForCausalLM(LlamaConfig.tiny())
    assert gqa.model.layers[0].self_attn.k_proj.weight.shape == (2 * 16, 64)  # 2 kv heads of 16
    qwen2 = LlamaForCausalLM.from_hf(hf_model("qwen2"))
    attn = qwen2.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.o_proj.bias is None  # Qwen2: q/k/v biases only
    qwen3 = LlamaForCausalLM.from_hf(hf_model("qwen3"))
    attn = qwen3.model.layers[0].self_attn
    assert attn.o_proj.bias is not None and attn.q_norm.weight.shape == (16,)
    assert attn.q_proj.weight.shape == (4 * 16, 32)  # head_dim 16 ≠ hidden_size / heads = 8


@pytest.mark.parametrize("case", ["llama-gqa", "qwen3"])
def test_generate_matches_hf_greedy_beam_and_end_token(case):
    hf = hf_model(case, seed=3)
    with torch.no_grad():  # sharper distributions, so an end token actually comes up
        for p in hf.parameters():
            p.mul_(4)
    ours = LlamaForCausalLM.from_hf(hf)
    x = tokens((3, 7), seed=4)
    mask, _ = left_padding(3, 7, [0, 2, 5])
    expected = hf.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=10, do_sample=False)
    got = ours.generate(x, 10)
    assert torch.equal(got, expected)
    expected = hf.generate(x, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(ours.generate(x, 10, attention_mask=mask), expected)
    assert torch.equal(ours.generate(x, 10, attention_mask=mask, use_cache=False), expected)
    for beams in (2, 3):
        expected = hf.generate(x, attention_mask=mask, max_new_tokens=6, num_beams=beams,
                               do_sample=False, pad_token_id=0)
        assert torch.equal(ours.generate(x, 6, attention_mask=mask, num_beams=beams), expected)
    # an end token that row 0 emits early: rows stop, pad after, the batch ends when all have
    eos = int(got[0, 9])
    pad = int(torch.tensor([t for t in range(V) if t not in x])[0])  # HF treats pad in ids as padding
    expected = hf.generate(x, attention_mask=mask, max_new_tokens=10, do_sample=False,
                           eos_token_id=eos, pad_token_id=pad)
    got = ours.generate(x, 10, attention_mask=mask, eos_token_id=eos, pad_token_id=pad)
    assert torch.equal(got, expected)
    assert (got[0, 10:] == pad).all()


def test_cached_decoding_equals_full_recompute():
    model = LlamaForCausalLM.from_hf(hf_model("qwen3", seed=5))
    x = tokens((2, 16), seed=6)
    with torch.no_grad():
        full = model(x)
        cache = KVCache(model.config, 2, 16)
        steps = [model(x[:, :9], past_key_values=cache)]  # the prompt, then one token at a time
        for t in range(9, 16):
            steps.append(model(x[:, t:t + 1], past_key_values=cache))
    assert cache.length == 16
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    greedy = model.generate(x[:, :5], 20)
    assert torch.equal(greedy, model.generate(x[:, :5], 20, use_cache=False))
    sampled = [model.generate(x[:, :5], 20, do_sample=True, top_k=20, temperature=0.8, use_cache=c,
                              generator=torch.Generator().manual_seed(0)) for c in (True, False)]
    assert torch.equal(sampled[0], sampled[1])


def test_prefix_keys_and_values_equal_a_prefilled_cache():
    model = LlamaForCausalLM.from_hf(hf_model("llama-gqa", seed=7))
    x = tokens((2, 12), seed=8)
    with torch.no_grad():
        full = model(x)
        cache = KVCache(model.config, 2, 12)
        model(x[:, :5], past_key_values=cache)
        prefix = [(cache.k[i, :, :, :5].clone(), cache.v[i, :, :, :5].clone()) for i in range(2)]
        rest = model(x[:, 5:], past_key_values=prefix, attention_mask=torch.ones(2, 12))
    torch.testing.assert_close(rest, full[:, 5:], atol=1e-5, rtol=0)
    assert torch.equal(prefix[0][0], cache.k[0, :, :, :5])  # a prefix is read, never written


def test_inputs_embeds_equal_input_ids():
    model = LlamaForCausalLM.from_hf(hf_model("qwen2", seed=9))
    x = tokens((2, 10), seed=10)
    with torch.no_grad():
        torch.testing.assert_close(model(inputs_embeds=model.model.embed_tokens(x)), model(x),
                                   atol=0, rtol=0)


def test_sdpa_path_matches_explicit_path_with_gradients():
    torch.manual_seed(11)
    model = LlamaForCausalLM(LlamaConfig.tiny(vocab_size=V, model_type="qwen3", qk_norm=True,
                                              head_dim=24)).train()
    x = tokens((2, 24), seed=12)
    mask, pos = left_padding(2, 24, [0, 6])
    grads, losses = [], []
    for impl in ("sdpa", "explicit"):
        set_attention_impl(model, impl)
        model.zero_grad()
        logits = model(x, attention_mask=mask, position_ids=pos)
        loss = torch.nn.functional.cross_entropy(logits[mask.bool()], x[mask.bool()])
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(losses[0], losses[1], atol=1e-6, rtol=0)
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4)


def test_rope_and_repeat_kv_match_hf():
    from transformers.models.llama.modeling_llama import (LlamaRotaryEmbedding,
                                                          apply_rotary_pos_emb)
    from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv

    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, rope_theta=100000.0)
    pos = torch.tensor([[0, 1, 2, 700, 8191], [3, 3, 9, 10, 11]])
    q = torch.randn(2, 4, 5, 16, generator=torch.Generator().manual_seed(0))
    hf_cos, hf_sin = LlamaRotaryEmbedding(config)(q, pos)
    cos, sin = rope_cos_sin(pos, 16, 100000.0)
    assert torch.equal(cos, hf_cos) and torch.equal(sin, hf_sin)
    assert torch.equal(apply_rope(q, cos, sin), apply_rotary_pos_emb(q, q, hf_cos, hf_sin)[0])
    kv = torch.randn(2, 2, 5, 16)
    assert torch.equal(repeat_kv(kv, 3), hf_repeat_kv(kv, 3))
    assert torch.equal(repeat_kv(kv, 3), kv.repeat_interleave(3, dim=1))


def test_rope_scores_depend_only_on_the_distance():
    q, k = torch.randn(2, 1, 1, 32, generator=torch.Generator().manual_seed(1))

    def score(i: int, j: int) -> float:
        cq, sq = rope_cos_sin(torch.tensor([i]), 32)
        ck, sk = rope_cos_sin(torch.tensor([j]), 32)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())

    assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-4)
    assert score(7, 3) != pytest.approx(score(7, 4), abs=1e-3)


@pytest.mark.parametrize("case", ["llama-gqa", "qwen2", "qwen3"])
def test_save_pretrained_loads_in_transformers(tmp_path, case):
    torch.manual_seed(13)
    model_type, kw = CASES[case]
    config = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=64, model_type=model_type,
                         rope_theta=500.0,
                         qk_norm=model_type == "qwen3", attention_bias=model_type == "qwen2",
                         **{k: v for k, v in kw.items() if k != "attention_bias"})
    ours = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.2 * torch.randn_like(p))
    ours.save_pretrained(tmp_path / "m")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "m", attn_implementation="eager").eval()
    assert type(hf).__name__ == {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                                 "qwen3": "Qwen3ForCausalLM"}[model_type]
    back = LlamaForCausalLM.from_pretrained(tmp_path / "m")
    assert back.config == ours.config
    x = tokens((2, 12), seed=14)
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x), atol=1e-5, rtol=0)
        torch.testing.assert_close(back(x), ours(x), atol=0, rtol=0)


def test_bad_configs_are_clear_errors():
    with pytest.raises(ValueError, match=r"num_attention_heads=6 must be a multiple of "
                                         r"num_key_value_heads=4"):
        LlamaConfig(hidden_size=48, num_attention_heads=6, num_key_value_heads=4)
    with pytest.raises(ValueError, match=r"hidden_size=50 must be divisible by num_attention_heads=4"):
        LlamaConfig(hidden_size=50, num_attention_heads=4)
    with pytest.raises(ValueError, match=r"head_dim=7 must be even"):
        LlamaConfig(hidden_size=28, num_attention_heads=4)
    with pytest.raises(ValueError, match=r"model_type"):
        LlamaConfig(model_type="mistral")
    with pytest.raises(ValueError, match=r"qk_norm=False does not fit model_type='qwen3'"):
        LlamaConfig(model_type="qwen3")
    with pytest.raises(ValueError, match=r"attention_bias=True"):
        LlamaConfig(model_type="qwen2")
    with pytest.raises(ValueError, match=r"num_key_value_heads"):
        LlamaConfig(num_key_value_heads=0)
    hf_config = hf_model().config.to_dict()
    with pytest.raises(ValueError, match=r"RoPE scaling"):
        LlamaForCausalLM.config_from_hf({**hf_config, "rope_parameters": {
            "rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}})
    with pytest.raises(ValueError, match=r"hidden_act='gelu'"):
        LlamaForCausalLM.config_from_hf({**hf_config, "hidden_act": "gelu"})
    with pytest.raises(ValueError, match=r"'gpt2' is not supported"):
        LlamaForCausalLM.config_from_hf({**hf_config, "model_type": "gpt2"})


def test_bad_input_is_a_clear_error(tmp_path):
    model = LlamaForCausalLM(LlamaConfig.tiny(vocab_size=V, max_position_embeddings=32)).eval()
    x = tokens((2, 20))
    with pytest.raises(ValueError, match=r"20 tokens \+ max_new_tokens=13 = 33 is longer than "
                                         r"max_position_embeddings=32"):
        model.generate(x, 13)
    assert model.generate(x, 12).shape == (2, 32)
    with pytest.raises(ValueError, match=r"longer than max_position_embeddings=32"):
        model(tokens((1, 33)))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(2, 20\)"):
        model.generate(x, 2, attention_mask=torch.ones(2, 19))
    with pytest.raises(ValueError, match=r"every token of some prompt"):
        model.generate(x, 2, attention_mask=torch.zeros(2, 20))
    with pytest.raises(ValueError, match=r"token ids in \[0, 96\)"):
        model(torch.tensor([[1, 96]]))
    with pytest.raises(ValueError, match=r"position_ids must be token ids in \[0, 32\)"):
        model(x, position_ids=torch.arange(20) + 20)
    with pytest.raises(ValueError, match=r"exactly one of input_ids and inputs_embeds"):
        model()
    with pytest.raises(ValueError, match=r"max_len=40 is longer"):
        KVCache(model.config, 1, 40)
    cache = KVCache(model.config, 2, 8)
    with pytest.raises(ValueError, match=r"cannot add 9 more"):
        model(tokens((2, 9)), past_key_values=cache)
    with pytest.raises(ValueError, match=r"beam search is deterministic"):
        model.generate(x, 2, num_beams=2, do_sample=True)
    dataclasses.replace(model.config)  # a config survives a round trip through its own checks
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ValueError, match=r"holds a 'gpt2' model"):
        LlamaForCausalLM.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError):
        LlamaForCausalLM.from_pretrained(tmp_path / "missing")
