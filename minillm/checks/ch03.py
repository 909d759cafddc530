"""Checks for chapter 3's exercises (tokenization)."""

from __future__ import annotations

import random
from collections import Counter

from . import Case, CheckResult, run_check
from ..tokenizers.bpe import merge_pair
from ..tokenizers.gpt2 import bytes_to_unicode
from ..tokenizers.wordpiece import WordPiece


def _ref_count_pairs(ids: list[int]) -> dict[tuple[int, int], int]:
    return dict(Counter(zip(ids, ids[1:])))


def _ref_merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    return list(merge_pair(ids, pair, new_id))


def _ref_byte_map() -> dict[int, str]:
    return dict(bytes_to_unicode())


def _ref_wordpiece(word: str, vocab: set[str], unk: str = "[UNK]") -> list[str]:
    return WordPiece(sorted(vocab | {unk}), unk_token=unk).split_word(word)


def _compare_as_dict(expected, got, **_):
    if not isinstance(got, dict):
        return f"result: expected a dict, got {type(got).__name__}"
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected and got[k] != 0]
    if missing or extra:
        return f"result: pairs missing {missing[:3]}, unexpected pairs {extra[:3]}"
    wrong = [(k, expected[k], got[k]) for k in expected if got[k] != expected[k]]
    if wrong:
        k, e, g = wrong[0]
        return f"result[{k}]: expected {e}, got {g} ({len(wrong)} counts differ)"
    return None


def check_count_pairs(fn) -> CheckResult:
    """``fn(ids)`` → dict mapping each adjacent pair ``(ids[i], ids[i+1])`` to how often it occurs."""
    rng = random.Random(0)
    cases = [
        Case(([1, 2, 3, 1, 2],), description="(1, 2) occurs twice"),
        Case(([7, 7, 7, 7],), description="overlapping pairs all count: (7, 7) three times"),
        Case(([5],), description="one id: no pairs"),
        Case(([],), description="empty"),
        Case(([rng.randrange(6) for _ in range(300)],), description="300 random ids"),
    ]
    return run_check("count_pairs", fn, _ref_count_pairs, cases, compare_fn=_compare_as_dict,
                     hint="zip(ids, ids[1:]) walks over neighbouring pairs; collections.Counter counts them")


def check_merge(fn) -> CheckResult:
    """``fn(ids, pair, new_id)`` → new list with every occurrence of ``pair`` replaced by ``new_id``."""
    rng = random.Random(1)
    long = [rng.randrange(3) for _ in range(200)]
    cases = [
        Case(([1, 2, 3, 1, 2], (1, 2), 9), description="two occurrences"),
        Case(([1, 1, 1], (1, 1), 9), description="overlap: leftmost first, giving [9, 1]"),
        Case(([1, 1, 1, 1], (1, 1), 9), description="overlap: [9, 9]"),
        Case(([3, 4], (4, 3), 9), description="pair absent"),
        Case(([2, 1], (1, 2), 9), description="order matters"),
        Case(([], (1, 2), 9), description="empty"),
        Case((long, (0, 2), 5), description="200 random ids"),
    ]
    return run_check("merge", fn, _ref_merge, cases,
                     hint="walk with an index i: if ids[i], ids[i+1] is the pair, append new_id and "
                          "skip 2, else append ids[i] and move 1")


def check_bytes_to_unicode(fn) -> CheckResult:
    """``fn()`` → GPT-2's map from each byte (0-255) to a printable character."""
    def compare(expected, got, **_):
        if not isinstance(got, dict):
            return f"result: expected a dict, got {type(got).__name__}"
        if set(got) != set(range(256)):
            return f"result: keys should be the 256 byte values 0..255, got {len(got)} keys"
        for b in range(256):
            if got[b] != expected[b]:
                return (f"result[{b}]: expected {expected[b]!r} (U+{ord(expected[b]):04X}), got {got[b]!r}"
                        + (" — printable bytes keep their own character" if chr(b) == expected[b] else
                           " — the non-printable bytes, in increasing order, get chr(256), chr(257), ..."))
        return None

    return run_check("bytes_to_unicode", fn, _ref_byte_map, [Case(description="all 256 bytes")],
                     compare_fn=compare,
                     hint="keep ! to ~, ¡ to ¬ and ® to ÿ as themselves; give the other bytes, in "
                          "increasing order, the characters chr(256 + n) for n = 0, 1, 2, ...")


def check_wordpiece_split(fn) -> CheckResult:
    """``fn(word, vocab)`` → greedy longest-match-first WordPiece pieces, or ``["[UNK]"]``."""
    vocab = {"un", "unaff", "##aff", "##able", "##a", "##ffable", "play", "##ing", "##s", "p", "##l",
             "##a", "##y", "a", "##b", "x"}
    cases = [
        Case(("unaffable", vocab), description="longest first piece: 'unaff' then '##able'"),
        Case(("playing", vocab), description="'play' + '##ing'"),
        Case(("plays", vocab), description="'play' + '##s'"),
        Case(("pla", vocab), description="falls back to shorter pieces"),
        Case(("unx", vocab), description="'##x' is missing: the whole word is [UNK]"),
        Case(("zzz", vocab), description="no first piece: [UNK]"),
        Case(("a", vocab), description="single character"),
        Case(("ab", vocab), description="'a' + '##b'"),
    ]
    return run_check("wordpiece_split", fn, _ref_wordpiece, cases,
                     hint="from position start, try the longest word[start:end] first (prefix '##' "
                          "unless start == 0), shrinking end until the piece is in vocab; if none "
                          "matches, return ['[UNK]']")


# ----- the larger exercise: a complete byte-level BPE tokenizer -----
def _ref_bpe_tokenizer(train_text: str, num_merges: int,
                       texts: list[str]) -> tuple[list[tuple[bytes, bytes]], list[list[int]]]:
    from ..tokenizers.gpt2 import ByteLevelBPE

    tok = ByteLevelBPE.train(train_text, 256 + num_merges + 1)  # + <|endoftext|>, the last id
    merges = [(tok.token_bytes(tok.vocab[a]), tok.token_bytes(tok.vocab[b])) for a, b in tok.merges]
    return merges, [tok.encode_ordinary(t) for t in texts]


def check_bpe_tokenizer(fn) -> CheckResult:
    """``fn(train_text, num_merges, texts)`` → ``(merges, ids)``: the merges (pairs of bytes) learned
    on ``train_text`` until the vocabulary has 256 + ``num_merges`` tokens, and each text's token ids
    (bytes in GPT-2's order, then one id per new token), equal to ``ByteLevelBPE.train``'s."""
    verse = ("From fairest creatures we desire increase,\nThat thereby beauty's rose might never die,\n"
             "But as the riper should by time decease,\nHis tender heir might bear his memory:\n") * 3
    cases = [
        Case(("low low low low low lower lower newest newest newest widest widest", 8,
              ["lowest newer", "widest low"]), description="Sennrich's toy words, 8 merges"),
        Case(("ab ab ba ba", 4, ["abba", "ba ab"]), description="ties between equally frequent pairs: smallest ids first"),
        Case((verse, 40, ["The riper rose, the tender heir.", "café 東京 🤖 — don't!", ""]),
             description="a sonnet's first lines, 40 merges; unseen bytes and an empty text"),
        Case(("aaaaaaaa aaaa aa", 5, ["aaaaaaa", " aaa"]), description="overlapping pairs: merge leftmost first"),
    ]
    return run_check("bpe_tokenizer", fn, _ref_bpe_tokenizer, cases,
                     hint="pre-tokenize with regex.findall(GPT2_PATTERN, text); words = Counter of byte-id "
                          "tuples (ids in the order of list(bytes_to_unicode())); repeat: count pairs "
                          "weighted by word counts, take max by (count, -a, -b), merge it everywhere; to "
                          "encode, apply the lowest-rank merge present until none applies")
