"""Chapter 7: the attention ladder, masks, sparse attention, positions and the Transformer block.

Every fast path is checked against its slow twin (outputs and gradients, with and without masks),
and against PyTorch's own modules (nn.MultiheadAttention, nn.TransformerEncoderLayer,
nn.LayerNorm) and Hugging Face's sinusoidal table, on embeddings of real Shakespeare text.
Tolerance 1e-5 absolute; parameter gradients (sums over every position, values up to ~50) also get
1e-5 relative.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from minillm.attention import (MultiHeadAttention, MultiHeadAttentionExplicit, SelfAttentionV1,
                               block_local_attention, block_local_mask, causal_mask, local_mask,
                               merge_heads, padding_mask, scaled_dot_product_attention,
                               split_heads, strided_mask)
from minillm.profiling import peak_memory_bytes
from minillm.checkpoint import load_checkpoint, save_checkpoint
from minillm.data import load_shakespeare
from minillm.positional import (LearnedPositionalEmbedding, SinusoidalPositionalEncoding,
                                sinusoidal_encoding)
from minillm.transformer import (BlockConfig, LayerNorm, TinyLMConfig, TinyTransformerLM,
                                 TransformerBlock)
from minillm.vocab import CharVocab

ATOL = 1e-5
B, T, C, NH = 3, 24, 32, 4


@pytest.fixture(scope="module")
def shakespeare_x() -> torch.Tensor:
    """(B, T, C) embeddings of B real lines of Shakespeare (random embedding table, fixed seed)."""
    text = load_shakespeare().validation
    vocab = CharVocab.from_text(text)
    ids = vocab.encode_tensor(text[: B * T]).view(B, T)
    emb = nn.Embedding(len(vocab), C)
    torch.manual_seed(0)
    nn.init.normal_(emb.weight)
    return emb(ids).detach()


def _lengths_mask(lengths: list[int], T: int) -> torch.Tensor:
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T) 1 = real


MASKS = ["none", "padding", "causal", "padding+causal"]


def _mask_args(kind: str, T: int):
    am = _lengths_mask([T, T - 5, T - 11], T)
    mask = padding_mask(am) if "padding" in kind else None
    return mask, "causal" in kind, am


def _grads(module: nn.Module, x: torch.Tensor, run) -> tuple[torch.Tensor, torch.Tensor, dict]:
    x = x.clone().requires_grad_(True)
    out = run(module, x)
    g = torch.Generator().manual_seed(1)
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    return out.detach(), x.grad, {n: p.grad for n, p in module.named_parameters()}


# ----------------------------------------------------------------------------- the ladder

def _single_head_pair(seed: int = 0):
    torch.manual_seed(seed)
    v1 = SelfAttentionV1(C, C, bias=True)
    mha = MultiHeadAttentionExplicit(C, 1)
    with torch.no_grad():
        for ours, theirs in [(mha.q_proj, v1.W_query), (mha.k_proj, v1.W_key), (mha.v_proj, v1.W_value)]:
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)
        mha.out_proj.weight.copy_(torch.eye(C))
        mha.out_proj.bias.zero_()
    return v1, mha


@pytest.mark.parametrize("kind", MASKS)
def test_v1_loop_matches_explicit_multihead_with_one_head(shakespeare_x, kind):
    v1, mha = _single_head_pair()
    mask, causal, _ = _mask_args(kind, T)
    v1_mask = mask[:, 0] if mask is not None else None  # (B, 1, T): no head dimension
    out1, gx1, g1 = _grads(v1, shakespeare_x, lambda m, x: m(x, mask=v1_mask, causal=causal))
    out2, gx2, g2 = _grads(mha, shakespeare_x, lambda m, x: m(x, mask=mask, causal=causal))
    torch.testing.assert_close(out1, out2, atol=ATOL, rtol=0)
    torch.testing.assert_close(gx1, gx2, atol=ATOL, rtol=0)
    torch.testing.assert_close(g1["W_query.weight"], g2["q_proj.weight"], atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(g1["W_value.bias"], g2["v_proj.bias"], atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("kind", MASKS)
def test_sdpa_multihead_matches_explicit_outputs_and_gradients(shakespeare_x, kind):
    torch.manual_seed(0)
    slow = MultiHeadAttentionExplicit(C, NH)
    fast = MultiHeadAttention(C, NH)
    fast.load_state_dict(slow.state_dict())
    mask, causal, _ = _mask_args(kind, T)
    run = lambda m, x: m(x, mask=mask, causal=causal)  # noqa: E731
    o1, gx1, g1 = _grads(slow, shakespeare_x, run)
    o2, gx2, g2 = _grads(fast, shakespeare_x, run)
    torch.testing.assert_close(o1, o2, atol=ATOL, rtol=0)
    torch.testing.assert_close(gx1, gx2, atol=ATOL, rtol=0)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=ATOL, rtol=1e-5, msg=name)


@pytest.mark.parametrize("kind", MASKS)
def test_multihead_matches_torch_multiheadattention(shakespeare_x, kind):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(C, NH, batch_first=True)
    nn.init.normal_(ref.in_proj_bias)  # torch initialises biases to zero; make them count
    ours = MultiHeadAttention.from_torch(ref)
    mask, causal, am = _mask_args(kind, T)
    kpm = (am == 0) if "padding" in kind else None  # torch: True = ignore this key
    attn_mask = ~causal_mask(T) if causal else None  # torch: True = not allowed
    o1, gx1, g1 = _grads(ref, shakespeare_x, lambda m, x: m(x, x, x, key_padding_mask=kpm,
                                                              attn_mask=attn_mask, need_weights=False)[0])
    o2, gx2, g2 = _grads(ours, shakespeare_x, lambda m, x: m(x, mask=mask, causal=causal))
    torch.testing.assert_close(o1, o2, atol=ATOL, rtol=0)
    torch.testing.assert_close(gx1, gx2, atol=ATOL, rtol=0)
    torch.testing.assert_close(g1["in_proj_weight"],
                               torch.cat([g2["q_proj.weight"], g2["k_proj.weight"], g2["v_proj.weight"]]),
                               atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(g1["out_proj.weight"], g2["out_proj.weight"], atol=ATOL, rtol=1e-5)
    # per-head attention weights agree too
    with torch.no_grad():
        _, w_ref = ref(shakespeare_x, shakespeare_x, shakespeare_x, key_padding_mask=kpm,
                       attn_mask=attn_mask, average_attn_weights=False)
        _, w_ours = ours(shakespeare_x, mask=mask, causal=causal, need_weights=True)
    torch.testing.assert_close(w_ref, w_ours, atol=ATOL, rtol=0)


def test_cross_attention_matches_torch(shakespeare_x):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(C, NH, batch_first=True).eval()
    ours = MultiHeadAttentionExplicit.from_torch(ref).eval()
    q, kv = shakespeare_x[:, :7], shakespeare_x  # 7 queries over 24 keys
    am = _lengths_mask([T, T - 5, T - 11], T)
    expected, _ = ref(q, kv, kv, key_padding_mask=am == 0)
    got = ours(q, kv, mask=padding_mask(am))
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_padded_keys_get_zero_weight_and_do_not_change_real_outputs(shakespeare_x):
    torch.manual_seed(0)
    mha = MultiHeadAttentionExplicit(C, NH).eval().requires_grad_(False)
    am = _lengths_mask([T, T - 5, T - 11], T)
    _, w = mha(shakespeare_x, mask=padding_mask(am), need_weights=True)  # (B, nh, T, T)
    assert float(w[2, :, :, T - 11:].abs().max()) == 0.0
    torch.testing.assert_close(w.sum(-1), torch.ones(B, NH, T))
    # the second sentence alone (no padding) gives the same outputs at its real positions
    alone = mha(shakespeare_x[1:2, :T - 5])
    padded = mha(shakespeare_x, mask=padding_mask(am))[1:2, :T - 5]
    torch.testing.assert_close(padded, alone, atol=ATOL, rtol=0)


def test_causal_outputs_ignore_the_future(shakespeare_x):
    torch.manual_seed(0)
    mha = MultiHeadAttention(C, NH).eval()
    changed = shakespeare_x.clone()
    changed[:, 15:] = torch.randn_like(changed[:, 15:])
    a, b = mha(shakespeare_x, causal=True), mha(changed, causal=True)
    torch.testing.assert_close(a[:, :15], b[:, :15])
    assert (a[:, 15:] - b[:, 15:]).abs().max() > 1e-2


def test_causal_mask_with_cache_offset_matches_full_attention(shakespeare_x):
    torch.manual_seed(0)
    q, k, v = (split_heads(torch.randn(B, T, C), NH) for _ in range(3))
    full, _ = scaled_dot_product_attention(q, k, v, causal_mask(T))
    last, _ = scaled_dot_product_attention(q[..., -5:, :], k, v, causal_mask(5, T))
    torch.testing.assert_close(last, full[..., -5:, :])
    fast = MultiHeadAttention(C, NH).eval()
    slow = MultiHeadAttentionExplicit(C, NH).eval()
    slow.load_state_dict(fast.state_dict())
    x = shakespeare_x
    torch.testing.assert_close(fast(x[:, -5:], x, causal=True), slow(x[:, -5:], x, causal=True),
                               atol=ATOL, rtol=0)


def test_split_and_merge_heads_round_trip():
    x = torch.randn(B, T, C)
    h = split_heads(x, NH)
    assert h.shape == (B, NH, T, C // NH)
    torch.testing.assert_close(h[:, 1], x[..., C // NH: 2 * C // NH])  # head 1 = channels 8..15
    torch.testing.assert_close(merge_heads(h), x)


# ----------------------------------------------------------------------------- sparse attention

@pytest.mark.parametrize("T_,block", [(24, 8), (37, 8), (5, 8), (16, 1)])
def test_block_local_attention_matches_dense_masked_attention(T_, block):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, NH, T_, 8, generator=g, requires_grad=True) for _ in range(3))
    dense, _ = scaled_dot_product_attention(q, k, v, block_local_mask(T_, block))
    local = block_local_attention(q, k, v, block)
    torch.testing.assert_close(local, dense, atol=ATOL, rtol=0)
    w = torch.randn(dense.shape, generator=g)
    gd = torch.autograd.grad((dense * w).sum(), (q, k, v))
    gl = torch.autograd.grad((local * w).sum(), (q, k, v))
    for a, b in zip(gd, gl):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def test_sparse_masks_have_the_documented_pattern():
    loc = local_mask(10, 3)
    assert loc.sum(1).tolist() == [1, 2] + [3] * 8
    assert not (loc & ~causal_mask(10)).any()
    assert local_mask(10, 3, causal=False).sum(1).tolist() == [3, 4] + [5] * 6 + [4, 3]
    st = strided_mask(12, 4)
    assert st[11].nonzero().flatten().tolist() == [3, 7, 8, 9, 10, 11]
    blk = block_local_mask(12, 4)
    assert blk[9].nonzero().flatten().tolist() == [4, 5, 6, 7, 8, 9]
    assert blk[3].nonzero().flatten().tolist() == [0, 1, 2, 3]


def test_explicit_attention_memory_grows_quadratically_and_block_local_linearly():
    def mem(T_, fn):
        q = torch.randn(1, 2, T_, 16, requires_grad=True)
        return peak_memory_bytes(lambda: fn(q).sum().backward())

    dense = lambda q: scaled_dot_product_attention(q, q, q, causal_mask(q.shape[-2]))[0]  # noqa: E731
    local = lambda q: block_local_attention(q, q, q, 32)  # noqa: E731
    assert 3.5 < mem(512, dense) / mem(256, dense) < 4.5
    assert 1.5 < mem(512, local) / mem(256, local) < 2.5


# ----------------------------------------------------------------------------- positions

def test_sinusoidal_matches_hugging_face_distilbert_table():
    from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings

    ref = torch.empty(512, 64)
    create_sinusoidal_embeddings(512, 64, ref)
    torch.testing.assert_close(sinusoidal_encoding(512, 64), ref, atol=1e-6, rtol=0)


def test_sinusoidal_formula_and_module():
    pe = sinusoidal_encoding(50, 16)
    p, i = 37, 3
    assert math.isclose(pe[p, 2 * i], math.sin(p / 10000 ** (2 * i / 16)), abs_tol=1e-6)
    assert math.isclose(pe[p, 2 * i + 1], math.cos(p / 10000 ** (2 * i / 16)), abs_tol=1e-6)
    mod = SinusoidalPositionalEncoding(16, max_len=50)
    assert "pe" not in mod.state_dict()  # derived table: a non-persistent buffer
    x = torch.zeros(2, 5, 16)
    torch.testing.assert_close(mod(x, offset=10), pe[10:15].expand(2, 5, 16))
    with pytest.raises(ValueError, match="max_len=50"):
        mod(torch.zeros(1, 51, 16))
    with pytest.raises(ValueError, match="even"):
        sinusoidal_encoding(10, 15)


def test_learned_positions_and_permutation_equivariance(shakespeare_x):
    torch.manual_seed(0)
    mha = MultiHeadAttention(C, NH).eval()
    perm = torch.randperm(T)
    x = shakespeare_x
    # without positions attention is permutation-equivariant: permuted input, permuted output
    torch.testing.assert_close(mha(x[:, perm]), mha(x)[:, perm], atol=ATOL, rtol=0)
    pos = LearnedPositionalEmbedding(T, C)
    assert (mha(pos(x[:, perm])) - mha(pos(x))[:, perm]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="exceed max_len"):
        pos(x, offset=1)


# ----------------------------------------------------------------------------- the block

def test_layernorm_matches_torch(shakespeare_x):
    ref = nn.LayerNorm(C)
    nn.init.normal_(ref.weight)
    nn.init.normal_(ref.bias)
    ours = LayerNorm(C)
    ours.load_state_dict(ref.state_dict())
    torch.testing.assert_close(ours(shakespeare_x), ref(shakespeare_x), atol=ATOL, rtol=0)
    xb = shakespeare_x.bfloat16()
    got = ours(xb)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), ref(xb.float()), atol=2e-2, rtol=0)


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-LN", "post-LN"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("kind", ["none", "padding+causal"])
def test_block_matches_torch_transformer_encoder_layer(shakespeare_x, norm_first, activation, kind):
    torch.manual_seed(0)
    ref = nn.TransformerEncoderLayer(C, NH, dim_feedforward=64, dropout=0.0, activation=activation,
                                     batch_first=True, norm_first=norm_first)
    for p in ref.parameters():  # randomise norms and biases too, so every parameter matters
        nn.init.normal_(p, std=0.3)
    ours = TransformerBlock.from_torch(ref)
    assert ours.config.norm_first == norm_first and ours.config.activation == activation
    mask, causal, am = _mask_args(kind, T)
    kpm = (am == 0) if mask is not None else None
    src_mask = ~causal_mask(T) if causal else None
    # train mode (dropout 0) keeps torch on its reference path rather than the fused inference one
    o1, gx1, g1 = _grads(ref.train(), shakespeare_x,
                         lambda m, x: m(x, src_mask=src_mask, src_key_padding_mask=kpm))
    o2, gx2, g2 = _grads(ours.train(), shakespeare_x, lambda m, x: m(x, mask=mask, causal=causal))
    torch.testing.assert_close(o1, o2, atol=ATOL, rtol=1e-5)
    torch.testing.assert_close(gx1, gx2, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(g1["linear1.weight"], g2["ff.linear1.weight"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(g1["norm2.weight"], g2["norm2.weight"], atol=1e-4, rtol=1e-5)


def test_block_config_validation():
    with pytest.raises(ValueError, match="n_heads=5"):
        BlockConfig(d_model=32, n_heads=5)
    with pytest.raises(ValueError, match="swish"):
        BlockConfig(activation="swish")
    assert BlockConfig(d_model=24, n_heads=3).d_ff == 96


def test_bad_inputs_raise_clear_errors():
    mha = MultiHeadAttention(C, NH)
    x = torch.randn(B, T, C)
    with pytest.raises(TypeError, match="bool"):
        mha(x, mask=torch.ones(B, 1, 1, T, dtype=torch.long))  # neither bool nor additive float
    with pytest.raises(ValueError, match=r"\(B, T, 32\)"):
        mha(torch.randn(B, T, C + 1))
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match="T <= S"):
        causal_mask(5, 3)


def test_tiny_lm_is_causal_and_returns_normalised_attention():
    torch.manual_seed(0)
    cfg = TinyLMConfig(vocab_size=20, max_len=16, n_layers=2, block=BlockConfig(d_model=32, n_heads=4))
    model = TinyTransformerLM(cfg).eval().requires_grad_(False)
    idx = torch.randint(0, 20, (2, 16))
    logits, maps = model(idx, return_attention=True)
    assert logits.shape == (2, 16, 20) and len(maps) == 2 and maps[0].shape == (2, 4, 16, 16)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, 4, 16))
    assert float(maps[0].triu(1).abs().max()) == 0.0
    torch.testing.assert_close(model(idx), logits, atol=ATOL, rtol=0)  # SDPA path = explicit path
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 20
    torch.testing.assert_close(model(changed)[:, :10], logits[:, :10])
    sin = TinyTransformerLM(TinyLMConfig(vocab_size=20, max_len=16, positional="sinusoidal",
                                         block=BlockConfig(d_model=32, n_heads=4)))
    sin_logits = sin(idx)
    assert sin_logits.shape == (2, 16, 20)
    torch.testing.assert_close(sin(changed)[:, :10], sin_logits[:, :10])  # causal too
    assert not torch.allclose(sin(changed)[:, 10:], sin_logits[:, 10:])


def test_tiny_lm_checkpoint_round_trip_and_gelu_module_import(tmp_path):
    torch.manual_seed(0)
    model = TinyTransformerLM(TinyLMConfig(vocab_size=12, max_len=8, positional="sinusoidal",
                                           block=BlockConfig(d_model=16, n_heads=2, norm_first=False)))
    save_checkpoint(model, tmp_path / "tiny")
    loaded = load_checkpoint(tmp_path / "tiny")
    assert isinstance(loaded, TinyTransformerLM) and loaded.config == model.config
    idx = torch.randint(0, 12, (2, 8))
    torch.testing.assert_close(loaded(idx), model(idx))
    ref = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, activation=nn.GELU(approximate="tanh"),
                                     batch_first=True)
    block = TransformerBlock.from_torch(ref)
    assert block.config.activation == "gelu_tanh"
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(block(x), ref.train()(x), atol=ATOL, rtol=1e-5)
