"""Tokenizers: parity with tiktoken and Hugging Face on the shipped corpora, training, errors."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from minillm.data import gpt2_vocab_files, load_en_es, load_rotten_tomatoes, load_shakespeare, load_tang_poems
from minillm.tokenizers import (ENDOFTEXT, GPT2_PATTERN, ByteLevelBPE, CharVocab, WordPiece, WordTokenizer,
                                bytes_to_unicode, get_pair_counts, gpt2_tokenizer, merge_pair, train_merges)
from minillm.vocab import CharVocab as VocabCharVocab
from _shared import tiktoken_gpt2  # noqa: F401  (a pytest fixture)

NASTY = [
    "", " ", "  ", "\n", "\t", "hello   world", "trailing spaces   ", "   leading", "tabs\t\tand\nnewlines\n\n\n",
    "\r\n windows \r\n", "mixed \t \n \u00a0 \u3000 whitespace", "I'll've it's 'S 'LL don't", "'s's''s",
    "café naïve résumé", "e\u0301 combining e\u0301\u0301 marks", "Zalgo: Z\u0351\u0300a\u0363l\u0364g\u0365o",
    "🤖👍🏽 family: 👨\u200d👩\u200d👧 flags 🇪🇸🇯🇵", "東京タワー 123 ١٢٣ ๓", "Ελληνικά кириллица עברית العربية",
    "a<|endoftext|>b", "<|endoftext|>", " <|endoftext|> <|endoftext|>x", "<|endoftext", "<|endo<|endoftext|>ftext|>",
    "numbers 3.14159 1,000,000 2024-01-01", "symbols !!!??? --- ... $$$ @#%^&*()", "x" * 1000, " " * 100,
    "\u200b zero width \ufeff bom \u2028 line sep", "\x00 nul \x7f del", "math: ∑∫√∞ ≠ ≤ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "tab\tseparated\tvalues\n1\t2\t3", "URL https://example.com/a?b=c&d=e#f", "emoji at end 🎉",
]


def _real_texts() -> list[str]:
    sh = load_shakespeare()
    texts = [sh.validation, sh.test[:100_000]]
    texts += [p.title + "\n" + p.author + "\n" + p.text for p in load_tang_poems().train]
    en_es = load_en_es().validation
    texts += [p.en for p in en_es] + [p.es for p in en_es]
    texts += [e.text for e in load_rotten_tomatoes().test]
    return texts


@pytest.fixture(scope="module")
def ours() -> ByteLevelBPE:
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def hf_gpt2():
    transformers = pytest.importorskip("transformers")
    encoder_json, vocab_bpe = gpt2_vocab_files()
    tok = transformers.GPT2TokenizerFast(vocab=str(encoder_json), merges=str(vocab_bpe))  # transformers 5 names
    assert len(tok) == 50257, "GPT2TokenizerFast did not load the vocabulary files"
    return tok


@pytest.fixture(scope="module")
def real_texts() -> list[str]:
    return _real_texts()


# --------------------------------------------------------------------------- GPT-2 parity
def test_gpt2_vocab_loaded(ours):
    assert ours.vocab_size == 50257 and len(ours.merges) == 50000
    assert ours.eos_token_id == 50256 and ours.token_to_id("Ġthe") == 262
    assert ours.id_to_token(50256) == ENDOFTEXT


def test_gpt2_matches_tiktoken_on_real_text(ours, tiktoken_gpt2, real_texts):
    for text in real_texts:
        assert ours.encode(text) == tiktoken_gpt2.encode(text, allowed_special="all"), text[:80]
        assert ours.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text), text[:80]


def test_gpt2_matches_hf_on_real_text(ours, hf_gpt2, real_texts):
    for text in real_texts:
        assert ours.encode(text) == hf_gpt2.encode(text), text[:80]


@pytest.mark.parametrize("text", NASTY)
def test_gpt2_nasty_strings(ours, tiktoken_gpt2, hf_gpt2, text):
    ids = ours.encode(text)
    assert ids == tiktoken_gpt2.encode(text, allowed_special="all")
    assert ids == hf_gpt2.encode(text)
    assert ours.encode(text, allowed_special="none") == tiktoken_gpt2.encode_ordinary(text)
    assert ours.decode(ids) == text
    assert ours.decode(ours.encode_ordinary(text)) == text


def test_gpt2_random_unicode(ours, tiktoken_gpt2):
    rng = random.Random(0)
    planes = [(0x20, 0x7F), (0xA0, 0x2FF), (0x300, 0x36F), (0x400, 0x4FF), (0x4E00, 0x4FFF),
              (0x1F300, 0x1F64F), (0x2000, 0x206F), (0x9, 0xD)]
    for _ in range(300):
        text = "".join(chr(rng.randint(*rng.choice(planes))) for _ in range(rng.randint(1, 40)))
        ids = ours.encode(text)
        assert ids == tiktoken_gpt2.encode(text, allowed_special="all"), repr(text)
        assert ours.decode(ids) == text


def test_endoftext_handling(ours):
    eot = ours.eos_token_id
    assert ours.encode("a<|endoftext|>b") == ours.encode("a") + [eot] + ours.encode("b")
    as_text = ours.encode("<|endoftext|>", allowed_special="none")
    assert eot not in as_text and len(as_text) > 1
    assert ours.encode("<|endoftext|>", allowed_special={ENDOFTEXT}) == [eot]
    assert ours.decode([eot]) == ENDOFTEXT and ours.decode([eot], skip_special_tokens=True) == ""


def test_partial_utf8_decodes_like_hf(ours, hf_gpt2):
    ids = ours.encode("🤖 東京 é")
    for k in range(len(ids) + 1):
        assert ours.decode(ids[:k]) == hf_gpt2.decode(ids[:k])
    assert "\ufffd" in ours.decode(ids[:1])  # the first token is only part of the robot's 4 bytes


def test_decode_accepts_tensors(ours):
    torch = pytest.importorskip("torch")
    ids = ours.encode("Hello there")
    assert ours.decode(torch.tensor(ids)) == "Hello there"


# --------------------------------------------------------------------------- bad input
def test_bad_input_errors(ours, tmp_path):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.decode([50257])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        ours.decode([-1])
    with pytest.raises(TypeError, match="must be ints"):
        ours.decode([1.5])
    with pytest.raises(TypeError, match="sequence of ints"):
        ours.decode("hello")
    with pytest.raises(TypeError, match="text must be a str"):
        ours.encode(b"bytes")
    with pytest.raises(TypeError, match="text must be a str"):
        ours.encode(None)
    with pytest.raises(ValueError, match="not valid Unicode"):
        ours.encode("lone \ud800 surrogate")
    with pytest.raises(ValueError, match="not special tokens"):
        ours.encode("x", allowed_special={"<|im_start|>"})
    with pytest.raises(ValueError, match="not in the vocabulary"):
        ours.token_to_id("no such token")


def test_mismatched_vocab_and_merges(tmp_path):
    encoder_json, vocab_bpe = gpt2_vocab_files()
    small = ByteLevelBPE.train("the cat sat on the mat " * 20, 270, special_tokens=())
    small_enc, small_bpe = small.save(tmp_path / "small")
    with pytest.raises(ValueError, match="do not match"):  # GPT-2's merges need tokens `small` lacks
        ByteLevelBPE.from_gpt2_files(small_enc, vocab_bpe, special_tokens=())
    with pytest.raises(ValueError, match="do not match"):  # GPT-2's vocab has tokens no merge makes
        ByteLevelBPE.from_gpt2_files(encoder_json, small_bpe)
    with pytest.raises(ValueError, match="special token"):
        ByteLevelBPE.from_gpt2_files(small_enc, small_bpe)  # no <|endoftext|> in this vocab
    broken = tmp_path / "broken.bpe"
    broken.write_text("#version: 0.2\nĠ t extra\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        ByteLevelBPE.from_gpt2_files(encoder_json, broken)
    with pytest.raises(ValueError, match="vocab_size"):
        ByteLevelBPE.train("abc", 100)
    with pytest.raises(ValueError, match="not valid Unicode"):
        ByteLevelBPE.train(["fine", "bad \udc80"], 300)
    with pytest.raises(TypeError, match="text must be a str"):
        ByteLevelBPE.train(["fine", 3], 300)


# --------------------------------------------------------------------------- BPE training
def _naive_train(word_counts: dict[tuple[int, ...], int], n_symbols: int, n_merges: int):
    """The slow twin: recount every pair of every word after each merge."""
    words = dict(word_counts)
    merges = []
    for k in range(n_merges):
        counts = get_pair_counts(words)
        if not counts:
            break
        best = max(counts.items(), key=lambda kv: (kv[1], (-kv[0][0], -kv[0][1])))[0]
        merges.append(best)
        new: Counter = Counter()
        for w, n in words.items():
            new[merge_pair(w, best, n_symbols + k)] += n
        words = dict(new)
    return merges


def test_merge_pair_and_pair_counts():
    assert merge_pair((1, 1, 1), (1, 1), 9) == (9, 1)
    assert merge_pair((1, 2, 3, 1, 2), (1, 2), 7) == (7, 3, 7)
    assert merge_pair((1,), (1, 2), 7) == (1,)
    assert get_pair_counts({(1, 2, 1, 2): 3, (2, 1): 1}) == Counter({(1, 2): 6, (2, 1): 4})


def test_incremental_training_matches_naive_recount():
    text = load_shakespeare().validation[:60_000]
    tok = ByteLevelBPE.train(text, 256 + 150, special_tokens=())
    byte_order = list(bytes_to_unicode())
    byte_id = {b: k for k, b in enumerate(byte_order)}
    import regex
    words = Counter(tuple(byte_id[b] for b in piece.encode()) for piece in regex.findall(GPT2_PATTERN, text))
    naive = _naive_train(dict(words), 256, 150)
    assert [(tok.id_to_token(a), tok.id_to_token(b)) for a, b in naive] == tok.merges


@pytest.mark.parametrize("corpus", ["shakespeare", "tang"])
def test_training_matches_hf_trainer(corpus, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    if corpus == "shakespeare":
        text, size = load_shakespeare().train[:300_000], 256 + 600
    else:
        text, size = "\n".join(p.text for p in load_tang_poems().train), 256 + 1500
    ours = ByteLevelBPE.train(text, size, special_tokens=())
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=size, show_progress=False, min_frequency=0,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([text], trainer)
    hf_merges = json.loads(hf.to_str())["model"]["merges"]
    hf_merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in hf_merges]
    assert ours.merges == hf_merges
    assert ours.vocab == hf.get_vocab()


def test_trained_tokenizer_saves_and_matches_hf_model(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    text = load_shakespeare().train[:200_000]
    tok = ByteLevelBPE.train(text, 256 + 400)
    assert tok.vocab_size == 656 and len(tok.merges) == 399 and tok.special_tokens == {ENDOFTEXT: 655}
    enc, bpe = tok.save(tmp_path)
    again = ByteLevelBPE.from_gpt2_files(enc, bpe)
    hf = tokenizers.ByteLevelBPETokenizer(str(enc), str(bpe))
    sample = load_shakespeare().test[:20_000]
    assert again.encode(sample) == tok.encode(sample) == hf.encode(sample).ids
    for text in NASTY:
        assert tok.decode(tok.encode(text)) == text


def test_train_skips_special_tokens_and_is_deterministic():
    text = "hello world<|endoftext|>hello there<|endoftext|>" * 30
    a = ByteLevelBPE.train(text, 280)
    b = ByteLevelBPE.train(text, 280)
    assert a.merges == b.merges
    assert not any("|" in x + y for x, y in a.merges)  # "<|endoftext|>" itself was never counted
    assert a.encode("<|endoftext|>") == [a.eos_token_id]


def test_train_merges_validates():
    with pytest.raises(ValueError, match="vocab_size"):
        train_merges({(0, 1): 1}, ["a", "b"], 1)


# --------------------------------------------------------------------------- WordPiece
@pytest.fixture(scope="module")
def wordpiece() -> WordPiece:
    texts = [e.text for e in load_rotten_tomatoes().train[:3000]]
    return WordPiece.train(texts, 2000)


@pytest.mark.parametrize("lowercase", [True, False])
def test_wordpiece_matches_hf(wordpiece, lowercase):
    tokenizers = pytest.importorskip("tokenizers")
    tok = WordPiece(wordpiece.itos, lowercase=lowercase)
    hf = tokenizers.BertWordPieceTokenizer({t: i for i, t in enumerate(tok.itos)}, lowercase=lowercase)
    texts = [e.text for e in load_rotten_tomatoes().test] + [p.text for p in load_tang_poems().validation]
    texts += [p.es for p in load_en_es().test[:500]] + NASTY + ["İstanbul ﬁne Ǆ", "x" * 150]
    for text in texts:
        assert tok.encode(text) == hf.encode(text).ids, text[:80]


def test_wordpiece_vocab_file_round_trip(wordpiece, tmp_path):
    transformers = pytest.importorskip("transformers")
    path = wordpiece.save(tmp_path / "vocab.txt")
    again = WordPiece.from_file(path)
    assert again.itos == wordpiece.itos
    hf = transformers.BertTokenizerFast(vocab_file=str(path), do_lower_case=True)
    if len(hf) != wordpiece.vocab_size:  # transformers 5 names the argument `vocab`
        hf = transformers.BertTokenizerFast(vocab=str(path), do_lower_case=True)
    assert len(hf) == wordpiece.vocab_size
    for e in load_rotten_tomatoes().validation[:300]:
        assert again.encode(e.text) == hf.encode(e.text), e.text


def test_wordpiece_greedy_longest_match():
    tok = WordPiece(["[UNK]", "[CLS]", "[SEP]", "un", "unaff", "##aff", "##able", "##a", "##ffable"])
    assert tok.split_word("unaffable") == ["unaff", "##able"]
    assert tok.split_word("unx") == ["[UNK]"]  # one unmatched position makes the whole word unknown
    assert tok.tokenize("Unaffable, un") == ["unaff", "##able", "[UNK]", "un"]
    assert tok.decode(tok.encode("unaffable")) == "unaffable"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([99])
    with pytest.raises(ValueError, match="unk_token"):
        WordPiece(["a", "b"])
    with pytest.raises(TypeError, match="text must be a str"):
        tok.encode(3)


# --------------------------------------------------------------------------- word and char
def test_word_tokenizer():
    tok = WordTokenizer.train("the cat sat on the mat. The end!", max_vocab=6)
    assert tok.itos[:3] == ["<unk>", "the", "cat"]
    assert tok.decode(tok.encode("the cat sat")) == "the cat sat"
    assert tok.encode("the dog") == [1, 0]
    with pytest.raises(ValueError, match="max_vocab"):
        WordTokenizer.train("a b", max_vocab=1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([6])


def test_char_vocab_is_reexported():
    assert CharVocab is VocabCharVocab


def test_truncate_equals_training_fewer_merges():
    text = load_shakespeare().validation[:80_000]
    big = ByteLevelBPE.train(text, 256 + 300)
    small = ByteLevelBPE.train(text, 256 + 120)
    cut = big.truncate(119)
    assert cut.vocab == small.vocab and cut.merges == small.merges
    assert cut.encode(text[:5000]) == small.encode(text[:5000])
    with pytest.raises(ValueError, match="num_merges"):
        big.truncate(10_000)
