"""Chapter 10's T5 recipes: the T5 BPE tokenizer, span-corrupted batches, tiny runs of both recipe
functions, chapter 6's BLEU scoring, and the shipped checkpoints (checksum, config, tokenizer,
a metric recomputed here)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from minillm.models.t5 import IGNORE_INDEX, T5ForConditionalGeneration
from minillm.models.t5_pretrain import (LABELS, MODEL_CONFIG, MULTITASK_NAME, PREFIXES, PRETRAIN_NAME,
                                        SpanCorruptionBatches, T5BPETokenizer, corpus_texts,
                                        pad_examples, restoration_scores, strip_case_and_punctuation,
                                        task_examples, task_texts, token_stream,
                                        train_t5_multitask, train_t5_pretrain, translation_bleu)
from minillm.span_corruption import reconstruct
from minillm.tokenizers.t5_bpe import EOS, PAD

TINY = dict(vocab_size=420, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
            relative_attention_num_buckets=8, relative_attention_max_distance=20)


@pytest.fixture(scope="module")
def tokenizer() -> T5BPETokenizer:
    texts = corpus_texts("train", max_chars=20_000)
    return T5BPETokenizer.train(list(texts.values()), 420)


def test_tokenizer_layout_and_round_trip(tokenizer):
    tok = tokenizer
    assert tok.vocab_size == len(tok) == 420 == 3 + tok.bpe.vocab_size + 100
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert tok.sentinel_id(0) == 419 and tok.sentinel_id(99) == 320 == tok.first_sentinel_id
    text = "¡Y dijo Dios: Sea la luz! And God said, 'Let there be light.'"
    ids = tok.encode(text)
    assert ids[-1] == EOS and all(3 <= i < tok.first_sentinel_id for i in ids[:-1])
    assert ids[:-1] == [i + 3 for i in tok.bpe.encode_ordinary(text)]
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=False) == text + "</s>"
    masked = "Thank you <extra_id_0> me to your party <extra_id_1> week."
    ids = tok.encode(masked, add_eos=False)
    assert tok.sentinel_id(0) in ids and tok.sentinel_id(1) in ids
    assert tok.decode(ids) == masked
    rebuilt = T5BPETokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    sample = corpus_texts("validation", max_chars=3000)
    for t in sample.values():
        assert rebuilt.encode(t) == tok.encode(t)
        assert rebuilt.decode(rebuilt.encode(t)) == t


def test_tokenizer_bad_input(tokenizer):
    with pytest.raises(ValueError, match="vocab_size must be >= 359"):
        T5BPETokenizer.train("some text", 300)
    with pytest.raises(ValueError, match="i must be <= 99"):
        tokenizer.sentinel_id(100)
    with pytest.raises(ValueError, match="i must be <= 99"):
        tokenizer.encode("a <extra_id_100> b")
    with pytest.raises(ValueError, match="ids entries must be <= 419"):
        tokenizer.decode([5, 420])
    with pytest.raises(TypeError, match="text must be a str"):
        tokenizer.encode(b"bytes")
    with pytest.raises(ValueError, match="bpe_merges"):
        T5BPETokenizer.from_dict({"merges": []})


def test_span_corruption_batches_reconstruct_their_windows(tokenizer):
    stream = token_stream(tokenizer, corpus_texts("validation", max_chars=5000))
    batches = SpanCorruptionBatches(stream, tokenizer.vocab_size, window=64, batch_size=6, seed=3)
    gen = torch.Generator().manual_seed(3)  # replays the batch's window choice
    starts = torch.randint(len(stream) - 64 + 1, (6,), generator=gen).tolist()
    input_ids, mask, labels = batches()
    assert input_ids.shape[0] == labels.shape[0] == 6
    assert torch.equal(mask, (input_ids != PAD).long())
    for i, s in enumerate(starts):
        inp = input_ids[i][mask[i].bool()].tolist()
        tgt = labels[i][labels[i] != IGNORE_INDEX].tolist()
        assert inp[-1] == EOS and tgt[-1] == EOS
        original = reconstruct(inp[:-1], tgt[:-1], vocab_size=tokenizer.vocab_size)
        assert torch.equal(original, stream[s:s + 64])


def test_pad_examples():
    ids, mask, labels = pad_examples([([5, 6, 1], [7, 1]), ([8, 1], [9, 10, 11, 1])])
    assert ids.tolist() == [[5, 6, 1], [8, 1, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert labels.tolist() == [[7, 1, -100, -100], [9, 10, 11, 1]]
    with pytest.raises(ValueError, match="examples must not be empty"):
        pad_examples([])


def test_task_examples_close_each_side_with_one_eos(tokenizer):
    examples = task_examples(tokenizer, "validation")
    _, texts = task_texts("validation")
    assert set(examples) == set(texts) == set(PREFIXES)
    for task, items in examples.items():
        for (src, tgt), (src_text, tgt_text) in zip(items[:50], texts[task][:50]):
            assert src[-1] == tgt[-1] == EOS and src.count(EOS) == tgt.count(EOS) == 1, task
            assert tokenizer.decode(src) == src_text[:len(tokenizer.decode(src))]
            assert src_text.startswith(PREFIXES[task])
        assert max(len(s) for s, _ in items) <= 128 and max(len(t) for _, t in items) <= 64


def test_restoration_task_input_and_scores():
    assert strip_case_and_punctuation('And God said, "Let there be light!"') == "and god said let there be light"
    assert strip_case_and_punctuation("'Tis the LORD's; (surely)  ") == "tis the lord's surely"
    _, texts = task_texts("test")
    for src, tgt in texts["restore"]:
        assert src == PREFIXES["restore"] + strip_case_and_punctuation(tgt)
    refs = ["And God said, \"Let there be light.\"", "It was good."]
    perfect = restoration_scores(refs, refs)
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["exact_match"] == 1.0
    lazy = restoration_scores([strip_case_and_punctuation(r) for r in refs], refs)
    assert lazy["exact_match"] == 0.0 and lazy["bleu"] < 50
    with pytest.raises(ValueError):
        restoration_scores(["one"], ["one", "two"])


def test_translation_bleu_is_chapter_6_scoring_and_equals_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    from minillm.models.seq2seq import tokenize

    hyps = ["Y fué la tarde y la mañana el quinto día.", "Y Abraham se inclinó delante del pueblo."]
    refs = ["Y fué la tarde y la mañana el día quinto.", "Y Abraham se inclinó delante del pueblo de la tierra."]
    ref = sacrebleu.corpus_bleu([" ".join(tokenize(h)) for h in hyps], [[" ".join(tokenize(r)) for r in refs]],
                                tokenize="none", force=True).score
    assert abs(translation_bleu(hyps, refs) - ref) < 1e-9
    assert translation_bleu(refs, refs) == pytest.approx(100.0)


@pytest.fixture(scope="module")
def tiny_pretrained():
    torch.manual_seed(0)
    return train_t5_pretrain(False, model_config=TINY, batch_size=8, window=32, max_chars=20_000,
                             train_config=dict(steps=40, lr=1e-2, warmup_steps=5, eval_every=20,
                                               eval_batches=2, autocast=None))


def test_tiny_pretraining_run_learns_and_records_its_tokenizer(tiny_pretrained):
    model, meta = tiny_pretrained
    assert isinstance(model, T5ForConditionalGeneration) and not model.training
    loss = meta["history"]["train_loss"]
    assert len(loss) == 40 and sum(loss[-5:]) / 5 < sum(loss[:5]) / 5 - 0.5
    assert len(meta["history"]["val_loss"]) == 2
    tok = T5BPETokenizer.from_dict(meta["tokenizer"])
    assert tok.vocab_size == model.config.vocab_size == 420
    assert meta["params"] == model.num_params()
    assert meta["tokens_seen"] == 40 * 8 * 32


def test_tiny_multitask_run_starts_from_the_pretrained_weights(tiny_pretrained):
    model0, meta0 = tiny_pretrained
    tok = T5BPETokenizer.from_dict(meta0["tokenizer"])
    before = {k: v.clone() for k, v in model0.state_dict().items()}
    model, meta = train_t5_multitask(False, pretrained=(model0, tok), batch_size=8, eval_limit=6,
                                     num_beams=2, train_config=dict(steps=3, eval_every=3, eval_batches=1,
                                                                    autocast=None))
    assert all(torch.equal(v, model0.state_dict()[k]) for k, v in before.items())  # not mutated
    assert model.config.dropout_rate == 0.1 and not model.training
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and set(model.state_dict()) == set(before)
    m = meta["metrics"]
    assert (m["n_en_es"], m["n_es_en"], m["n_sentiment"], m["n_restore"]) == (6, 6, 6, 6)
    assert 0 <= m["restore_bleu"] <= 100 and 0 <= m["restore_exact_match"] <= 1
    assert 0 <= m["bleu_en_es"] <= 100 and 0 <= m["sentiment_accuracy"] <= 1
    assert meta["prefixes"] == PREFIXES


# ----------------------------------------------------------------------------- shipped checkpoints


def _shipped(name: str) -> bool:
    from minillm.hub import shipped_path

    return (shipped_path(name) / "config.json").is_file()


def _check_files(name: str) -> dict:
    from minillm.hub import shipped_path

    path = shipped_path(name)
    record = json.loads((path / "config.json").read_text())
    data = (path / "model.safetensors").read_bytes()
    assert hashlib.sha256(data).hexdigest() == record["weights_sha256"]
    assert len(data) == record["weights_bytes"] < 25_000_000
    assert record["metadata"]["recipe"] == name
    return record


@pytest.mark.skipif(not _shipped(PRETRAIN_NAME), reason="ch10-t5-pretrain not shipped yet")
def test_shipped_pretrained_t5_reproduces_its_validation_loss():
    from minillm.models.t5_pretrain import PRETRAIN_BATCH, WINDOW, load_t5_pretrain, t5_loss
    from minillm.train import evaluate

    record = _check_files(PRETRAIN_NAME)
    model, tok = load_t5_pretrain()
    assert {k: record["config"][k] for k in MODEL_CONFIG} == MODEL_CONFIG
    text = corpus_texts("test")["spanish"][:2000]
    assert tok.decode(tok.encode(text)) == text
    meta = model.checkpoint_metadata
    # the recipe's validation batches (seed 1) rebuilt from the stored tokenizer
    val_ids = token_stream(tok, corpus_texts("validation"))
    batches = SpanCorruptionBatches(val_ids, tok.vocab_size, window=WINDOW, batch_size=PRETRAIN_BATCH, seed=1)
    val = [batches() for _ in range(meta["train_config"]["eval_batches"])]
    loss = evaluate(model, val, loss_fn=t5_loss, autocast=None)  # fp32 here, bf16 in training
    assert abs(loss - meta["metrics"]["val_loss"]) < 2e-2
    assert loss < 0.75 * torch.log(torch.tensor(float(tok.vocab_size)))  # far below uniform guessing


@pytest.mark.skipif(not _shipped(MULTITASK_NAME), reason="ch10-t5-multitask not shipped yet")
def test_shipped_multitask_t5_reproduces_its_sentiment_accuracy():
    from minillm.models.t5_pretrain import generate_texts, load_t5_multitask, task_texts

    record = _check_files(MULTITASK_NAME)
    model, tok = load_t5_multitask()
    assert {k: record["config"][k] for k in MODEL_CONFIG if k != "dropout_rate"} == \
        {k: v for k, v in MODEL_CONFIG.items() if k != "dropout_rate"}
    assert record["config"]["dropout_rate"] == 0.1
    meta = model.checkpoint_metadata
    assert meta["pretrained_from"] == PRETRAIN_NAME and meta["prefixes"] == PREFIXES
    text = corpus_texts("test")["english"][:2000]
    assert tok.decode(tok.encode(text)) == text
    # the recorded accuracy is greedy decoding of every test review: recompute it exactly
    _, texts = task_texts("test")
    items = texts["sentiment"]
    answers = [a.strip() for a in generate_texts(model, tok, [s for s, _ in items], max_new_tokens=4,
                                                 batch_size=64)]
    accuracy = round(sum(a == t for a, (_, t) in zip(answers, items)) / len(items), 4)
    recorded = meta["metrics"]
    assert len(items) == recorded["n_sentiment"]
    assert accuracy == recorded["sentiment_accuracy"]
    assert sum(a not in LABELS for a in answers) == recorded["sentiment_invalid"]
    # a translation the BLEU of chapter 6 can score: text that is not empty for most verses
    hyps = generate_texts(model, tok, [s for s, _ in texts["en-es"][:16]], max_new_tokens=32)
    assert sum(bool(h.strip()) for h in hyps) >= 8
