"""Chapter 9's pretraining recipes (minillm.models.bert_pretrain): the character tokenizer, the
masked-positions loss against the models' own loss, tiny runs of both recipes, and the two shipped
checkpoints (checksum, config, tokenizer, held-out MLM accuracy recomputed here)."""

from __future__ import annotations

import hashlib
import math
from collections import Counter

import pytest
import torch

from minillm.checkpoint import load_checkpoint, read_checkpoint_config, save_checkpoint
from minillm.mlm import IGNORE_INDEX, PretrainingCollator, SentencePair, make_nsp_pairs
from minillm.models.bert_pretrain import (BERT_SIZE, EN_RECIPE_NAME, ZH_RECIPE_NAME, CharTokenizer,
                                          evaluate_pretraining, fixed_batches, pretraining_loss,
                                          zh_train_texts)
from minillm.tokenizers.wordpiece import BERT_SPECIAL_TOKENS, WordPiece

TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)


# ----------------------------------------------------------------------------- CharTokenizer

def test_char_tokenizer_keeps_frequent_characters_one_id_each():
    tok = CharTokenizer.train(["我爱北京", "北京欢迎你", "我 爱"], min_frequency=2)
    assert tok.itos[:5] == list(BERT_SPECIAL_TOKENS)
    assert tok.itos[5:] == ["京", "北", "我", "爱"]  # seen twice each (ties: by code point); no space
    ids = tok.encode("北京欢迎你")
    assert len(ids) == len("北京欢迎你") + 2
    assert tok.tokenize("北京欢迎你") == ["北", "京", "[UNK]", "[UNK]", "[UNK]"]
    assert tok.encode(list("北京"), add_special_tokens=False) == tok.encode("北京", add_special_tokens=False)
    assert tok.decode(tok.encode("我爱北京")) == "我爱北京"
    assert tok.decode(ids) == "北京"  # specials ([UNK] too) are skipped, as WordPiece.decode does
    assert tok.decode(ids, skip_special_tokens=False) == "[CLS]北京[UNK][UNK][UNK][SEP]"


def test_char_tokenizer_batches_and_errors():
    tok = CharTokenizer.train(["ab", "ab", "abc"], min_frequency=1)
    batch = tok.batch_encode(["ab", "abcab"], max_length=5)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, 5)
    assert batch["input_ids"][0].tolist() == [2, *tok.encode("ab", add_special_tokens=False), 3, 0]
    assert batch["input_ids"][1, -1].item() == tok.token_to_id("[SEP]")  # truncation keeps [SEP]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1] * 5]
    with pytest.raises(TypeError, match="text"):
        tok.encode(["ab"])
    with pytest.raises(ValueError, match="duplicate"):
        CharTokenizer(["[UNK]", "a", "a"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.token_to_id("z")


# ----------------------------------------------------------------------------- the loss

def _random_batch(vocab_size: int, n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    docs = [[torch.randint(5, vocab_size, (int(torch.randint(2, 12, (1,), generator=g)),),
                           generator=g).tolist() for _ in range(4)] for _ in range(5)]
    pairs = make_nsp_pairs(docs, max_length=32, seed=seed)[:n - 1]
    examples = pairs + [SentencePair([7, 8, 9, 10], [], IGNORE_INDEX)]  # one without an NSP label
    collator = PretrainingCollator(vocab_size=vocab_size, pad_token_id=0, cls_token_id=2,
                                   sep_token_id=3, mask_token_id=4, special_ids=(0, 1, 2, 3, 4),
                                   mlm_probability=0.3)
    return collator(examples, generator=g)


def test_masked_positions_loss_equals_the_models_own_loss():
    from minillm.models.bert import BertConfig, BertForMaskedLM, BertForPreTraining

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, **TINY)
    batch = _random_batch(50)
    assert (batch["next_sentence_label"] == IGNORE_INDEX).any()
    assert (batch["next_sentence_label"] != IGNORE_INDEX).any()
    for model in (BertForPreTraining(config).eval(), BertForMaskedLM(config).eval()):
        inputs = dict(batch)
        if isinstance(model, BertForMaskedLM):
            inputs.pop("next_sentence_label")
        expected = model(**inputs).loss
        assert torch.allclose(pretraining_loss(model, batch), expected, atol=1e-5), type(model).__name__


# ----------------------------------------------------------------------------- tiny recipe runs

@pytest.fixture(scope="module")
def tiny_en():
    from minillm.models.bert_pretrain import train_bert_en

    return train_bert_en(False, size=TINY, vocab_size=400, max_train_chars=150_000,
                         train_options=dict(steps=40, lr=3e-3, warmup_steps=4, eval_every=20,
                                            eval_batches=2),
                         batch=dict(nsp_pairs=6, mlm_windows=2), validation=dict(nsp_pairs=16,
                                                                                 mlm_windows=4))


def test_tiny_english_recipe_trains_and_records_what_it_did(tiny_en, tmp_path):
    from minillm.data import load_rotten_tomatoes, load_shakespeare
    from minillm.models.bert import BertForPreTraining

    model, meta = tiny_en
    assert isinstance(model, BertForPreTraining) and not model.training
    assert model.config.vocab_size == len(meta["vocab"]) <= 400
    assert model.config.hidden_size == TINY["hidden_size"]
    losses = meta["history"]["train_loss"]
    assert len(losses) == meta["steps"] == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:3]) / 3 - 0.3  # it learned something
    assert meta["tokens_seen"] > 40 * 8 * 10  # 40 steps of 8 examples, none of them empty
    m = meta["metrics"]
    assert m["val_nsp_pairs"] == 16 and 0 <= m["val_nsp_accuracy"] <= 1
    assert 0 <= m["val_mlm_accuracy"] <= 1 and math.isfinite(m["val_mlm_loss"])
    assert m["val_masked_tokens"] > 0
    # the vocabulary is the WordPiece learned on the training text only, and loads from metadata
    text = load_shakespeare().train[:150_000]
    relearned = WordPiece.train([text, *(ex.text for ex in load_rotten_tomatoes().train)], 400)
    assert relearned.itos == meta["vocab"]
    # saved and loaded through the checkpoint: same weights, same tokenizer
    path = save_checkpoint(model, tmp_path / "bert", metadata=meta)
    loaded = load_checkpoint(path)
    assert type(loaded) is BertForPreTraining
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    tok = WordPiece(loaded.checkpoint_metadata["vocab"], lowercase=loaded.checkpoint_metadata["lowercase"])
    assert tok.encode("To be, or not to be") == relearned.encode("To be, or not to be")


def test_tiny_chinese_recipe_uses_frequent_training_characters():
    from minillm.models.bert import BertForMaskedLM
    from minillm.models.bert_pretrain import train_bert_zh_char

    model, meta = train_bert_zh_char(False, size=TINY, max_texts=1500, batch_size=8,
                                     train_options=dict(steps=30, lr=3e-3, warmup_steps=3,
                                                        eval_every=15, eval_batches=2),
                                     validation=dict(mlm_windows=16))
    assert isinstance(model, BertForMaskedLM) and not hasattr(model.cls, "seq_relationship")
    news, reviews = zh_train_texts(1500)
    counts = Counter("".join(news + reviews))
    vocab = meta["vocab"]
    assert vocab[:5] == list(BERT_SPECIAL_TOKENS) and model.config.vocab_size == len(vocab)
    assert set(vocab[5:]) == {c for c, n in counts.items() if n >= 2 and not c.isspace()}
    losses = meta["history"]["train_loss"]
    assert sum(losses[-5:]) / 5 < sum(losses[:3]) / 3 - 0.3
    assert meta["metrics"]["val_nsp_accuracy"] is None and meta["metrics"]["val_masked_tokens"] > 0


# ----------------------------------------------------------------------------- shipped checkpoints

def _check_shipped(name: str) -> dict:
    from minillm.hub import RECIPES, shipped_path

    path = shipped_path(name)
    record = read_checkpoint_config(path)
    assert record["format_version"] == 2 and record["metadata"]["recipe"] == name
    assert record["metadata"]["recipe_version"] == RECIPES[name].version  # not stale
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    assert digest == record["weights_sha256"]
    assert record["weights_bytes"] < 16_000_000
    for key, value in BERT_SIZE.items():
        assert record["config"][key] == value, key
    return record


def _trivial_accuracy(batches: list[dict]) -> float:
    """Accuracy of always answering the most frequent masked token of these very batches: an
    oracle unigram guess that a model using no context cannot beat."""
    labels = torch.cat([b["labels"][b["labels"] != IGNORE_INDEX] for b in batches])
    return Counter(labels.tolist()).most_common(1)[0][1] / labels.numel()


def test_shipped_english_bert_loads_and_predicts_masked_words():
    from minillm.data import load_shakespeare
    from minillm.hub import shipped_path
    from minillm.models.bert import BertForPreTraining
    from minillm.models.bert_pretrain import en_validation_batches, load_bert_en, shakespeare_documents

    record = _check_shipped(EN_RECIPE_NAME)
    model, tok = load_bert_en()
    assert isinstance(model, BertForPreTraining) and model.checkpoint_source == str(shipped_path(EN_RECIPE_NAME))
    meta = model.checkpoint_metadata
    assert tok.vocab_size == model.config.vocab_size == len(meta["vocab"])
    assert tok.decode(tok.encode("to be or not to be, that is the question")) == \
        "to be or not to be , that is the question"
    # held-out text: the first lines of the Shakespeare test split, masked here with a fixed seed
    docs = shakespeare_documents(load_shakespeare().test[:20_000], tok)
    pairs = make_nsp_pairs(docs, max_length=model.config.max_position_embeddings, seed=0)[:64]
    batches = fixed_batches(PretrainingCollator.from_tokenizer(tok), pairs, 32, seed=0)
    scores = evaluate_pretraining(model, batches)
    assert scores["mlm_accuracy"] > _trivial_accuracy(batches) + 0.05
    assert scores["nsp_accuracy"] > 0.5
    # the recorded validation metrics are reproduced from the checkpoint alone
    val = en_validation_batches(tok, batch_size=sum(meta["batch"].values()), **meta["validation"])
    again = evaluate_pretraining(model, [b for part in val.values() for b in part])
    m = meta["metrics"]
    assert abs(again["mlm_loss"] - m["val_mlm_loss"]) < 1e-3
    assert abs(again["mlm_accuracy"] - m["val_mlm_accuracy"]) < 2e-3
    assert abs(again["nsp_accuracy"] - m["val_nsp_accuracy"]) < 1e-9
    assert record["metadata"]["tokens_seen"] > 1_000_000


def test_shipped_chinese_bert_loads_and_predicts_masked_characters():
    from minillm.hub import shipped_path
    from minillm.models.bert import BertForMaskedLM
    from minillm.models.bert_pretrain import load_bert_zh_char, windows, zh_validation_batches

    _check_shipped(ZH_RECIPE_NAME)
    model, tok = load_bert_zh_char()
    assert isinstance(model, BertForMaskedLM) and model.checkpoint_source == str(shipped_path(ZH_RECIPE_NAME))
    meta = model.checkpoint_metadata
    assert tok.vocab_size == model.config.vocab_size == len(meta["vocab"])
    assert tok.decode(tok.encode("中国人民")) == "中国人民"
    # held-out text: People's Daily test sentences, masked here with a fixed seed
    from minillm.data import load_people_daily_ner

    news = [ex.text for ex in load_people_daily_ner().test[:400]]
    examples = windows((tok.encode(t, add_special_tokens=False) for t in news), tok.token_to_id("[SEP]"),
                       model.config.max_position_embeddings - 2)[:64]
    batches = fixed_batches(PretrainingCollator.from_tokenizer(tok), examples, 32, seed=0)
    scores = evaluate_pretraining(model, batches)
    assert scores["mlm_accuracy"] > _trivial_accuracy(batches) + 0.05
    val = zh_validation_batches(tok, batch_size=meta["batch_size"], **meta["validation"])
    again = evaluate_pretraining(model, [b for part in val.values() for b in part])
    assert abs(again["mlm_loss"] - meta["metrics"]["val_mlm_loss"]) < 1e-3
    assert abs(again["mlm_accuracy"] - meta["metrics"]["val_mlm_accuracy"]) < 2e-3
    assert meta["tokens_seen"] > 1_000_000
