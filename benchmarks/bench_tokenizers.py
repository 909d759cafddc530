"""Tokenizer speed: our pure-Python BPE trainer and GPT-2 encoder next to HF tokenizers and tiktoken.

Ours is pure Python; the references are Rust. Everything runs in this process on the same text:
BPE training to 1,000 merges on ~1 MB of Shakespeare (HF `BpeTrainer`; the merges are asserted
equal), and encoding ~1 MB with the GPT-2 vocabulary (tiktoken and HF `ByteLevelBPETokenizer`; the ids
are asserted equal). Each pair of sides does the same work:

- "cold": our word cache is cleared before every call; tiktoken keeps no cache between calls, so
  both run the BPE merge loop on every pre-token that is not a whole vocabulary entry;
- "warm": the same text encoded again, with both our cache and HF's BPE word cache filled by the
  warm-up call, so both mostly look pre-tokens up.

Timings are paired and alternating (see common.py); ratios are medians of paired ratios.
"""

from __future__ import annotations

import json
import time

from common import Row, paired_timing
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

    ours_merges = ByteLevelBPE.train(text, 256 + MERGES, special_tokens=()).merges
    hf_merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in _hf_train(text)]
    assert ours_merges == hf_merges, "BPE trainers disagree: the timing would compare different work"
    p = paired_timing(lambda: ByteLevelBPE.train(text, 256 + MERGES, special_tokens=()),
                      lambda: _hf_train(text), repeats=2, warmup=0)
    rows.append(Row.timed(f"BPE training, {MERGES} merges on {mb:.1f} MB (same merges)", p, unit="s",
                          reference_name="HF tokenizers BpeTrainer (Rust)"))

    encoder_json, vocab_bpe = gpt2_vocab_files()
    tik = _tiktoken()
    hf = ByteLevelBPETokenizer(str(encoder_json), str(vocab_bpe))
    ours = gpt2_tokenizer()
    ids = ours.encode(text)
    assert ids == tik.encode_ordinary(text) == hf.encode(text).ids  # same work, same answer

    def ours_cold():
        ours._cache.clear()
        return ours.encode(text)

    p = paired_timing(ours_cold, lambda: tik.encode_ordinary(text), repeats=3)
    rows.append(Row.timed(f"GPT-2 encode {mb:.1f} MB, no word cache on either side", p, work=mb,
                          unit="MB/s", reference_name="tiktoken (Rust), keeps no cache"))
    ours.encode(text)  # fill the cache again: the warm rows repeat the same text
    p = paired_timing(lambda: ours.encode(text), lambda: hf.encode(text), repeats=3)
    rows.append(Row.timed(f"GPT-2 encode {mb:.1f} MB again, both word caches warm", p, work=mb,
                          unit="MB/s", reference_name="HF ByteLevelBPETokenizer (Rust), its BPE cache"))
    return rows
