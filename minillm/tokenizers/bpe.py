"""Byte-pair encoding (BPE) training: learn merges from word counts, updating pair counts incrementally.

BPE (Sennrich et al., 2016, "Neural Machine Translation of Rare Words with Subword Units") starts
from single symbols and repeatedly merges the most frequent adjacent pair into a new symbol. This
module works on integer symbol ids, so the same loop trains byte-level BPE (GPT-2, in ``gpt2.py``)
and WordPiece vocabularies (``wordpiece.py``).

The naive loop recounts every pair of the whole corpus after each merge. Here the corpus is first
reduced to distinct words with counts, and after a merge only the words that contain the merged pair
are touched: their old pairs are subtracted from the global counts and their new pairs added. The
most frequent pair is found with a lazy max-heap: a merge raises only the counts of pairs that
contain the merged symbol, and those are pushed again, so every other heap entry is an upper bound
and a stale one is simply pushed back with its current count when it reaches the top. Ties go to
the smallest pair ``(left id, right id)``, the rule Hugging Face ``tokenizers``' ``BpeTrainer`` uses,
so both learn the same merges.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Callable, Sequence

Pair = tuple[int, int]


def get_pair_counts(words: dict[tuple[int, ...], int]) -> Counter:
    """How often each adjacent pair of symbols occurs, weighting every word by its count."""
    counts: Counter = Counter()
    for word, n in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += n
    return counts


def merge_pair(word: Sequence[int], pair: Pair, new_id: int) -> tuple[int, ...]:
    """Replace every occurrence of ``pair`` in ``word`` by ``new_id``, scanning left to right.

    Overlaps resolve leftmost first: merging (a, a) in ``a a a`` gives ``aa a``.
    """
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def train_merges(word_counts: dict[tuple[int, ...], int], symbols: list[str], vocab_size: int, *,
                 join: Callable[[str, str], str] = str.__add__, min_frequency: int = 1,
                 progress: bool = False) -> list[Pair]:
    """Learn merges until the vocabulary has ``vocab_size`` symbols (or no pair is frequent enough).

    Args:
        word_counts: each distinct word as a tuple of symbol ids, with how often it occurs.
        symbols: the starting alphabet, symbol id -> string. New symbols are appended to it in place.
        vocab_size: stop when ``len(symbols)`` reaches this.
        join: the string of a merged symbol (WordPiece drops the ``##`` of the right part).
        min_frequency: stop when the most frequent pair occurs fewer times than this.
        progress: show a progress bar.

    Returns:
        The merged pairs of symbol ids, in order. Two merges can spell the same string (``a + bc``
        and ``ab + c``); the second then reuses the first one's id, as Hugging Face does.
    """
    if not isinstance(vocab_size, int) or vocab_size < len(symbols):
        raise ValueError(f"vocab_size must be an int >= the {len(symbols)} starting symbols, "
                         f"got {vocab_size!r}")
    words = [list(w) for w in word_counts]
    counts = list(word_counts.values())
    index = {s: i for i, s in enumerate(symbols)}
    pair_counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)  # pair -> indices of words that contain it
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += counts[i]
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=vocab_size - len(symbols), desc="BPE merges")
    merges: list[Pair] = []
    while len(symbols) < vocab_size and heap:
        neg, pair = heapq.heappop(heap)
        current = pair_counts.get(pair, 0)
        if -neg != current:  # stale entry: re-queue with the true count
            if current > 0:
                heapq.heappush(heap, (-current, pair))
            continue
        if current < max(min_frequency, 1):
            break
        name = join(symbols[pair[0]], symbols[pair[1]])
        new_id = index.get(name)
        if new_id is None:
            new_id = index[name] = len(symbols)
            symbols.append(name)
            if bar is not None:
                bar.update(1)
        merges.append(pair)
        grown: set[Pair] = set()
        for i in where.pop(pair):
            word, n = words[i], counts[i]
            new_word = merge_pair(word, pair, new_id)
            if len(new_word) == len(word):
                continue  # the pair left this word in an earlier merge
            for p in zip(word, word[1:]):
                pair_counts[p] -= n
            for p in zip(new_word, new_word[1:]):
                pair_counts[p] += n
                where[p].add(i)
                if new_id in p:
                    grown.add(p)
            words[i] = list(new_word)
        pair_counts.pop(pair, None)
        for p in grown:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
    if bar is not None:
        bar.close()
    return merges
