"""BERT's pretraining data (minillm.mlm): the 80/10/10 masking rule measured on 100k tokens and
equal to Hugging Face's DataCollatorForLanguageModeling draw for draw, NSP pairs, padded batches."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.mlm import (IGNORE_INDEX, IS_NEXT, NOT_NEXT, PretrainingCollator, SentencePair,
                         make_nsp_pairs, mask_tokens, pack_sentences, pack_stream, truncate_pair)

V = 1000
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = (PAD, UNK, CLS, SEP, MASK)


def _padded_ids(n_rows: int = 800, length: int = 128, seed: int = 0) -> torch.Tensor:
    """(n_rows, length) ids: [CLS] tokens [SEP] then padding, with varying real lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (n_rows, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (n_rows,), generator=g)
    for r, n in enumerate(lengths.tolist()):
        ids[r, 0], ids[r, n - 1] = CLS, SEP
        ids[r, n:] = PAD
    return ids


def _within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """|count - n p| within ``sigmas`` binomial standard deviations sqrt(n p (1-p))."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_proportions_on_100k_tokens_follow_80_10_10():
    # Tolerances are 5 binomial standard deviations: a correct implementation fails this with
    # probability < 1e-6 per proportion, while a wrong rule (e.g. 70/15/15, or 12% chosen) is
    # tens of standard deviations away at these counts.
    ids = _padded_ids()
    real = ~torch.isin(ids, torch.tensor(SPECIAL))
    n_real = int(real.sum())
    assert n_real > 70_000
    inputs, labels = mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_ids=SPECIAL,
                                 generator=torch.Generator().manual_seed(1))
    chosen = labels != IGNORE_INDEX
    n_chosen = int(chosen.sum())
    assert _within(n_chosen, n_real, 0.15)
    n_mask = int((inputs[chosen] == MASK).sum())
    n_same = int((inputs[chosen] == ids[chosen]).sum())
    n_random = n_chosen - n_mask - n_same
    assert _within(n_mask, n_chosen, 0.8)
    # a random replacement can draw the original id by chance (p = 1/V): "unchanged" is 10% + 0.1 * 1/V
    assert _within(n_same, n_chosen, 0.1 + 0.1 / V)
    assert _within(n_random, n_chosen, 0.1 - 0.1 / V)


def test_specials_and_padding_are_never_chosen_and_labels_are_ignored_elsewhere():
    ids = _padded_ids(200)
    inputs, labels = mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_ids=SPECIAL,
                                 mlm_probability=0.5, generator=torch.Generator().manual_seed(0))
    special = torch.isin(ids, torch.tensor(SPECIAL))
    assert (labels[special] == IGNORE_INDEX).all()
    assert torch.equal(inputs[special], ids[special])  # specials and padding are left as they are
    chosen = labels != IGNORE_INDEX
    assert torch.equal(labels[chosen], ids[chosen])  # labels hold the original ids
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing else changes
    assert chosen.any()


def test_same_generator_seed_same_masks_other_seed_other_masks():
    ids = _padded_ids(50)
    kw = dict(vocab_size=V, mask_token_id=MASK, special_ids=SPECIAL)
    a = mask_tokens(ids, generator=torch.Generator().manual_seed(7), **kw)
    b = mask_tokens(ids, generator=torch.Generator().manual_seed(7), **kw)
    c = mask_tokens(ids, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.equal(ids, _padded_ids(50))  # the input is not modified


def test_masking_equals_hugging_face_collator_draw_for_draw():
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(V - 5)]
    hf_tok = transformers.BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)})
    assert len(hf_tok) == V and hf_tok.mask_token_id == MASK
    collator = transformers.DataCollatorForLanguageModeling(hf_tok, mlm_probability=0.15)
    ids = _padded_ids(64)
    collator.generator = torch.Generator().manual_seed(3)
    hf_inputs, hf_labels = collator.torch_mask_tokens(
        ids.clone(), special_tokens_mask=torch.isin(ids, torch.tensor(SPECIAL)).long())
    inputs, labels = mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_ids=SPECIAL,
                                 generator=torch.Generator().manual_seed(3))
    assert torch.equal(inputs, hf_inputs) and torch.equal(labels, hf_labels)


def test_mask_tokens_rejects_bad_input():
    ids = _padded_ids(2)
    kw = dict(vocab_size=V, mask_token_id=MASK, special_ids=SPECIAL)
    with pytest.raises(TypeError, match="input_ids"):
        mask_tokens(ids.float(), **kw)
    with pytest.raises(ValueError, match=r"input_ids must be token ids in \[0, 1000\)"):
        mask_tokens(ids + V, **kw)
    with pytest.raises(ValueError, match="mask_token_id"):
        mask_tokens(ids, vocab_size=V, mask_token_id=V, special_ids=SPECIAL)
    with pytest.raises(ValueError, match="mlm_probability"):
        mask_tokens(ids, mlm_probability=1.5, **kw)
    with pytest.raises(TypeError, match="special_ids"):
        mask_tokens(ids, vocab_size=V, mask_token_id=MASK, special_ids=0)
    with pytest.raises(TypeError, match="generator"):
        mask_tokens(ids, generator=0, **kw)


# ----------------------------------------------------------------------------- NSP pairs

def _documents(n_docs: int = 40, n_sentences: int = 12, seed: int = 0) -> list[list[list[int]]]:
    """Documents whose sentence (d, i) starts with its own id 5 + n_sentences d + i."""
    g = torch.Generator().manual_seed(seed)
    docs = []
    for d in range(n_docs):
        doc = []
        for i in range(n_sentences):
            length = int(torch.randint(3, 30, (1,), generator=g))
            doc.append([5 + n_sentences * d + i] + torch.randint(5, V, (length,), generator=g).tolist())
        docs.append(doc)
    return docs


def test_nsp_labels_are_balanced_and_is_next_pairs_are_consecutive():
    docs = _documents()
    pairs = make_nsp_pairs(docs, max_length=512, seed=0)
    assert len(pairs) == sum(len(d) - 1 for d in docs)  # every sentence with a successor is an A once
    n_next = sum(p.next_sentence_label == IS_NEXT for p in pairs)
    assert _within(n_next, len(pairs), 0.5)  # 5 binomial standard deviations
    for p in pairs:
        (da, ia), (db, ib) = p.source_a, p.source_b
        assert p.tokens_a == docs[da][ia] and p.tokens_b == docs[db][ib]  # max_length is roomy here
        if p.next_sentence_label == IS_NEXT:
            assert (db, ib) == (da, ia + 1)
        else:
            assert p.next_sentence_label == NOT_NEXT and db != da


def test_nsp_pairs_are_truncated_and_reproducible():
    docs = _documents()
    pairs = make_nsp_pairs(docs, max_length=24, seed=5)
    assert all(len(p.tokens_a) + len(p.tokens_b) + 3 <= 24 for p in pairs)
    for p in pairs:  # truncation keeps the start of each sentence
        (da, ia), (db, ib) = p.source_a, p.source_b
        assert docs[da][ia][:len(p.tokens_a)] == p.tokens_a
        assert docs[db][ib][:len(p.tokens_b)] == p.tokens_b
    assert make_nsp_pairs(docs, max_length=24, seed=5) == pairs
    assert make_nsp_pairs(docs, max_length=24, seed=6) != pairs


def test_truncate_pair_shortens_the_longer_side():
    assert truncate_pair([1] * 10, [2] * 3, 8) == ([1] * 5, [2] * 3)
    assert truncate_pair([1] * 4, [2] * 4, 6) == ([1] * 3, [2] * 3)
    assert truncate_pair([1, 2], [3], 10) == ([1, 2], [3])


def test_nsp_needs_two_documents():
    with pytest.raises(ValueError, match="at least 2 non-empty documents"):
        make_nsp_pairs([[[5, 6], [7, 8]]])
    with pytest.raises(TypeError, match="documents"):
        make_nsp_pairs("some text")


def test_pack_sentences_and_pack_stream():
    assert pack_sentences([[1, 2], [3], [4, 5, 6], [7] * 7], 4) == [[1, 2, 3], [4, 5, 6], [7] * 4, [7] * 3]
    assert pack_stream([[1, 2], [3, 4, 5], [6]], 3, sep_token_id=SEP) == [[1, 2, SEP], [3, 4, 5], [SEP, 6, SEP]]
    assert pack_stream([[1]], 3, sep_token_id=SEP) == []  # the partial last window is dropped


# ----------------------------------------------------------------------------- batches

def _collator(p: float = 0.15) -> PretrainingCollator:
    return PretrainingCollator(vocab_size=V, pad_token_id=PAD, cls_token_id=CLS, sep_token_id=SEP,
                               mask_token_id=MASK, special_ids=SPECIAL, mlm_probability=p)


def test_batch_layout_shapes_types_and_padding():
    examples = [SentencePair([10, 11, 12], [20, 21], IS_NEXT), SentencePair([30], [40, 41, 42, 43], NOT_NEXT),
                SentencePair([50, 51], [], IGNORE_INDEX)]
    batch = _collator().layout(examples)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "next_sentence_label"}
    assert batch["input_ids"].shape == batch["token_type_ids"].shape == batch["attention_mask"].shape == (3, 8)
    assert batch["input_ids"].tolist() == [[CLS, 10, 11, 12, SEP, 20, 21, SEP],
                                           [CLS, 30, SEP, 40, 41, 42, 43, SEP],
                                           [CLS, 50, 51, SEP, PAD, PAD, PAD, PAD]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1],
                                                [0, 0, 0, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 8, [1] * 8, [1] * 4 + [0] * 4]
    assert batch["next_sentence_label"].tolist() == [IS_NEXT, NOT_NEXT, IGNORE_INDEX]
    assert all(t.dtype == torch.long for t in batch.values())


def test_collated_batch_masks_only_real_tokens():
    pairs = make_nsp_pairs(_documents(), max_length=64, seed=0)[:32]
    batch = _collator(0.5)(pairs, generator=torch.Generator().manual_seed(0))
    plain = _collator(0.5).layout(pairs)
    assert batch["labels"].shape == batch["input_ids"].shape == plain["input_ids"].shape
    chosen = batch["labels"] != IGNORE_INDEX
    assert chosen.any()
    assert not (chosen & torch.isin(plain["input_ids"], torch.tensor(SPECIAL))).any()
    assert torch.equal(batch["labels"][chosen], plain["input_ids"][chosen])
    for key in ("token_type_ids", "attention_mask", "next_sentence_label"):
        assert torch.equal(batch[key], plain[key])


def test_collator_rejects_bad_examples():
    with pytest.raises(TypeError, match="examples"):
        _collator()([])
    with pytest.raises(TypeError, match=r"examples\[1\]"):
        _collator()([SentencePair([5], [6], 0), [5, 6]])
    with pytest.raises(ValueError, match="mask_token_id"):
        PretrainingCollator(vocab_size=10, pad_token_id=0, cls_token_id=2, sep_token_id=3,
                            mask_token_id=10, special_ids=(0, 2, 3))


def test_mlm_plus_nsp_loss_equals_hugging_face_with_the_same_weights():
    transformers = pytest.importorskip("transformers")
    from minillm.models.bert import BertForPreTraining
    from minillm.models.bert_pretrain import pretraining_loss

    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(transformers.BertConfig(
        vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")).eval()
    ours = BertForPreTraining.from_hf(hf)
    examples = make_nsp_pairs(_documents(), max_length=64, seed=0)[:7] + [SentencePair([5, 6, 7], [], IGNORE_INDEX)]
    batch = _collator(0.3)(examples, generator=torch.Generator().manual_seed(0))
    assert (batch["attention_mask"] == 0).any()  # padding inside the batch
    with torch.no_grad():
        expected = hf(**batch).loss
        assert torch.allclose(ours(**batch).loss, expected, atol=1e-5)
        assert torch.allclose(pretraining_loss(ours, batch), expected, atol=1e-5)  # masked positions only
