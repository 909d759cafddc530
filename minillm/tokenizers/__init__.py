"""Tokenizers, from characters to GPT-2's byte-level BPE and BERT's WordPiece.

| class | splits text into | vocabulary |
|---|---|---|
| ``CharVocab`` (from ``minillm.vocab``) | characters | the characters of a text |
| ``WordTokenizer`` | words and punctuation | the most frequent words, ``<unk>`` for the rest |
| ``ByteLevelBPE`` | byte-level BPE pieces (GPT-2) | trained here, or GPT-2's own 50,257 tokens |
| ``WordPiece`` | greedy longest-match pieces (BERT) | trained here, or any BERT ``vocab.txt`` list |

All share ``encode(text) -> list[int]``, ``decode(ids) -> str``, ``vocab_size``, ``token_to_id``.
"""

from ..vocab import CharVocab
from .bpe import get_pair_counts, merge_pair, train_merges
from .gpt2 import ENDOFTEXT, GPT2_PATTERN, ByteLevelBPE, bytes_to_unicode
from .word import WordTokenizer
from .wordpiece import WordPiece, bert_normalize, bert_pretokenize


def gpt2_tokenizer() -> ByteLevelBPE:
    """GPT-2's own tokenizer, loaded from the files shipped in ``minillm.data``."""
    from ..data import gpt2_vocab_files

    return ByteLevelBPE.from_gpt2_files(*gpt2_vocab_files())


__all__ = ["CharVocab", "WordTokenizer", "ByteLevelBPE", "WordPiece", "ENDOFTEXT", "GPT2_PATTERN",
           "bytes_to_unicode", "get_pair_counts", "merge_pair", "train_merges", "bert_normalize",
           "bert_pretokenize", "gpt2_tokenizer"]
