"""GPT (chapter 8): parity with Hugging Face GPT-2 (tied/untied, bias-free via zero biases), GPT-1
post-LN (OpenAIGPT), SDPA vs the explicit path in train mode with gradients, KV cache vs full
recompute, beam search properties, decoding filters, loading/saving GPT-2 directories, bad input,
and the shipped checkpoint's recorded loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from minillm.attention import set_attention_impl
from minillm.models.gpt import CONV1D_WEIGHTS, GPT, GPTConfig, KVCache, causal_attention, gelu_new
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


def test_untied_head_matches_hf():
    hf = hf_gpt2(seed=5, tie_word_embeddings=False)
    assert hf.lm_head.weight.data_ptr() != hf.transformer.wte.weight.data_ptr()
    gpt = GPT.from_hf(hf)
    assert not gpt.config.tie_weights
    assert gpt.lm_head.weight is not gpt.transformer.wte.weight
    torch.testing.assert_close(gpt.lm_head.weight, hf.lm_head.weight, atol=0, rtol=0)
    x = tokens((2, 32), seed=8)
    with torch.no_grad():
        torch.testing.assert_close(gpt(x), hf(x).logits, atol=1e-5, rtol=0)


def test_bias_free_model_matches_hf_with_zero_biases():
    # GPT-2 has no bias switch; a GPT2LMHeadModel whose Linear and LayerNorm biases are all zero
    # computes the same function, so it is the reference for bias=False.
    torch.manual_seed(6)
    gpt = GPT(GPTConfig.tiny(vocab_size=65, bias=False, activation="gelu_new")).eval()
    assert not any(name.endswith(".bias") for name, _ in gpt.named_parameters())
    hf = hf_gpt2(seed=6)
    state = gpt.state_dict()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            else:
                src = state[name]
                p.copy_(src.t() if name.endswith(CONV1D_WEIGHTS) else src)
    x = tokens((2, 32), seed=9)
    with torch.no_grad():
        torch.testing.assert_close(gpt(x), hf(x).logits, atol=1e-5, rtol=0)


def test_post_ln_matches_hf_openai_gpt():
    # GPT-1 (post-LN: LN(x + attn(x)), LN(x + mlp(x)), no final LayerNorm, tied head) is
    # transformers' OpenAIGPTLMHeadModel; its "gelu" is gelu_new.
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

    torch.manual_seed(7)
    hf = OpenAIGPTLMHeadModel(OpenAIGPTConfig(vocab_size=65, n_positions=32, n_embd=32, n_layer=2,
                                              n_head=4, afn="gelu")).eval()
    gpt = GPT(GPTConfig.tiny(vocab_size=65, pre_ln=False, activation="gelu_new")).eval()
    rename = {"transformer.tokens_embed.weight": "transformer.wte.weight",
              "transformer.positions_embed.weight": "transformer.wpe.weight"}
    ours = gpt.state_dict()
    copied = set()
    with torch.no_grad():
        for name, src in hf.state_dict().items():
            if name.endswith(".attn.bias"):  # the causal mask buffer
                continue
            name = rename.get(name, name)
            ours[name].copy_(src.t() if name.endswith(CONV1D_WEIGHTS) else src)
            copied.add(name)
    assert copied == set(ours), set(ours) ^ copied  # every tensor of ours came from the reference
    x = tokens((3, 32), seed=10)
    with torch.no_grad():
        torch.testing.assert_close(gpt(x), hf(x).logits, atol=1e-5, rtol=0)


def _hf_grad(hf: GPT2LMHeadModel, name: str) -> torch.Tensor:
    g = dict(hf.named_parameters())[name].grad
    return g.t() if name.endswith(CONV1D_WEIGHTS) else g


@pytest.mark.parametrize("pre_ln", [True, False])
def test_sdpa_path_matches_explicit_path_in_train_mode_with_gradients(monkeypatch, pre_ln):
    torch.manual_seed(11)
    config = GPTConfig.tiny(vocab_size=65, pre_ln=pre_ln, dropout=0.0)
    fast = GPT(config).train()
    slow = set_attention_impl(GPT(config).train(), "explicit")
    slow.load_state_dict(fast.state_dict())
    x, y = tokens((3, 32), seed=12), tokens((3, 32), seed=13)
    loss_fast = F.cross_entropy(fast(x).flatten(0, 1), y.flatten())
    loss_fast.backward()

    def no_fused(*args, **kwargs):
        raise AssertionError("the explicit path must not call the fused kernel")

    softmaxes = []
    real_softmax = torch.softmax
    monkeypatch.setattr(F, "scaled_dot_product_attention", no_fused)
    monkeypatch.setattr(torch, "softmax", lambda *a, **k: softmaxes.append(1) or real_softmax(*a, **k))
    loss_slow = F.cross_entropy(slow(x).flatten(0, 1), y.flatten())
    loss_slow.backward()
    assert len(softmaxes) == config.n_layer  # the explicit twin really ran in every layer
    torch.testing.assert_close(loss_fast, loss_slow, atol=1e-6, rtol=0)
    for (name, a), (_, b) in zip(fast.named_parameters(), slow.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_training_step_matches_hf_eager_gradients():
    hf = hf_gpt2(seed=14, activation="gelu_pytorch_tanh", resid_pdrop=0.0, embd_pdrop=0.0,
                 attn_pdrop=0.0).train()
    gpt = GPT.from_hf(hf).train()
    x, y = tokens((2, 32), seed=15), tokens((2, 32), seed=16)
    F.cross_entropy(gpt(x).flatten(0, 1), y.flatten()).backward()
    F.cross_entropy(hf(x).logits.flatten(0, 1), y.flatten()).backward()
    grads = dict(gpt.named_parameters())
    assert len(grads) == len(list(hf.parameters()))
    for name, p in grads.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, _hf_grad(hf, name), atol=2e-6, rtol=1e-4, msg=name)


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


def _sequence_logprob(gpt: GPT, seq: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Total log-probability (B,) of the tokens after the prompt, under ``gpt``."""
    with torch.no_grad():
        logp = torch.log_softmax(gpt(seq).float(), -1)[:, prompt_len - 1:-1]  # (B, new, V)
    return logp.gather(-1, seq[:, prompt_len:, None]).sum((1, 2))


def test_beam_search_as_wide_as_the_vocabulary_is_exact_over_two_tokens():
    # Beam search is not guaranteed to beat greedy (tests/test_search.py has a counterexample), but
    # with k >= V beams and two new tokens nothing is pruned: it must find the exhaustive optimum,
    # which in turn scores >= greedy.
    torch.manual_seed(0)
    V = 11
    gpt = GPT(GPTConfig.tiny(vocab_size=V)).eval()
    with torch.no_grad():  # sharpen the random model so that sequences differ clearly in score
        gpt.lm_head.weight.mul_(30)
    prompt = tokens((4, 3), vocab=V, seed=7)
    beam = gpt.generate(prompt, 2, num_beams=V)
    grid = torch.cartesian_prod(torch.arange(V), torch.arange(V))  # (V·V, 2) every continuation
    for b in range(prompt.size(0)):
        every = torch.cat([prompt[b].expand(len(grid), -1), grid], dim=1)  # (V·V, 5)
        best = every[_sequence_logprob(gpt, every, 3).argmax()]
        assert torch.equal(beam[b], best)
    greedy = gpt.generate(prompt, 2)
    assert (_sequence_logprob(gpt, beam, 3) >= _sequence_logprob(gpt, greedy, 3) - 1e-5).all()


def test_beam_search_scores_above_greedy_on_average():
    gpt = GPT.from_hf(hf_gpt2(seed=3))
    with torch.no_grad():
        gpt.lm_head.weight.mul_(3)  # tied: sharpens the random model's near-uniform predictions
    prompt = tokens((16, 4), seed=2)
    greedy, beam = gpt.generate(prompt, 12), gpt.generate(prompt, 12, num_beams=5)
    gain = _sequence_logprob(gpt, beam, 4) - _sequence_logprob(gpt, greedy, 4)  # (16,) nats
    assert float(gain.mean()) > 0.5, gain
    assert int((gain > 1e-5).sum()) >= 8, gain  # beam finds a better sequence for most prompts


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
        parts = [gpt(x[:, :7], past_key_values=cache), gpt(x[:, 7:12], past_key_values=cache)]  # a block after a cache, too
        parts += [gpt(x[:, t:t + 1], past_key_values=cache) for t in range(12, 20)]
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
    with pytest.raises(ValueError, match=r"token ids in \[0, 65\)"):
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


def test_generate_and_cache_reject_bad_input():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig.tiny(block_size=16)).eval()
    ok = tokens((1, 4))
    for bad in (0, -1):
        with pytest.raises(ValueError, match="num_beams"):
            gpt.generate(ok, 3, num_beams=bad)
    with pytest.raises((TypeError, ValueError), match="num_beams"):
        gpt.generate(ok, 3, num_beams=2.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        gpt.generate(ok, -1)
    with pytest.raises((TypeError, ValueError), match="max_new_tokens"):
        gpt.generate(ok, 2.5)
    with pytest.raises(ValueError, match="token"):
        gpt.generate(torch.zeros(1, 0, dtype=torch.long), 3)  # an empty prompt
    with pytest.raises(ValueError, match="block_size"):  # beams cannot slide the window
        gpt.generate(ok, 14, num_beams=2)
    assert gpt.generate(ok, 13, num_beams=2).shape == (1, 17)  # the longest that fits
    cache = KVCache(gpt.config, batch_size=1, max_len=6)
    with torch.no_grad():
        gpt(ok, past_key_values=cache)
        with pytest.raises(ValueError, match="cache holds max_len=6"):
            gpt(ok, past_key_values=cache)


def test_shipped_checkpoint_reproduces_its_recorded_validation_loss():
    from minillm.hub import load_pretrained, shipped_path
    from minillm.data import load_shakespeare
    from minillm.recipes import GPT_BATCH, GPT_TRAIN
    from minillm.train import evaluate, sequential_lm_batches
    from minillm.vocab import shakespeare_char_vocab

    model = load_pretrained("ch08-gpt-shakespeare", progress=False)
    assert isinstance(model, GPT)
    assert model.checkpoint_source == str(shipped_path("ch08-gpt-shakespeare"))
    meta = model.checkpoint_metadata
    vocab = shakespeare_char_vocab()
    assert meta["vocab"] == vocab.itos
    assert len(meta["history"]["train_loss"]) == GPT_TRAIN["steps"]
    # the recipe's final evaluation: the first eval_batches sequential validation windows
    val = sequential_lm_batches(vocab.encode_tensor(load_shakespeare().validation),
                                model.config.block_size, GPT_BATCH,
                                max_batches=GPT_TRAIN["eval_batches"])
    loss = evaluate(model, val, autocast=None)  # fp32 here; the recorded figure may be bf16
    assert loss == pytest.approx(meta["metrics"]["val_loss"], abs=1e-3)
    # and it is a real language model: far below the shipped bigram on the same windows
    bigram = evaluate(load_pretrained("tour-bigram", progress=False), val, autocast=None)
    assert loss < bigram - 0.8, (loss, bigram)
