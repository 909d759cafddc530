"""The smallest neural language model: a bigram table of logits (the tour's first model).

Each token looks up a row of next-token logits; nothing else. Training it with the course's
``train`` function shows the whole pipeline (data → batches → loss → AdamW → checkpoint) in seconds.
Shape letters: B batch, T time, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BigramConfig:
    vocab_size: int = 65  # number of distinct tokens


class BigramLM(nn.Module):
    """Next-token logits from the current token alone: ``logits = table[token]``."""

    config_class = BigramConfig

    def __init__(self, config: BigramConfig):
        super().__init__()
        self.config = config
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)
        nn.init.zeros_(self.table.weight)  # start from the uniform distribution

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids → (B, T, V) logits."""
        if idx.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"token ids must be an integer tensor, got {idx.dtype}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.config.vocab_size}), got values in "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        return self.table(idx)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after the prompt ``idx`` (B, T); returns (B, T + new)."""
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        for _ in range(max_new_tokens):
            logits = self(idx[:, -1:])[:, -1] / temperature  # (B, V)
            probs = torch.softmax(logits.float(), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
