"""Tokenizer speed: our pure-Python BPE trainer and GPT-2 encoder next to HF tokenizers and tiktoken.

Ours is pure Python; the references are Rust. Everything runs in this process on the same text:
BPE training to 1,000 merges on ~1 MB of Shakespeare (HF `BpeTrainer`, same merges), and encoding
~1 MB with the GPT-2 vocabulary (tiktoken and HF `ByteLevelBPETokenizer`, same ids). Encoding is
timed twice for ours: a fresh tokenizer (empty pre-token cache) and a second pass (warm cache).
"""

from __future__ import annotations

import json
import time

from common import Row, best_of
from minillm.data import gpt2_vocab_files, load_shakespeare
from minillm.tokenizers import ENDOFTEXT, GPT2_PATTERN, ByteLevelBPE, bytes_to_unicode, gpt2_tokenizer

TRAIN_CHARS = 1_000_000
MERGES = 1_000


def _hf_train(text: str) -> list:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=256 + MERGES, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=0, show_progress=False)
    tok.train_from_iterator([text], trainer)
    return json.loads(tok.to_str())["model"]["merges"]


def _tiktoken():
    import tiktoken

    encoder_json, _ = gpt2_vocab_files()
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    vocab = json.loads(encoder_json.read_text(encoding="utf-8"))
    ranks = {bytes(byte_of[c] for c in t): i for t, i in vocab.items() if t != ENDOFTEXT}
    return tiktoken.Encoding(name="gpt2_offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 50256})


def run() -> list[Row]:
    from tokenizers import ByteLevelBPETokenizer

    text = load_shakespeare().train[:TRAIN_CHARS]
    mb = len(text.encode("utf-8")) / 1e6
    rows = []

    ours_train = best_of(lambda: ByteLevelBPE.train(text, 256 + MERGES, special_tokens=()), repeats=2)
    hf_train = best_of(lambda: _hf_train(text), repeats=2)
    rows.append(Row(f"BPE training, {MERGES} merges on {mb:.1f} MB", ours_train, hf_train, "s",
                    higher_is_better=False, reference_name="HF tokenizers BpeTrainer (Rust)"))

    encoder_json, vocab_bpe = gpt2_vocab_files()
    tik = _tiktoken()
    hf = ByteLevelBPETokenizer(str(encoder_json), str(vocab_bpe))
    ours = gpt2_tokenizer()
    start = time.perf_counter()
    ids = ours.encode(text)
    cold = time.perf_counter() - start
    assert ids == tik.encode_ordinary(text) == hf.encode(text).ids  # same work, same answer
    warm = best_of(lambda: ours.encode(text), repeats=3, warmup=0)
    tik_s = best_of(lambda: tik.encode_ordinary(text), repeats=3)
    hf_s = best_of(lambda: hf.encode(text), repeats=3)
    rows.append(Row("GPT-2 encode, cold pre-token cache", mb / cold, mb / tik_s, "MB/s",
                    reference_name="tiktoken (Rust)"))
    rows.append(Row("GPT-2 encode, warm pre-token cache", mb / warm, mb / tik_s, "MB/s",
                    reference_name="tiktoken (Rust)"))
    rows.append(Row("GPT-2 encode, warm pre-token cache", mb / warm, mb / hf_s, "MB/s",
                    reference_name="HF ByteLevelBPETokenizer (Rust)"))
    return rows
