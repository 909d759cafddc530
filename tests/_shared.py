"""Fixtures and reference helpers shared by several test files (imported by them: `from _shared import ...`)."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="session")
def tiktoken_gpt2():
    """tiktoken's GPT-2 encoding built offline from the shipped encoder.json (the parity reference)."""
    tiktoken = pytest.importorskip("tiktoken")
    from minillm.data import gpt2_vocab_files
    from minillm.tokenizers import ENDOFTEXT, GPT2_PATTERN, bytes_to_unicode

    encoder_json, _ = gpt2_vocab_files()
    byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
    vocab = json.loads(encoder_json.read_text(encoding="utf-8"))
    ranks = {bytes(byte_decoder[c] for c in tok): i for tok, i in vocab.items() if tok != ENDOFTEXT}
    return tiktoken.Encoding(name="gpt2_offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 50256})


def counted_loss(train_ids: torch.Tensor, batches, order: int) -> float:
    """Cross-entropy on ``batches`` of a counted unigram (order 1) or bigram (order 2) model of
    ``train_ids`` with add-0.1 smoothing: the reference a trained character model must beat."""
    V = int(max(int(train_ids.max()), *(int(b[1].max()) for b in batches))) + 1
    x = torch.cat([b[0] for b in batches]).flatten()
    y = torch.cat([b[1] for b in batches]).flatten()
    if order == 1:
        counts = torch.bincount(train_ids, minlength=V).float() + 0.1
        return float(-torch.log(counts / counts.sum())[y].mean())
    counts = torch.full((V, V), 0.1)
    counts.index_put_((train_ids[:-1], train_ids[1:]), torch.ones(len(train_ids) - 1), accumulate=True)
    return float(-torch.log(counts / counts.sum(1, keepdim=True))[x, y].mean())


def data_parallel_tokens(n: int = 2000, vocab: int = 11) -> torch.Tensor:
    """The fixed token stream of the data-parallel parity tests (test_distributed, test_sharded)."""
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(0))


def data_parallel_batches(block_size: int, micro_batch: int):
    """The job's micro-batches (seed 1): every rank draws the same ones and keeps its share."""
    from minillm.train import LMBatches

    return LMBatches(data_parallel_tokens(), block_size, micro_batch, seed=1)


def joined_micro_batches(source, accum: int):
    """One process's view of a data-parallel job: the accum micro-batches of a step joined into one."""
    def draw():
        parts = [source() for _ in range(accum)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    return draw
