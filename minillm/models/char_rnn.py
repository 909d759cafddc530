"""A character-level recurrent language model on the fast fused ``torch.nn`` LSTM/GRU/RNN.

Embedding → ``num_layers`` recurrent layers → linear head, after Karpathy's char-rnn (2015).
``forward`` returns ``(logits, state)`` like ``torch.nn.LSTM`` returns ``(output, state)``, so
generation carries the state forward one character at a time (constant cost per character), and
text can be fed in pieces. The chapter-5 recipe ``ch05-lstm-shakespeare`` (on the leaderboard)
trains it on Shakespeare; the chapter notebook also trains one on the Tang poems.

Shape letters: B batch, T time, C embedding width, H hidden size, L layers, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..sampling import IDS, generate_tokens
from ..validation import check_choice, check_float, check_int, check_token_ids

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


@dataclass
class CharRNNConfig:
    vocab_size: int = 82  # distinct characters
    cell: str = "lstm"  # "lstm", "gru" or "rnn" (Elman, tanh)
    n_embd: int = 64  # character embedding width C
    hidden_size: int = 256  # recurrent state width H
    num_layers: int = 2  # stacked recurrent layers L
    dropout: float = 0.0  # between recurrent layers and before the head (training only)

    def __post_init__(self) -> None:
        check_choice("cell", self.cell, _CELLS)
        for name in ("vocab_size", "n_embd", "hidden_size", "num_layers"):
            setattr(self, name, check_int(name, getattr(self, name), low=1))
        self.dropout = check_float("dropout", self.dropout, low=0, high=1, high_inclusive=False)


class CharRNN(nn.Module):
    """Character LM: ``logits_t = head(RNN(embed(x_1..x_t)))``."""

    config_class = CharRNNConfig

    def __init__(self, config: CharRNNConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.rnn = _CELLS[config.cell](config.n_embd, config.hidden_size, config.num_layers,
                                       batch_first=True,
                                       dropout=config.dropout if config.num_layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.cell == "lstm":
            # forget-gate bias 1 (Gers et al. 2000; Jozefowicz et al. 2015): remember by default
            h = config.hidden_size
            with torch.no_grad():
                for layer in range(config.num_layers):
                    getattr(self.rnn, f"bias_ih_l{layer}")[h:2 * h].fill_(1.0)
                    getattr(self.rnn, f"bias_hh_l{layer}")[h:2 * h].fill_(0.0)

    def forward_embeddings(self, emb: torch.Tensor, state: State | None = None
                           ) -> tuple[torch.Tensor, State]:
        """(B, T, C) input embeddings → (logits (B, T, V), final state). Used to take ∂/∂embedding."""
        out, state = self.rnn(emb, state)  # (B, T, H)
        return self.head(self.drop(out)), state

    def forward(self, idx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """(B, T) token ids (and an optional carried state) → (logits (B, T, V), final state)."""
        check_token_ids(IDS, idx, self.config.vocab_size, ndim=2)
        return self.forward_embeddings(self.wte(idx), state)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` characters after the prompt ``idx`` (B, T ≥ 1); returns (B, T + new).

        The prompt is read once; after that each step feeds one character and the carried state
        (arguments: :func:`minillm.sampling.generate_tokens`).
        """
        def step(new: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
            logits, state = self(new, state)
            return logits[:, -1], state  # (B, V)

        return generate_tokens(step, idx, max_new_tokens, vocab_size=self.config.vocab_size,
                               temperature=temperature, top_k=top_k, top_p=top_p,
                               generator=generator, model=self)
