"""minillm.models.t5 against Hugging Face transformers' T5 on tiny random configs (no download).

T5 v1.0 (ReLU, tied head, output scaling) and v1.1 (gated-GELU, untied head, more decoder than
encoder layers); the reference runs eager attention in eval mode with the same weights.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import T5Config as HFConfig  # noqa: E402
from transformers import T5EncoderModel as HFEncoder  # noqa: E402
from transformers import T5ForConditionalGeneration as HFT5  # noqa: E402
from transformers import T5Model as HFModel  # noqa: E402
from transformers.models.t5.modeling_t5 import T5Attention as HFAttention  # noqa: E402
from transformers.models.t5.modeling_t5 import T5LayerNorm  # noqa: E402

from minillm.attention import set_attention_impl  # noqa: E402
from minillm.models.t5 import (T5Cache, T5Config, T5EncoderModel, T5ForConditionalGeneration,  # noqa: E402
                               T5Model, config_from_hf, relative_position_bucket, shift_right)
from minillm.norms import RMSNorm  # noqa: E402

VARIANTS = {
    "v1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True, num_layers=2),
    "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_layers=2,
                 num_decoder_layers=3),
}
ATOL = RTOL = 1e-5


def hf_config(variant: str, vocab_size: int = 99, **overrides) -> HFConfig:
    kw = dict(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=48, num_heads=4,
              relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
              decoder_start_token_id=0, attn_implementation="eager")
    return HFConfig(**{**kw, **VARIANTS[variant], **overrides})


def hf_t5(variant: str, seed: int = 0, cls=HFT5, **overrides):
    """A random HF model; v1.1 gets a head of its own (transformers 5 ties it by default)."""
    torch.manual_seed(seed)
    hf = cls(hf_config(variant, **overrides)).eval()
    if hasattr(hf, "lm_head") and not VARIANTS[variant]["tie_word_embeddings"]:
        hf.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf.lm_head.weight) * 0.2)
    return hf


def batch(seed: int = 1, V: int = 99, B: int = 3, S: int = 7, T: int = 6):
    """Padded inputs: right padding, left padding, labels with ignored positions, a decoder mask."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(2, V, (B, S), generator=g)
    am = torch.ones(B, S, dtype=torch.long)
    am[1, S - 2:] = 0
    am[2, :2] = 0
    y = torch.randint(2, V, (B, T), generator=g)
    y[0, T - 2:] = -100
    dm = torch.ones(B, T, dtype=torch.long)
    dm[1, T - 2:] = 0
    return x, am, y, dm


# ---------------------------------------------------------------------------------------------
# Pieces


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 20), (16, 9), (6, 50)])
def test_bucket_function_matches_hf(bidirectional, num_buckets, max_distance):
    rel = torch.arange(-300, 301)[None, :] - torch.arange(0, 5)[:, None]  # (5, 601)
    ours = relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    ref = HFAttention._relative_position_bucket(rel, bidirectional=bidirectional,
                                                num_buckets=num_buckets, max_distance=max_distance)
    assert torch.equal(ours, ref.long())
    assert int(ours.min()) >= 0 and int(ours.max()) < num_buckets


def test_bucket_function_rejects_float_distances():
    with pytest.raises(TypeError, match="relative_position"):
        relative_position_bucket(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="max_distance=7 must be larger than the 8 exact buckets"):
        relative_position_bucket(torch.tensor([3]), bidirectional=False, num_buckets=16, max_distance=7)


@pytest.mark.parametrize("x_dtype,w_dtype", [(torch.float32, torch.float32),
                                             (torch.bfloat16, torch.float32),
                                             (torch.bfloat16, torch.bfloat16),
                                             (torch.float16, torch.float16)])
def test_rmsnorm_matches_hf_t5_layernorm(x_dtype, w_dtype):
    torch.manual_seed(0)
    ref = T5LayerNorm(24, eps=1e-6).to(w_dtype)
    with torch.no_grad():
        ref.weight.normal_()
    ours = RMSNorm(24, 1e-6).to(w_dtype)
    ours.load_state_dict(ref.state_dict())
    x = (torch.randn(3, 5, 24) * 3).to(x_dtype)
    a, b = ours(x), ref(x)
    assert a.dtype == b.dtype
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_rmsnorm_llama_cast_matches_hf_llama():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    ref = LlamaRMSNorm(24, eps=1e-5)
    with torch.no_grad():
        ref.weight.normal_()
    ours = RMSNorm(24, 1e-5, cast_to_input=True)
    ours.load_state_dict(ref.state_dict())
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 4, 24).to(dtype)
        torch.testing.assert_close(ours(x), ref(x), atol=0, rtol=0)


def test_shift_right_matches_hf():
    hf = hf_t5("v1.0")
    y = torch.tensor([[5, 6, 7, -100], [8, -100, -100, -100]])
    assert torch.equal(shift_right(y, 0, 0), hf._shift_right(y))
    assert shift_right(y, 3, 0)[:, 0].tolist() == [3, 3]


# ---------------------------------------------------------------------------------------------
# Parity of whole models


@pytest.mark.parametrize("variant", VARIANTS)
def test_logits_and_loss_match_hf_with_padding(variant):
    hf = hf_t5(variant)
    ours = T5ForConditionalGeneration.from_hf(hf)
    assert ours.config.tie_word_embeddings == VARIANTS[variant]["tie_word_embeddings"]
    assert (ours.lm_head.weight is ours.shared.weight) == ours.config.tie_word_embeddings
    x, am, y, dm = batch()
    with torch.no_grad():
        a = ours(x, attention_mask=am, labels=y, decoder_attention_mask=dm)
        b = hf(input_ids=x, attention_mask=am, labels=y, decoder_attention_mask=dm)
    torch.testing.assert_close(a.logits, b.logits, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a.encoder_last_hidden_state, b.encoder_last_hidden_state, atol=ATOL, rtol=RTOL)


def test_v1_0_output_scaling_matters():
    """Without the d_model**-0.5 rescaling the tied head's logits would be far off (the quirk)."""
    hf = hf_t5("v1.0")
    ours = T5ForConditionalGeneration.from_hf(hf)
    x, am, y, _ = batch()
    with torch.no_grad():
        out = ours(x, attention_mask=am, labels=y)
        unscaled = ours.lm_head(out.last_hidden_state)
    torch.testing.assert_close(unscaled * 32 ** -0.5, out.logits, atol=1e-5, rtol=1e-5)
    assert (unscaled - out.logits).abs().max() > 1.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_match_hf(variant):
    hf = hf_t5(variant)
    ours = T5ForConditionalGeneration.from_hf(hf)
    hf.train()
    ours.train()
    x, am, y, dm = batch(seed=3)
    hf(input_ids=x, attention_mask=am, labels=y, decoder_attention_mask=dm).loss.backward()
    ours(x, attention_mask=am, labels=y, decoder_attention_mask=dm).loss.backward()
    hf_params = dict(hf.named_parameters())
    checked = 0
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, hf_params[name].grad, atol=1e-5, rtol=1e-4, msg=name)
        checked += 1
    assert checked == len(hf_params)  # same parameters, tied ones counted once on both sides


@pytest.mark.parametrize("variant", VARIANTS)
def test_t5_model_and_encoder_model_match_hf(variant):
    x, am, _, dm = batch()
    dec = torch.randint(0, 99, dm.shape, generator=torch.Generator().manual_seed(2))
    hf = hf_t5(variant, cls=HFModel)
    ours = T5Model.from_hf(hf)
    with torch.no_grad():
        a = ours(x, attention_mask=am, decoder_input_ids=dec, decoder_attention_mask=dm)
        b = hf(input_ids=x, attention_mask=am, decoder_input_ids=dec, decoder_attention_mask=dm)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, atol=ATOL, rtol=RTOL)
    hf_enc = hf_t5(variant, cls=HFEncoder)
    enc = T5EncoderModel.from_hf(hf_enc)
    with torch.no_grad():
        torch.testing.assert_close(enc(x, attention_mask=am).last_hidden_state,
                                   hf_enc(input_ids=x, attention_mask=am).last_hidden_state,
                                   atol=ATOL, rtol=RTOL)
    # an encoder-only model loads the encoder out of a full checkpoint
    full = hf_t5(variant)
    enc2 = T5EncoderModel.from_hf(full)
    with torch.no_grad():
        torch.testing.assert_close(enc2(x, attention_mask=am).last_hidden_state,
                                   full.encoder(input_ids=x, attention_mask=am).last_hidden_state,
                                   atol=ATOL, rtol=RTOL)


def test_embeds_and_encoder_outputs_equal_ids():
    ours = T5ForConditionalGeneration.from_hf(hf_t5("v1.1"))
    x, am, y, _ = batch()
    with torch.no_grad():
        ref = ours(x, attention_mask=am, labels=y)
        emb = ours(inputs_embeds=ours.shared(x), attention_mask=am,
                   decoder_inputs_embeds=ours.shared(shift_right(y, 0, 0)), labels=y)
        enc = ours(encoder_outputs=ref.encoder_last_hidden_state, attention_mask=am, labels=y)
    torch.testing.assert_close(emb.logits, ref.logits, atol=0, rtol=0)
    torch.testing.assert_close(enc.logits, ref.logits, atol=0, rtol=0)
    torch.testing.assert_close(enc.loss, ref.loss, atol=0, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_explicit_attention_equals_sdpa(variant):
    ours = T5ForConditionalGeneration.from_hf(hf_t5(variant))
    x, am, y, dm = batch()
    with torch.no_grad():
        fast = ours(x, attention_mask=am, labels=y, decoder_attention_mask=dm)
        set_attention_impl(ours, "explicit")
        slow = ours(x, attention_mask=am, labels=y, decoder_attention_mask=dm)
    assert all(m.explicit_attention for m in ours.modules() if hasattr(m, "explicit_attention"))
    torch.testing.assert_close(fast.logits, slow.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.loss, slow.loss, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_decoding_equals_uncached_step_by_step(variant):
    ours = T5ForConditionalGeneration.from_hf(hf_t5(variant))
    x, am, y, _ = batch()
    dec = shift_right(y, 0, 0)  # (B, T)
    with torch.no_grad():
        full = ours(x, attention_mask=am, decoder_input_ids=dec).logits  # (B, T, V)
        enc = ours(x, attention_mask=am, decoder_input_ids=dec[:, :1]).encoder_last_hidden_state
        cache = T5Cache(ours.config, x.size(0), dec.size(1))
        for t in range(dec.size(1)):
            step = ours(encoder_outputs=enc, attention_mask=am, decoder_input_ids=dec[:, t:t + 1],
                        past_key_values=cache).logits[:, 0]  # (B, V)
            torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=1e-5)
    assert cache.length == dec.size(1)
    assert cache.cross is not None and len(cache.cross) == ours.config.num_decoder_layers


def pad_after_eos(ids: torch.Tensor, eos: int = 1, pad: int = 0) -> torch.Tensor:
    """HF's beam search fills ended rows with ``pad_token_id or eos_token_id`` (operator precedence
    in transformers 5.24): with T5's pad id 0 that is the end token. Greedy pads with 0; so do we."""
    ended = (ids[:, 1:] == eos).long().cumsum(dim=1) > 0  # (B, L) at or after the first end token
    after = torch.cat([torch.zeros_like(ended[:, :1]), ended[:, :-1]], dim=1)  # strictly after it
    out = ids.clone()
    out[:, 1:] = ids[:, 1:].masked_fill(after, pad)
    return out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("num_beams", [1, 2, 4])
def test_generate_tokens_match_hf(variant, num_beams):
    # a vocabulary of 12 makes </s> (id 1) likely, so rows end early and get padded
    hf = hf_t5(variant, seed=4, vocab_size=12)
    ours = T5ForConditionalGeneration.from_hf(hf)
    x, am, _, _ = batch(seed=5, V=12, B=4)
    ended = 0
    for lp in (1.0, 0.5):
        ref = hf.generate(input_ids=x, attention_mask=am, max_new_tokens=12, num_beams=num_beams,
                          do_sample=False, length_penalty=lp,
                          use_cache=variant == "v1.0")  # HF's cache breaks with more decoder layers
        for use_cache in (True, False):
            got = ours.generate(x, am, max_new_tokens=12, num_beams=num_beams, length_penalty=lp,
                                use_cache=use_cache)
            assert got.tolist() == pad_after_eos(ref).tolist(), (lp, use_cache)
        ended += int((ref[:, 1:] == 1).any(dim=1).sum())
    assert ended > 0  # end-of-sequence and padding were exercised


def test_hf_beam_search_equals_course_beam_search_without_an_end_token():
    """With no end token nothing finishes early, and the two beam searches are the same search."""
    from minillm.search import hf_beam_search
    from minillm.search import beam_search

    ours = T5ForConditionalGeneration.from_hf(hf_t5("v1.1", vocab_size=20))
    x, am, _, _ = batch(V=20)
    enc = ours(x, attention_mask=am, decoder_input_ids=x[:, :1]).encoder_last_hidden_state
    K = 3
    enc_k, am_k = enc.repeat_interleave(K, dim=0), am.repeat_interleave(K, dim=0)

    def step(prefix, state):  # uncached: the whole prefix every step (state unused)
        return ours(encoder_outputs=enc_k, attention_mask=am_k, decoder_input_ids=prefix).logits[:, -1], state

    with torch.no_grad():
        hf_like = hf_beam_search(step, None, batch_size=x.size(0), bos_id=0, eos_id=None, pad_id=0,
                                 max_new_tokens=6, num_beams=K)
        course = beam_search(step, None, batch_size=x.size(0), bos_id=0, eos_id=None,
                             max_new_tokens=6, num_beams=K)
    assert hf_like[:, 1:].tolist() == course.sequences.tolist()


def test_fully_padded_input_row_matches_hf_with_gradients():
    """A sequence with no real token: HF's additive mask averages all keys; so do we, and the
    gradient through that row (taken on the explicit path) matches too."""
    hf = hf_t5("v1.0")
    ours = T5ForConditionalGeneration.from_hf(hf)
    x, am, y, _ = batch()
    am[0] = 0
    dm = torch.ones_like(y)
    dm[2, :2] = 0  # a left-padded target: its first query sees no real key either
    a = ours(x, attention_mask=am, labels=y, decoder_attention_mask=dm)
    b = hf(input_ids=x, attention_mask=am, labels=y, decoder_attention_mask=dm)
    torch.testing.assert_close(a.logits, b.logits, atol=ATOL, rtol=RTOL)
    a.loss.backward()
    b.loss.backward()
    hf_params = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, hf_params[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_sampling_is_reproducible_and_cache_free_equal():
    ours = T5ForConditionalGeneration.from_hf(hf_t5("v1.0", vocab_size=40))
    x, am, _, _ = batch(V=40)
    a = ours.generate(x, am, max_new_tokens=8, do_sample=True, top_k=5,
                      generator=torch.Generator().manual_seed(0))
    b = ours.generate(x, am, max_new_tokens=8, do_sample=True, top_k=5, use_cache=False,
                      generator=torch.Generator().manual_seed(0))
    assert a.tolist() == b.tolist()
    assert a[:, 0].tolist() == [0] * x.size(0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_prefix_past_key_values_match_hf_cache(variant):
    """Prefix tuning: per-layer (k, v) prefixes for decoder self-attention = HF with the same
    keys/values pre-filled in its self-attention cache (what PEFT does for seq2seq)."""
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    hf = hf_t5(variant)
    ours = T5ForConditionalGeneration.from_hf(hf)
    c = ours.config
    x, am, y, _ = batch()
    B, P = x.size(0), 3
    g = torch.Generator().manual_seed(9)
    prefixes = [(torch.randn(B, c.num_heads, P, c.d_kv, generator=g),
                 torch.randn(B, c.num_heads, P, c.d_kv, generator=g)) for _ in range(c.num_decoder_layers)]
    self_cache = DynamicCache()  # (sized by its updates: with config it holds num_layers only)
    for i, (k, v) in enumerate(prefixes):
        self_cache.update(k.clone(), v.clone(), i)
    cache = EncoderDecoderCache(self_cache, DynamicCache())
    dm = torch.ones(B, P + y.size(1), dtype=torch.long)
    with torch.no_grad():
        a = ours(x, attention_mask=am, labels=y, past_key_values=prefixes)
        b = hf(input_ids=x, attention_mask=am, labels=y, cache=cache,
               decoder_attention_mask=dm, use_cache=True)
        no_prefix = ours(x, attention_mask=am, labels=y)
    torch.testing.assert_close(a.logits, b.logits, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-6, rtol=1e-6)
    assert (a.logits - no_prefix.logits).abs().max() > 1e-3  # the prefix does change the output


# ---------------------------------------------------------------------------------------------
# Loading and saving


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_and_load_both_ways(variant, tmp_path):
    hf = hf_t5(variant)
    ours = T5ForConditionalGeneration.from_hf(hf)
    x, am, y, dm = batch()
    ours.save_pretrained(tmp_path / "ours")
    back = HFT5.from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    hf.save_pretrained(tmp_path / "hf")
    ours2 = T5ForConditionalGeneration.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        ref = hf(input_ids=x, attention_mask=am, labels=y, decoder_attention_mask=dm).logits
        for m in (back, ours2):
            kw = dict(attention_mask=am, labels=y, decoder_attention_mask=dm)
            got = m(input_ids=x, **kw).logits
            torch.testing.assert_close(got, ref, atol=ATOL, rtol=RTOL)
    assert ours2.config.tie_word_embeddings == VARIANTS[variant]["tie_word_embeddings"]
    assert config_from_hf(back.config) == ours.config


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        T5ForConditionalGeneration.from_pretrained(tmp_path / "nope")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="expected 't5'"):
        T5ForConditionalGeneration.from_pretrained(tmp_path)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config.tiny(dropout_rate=0.0)).eval()


def test_bad_inputs_raise_clear_errors(tiny):
    x = torch.randint(2, 100, (2, 5))
    y = torch.randint(2, 100, (2, 4))
    with pytest.raises(ValueError, match=r"input_ids must be token ids in \[0, vocab_size=100\).*sentinel"):
        tiny(torch.tensor([[5, 100]]), labels=y[:1])
    with pytest.raises(ValueError, match="labels must lie in"):
        tiny(x, labels=torch.tensor([[5, 120], [1, 2]]))
    with pytest.raises(ValueError, match="exactly one of input_ids .* both"):
        tiny(x, inputs_embeds=tiny.shared(x), labels=y)
    with pytest.raises(ValueError, match="exactly one of input_ids .* neither"):
        tiny(labels=y)
    with pytest.raises(ValueError, match="needs decoder_input_ids"):
        tiny(x)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B=2, 5\)"):
        tiny(x, attention_mask=torch.ones(2, 4), labels=y)
    with pytest.raises(ValueError, match="decoder_attention_mask must have shape"):
        tiny(x, labels=y, decoder_attention_mask=torch.ones(2, 7))
    with pytest.raises(TypeError, match="input_ids must have a int dtype"):
        tiny(x.float(), labels=y)
    with pytest.raises(ValueError, match="longer than the decoder limit n_positions=64"):
        tiny(x, labels=torch.randint(2, 100, (2, 65)))
    with pytest.raises(ValueError, match="max_new_tokens=65 is more than the decoder can hold"):
        tiny.generate(x, max_new_tokens=65)
    with pytest.raises(ValueError, match="past_key_values must hold one"):
        tiny(x, labels=y, past_key_values=[(torch.zeros(2, 4, 1, 8),) * 2])
    with pytest.raises(ValueError, match="beam search is deterministic"):
        tiny.generate(x, num_beams=2, do_sample=True)
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 3\)"):
        tiny(x, decoder_input_ids=y[:, :3], labels=y)
    enc = tiny(x, labels=y).encoder_last_hidden_state
    with pytest.raises(ValueError, match="encoder output has batch size 2, the decoder input 1"):
        tiny(encoder_outputs=enc, labels=y[:1])
    with pytest.raises(ValueError, match="either encoder_outputs or input_ids"):
        tiny(x, encoder_outputs=enc, labels=y)
    with pytest.raises(ValueError, match="cannot add"):
        cache = T5Cache(tiny.config, 2, 2)
        for t in range(3):
            tiny(encoder_outputs=enc, decoder_input_ids=y[:, t:t + 1], past_key_values=cache)


def test_missing_decoder_start_token_is_a_clear_error():
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config.tiny(decoder_start_token_id=None)).eval()
    x = torch.randint(2, 100, (2, 5))
    with pytest.raises(ValueError, match="decoder_start_token_id is None"):
        model(x, labels=torch.randint(2, 100, (2, 3)))
    with pytest.raises(ValueError, match="decoder_start_token_id is None"):
        model.generate(x, max_new_tokens=3)
    # explicit decoder inputs need no start token
    assert model(x, decoder_input_ids=torch.zeros(2, 1, dtype=torch.long)).logits.shape == (2, 1, 100)


def test_config_validation():
    with pytest.raises(ValueError, match="feed_forward_proj"):
        T5Config.tiny(feed_forward_proj="swish")
    with pytest.raises(ValueError, match="decoder_start_token_id must be <= 99"):
        T5Config.tiny(decoder_start_token_id=100)
    with pytest.raises(TypeError, match="d_model must be an int"):
        T5Config.tiny(d_model=32.0)
    assert T5Config.tiny().num_decoder_layers == 2


def test_minillm_checkpoint_round_trip(tmp_path):
    from minillm.checkpoint import load_checkpoint, save_checkpoint

    for tie in (True, False):
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(T5Config.tiny(tie_word_embeddings=tie)).eval()
        save_checkpoint(model, tmp_path / f"ck{tie}")
        back = load_checkpoint(tmp_path / f"ck{tie}").eval()
        assert (back.lm_head.weight is back.shared.weight) == tie
        x = torch.randint(2, 100, (2, 5))
        with torch.no_grad():
            torch.testing.assert_close(back(x, labels=x).logits, model(x, labels=x).logits, atol=0, rtol=0)
