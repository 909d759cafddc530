"""Byte-level BPE, the tokenizer of GPT-2 (Radford et al., 2019), trainable or loaded from OpenAI's files.

Text is cut into pre-tokens by a regex (``GPT2_PATTERN``), each pre-token is turned into its UTF-8
bytes, and BPE merges are applied inside each pre-token, lowest merge rank first. Working on bytes
means nothing is ever out of vocabulary: the 256 byte values are the starting alphabet. GPT-2's files
write every byte as a printable character (``bytes_to_unicode``), which is why a leading space shows
up as ``Ġ`` in its tokens.

``ByteLevelBPE.from_gpt2_files(encoder_json, vocab_bpe)`` loads the real GPT-2 vocabulary (50,257
tokens) and encodes exactly like ``tiktoken``'s and Hugging Face's GPT-2 tokenizers (tests check it
on the shipped corpora). ``ByteLevelBPE.train(text, vocab_size)`` learns a new vocabulary with the
incremental trainer of ``minillm.tokenizers.bpe``. ``ByteLevelBPE.from_gguf(path)`` reads the tokenizer
stored in a llama.cpp GGUF model file (SmolLM2's in chapter 11; :mod:`minillm.gguf`).

Special tokens (``<|endoftext|>``): ``encode(text)`` turns each occurrence of a special token's string
into its single id, as Hugging Face's ``GPT2TokenizerFast`` does and as tiktoken does with
``allowed_special="all"``; ``encode(text, allowed_special="none")`` (or ``encode_ordinary``) treats them
as plain text, like tiktoken's ``encode_ordinary``. Text that contains lone surrogates (not valid
Unicode) is rejected with ``ValueError``.

Needs the ``regex`` package (installed with transformers) for the ``\\p{L}`` / ``\\p{N}`` classes.
"""

from __future__ import annotations

import functools
import heapq
import json
from collections import Counter
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import regex

from .bpe import merge_pair, train_merges

# GPT-2's pre-tokenizer: English contractions; an optional space followed by letters, by digits, or
# by other symbols; whitespace runs that are not followed by a non-space (so "   x" keeps its last
# space for " x"); any remaining whitespace.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"
_CACHE_LIMIT = 200_000
_SHORT_PIECE = 32  # bytes; longer pre-tokens use the heap-based merge loop


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (the printable bytes map to themselves).

    Bytes that are printable and not whitespace (``!``..``~``, ``¡``..``¬``, ``®``..``ÿ``) keep their
    character; the other 68 bytes, in increasing order, get ``chr(256)``, ``chr(257)``, ... The map
    is a bijection, so token strings in ``encoder.json`` can be turned back into bytes.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def _as_id_list(ids: Any) -> list[int]:
    if hasattr(ids, "tolist"):  # torch tensors and numpy arrays
        ids = ids.tolist()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError(f"ids must be a sequence of ints, got {type(ids).__name__}")
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"ids must be ints, got {i!r} ({type(i).__name__})")
        out.append(i)
    return out


def _read_text(name: str, path: Any) -> str:
    if not isinstance(path, (str, Path)):
        raise TypeError(f"{name} must be a path (str or Path), got {type(path).__name__}")
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{name} {str(path)!r} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except IsADirectoryError:
        raise ValueError(f"{name} {str(path)!r} is a directory, expected a file") from None


def _check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return text


def _utf8(text: Any) -> bytes:
    try:
        return _check_text(text).encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"text is not valid Unicode: {err.reason} at position {err.start} "
                         f"({text[err.start:err.end]!r})") from None


class ByteLevelBPE:
    """A byte-level BPE tokenizer: a vocabulary of byte strings plus the ordered merges that build them.

    Args:
        vocab: token string (bytes written with ``bytes_to_unicode``) -> id; ids must be 0..len-1.
        merges: the merges in priority order, as pairs of token strings.
        special_tokens: strings in ``vocab`` that are special tokens rather than byte strings
            (e.g. ``["<|endoftext|>"]``); every other token must be a byte or a merge's result.
        pattern: the pre-tokenization regex (``regex`` syntax).
        require_all_bytes: refuse a vocabulary that lacks some of the 256 byte tokens. Some real
            vocabularies (SmolLM2's) lack bytes that valid UTF-8 never or hardly ever uses (0xC0,
            0xF5-0xFF, ...); with False such bytes are dropped when encoding, as Hugging Face does.
    """

    chat_template: str | None = None  # a Jinja chat template (from_gguf reads the model's)
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    _eos_id: int | None = None  # set when the end token is not <|endoftext|>

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]],
                 special_tokens: Iterable[str] = (ENDOFTEXT,), pattern: str = GPT2_PATTERN, *,
                 require_all_bytes: bool = True):
        if not isinstance(vocab, dict):
            raise TypeError(f"vocab must be a dict token -> id, got {type(vocab).__name__}")
        ids = sorted(vocab.values())
        if ids != list(range(len(vocab))):
            raise ValueError(f"vocab ids must be exactly 0..{len(vocab) - 1}, each once; "
                             f"got {len(set(ids))} distinct ids between {ids[0] if ids else None} "
                             f"and {ids[-1] if ids else None}")
        byte_encoder = bytes_to_unicode()
        missing = [c for c in byte_encoder.values() if c not in vocab]
        if missing and require_all_bytes:
            raise ValueError(f"vocab lacks {len(missing)} of the 256 byte tokens (e.g. {missing[:3]}); "
                             f"a byte-level vocabulary must contain every byte")
        self.special_tokens: dict[str, int] = {}
        for tok in special_tokens:
            if tok not in vocab:
                raise ValueError(f"special token {tok!r} is not in the vocabulary")
            self.special_tokens[tok] = vocab[tok]
        self.vocab = dict(vocab)
        self.merges = [tuple(m) for m in merges]
        self._ranks: dict[tuple[int, int], int] = {}
        self._merged: list[int] = []  # rank -> id of the merged token
        for rank, (a, b) in enumerate(self.merges):
            for part in (a, b, a + b):
                if part not in vocab:
                    raise ValueError(f"merge {rank} ({a!r}, {b!r}) needs token {part!r}, which is not "
                                     f"in the vocabulary: the vocab and merges files do not match")
            self._ranks.setdefault((vocab[a], vocab[b]), rank)
            self._merged.append(vocab[a + b])
        built = set(byte_encoder.values()) | {a + b for a, b in self.merges} | set(self.special_tokens)
        orphans = [t for t in vocab if t not in built]
        if orphans:
            raise ValueError(f"{len(orphans)} vocabulary tokens are neither bytes, merge results nor "
                             f"special tokens (e.g. {orphans[:3]}): the vocab and merges do not match")
        byte_decoder = {c: b for b, c in byte_encoder.items()}
        self._id_to_token = [""] * len(vocab)
        self._id_to_bytes = [b""] * len(vocab)
        for tok, i in vocab.items():
            self._id_to_token[i] = tok
            self._id_to_bytes[i] = (tok.encode("utf-8") if tok in self.special_tokens
                                    else bytes(byte_decoder[c] for c in tok))
        self._byte_ids = [vocab.get(byte_encoder[b], -1) for b in range(256)]  # -1: no token
        self._drop_bytes = bool(missing)
        self.pattern = pattern
        self._pat = regex.compile(pattern)
        self._special_pat = (regex.compile("|".join(regex.escape(t) for t in
                                                    sorted(self.special_tokens, key=len, reverse=True)))
                             if self.special_tokens else None)
        self._cache: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ loading, saving, training
    @classmethod
    def from_gpt2_files(cls, encoder_json: str | Path, vocab_bpe: str | Path,
                        special_tokens: Iterable[str] = (ENDOFTEXT,)) -> "ByteLevelBPE":
        """Load OpenAI's ``encoder.json`` (token -> id) and ``vocab.bpe`` (one merge per line).

        The files for GPT-2 come from ``minillm.data.gpt2_vocab_files()``.
        """
        swapped = " (were encoder.json and vocab.bpe given in the wrong order?)"
        encoder_text, merges_text = _read_text("encoder_json", encoder_json), _read_text("vocab_bpe", vocab_bpe)
        try:
            vocab = json.loads(encoder_text)
        except json.JSONDecodeError as err:
            raise ValueError(f"encoder_json {str(encoder_json)!r} is not JSON ({err.msg} at line "
                             f"{err.lineno}){swapped if merges_text.lstrip().startswith('{') else ''}"
                             ) from None
        if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
            raise ValueError(f"encoder_json {str(encoder_json)!r} must hold a JSON object token -> "
                             f"integer id, got a {type(vocab).__name__}")
        lines = merges_text.split("\n")
        merges = []
        for n, line in enumerate(lines):
            if not line or (n == 0 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                hint = swapped if line.lstrip().startswith("{") else ""
                raise ValueError(f"vocab_bpe {str(vocab_bpe)!r}: line {n + 1} should be two tokens "
                                 f"separated by one space, got {line[:60]!r}{hint}")
            merges.append((parts[0], parts[1]))
        return cls(vocab, merges, special_tokens=special_tokens)

    def save(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``encoder.json`` and ``vocab.bpe`` in GPT-2's format (readable by HF and ``from_gpt2_files``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        enc, bpe = directory / "encoder.json", directory / "vocab.bpe"
        enc.write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        bpe.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges), encoding="utf-8")
        return enc, bpe

    @classmethod
    def train(cls, text: str | Iterable[str], vocab_size: int,
              special_tokens: Iterable[str] = (ENDOFTEXT,), *, pattern: str = GPT2_PATTERN,
              min_frequency: int = 1, progress: bool = False) -> "ByteLevelBPE":
        """Learn a byte-level BPE vocabulary of ``vocab_size`` tokens from ``text``.

        Ids 0-255 are the bytes (in GPT-2's order), then one id per merge, then the special tokens.
        Special-token strings in the text are cut out before counting, so they are never learned.
        """
        specials = list(special_tokens)
        if not isinstance(vocab_size, int) or vocab_size < 256 + len(specials):
            raise ValueError(f"vocab_size must be an int >= 256 + {len(specials)} special tokens, "
                             f"got {vocab_size!r}")
        if not isinstance(text, (str, Iterable)) or isinstance(text, (bytes, dict)):
            raise TypeError(f"text must be a str or an iterable of str, got {type(text).__name__}")
        texts = [text] if isinstance(text, str) else list(text)
        for t in texts:
            _utf8(t)
        pat = regex.compile(pattern)
        special_pat = (regex.compile("|".join(regex.escape(t) for t in sorted(specials, key=len, reverse=True)))
                       if specials else None)
        pieces: Counter = Counter()
        for t in texts:
            for chunk in (special_pat.split(t) if special_pat else [t]):
                pieces.update(pat.findall(chunk))
        byte_encoder = bytes_to_unicode()
        byte_order = list(byte_encoder)  # GPT-2's id order: id k is byte byte_order[k]
        byte_id = {b: k for k, b in enumerate(byte_order)}
        words: Counter = Counter()
        for piece, n in pieces.items():
            words[tuple(byte_id[b] for b in piece.encode("utf-8"))] += n
        names = [byte_encoder[b] for b in byte_order]
        merges = train_merges(dict(words), names, vocab_size - len(specials),
                              min_frequency=min_frequency, progress=progress)
        vocab = {name: i for i, name in enumerate(names)}
        for tok in specials:
            vocab[tok] = len(vocab)
        return cls(vocab, [(names[a], names[b]) for a, b in merges], special_tokens=specials,
                   pattern=pattern)

    def truncate(self, num_merges: int) -> "ByteLevelBPE":
        """The tokenizer made of the first ``num_merges`` merges only (what training to that size
        would have learned), with the same special tokens appended after them."""
        if not isinstance(num_merges, int) or not 0 <= num_merges <= len(self.merges):
            raise ValueError(f"num_merges must be an int in [0, {len(self.merges)}], got {num_merges!r}")
        byte_encoder = bytes_to_unicode()
        names = [byte_encoder[b] for b in byte_encoder]
        for a, b in self.merges[:num_merges]:
            if a + b not in names:
                names.append(a + b)
        names += list(self.special_tokens)
        return type(self)({t: i for i, t in enumerate(names)}, self.merges[:num_merges],
                          special_tokens=self.special_tokens, pattern=self.pattern)

    # ------------------------------------------------------------------ the vocabulary
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int:
        """Id of a token string (as written in ``encoder.json``, e.g. ``"Ġthe"``)."""
        if token not in self.vocab:
            raise ValueError(f"token {token!r} is not in the vocabulary ({self.vocab_size} tokens)")
        return self.vocab[token]

    def id_to_token(self, id: int) -> str:
        return self._id_to_token[self._check_ids([id])[0]]

    def token_bytes(self, id: int) -> bytes:
        """The raw bytes a token stands for (a special token's UTF-8 text)."""
        return self._id_to_bytes[self._check_ids([id])[0]]

    @property
    def eos_token_id(self) -> int | None:
        return self._eos_id if self._eos_id is not None else self.special_tokens.get(ENDOFTEXT)

    @classmethod
    def from_gguf(cls, path: str | Path) -> "ByteLevelBPE":
        """The tokenizer stored in a llama.cpp GGUF model file (vocabulary, merges, special tokens,
        pre-tokenizer, bos/eos/pad ids and chat template; :func:`minillm.gguf.tokenizer_from_gguf`)."""
        from ..gguf import tokenizer_from_gguf

        return tokenizer_from_gguf(path, cls)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True,
                            tokenize: bool = False) -> str | list[int]:
        """A conversation rendered with the model's Jinja chat template, as Hugging Face renders it.

        messages: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``.
        add_generation_prompt: end with the header of an assistant turn, so the model answers.
        tokenize: return the token ids instead of the text (Hugging Face's default is True).
        """
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat_template (ByteLevelBPE.from_gguf reads one)")
        if not isinstance(messages, (list, tuple)) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str) for m in messages):
            raise TypeError(f"messages must be a list of {{'role': str, 'content': str}} dicts, got "
                            f"{messages!r:.80}")
        from jinja2.sandbox import ImmutableSandboxedEnvironment  # comes with JupyterLab

        def raise_exception(message: str):
            raise ValueError(f"the chat template refused these messages: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = raise_exception
        names = {f"{k}_token": self._id_to_token[i] for k, i in
                 (("bos", self.bos_token_id), ("eos", self.eos_token_id)) if i is not None}
        text = env.from_string(self.chat_template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **names)
        return self.encode(text) if tokenize else text

    # ------------------------------------------------------------------ encoding
    def _bpe(self, piece: str) -> tuple[int, ...]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        ids = [self._byte_ids[b] for b in piece.encode("utf-8")]
        if self._drop_bytes:
            ids = [i for i in ids if i >= 0]
        out = tuple(self._merge_short(ids) if len(ids) <= _SHORT_PIECE else self._merge_long(ids)) \
            if ids else ()
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[piece] = out
        return out

    # Both merge loops apply, one at a time, the lowest-ranked merge present, the leftmost one on a
    # tie — tiktoken's rule — so they give identical ids; the second is O(n log n) for long pieces.
    def _merge_short(self, ids: list[int]) -> list[int]:
        """Rescan all pairs after each merge: O(n²), fastest for the usual few-byte pre-tokens."""
        ranks, none = self._ranks, len(self._merged)
        while len(ids) > 1:
            pair_ranks = [ranks.get(p, none) for p in zip(ids, ids[1:])]
            rank = min(pair_ranks)
            if rank == none:
                break
            i = pair_ranks.index(rank)
            ids[i:i + 2] = [self._merged[rank]]
        return ids

    def _merge_long(self, ids: list[int]) -> list[int]:
        """A min-heap of (rank, position) over a linked list of symbols: O(n log n).

        Entries go stale when a neighbour merges; a popped entry is used only if the pair at its
        position still has its rank (ranks are unique per pair, so that pair is current).
        """
        ranks, merged = self._ranks, self._merged
        n = len(ids)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap = [(r, i) for i in range(n - 1) if (r := ranks.get((ids[i], ids[i + 1]))) is not None]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = nxt[i]
            if ids[i] < 0 or j < 0 or ranks.get((ids[i], ids[j])) != rank:
                continue  # stale
            ids[i], ids[j] = merged[rank], -1  # i now holds the merged symbol; j is gone
            k = nxt[j]
            nxt[i] = k
            if k >= 0:
                prv[k] = i
                r = ranks.get((ids[i], ids[k]))
                if r is not None:
                    heapq.heappush(heap, (r, i))
            h = prv[i]
            if h >= 0:
                r = ranks.get((ids[h], ids[i]))
                if r is not None:
                    heapq.heappush(heap, (r, h))
        out, i = [], 0
        while i >= 0:
            out.append(ids[i])
            i = nxt[i]
        return out

    def pretokenize(self, text: str) -> list[str]:
        """The pre-tokens the regex cuts ``text`` into (special tokens are not treated specially)."""
        return self._pat.findall(_check_text(text))

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` treating special-token strings as ordinary text."""
        _utf8(text)
        out: list[int] = []
        for piece in self._pat.findall(text):
            out.extend(self._bpe(piece))
        return out

    def encode(self, text: str, allowed_special: str | Collection[str] = "all") -> list[int]:
        """Token ids of ``text``.

        Args:
            text: the string to encode.
            allowed_special: ``"all"`` (default) encodes each special token's string as its id;
                ``"none"`` treats it as text; a collection picks which special tokens count.
        """
        _check_text(text)
        if allowed_special == "all":
            allowed = set(self.special_tokens)
        elif allowed_special == "none":
            allowed = set()
        elif isinstance(allowed_special, str):
            raise ValueError(f"allowed_special must be 'all', 'none' or a collection of special "
                             f"tokens, got {allowed_special!r}")
        elif not isinstance(allowed_special, Collection):
            raise TypeError(f"allowed_special must be 'all', 'none' or a collection of special "
                            f"tokens, got {allowed_special!r}")
        else:
            allowed = set(allowed_special)
            unknown = allowed - set(self.special_tokens)
            if unknown:
                raise ValueError(f"{sorted(unknown)} are not special tokens of this tokenizer "
                                 f"(it has {sorted(self.special_tokens)})")
        if not allowed or self._special_pat is None:
            return self.encode_ordinary(text)
        out: list[int] = []
        start = 0
        for m in self._special_pat.finditer(text):
            if m.group() not in allowed:
                continue
            out.extend(self.encode_ordinary(text[start:m.start()]))
            out.append(self.special_tokens[m.group()])
            start = m.end()
        out.extend(self.encode_ordinary(text[start:]))
        return out

    def tokenize(self, text: str) -> list[str]:
        """The token strings of ``encode(text)``, as written in the vocabulary (``"Ġworld"``)."""
        return [self._id_to_token[i] for i in self.encode(text)]

    # ------------------------------------------------------------------ decoding
    def _check_ids(self, ids: Any) -> list[int]:
        ids = _as_id_list(ids)
        bad = [i for i in ids if not 0 <= i < len(self._id_to_bytes)]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})")
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes ``ids`` stand for (a prefix of a sequence may end inside a UTF-8 character)."""
        table = self._id_to_bytes
        return b"".join(table[i] for i in self._check_ids(ids))

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; bytes that are not valid UTF-8 become U+FFFD, as in GPT-2's own decoder."""
        ids = self._check_ids(ids)
        if skip_special_tokens:
            specials = set(self.special_tokens.values())
            ids = [i for i in ids if i not in specials]
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return (f"ByteLevelBPE(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={sorted(self.special_tokens)})")
