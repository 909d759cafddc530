"""The neural probabilistic language model of Bengio et al. (2003): embeddings + an MLP.

The previous ``context`` tokens are looked up in a shared embedding table ``C``, concatenated, and
passed through one tanh hidden layer; the output layer gives next-token logits:

    logits = b + W·x + U·tanh(d + H·x),   x = [C(w_{t-n+1}); ...; C(w_t)]

(``W·x``, the direct connections, are optional: ``direct=True``). Unlike an n-gram table the model
shares statistical strength between similar contexts through the embeddings, and its size grows
linearly, not exponentially, with the context length.

``forward`` takes whole sequences (B, T) and returns logits (B, T, V) for every position, like the
other language models of the course: position t sees tokens t-n+1..t, and positions before the
start of the sequence are filled with a learned "before the text" embedding (id ``vocab_size``).
The sliding windows come from one ``unfold`` (no Python loop); ``tests/test_mlp_lm.py`` checks them
against a per-position loop.

Also here: a word vocabulary for the word-level model, a 2-D projection of an embedding table
(PCA by SVD) with cosine nearest neighbours. The chapter-4 recipe is in :mod:`minillm.recipes`,
its leaderboard scorer in :mod:`minillm.leaderboard`.

Shape letters: B batch, T time, N context length, C embedding width, V vocabulary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..sampling import IDS, generate_tokens
from ..validation import check_bool, check_float, check_int, check_str, check_token_ids
from ..vocab import WordVocab as BaseWordVocab


@dataclass
class MLPLMConfig:
    vocab_size: int = 82  # distinct tokens V (one more embedding row is added for "before the text")
    context: int = 8  # tokens N the model sees: the current one and N-1 before it
    n_embd: int = 16  # embedding width C
    n_hidden: int = 256  # tanh hidden units
    direct: bool = False  # Bengio's direct embedding→output connections (W·x)
    dropout: float = 0.0  # on the hidden layer, training only

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "n_embd", "n_hidden"):
            setattr(self, name, check_int(name, getattr(self, name), low=1))
        self.direct = check_bool("direct", self.direct)
        self.dropout = check_float("dropout", self.dropout, low=0, high=1, high_inclusive=False)


def context_windows(idx: torch.Tensor, context: int, pad_id: int) -> torch.Tensor:
    """(B, T) ids → (B, T, N): row t holds ids t-N+1..t, with ``pad_id`` before the sequence start."""
    padded = F.pad(idx, (context - 1, 0), value=pad_id)  # (B, T + N - 1)
    return padded.unfold(1, context, 1)  # (B, T, N)


class MLPLM(nn.Module):
    """Bengio et al. (2003) neural LM over a fixed window of ``context`` tokens."""

    config_class = MLPLMConfig

    def __init__(self, config: MLPLMConfig):
        super().__init__()
        self.config = config
        width = config.context * config.n_embd
        self.wte = nn.Embedding(config.vocab_size + 1, config.n_embd)  # C; last row = before text
        self.hidden = nn.Linear(width, config.n_hidden)  # H, d
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.n_hidden, config.vocab_size)  # U, b
        self.direct = nn.Linear(width, config.vocab_size, bias=False) if config.direct else None  # W

    @property
    def pad_id(self) -> int:
        return self.config.vocab_size

    @property
    def embeddings(self) -> torch.Tensor:
        """The (V, C) embedding table of the real tokens (without the "before the text" row)."""
        return self.wte.weight[: self.config.vocab_size]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids → (B, T, V) next-token logits."""
        check_token_ids(IDS, idx, self.config.vocab_size, ndim=2, allow_empty=True)
        windows = context_windows(idx.long(), self.config.context, self.pad_id)  # (B, T, N)
        x = self.wte(windows).flatten(2)  # (B, T, N*C)
        logits = self.head(self.drop(torch.tanh(self.hidden(x))))  # (B, T, V)
        if self.direct is not None:
            logits = logits + self.direct(x)
        return logits

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after the prompt ``idx`` (B, T ≥ 1); returns (B, T + new).

        Only the last ``context`` tokens matter, so the state carried between steps is that window
        and each step runs the model on it alone (arguments: :func:`minillm.sampling.generate_tokens`).
        """
        N = self.config.context

        def step(new: torch.Tensor, window: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            window = new if window is None else torch.cat([window, new], dim=1)[:, -N:]  # (B, <=N)
            return self(window)[:, -1], window  # (B, V)

        return generate_tokens(step, idx, max_new_tokens, vocab_size=self.config.vocab_size,
                               temperature=temperature, top_k=top_k, top_p=top_p,
                               generator=generator, model=self)


# ---------------------------------------------------------------------------------------------
# Words and embedding spaces
# ---------------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*|[^\sa-z]")


def split_words(text: str) -> list[str]:
    """Lower-cased words (with inner apostrophes) and single punctuation marks; newlines dropped."""
    return _WORD.findall(text.lower())


class WordVocab(BaseWordVocab):
    """The ``max_size - 1`` most frequent words plus ``<unk>`` (id 0) for every other word."""

    UNK = "<unk>"

    def __init__(self, words: Iterable[str]):
        super().__init__([self.UNK] + [w for w in words if w != self.UNK])

    @classmethod
    def from_text(cls, text: str, max_size: int = 5000) -> "WordVocab":
        """The vocabulary of ``text`` split by :func:`split_words` (ties broken alphabetically)."""
        if check_int("max_size", max_size) < 2:
            raise ValueError(f"max_size must be at least 2 (<unk> and one word), got {max_size}")
        return cls.build([split_words(text)], max_size=max_size)

    def encode(self, text: str) -> list[int]:
        """Ids of the words of ``text``; unknown words are ``<unk>`` (id 0)."""
        return self.encode_words(split_words(check_str("text", text)))

    def encode_tensor(self, text: str) -> torch.Tensor:
        """``encode`` as a 1-D int64 tensor."""
        return torch.tensor(self.encode(text), dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` joined by spaces, with no space before punctuation."""
        return re.sub(r" ([,.;:!?'])", r"\1", " ".join(self.decode_words(ids)))


def project_2d(weight: torch.Tensor) -> torch.Tensor:
    """(N, C) embedding rows → (N, 2) coordinates on their first two principal components (SVD)."""
    if weight.dim() != 2 or weight.size(0) < 2:
        raise ValueError(f"expected an (N >= 2, C) embedding table, got shape {tuple(weight.shape)}")
    centered = weight.detach().float() - weight.detach().float().mean(0)  # (N, C)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)  # vh: (C, C)
    coords = centered @ vh[:2].T  # (N, 2)
    # fix each axis's sign (SVD may flip it) so reruns draw the same picture
    signs = torch.sign(coords[coords.abs().argmax(0), torch.arange(2)])
    return coords * signs


def nearest_neighbours(weight: torch.Tensor, index: int, k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` rows of ``weight`` (N, C) with the highest cosine similarity to row ``index``."""
    if not 0 <= index < weight.size(0):
        raise ValueError(f"index must be in [0, {weight.size(0)}), got {index}")
    w = F.normalize(weight.detach().float(), dim=-1)  # (N, C)
    sims = w @ w[index]  # (N,)
    sims[index] = float("-inf")
    top = torch.topk(sims, min(k, weight.size(0) - 1))
    return [(int(i), float(s)) for s, i in zip(top.values, top.indices)]
