"""The smallest neural language model: a bigram table of logits (the tour's first model).

Each token looks up a row of next-token logits; nothing else. Training it with the course's
``train`` function shows the whole pipeline (data → batches → loss → AdamW → checkpoint) in seconds.
Shape letters: B batch, T time, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..sampling import IDS, generate_tokens
from ..validation import check_int, check_token_ids


@dataclass
class BigramConfig:
    """The size of a :class:`BigramLM`: one row of next-token logits per token."""

    vocab_size: int = 82  # number of distinct tokens (82 = the Shakespeare characters)

    def __post_init__(self) -> None:
        self.vocab_size = check_int("vocab_size", self.vocab_size, low=1)


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
        check_token_ids(IDS, idx, self.config.vocab_size, ndim=2, allow_empty=True)
        return self.table(idx)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after the prompt ``idx`` (B, T ≥ 1); returns (B, T + new).

        Only the last token matters, so each step looks up one row (see
        :func:`minillm.sampling.generate_tokens` for the arguments).
        """
        def step(new: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
            return self(new[:, -1:])[:, -1], None  # (B, V)

        return generate_tokens(step, idx, max_new_tokens, vocab_size=self.config.vocab_size,
                               temperature=temperature, top_k=top_k, top_p=top_p,
                               generator=generator, model=self)
