"""A GRU encoder–decoder for translation, without and with additive (Bahdanau) attention.

The encoder is a bidirectional GRU over the source words (Bahdanau et al., 2015, "Neural Machine
Translation by Jointly Learning to Align and Translate"); padded batches are packed, so a padded
sentence is encoded exactly as it would be alone. The decoder is a GRU started from the encoder's
summary. Without attention (``attention=False``, Sutskever et al., 2014 / Cho et al., 2014) that one
vector is all the decoder knows about the source. With attention, every decoder state ``s_t``
scores every encoder state ``h_j`` with Bahdanau's additive score

    e_tj = v · tanh(W_q s_t + W_k h_j),   α_t = masked_softmax(e_t),   c_t = Σ_j α_tj h_j

and predicts the next word from ``tanh(W_c [s_t; c_t])``. The score is Bahdanau's; where it is
applied (after the recurrent step, on ``s_t`` rather than ``s_{t-1}``) follows Luong et al. (2015),
so that teacher forcing runs the whole target through one fused ``nn.GRU`` call.

Below the model: a word tokenizer and vocabulary, padded batches of English→Spanish verse pairs,
and the loss; the recipe behind ``load_pretrained("ch06-seq2seq-en-es")`` is in :mod:`minillm.recipes`.
Shape letters: B batch, S source length, T target length, E embedding, H hidden, A attention, V vocab.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..sampling import check_generate_args
from ..search import SearchOutput, beam_search, greedy_search
from ..validation import check_bool, check_float, check_int, check_nonempty, check_token_ids
from ..vocab import WordVocab as BaseWordVocab

PAD, BOS, EOS, UNK = 0, 1, 2, 3


@dataclass
class Seq2SeqConfig:
    src_vocab_size: int = 4000  # source (English) words incl. the 4 special tokens
    tgt_vocab_size: int = 4000  # target (Spanish) words incl. the 4 special tokens
    emb_dim: int = 96  # word embedding width, both sides
    hidden_dim: int = 192  # decoder GRU width; the encoder has hidden_dim // 2 per direction
    attn_dim: int = 96  # width of the additive attention's tanh layer
    attention: bool = True  # False = the plain encoder–decoder (one summary vector)
    tie_embeddings: bool = True  # output layer reuses the target embeddings (Press & Wolf, 2017)
    dropout: float = 0.2  # on embeddings and before the output layer
    pad_id: int = PAD
    bos_id: int = BOS
    eos_id: int = EOS

    def __post_init__(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size", "emb_dim", "hidden_dim", "attn_dim"):
            setattr(self, name, check_int(name, getattr(self, name), low=1))
        if self.hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (two encoder directions), got {self.hidden_dim}")
        for name in ("attention", "tie_embeddings"):
            check_bool(name, getattr(self, name))
        self.dropout = check_float("dropout", self.dropout, low=0, high=1, high_inclusive=False)
        for name in ("pad_id", "bos_id", "eos_id"):
            check_int(name, getattr(self, name), low=0, high=min(self.src_vocab_size,
                                                                 self.tgt_vocab_size) - 1)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim where ``mask`` is True; masked positions get exactly 0.

    Computed in fp32 and cast back. A row with no True position returns all zeros (not NaN).
    """
    s = scores.float().masked_fill(~mask, float("-inf"))
    weights = torch.softmax(s, dim=-1)
    return torch.where(mask.any(-1, keepdim=True), weights, torch.zeros_like(weights)).to(scores.dtype)


class AdditiveAttention(nn.Module):
    """Bahdanau's score ``v · tanh(W_q q + W_k k)`` with a padding mask; returns context and weights."""

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int):
        super().__init__()
        self.W_q = nn.Linear(query_dim, attn_dim, bias=False)
        self.W_k = nn.Linear(key_dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def project_keys(self, memory: torch.Tensor) -> torch.Tensor:
        """(B, S, H) encoder states → (B, S, A); computed once per source sentence."""
        return self.W_k(memory)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, T, Hq), keys (B, S, A), memory (B, S, H), mask (B, S) → (B, T, H), (B, T, S)."""
        q = self.W_q(query)  # (B, T, A)
        scores = self.v(torch.tanh(q.unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)  # (B, T, S)
        weights = masked_softmax(scores, mask.unsqueeze(1))  # (B, T, S)
        context = torch.bmm(weights.to(memory.dtype), memory)  # (B, T, H)
        return context, weights


class Encoder(nn.Module):
    """Bidirectional GRU over packed (padded) source ids; returns all states and one summary."""

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.embed = nn.Embedding(config.src_vocab_size, config.emb_dim, padding_idx=config.pad_id)
        self.gru = nn.GRU(config.emb_dim, config.hidden_dim // 2, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S), lengths (B,) → memory (B, S, H) (zeros at padding), summary (B, H)."""
        x = self.drop(self.embed(src))  # (B, S, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = self.gru(packed)  # h_n: (2, B, H/2), the last real step of each direction
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, H)
        summary = torch.cat([h_n[0], h_n[1]], dim=-1)  # (B, H)
        return memory, summary


class Seq2Seq(nn.Module):
    """Encoder–decoder translation model; ``generate`` decodes greedily or with beam search."""

    config_class = Seq2SeqConfig

    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        self.config = config
        c = config
        self.encoder = Encoder(c)
        self.bridge = nn.Linear(c.hidden_dim, c.hidden_dim)  # encoder summary → decoder's first state
        self.tgt_embed = nn.Embedding(c.tgt_vocab_size, c.emb_dim, padding_idx=c.pad_id)
        self.decoder = nn.GRU(c.emb_dim, c.hidden_dim, batch_first=True)
        if c.attention:
            self.attention = AdditiveAttention(c.hidden_dim, c.hidden_dim, c.attn_dim)
            self.combine = nn.Linear(2 * c.hidden_dim, c.hidden_dim)
        self.drop = nn.Dropout(c.dropout)
        if c.tie_embeddings:  # project to the embedding width, then score against every word vector
            self.out_proj = nn.Linear(c.hidden_dim, c.emb_dim)
            self.out_bias = nn.Parameter(torch.zeros(c.tgt_vocab_size))
        else:
            self.out = nn.Linear(c.hidden_dim, c.tgt_vocab_size)

    def _check_ids(self, ids: torch.Tensor, vocab_size: int, what: str) -> None:
        check_token_ids(f"{what} (integer tensor of token ids, shape (B, length))", ids, vocab_size,
                        ndim=2)

    def encode(self, src: torch.Tensor) -> dict[str, torch.Tensor]:
        """Source ids (B, S), right-padded with ``pad_id`` → the decoder's initial state (a dict)."""
        self._check_ids(src, self.config.src_vocab_size, "src")
        mask = src != self.config.pad_id  # (B, S)
        lengths = mask.sum(1)
        if bool((lengths == 0).any()):
            raise ValueError(f"every source sentence needs at least one token; rows "
                             f"{(lengths == 0).nonzero().flatten().tolist()} are all padding")
        memory, summary = self.encoder(src, lengths)
        state = {"hidden": torch.tanh(self.bridge(summary)), "mask": mask}  # hidden: (B, H)
        if self.config.attention:
            state["memory"] = memory  # (B, S, H)
            state["keys"] = self.attention.project_keys(memory)  # (B, S, A)
        return state

    def _decode(self, tgt_in: torch.Tensor, state: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Teacher-forced decoding of (B, T) inputs → logits (B, T, V), last hidden (B, H), weights."""
        x = self.drop(self.tgt_embed(tgt_in))  # (B, T, E)
        h0 = state["hidden"].unsqueeze(0).contiguous()  # (1, B, H) as nn.GRU wants it
        s, h_n = self.decoder(x, h0)  # s: (B, T, H)
        weights = None
        if self.config.attention:
            context, weights = self.attention(s, state["keys"], state["memory"], state["mask"])
            s = torch.tanh(self.combine(torch.cat([s, context], dim=-1)))  # (B, T, H)
        s = self.drop(s)
        if self.config.tie_embeddings:
            logits = F.linear(self.out_proj(s), self.tgt_embed.weight, self.out_bias)  # (B, T, V)
        else:
            logits = self.out(s)  # (B, T, V)
        return logits, h_n.squeeze(0), weights

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, *, return_attention: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """src (B, S), tgt_in (B, T) starting with ``bos_id`` → logits (B, T, V) [, weights (B, T, S)]."""
        self._check_ids(tgt_in, self.config.tgt_vocab_size, "tgt_in")
        if isinstance(src, torch.Tensor) and src.dim() == 2 and src.size(0) != tgt_in.size(0):
            raise ValueError(f"src and tgt_in must hold the same number of sentences, got "
                             f"{src.size(0)} and {tgt_in.size(0)}")
        logits, _, weights = self._decode(tgt_in, self.encode(src))
        return (logits, weights) if return_attention else logits

    def decode_step(self, prefix: torch.Tensor, state: dict[str, torch.Tensor]
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The search step function: prefix (N, t) → next-token logits (N, V) and the new state."""
        logits, hidden, _ = self._decode(prefix[:, -1:], state)
        return logits[:, -1], {**state, "hidden": hidden}

    @staticmethod
    def _reorder_hidden(state: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        # beams never leave their sentence, so the per-sentence memory/keys/mask stay valid as they are
        return {**state, "hidden": state["hidden"].index_select(0, rows)}

    @torch.no_grad()
    def generate(self, src: torch.Tensor, *, max_new_tokens: int = 40, num_beams: int = 1,
                 length_penalty: float = 1.0) -> SearchOutput:
        """Translate a padded batch (B, S): greedy when ``num_beams == 1``, else beam search."""
        check_generate_args(max_new_tokens=max_new_tokens, num_beams=num_beams,
                            length_penalty=length_penalty)
        check_int("max_new_tokens", max_new_tokens, low=1)
        state = self.encode(src)
        c = self.config
        common = dict(batch_size=src.size(0), bos_id=c.bos_id, eos_id=c.eos_id, pad_id=c.pad_id,
                      max_new_tokens=max_new_tokens, device=src.device)
        if num_beams == 1:
            return greedy_search(self.decode_step, state, **common)
        return beam_search(self.decode_step, state, num_beams=num_beams, length_penalty=length_penalty,
                           reorder_fn=self._reorder_hidden, **common)

    @torch.no_grad()
    def sequence_scores(self, src: torch.Tensor, sequences: torch.Tensor,
                        lengths: torch.Tensor) -> torch.Tensor:
        """Sum of log-probs (B,) the model gives ``sequences`` (B, L) (first ``lengths`` tokens each)."""
        self._check_ids(sequences, self.config.tgt_vocab_size, "sequences")
        if lengths.shape != (sequences.size(0),):
            raise ValueError(f"lengths must have shape ({sequences.size(0)},), one per sequence, "
                             f"got {tuple(lengths.shape)}")
        bos = torch.full_like(sequences[:, :1], self.config.bos_id)
        logits = self(src, torch.cat([bos, sequences[:, :-1]], dim=1))  # (B, L, V)
        logp = F.log_softmax(logits.float(), dim=-1).gather(2, sequences.unsqueeze(-1)).squeeze(-1)
        keep = torch.arange(sequences.size(1), device=src.device)[None] < lengths[:, None]  # (B, L)
        return (logp * keep).sum(1)


# ----------------------------------------------------------------------------- words and batches

_WORD = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: ``"Dijo: ¡Luz!"`` → dijo : ¡ luz !"""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _WORD.findall(text.lower())


class WordVocab(BaseWordVocab):
    """Word ↔ id table with ``<pad> <bos> <eos> <unk>`` as ids 0–3; unknown words map to ``<unk>``."""

    specials = ("<pad>", "<bos>", "<eos>", "<unk>")

    @classmethod
    def build(cls, sentences: Iterable[list[str]], min_freq: int = 2,
              max_size: int | None = None) -> "WordVocab":
        """Words seen at least ``min_freq`` times, most frequent first (ties alphabetical)."""
        return super().build(sentences, min_freq, max_size)

    def encode(self, words: Sequence[str]) -> list[int]:
        """Ids of ``words`` (a list of words, see :func:`tokenize`)."""
        return self.encode_words(words)

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first ``<eos>``; padding and ``<bos>`` are dropped."""
        words = self.decode_words(ids)
        words = words[:words.index("<eos>")] if "<eos>" in words else words
        return [w for w in words if w not in ("<pad>", "<bos>")]


@dataclass
class TranslationData:
    """English→Spanish verse pairs as word ids, filtered to short verses, with their vocabularies."""

    src_vocab: WordVocab
    tgt_vocab: WordVocab
    pairs: dict[str, list] = field(default_factory=dict)  # split → kept TranslationPair records
    ids: dict[str, list[tuple[list[int], list[int]]]] = field(default_factory=dict)  # split → (en, es)


def prepare_en_es(max_len: int = 20, min_freq: int = 3) -> TranslationData:
    """Tokenize ``load_en_es()``, keep pairs with at most ``max_len`` words a side, build vocabularies
    from the kept training pairs (words seen ``min_freq`` times) and map every split to ids."""
    from ..data import load_en_es

    splits = load_en_es()
    kept: dict[str, list] = {}
    words: dict[str, list[tuple[list[str], list[str]]]] = {}
    for name, pairs in splits.items():
        tok = [(tokenize(p.en), tokenize(p.es)) for p in pairs]
        keep = [i for i, (e, s) in enumerate(tok) if 0 < len(e) <= max_len and 0 < len(s) <= max_len]
        kept[name] = [pairs[i] for i in keep]
        words[name] = [tok[i] for i in keep]
    src_vocab = WordVocab.build((e for e, _ in words["train"]), min_freq)
    tgt_vocab = WordVocab.build((s for _, s in words["train"]), min_freq)
    ids = {name: [(src_vocab.encode(e), tgt_vocab.encode(s)) for e, s in ws] for name, ws in words.items()}
    return TranslationData(src_vocab, tgt_vocab, kept, ids)


def pad_batch(examples: Sequence[tuple[list[int], list[int]]]
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(src ids, tgt ids) pairs → src (B, S), tgt_in (B, T) = <bos> + tgt, tgt_out (B, T) = tgt + <eos>
    (right-padded; padding in tgt_out is -100 so the loss ignores it)."""
    if not examples:
        raise ValueError("pad_batch needs at least one example")
    for k, pair in enumerate(examples):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"examples[{k}] must be a (source ids, target ids) pair, got {pair!r:.80}")
    S = max(len(s) for s, _ in examples)
    T = max(len(t) for _, t in examples) + 1
    src = torch.full((len(examples), S), PAD, dtype=torch.long)
    tgt_in = torch.full((len(examples), T), PAD, dtype=torch.long)
    tgt_out = torch.full((len(examples), T), -100, dtype=torch.long)
    for i, (s, t) in enumerate(examples):
        src[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        tgt_in[i, : len(t) + 1] = torch.tensor([BOS] + list(t), dtype=torch.long)
        tgt_out[i, : len(t) + 1] = torch.tensor(list(t) + [EOS], dtype=torch.long)
    return src, tgt_in, tgt_out


class RandomBatches:
    """Calling it returns a random padded batch of ``batch_size`` examples (seeded, reproducible)."""

    def __init__(self, examples: Sequence[tuple[list[int], list[int]]], batch_size: int, seed: int = 0):
        check_nonempty("examples", examples)
        check_int("batch_size", batch_size, low=1)
        check_int("seed", seed, low=0)
        self.examples, self.batch_size = list(examples), batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.examples), (self.batch_size,), generator=self.generator)
        return pad_batch([self.examples[i] for i in idx.tolist()])


def fixed_batches(examples: Sequence[tuple[list[int], list[int]]], batch_size: int
                  ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """All examples in order, in padded batches: a deterministic evaluation set."""
    check_nonempty("examples", examples)
    check_int("batch_size", batch_size, low=1)
    return [pad_batch(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size)]


def seq2seq_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Teacher-forced cross-entropy per target token (padding ignored)."""
    src, tgt_in, tgt_out = batch
    logits = model(src, tgt_in)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tgt_out.reshape(-1), ignore_index=-100)


def perplexity(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> float:
    """exp(mean cross-entropy per target token), weighting every token equally across batches.

    The loop is :func:`minillm.train.evaluate` (eval mode, no gradients, fp32) with a loss that sums.
    """
    from ..train import evaluate

    batches = list(batches)
    check_nonempty("batches", batches)
    total, count = 0.0, 0

    def summed_nll(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        nonlocal total, count
        src, tgt_in, tgt_out = batch
        logits = model(src, tgt_in)  # (B, T, V)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), tgt_out.reshape(-1),
                              ignore_index=-100, reduction="sum")
        total, count = total + float(nll), count + int((tgt_out != -100).sum())
        return nll

    evaluate(model, batches, loss_fn=summed_nll, autocast=None)
    if count == 0:
        raise ValueError("the batches hold no target tokens to score")
    return math.exp(total / count)


@torch.no_grad()
def translate(model: Seq2Seq, sources: Sequence[list[int]], *, num_beams: int = 1, batch_size: int = 64,
              max_new_tokens: int = 40, length_penalty: float = 1.0) -> SearchOutput:
    """Decode every source (a list of id lists) in padded batches; one output row per source."""
    check_nonempty("sources", sources)
    check_int("batch_size", batch_size, low=1)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs = []
    try:
        for i in range(0, len(sources), batch_size):
            src = pad_batch([(s, []) for s in sources[i:i + batch_size]])[0].to(device)
            outs.append(model.generate(src, num_beams=num_beams, max_new_tokens=max_new_tokens,
                                       length_penalty=length_penalty))
    finally:
        model.train(was_training)
    L = max(o.sequences.size(1) for o in outs)
    seqs = torch.cat([F.pad(o.sequences, (0, L - o.sequences.size(1)), value=PAD) for o in outs])
    return SearchOutput(seqs, torch.cat([o.scores for o in outs]), torch.cat([o.lengths for o in outs]))
