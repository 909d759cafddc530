"""GPT (chapter 8): parity with Hugging Face GPT-2, KV cache vs full recompute, decoding filters,
loading/saving GPT-2 directories, bad input, and the shipped checkpoint."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from minillm.models.gpt import GPT, GPTConfig, KVCache, causal_attention, gelu_new
from minillm.sampling import process_logits, sample_next, top_k_filter, top_p_filter

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402


def hf_gpt2(seed: int = 0, activation: str = "gelu_new", **kw) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=65, n_positions=32, n_embd=32, n_layer=2, n_head=4,
               activation_function=activation, bos_token_id=0, eos_token_id=None)
    cfg.update(kw)
    config = GPT2Config(**cfg)
    config._attn_implementation = "eager"  # explicit softmax: the exact reference path
    return GPT2LMHeadModel(config).eval()


def tokens(shape, vocab=65, seed=0):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("hf_act,ours", [("gelu_new", None), ("gelu_new", "gelu_tanh"),
                                         ("gelu_pytorch_tanh", None)])
def test_logits_match_hf(hf_act, ours):
    hf = hf_gpt2(activation=hf_act)
    gpt = GPT.from_hf(hf)
    if ours is not None:  # the fused GELU must stay inside the same tolerance
        fused = GPT(dataclasses.replace(gpt.config, activation=ours)).eval()
        fused.load_state_dict(gpt.state_dict())
        gpt = fused
    x = tokens((3, 32))
    with torch.no_grad():
        expected = hf(x).logits
        got = gpt(x)
    assert got.shape == expected.shape == (3, 32, 65)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_greedy_and_beam_tokens_match_hf():
    hf = hf_gpt2(seed=0)
    gpt = GPT.from_hf(hf)
    prompt = tokens((3, 5), seed=1)
    mask = torch.ones_like(prompt)  # without it HF treats token 0 (= pad) in the prompt as padding
    expected = hf.generate(prompt, attention_mask=mask, max_new_tokens=20, do_sample=False,
                           pad_token_id=0)
    assert torch.equal(gpt.generate(prompt, 20), expected)
    expected = hf.generate(prompt, attention_mask=mask, max_new_tokens=10, num_beams=4,
                           do_sample=False, pad_token_id=0)
    assert torch.equal(gpt.generate(prompt, 10, num_beams=4), expected)


def test_beam_search_beats_or_equals_greedy_log_probability():
    gpt = GPT.from_hf(hf_gpt2(seed=3))
    prompt = tokens((2, 4), seed=2)

    def logprob(seq):
        logp = torch.log_softmax(gpt(seq).float(), -1)[:, 3:-1]
        return logp.gather(-1, seq[:, 4:, None]).sum((1, 2))

    greedy, beam = gpt.generate(prompt, 12), gpt.generate(prompt, 12, num_beams=5)
    with torch.no_grad():
        assert (logprob(beam) >= logprob(greedy) - 1e-5).all()


def test_hf_directory_round_trip(tmp_path):
    hf = hf_gpt2(seed=4)
    hf.save_pretrained(tmp_path / "hf")
    gpt = GPT.from_pretrained(tmp_path / "hf")
    x = tokens((2, 32), seed=3)
    with torch.no_grad():
        torch.testing.assert_close(gpt(x), hf(x).logits, atol=1e-5, rtol=0)
    # and back: our directory loads into transformers with the same outputs
    gpt.save_pretrained(tmp_path / "ours")
    again = GPT2LMHeadModel.from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, hf(x).logits, atol=1e-5, rtol=0)
    assert torch.equal(GPT.from_pretrained(tmp_path / "ours").transformer.wte.weight,
                       gpt.transformer.wte.weight)


def test_from_pretrained_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT.from_pretrained(tmp_path)


@pytest.mark.parametrize("pre_ln", [True, False])
def test_kv_cache_gives_the_same_tokens(pre_ln):
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.tiny(pre_ln=pre_ln, block_size=16)).eval()
    prompt = tokens((3, 5), seed=5)
    for kwargs in [{}, dict(do_sample=True, temperature=0.9, top_k=20, top_p=0.9)]:
        # 30 new tokens with a 16-token window: the window slides past the cache, too
        fast = gpt.generate(prompt, 30, generator=torch.Generator().manual_seed(0), **kwargs)
        slow = gpt.generate(prompt, 30, use_cache=False, generator=torch.Generator().manual_seed(0),
                            **kwargs)
        assert fast.shape == (3, 35)
        assert torch.equal(fast, slow)


def test_cached_logits_match_full_forward():
    torch.manual_seed(1)
    gpt = GPT(GPTConfig.tiny()).eval()
    x = tokens((2, 20), seed=6)
    cache = KVCache(gpt.config, batch_size=2)
    with torch.no_grad():
        full = gpt(x)
        parts = [gpt(x[:, :7], cache), gpt(x[:, 7:12], cache)]  # a block after a cache, too
        parts += [gpt(x[:, t:t + 1], cache) for t in range(12, 20)]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)


def test_causal_attention_matches_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, generator=g) for _ in range(3))
    torch.testing.assert_close(causal_attention(q, k, v),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True),
                               atol=1e-6, rtol=0)
    # a query block after a cache sees the whole cache and its own causal past
    out = causal_attention(q[:, :, -2:], k, v)
    torch.testing.assert_close(out, causal_attention(q, k, v)[:, :, -2:], atol=1e-6, rtol=0)


def test_gelu_new_formula():
    x = torch.linspace(-6, 6, 101)
    from transformers.activations import NewGELUActivation

    torch.testing.assert_close(gelu_new(x), NewGELUActivation()(x))


def test_weight_tying_and_checkpoint_round_trip(tmp_path):
    from minillm.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    tied, untied = GPT(GPTConfig.tiny()), GPT(GPTConfig.tiny(tie_weights=False))
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.num_params() - tied.num_params() == 65 * 32
    save_checkpoint(tied, tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck").eval()
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    x = tokens((1, 10))
    with torch.no_grad():
        assert torch.equal(loaded(x), tied.eval()(x))


def test_filters_match_hf_logits_processors():
    from transformers.generation.logits_process import (TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    ids = torch.zeros(4, 1, dtype=torch.long)
    for p in (0.05, 0.5, 0.9, 0.999):
        assert torch.equal(top_p_filter(logits, p).isinf(), TopPLogitsWarper(p)(ids, logits).isinf())
    for k in (1, 5, 49):
        assert torch.equal(top_k_filter(logits, k).isinf(), TopKLogitsWarper(k)(ids, logits).isinf())
    torch.testing.assert_close(process_logits(logits, temperature=0.7),
                               TemperatureLogitsWarper(0.7)(ids, logits))
    assert torch.equal(sample_next(logits, do_sample=False), logits.argmax(-1, keepdim=True))


def test_top_p_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert top_p_filter(logits, 0.5).isfinite().tolist() == [[True, False, False, False]]
    assert top_p_filter(logits, 0.6).isfinite().tolist() == [[True, True, False, False]]
    assert top_p_filter(logits, 1.0).isfinite().all()


def test_bad_input_errors():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.tiny()).eval()
    ok = tokens((1, 4))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 65\)"):
        gpt(torch.tensor([[1, 65]]))
    with pytest.raises(ValueError, match="longer than the context window"):
        gpt.generate(tokens((1, 33)), 5)
    with pytest.raises(ValueError, match="top_p must be in"):
        gpt.generate(ok, 5, do_sample=True, top_p=0.0)
    with pytest.raises(ValueError, match="top_p must be in"):
        gpt.generate(ok, 5, do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="temperature must be"):
        gpt.generate(ok, 5, do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="temperature must be"):
        gpt.generate(ok, 5, do_sample=True, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k must be"):
        gpt.generate(ok, 5, do_sample=True, top_k=0)
    with pytest.raises(TypeError, match="int64/int32"):
        gpt(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="activation"):
        GPTConfig(activation="relu")


def test_shipped_checkpoint_loads_through_hub():
    from minillm.hub import load_pretrained, shipped_path
    from minillm.vocab import shakespeare_char_vocab
    from minillm.data import load_shakespeare
    from minillm.train import evaluate, sequential_lm_batches

    model = load_pretrained("ch08-gpt-shakespeare", progress=False)
    assert isinstance(model, GPT)
    assert model.checkpoint_source == str(shipped_path("ch08-gpt-shakespeare"))
    vocab = shakespeare_char_vocab()
    assert model.checkpoint_metadata["vocab"] == vocab.itos
    assert len(model.checkpoint_metadata["history"]["train_loss"]) > 0
    val = vocab.encode_tensor(load_shakespeare().validation)
    loss = evaluate(model, sequential_lm_batches(val, model.config.block_size, 16, max_batches=3),
                    autocast=None)
    assert loss < 0.6 * math.log(len(vocab))  # far better than a uniform guess over the characters
