"""The three paradigms on equal terms: matched sizes, the three objectives' batches, the zero-shot probes
against a direct computation, a tiny end-to-end run, bad input, and the shipped checkpoints."""

from __future__ import annotations

import json

import matplotlib
import pytest
import torch
import torch.nn.functional as F

from minillm.models.t5_pretrain import corpus_texts, token_stream
from minillm.paradigms import (EOS, IGNORE_INDEX, PAD, PARADIGMS, RECIPE_NAMES, ParadigmConfig,
                               WindowBatches, build_model, compare_paradigms, objective_batch,
                               objective_loss, param_counts, plot_paradigms, probe_positions,
                               train_paradigm, validation_batches, zero_shot_predict)
from minillm.span_corruption import reconstruct
from minillm.tokenizers.t5_bpe import T5BPETokenizer

matplotlib.use("Agg")
VOCAB = 420


@pytest.fixture(scope="module")
def corpus():
    texts = corpus_texts("train", max_chars=20_000)
    tok = T5BPETokenizer.train(list(texts.values()), VOCAB)
    return tok, token_stream(tok, texts), token_stream(tok, corpus_texts("validation", max_chars=5_000))


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    cfg = ParadigmConfig.tiny(vocab_size=VOCAB)
    return {p: build_model(p, cfg).eval() for p in PARADIGMS}


def test_the_three_models_have_the_same_size_within_2_percent():
    counts = param_counts()
    assert max(counts.values()) / min(counts.values()) - 1 < 0.02, counts
    assert all(1.2e6 < n < 1.6e6 for n in counts.values()), counts
    models = {p: build_model(p) for p in PARADIGMS}  # tied embeddings everywhere
    assert models["ae"].cls.predictions.decoder.weight is models["ae"].bert.embeddings.word_embeddings.weight
    assert models["ar"].lm_head.weight is models["ar"].transformer.wte.weight
    assert models["ed"].lm_head.weight is models["ed"].shared.weight


def test_the_three_objectives_see_the_same_windows_and_lose_only_where_they_should(corpus):
    _, train_ids, _ = corpus
    cfg = ParadigmConfig.tiny(vocab_size=VOCAB, batch_size=16)
    windows = {p: WindowBatches(p, train_ids, cfg, seed=3).sample_windows() for p in PARADIGMS}
    assert torch.equal(windows["ae"], windows["ar"]) and torch.equal(windows["ar"], windows["ed"])
    w = windows["ae"]
    g = torch.Generator().manual_seed(0)
    inputs, labels = objective_batch("ae", w, cfg, g)
    chosen = labels != IGNORE_INDEX
    assert torch.equal(labels[chosen], w[chosen]) and 0.05 < chosen.float().mean() < 0.3
    assert torch.equal(inputs[~chosen], w[~chosen])  # unchosen tokens untouched
    assert (inputs[chosen] == VOCAB - 1).float().mean() > 0.6  # [MASK] = sentinel 0 for most
    x, y = objective_batch("ar", w, cfg)
    assert torch.equal(x, w[:, :-1]) and torch.equal(y, w[:, 1:])
    ids, mask, tgt = objective_batch("ed", w, cfg, g)
    for b in range(len(w)):  # inputs + targets give back the window
        src = ids[b][mask[b].bool()].tolist()
        t = tgt[b][tgt[b] != IGNORE_INDEX].tolist()
        assert src[-1] == EOS and t[-1] == EOS
        assert torch.equal(reconstruct(src[:-1], t[:-1], vocab_size=VOCAB), w[b])
    # the AE loss is the cross-entropy at the chosen positions only
    model = build_model("ae", cfg)
    logits = model(inputs).logits
    manual = F.cross_entropy(logits[chosen], labels[chosen])
    assert torch.allclose(objective_loss("ae")(model, (inputs, labels)), manual, atol=1e-6)


def test_zero_shot_probes_equal_a_direct_computation(corpus, tiny_models):
    _, _, val_ids = corpus
    left, target, right = probe_positions(val_ids, n=6, side=8, seed=1)
    assert left.shape == right.shape == (6, 8) and target.shape == (6,)
    S0 = VOCAB - 1
    for i in range(6):  # the positions are real neighbours in the stream
        hit = [k for k in range(8, len(val_ids) - 8) if torch.equal(val_ids[k - 8:k], left[i])
               and val_ids[k] == target[i] and torch.equal(val_ids[k + 1:k + 9], right[i])]
        assert hit
    m = tiny_models
    for fim in (False, True):
        r = right if fim else None
        got = {p: zero_shot_predict(p, m[p], left, r, batch_size=4) for p in PARADIGMS}
        for i in range(6):
            rt = right[i].tolist() if fim else []
            ar = m["ar"](left[i:i + 1]).argmax(-1)[0, -1]  # full logits, last position
            ae = m["ae"](torch.tensor([left[i].tolist() + [S0] + rt])).logits[0, 8].argmax()
            src = torch.tensor([left[i].tolist() + [S0] + rt + [EOS]])
            ed = m["ed"](src, labels=torch.tensor([[S0, PAD]])).logits[0, 1].argmax()  # via shift_right
            assert (got["ar"][i], got["ae"][i], got["ed"][i]) == (ar, ae, ed)
    # AR cannot use the right context: both probes give the same guess
    assert torch.equal(zero_shot_predict("ar", m["ar"], left), zero_shot_predict("ar", m["ar"], left, right))


def test_tiny_pretraining_and_comparison_end_to_end(corpus):
    cfg = ParadigmConfig.tiny(vocab_size=VOCAB)
    models, metas = {}, {}
    for p in PARADIGMS:
        models[p], metas[p] = train_paradigm(p, progress=False, cfg=cfg, corpus=corpus)
        meta = metas[p]
        assert len(meta["history"]["train_loss"]) == cfg.steps and meta["metrics"]["val_loss"] > 0
        assert meta["tokens_seen"] == cfg.steps * cfg.batch_size * cfg.window
        assert meta["train_flops"] > 0 and meta["params"] == sum(t.numel() for t in models[p].parameters())
    assert metas["ar"]["loss_fraction"] == pytest.approx((cfg.window - 1) / cfg.window, abs=1e-4)
    assert 0.05 < metas["ae"]["loss_fraction"] < 0.3 and 0.1 < metas["ed"]["loss_fraction"] < 0.4
    # at equal parameters the encoder-decoder spends fewer FLOPs per window (each token: one stack)
    assert metas["ed"]["train_flops"] < metas["ar"]["train_flops"]
    before = {p: {k: v.clone() for k, v in m.state_dict().items()} for p, m in models.items()}
    rows = compare_paradigms(models, corpus[0], finetune_steps=2, progress=False, batch_size=4,
                             sentiment_limit=16, translation_limit=4, probe_n=32, max_len=16)
    assert [r["paradigm"] for r in rows] == list(PARADIGMS)
    by = {r["paradigm"]: r for r in rows}
    assert by["ae"]["bleu_en_es"] is None and "not applicable" in by["ae"]["bleu_note"]
    for p in ("ar", "ed"):
        assert 0 <= by[p]["bleu_en_es"] <= 100 and by[p]["translation_val_loss"] > 0
    for r in rows:
        assert 0 <= r["sentiment_accuracy"] <= 1 and r["sentiment_n"] == 16
        assert 0 <= r["zero_shot_next_token_acc"] <= 1 and 0 <= r["zero_shot_fill_middle_acc"] <= 1
    assert by["ar"]["next_token_val_loss"] > 0 and by["ae"]["next_token_val_loss"] is None
    json.dumps(rows)  # a table that saves as JSON
    for p in PARADIGMS:  # compare_paradigms fine-tunes copies
        assert all(torch.equal(before[p][k], v) for k, v in models[p].state_dict().items())
    fig = plot_paradigms(rows)
    assert len(fig.axes) == 2


def test_bad_input_raises_value_error_naming_the_value(tiny_models, corpus):
    with pytest.raises(ValueError, match="'bert'"):
        build_model("bert")
    with pytest.raises(ValueError, match="'gpt'"):
        zero_shot_predict("gpt", tiny_models["ar"], torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="models must be a dict with keys"):
        compare_paradigms({"ae": tiny_models["ae"]}, corpus[0], finetune_steps=1)
    with pytest.raises(ValueError, match="finetune_steps"):
        compare_paradigms(tiny_models, corpus[0], finetune_steps=0)
    with pytest.raises(ValueError, match="n must"):
        probe_positions(corpus[2], n=0)
    with pytest.raises(ValueError, match="vocab_size=4096"):
        train_paradigm("ar", progress=False, corpus=corpus)  # a 420-id tokenizer for a 4096-id model


def test_recipes_are_registered_under_the_module_names_and_version():
    from minillm.paradigms import RECIPE_VERSION
    from minillm.recipes import RECIPES

    for p in PARADIGMS:
        assert RECIPES[RECIPE_NAMES[p]].version == RECIPE_VERSION


def _shipped(name: str) -> bool:
    from minillm.hub import shipped_path

    return (shipped_path(name) / "config.json").exists()


@pytest.mark.skipif(not all(_shipped(n) for n in RECIPE_NAMES.values()), reason="paradigms not shipped yet")
def test_shipped_checkpoints_reproduce_their_validation_loss():
    from minillm.hub import shipped_path
    from minillm.paradigms import load_paradigms
    from minillm.train import evaluate

    models, tok = load_paradigms()
    metas = {p: m.checkpoint_metadata for p, m in models.items()}
    assert all(metas[p]["tokenizer"] == metas["ae"]["tokenizer"] for p in PARADIGMS)  # one tokenizer
    cfg = ParadigmConfig(**metas["ae"]["paradigm_config"])
    assert all(ParadigmConfig(**metas[p]["paradigm_config"]) == cfg for p in PARADIGMS)
    counts = [metas[p]["params"] for p in PARADIGMS]
    assert max(counts) / min(counts) - 1 < 0.02
    val_ids = token_stream(tok, corpus_texts("validation"))
    for p in PARADIGMS:
        assert (shipped_path(RECIPE_NAMES[p]) / "model.safetensors").stat().st_size < 8_000_000
        loss = evaluate(models[p], validation_batches(p, val_ids, cfg), loss_fn=objective_loss(p), autocast=None)
        assert abs(loss - metas[p]["metrics"]["val_loss"]) < 1e-3, p
        # learned something: over a nat below uniform guessing (MLM after 140 steps is barely past unigram)
        assert loss < torch.log(torch.tensor(4096.0)) - 1
