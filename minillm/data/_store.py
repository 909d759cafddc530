"""Checksummed access to the compressed files shipped in ``minillm/data/files/``.

Every file listed in ``cards.json`` carries the sha256 of its compressed bytes. Reading a file goes
through :func:`read_verified`, which checks that hash (once per process per file version), then
decompresses. Anything that does not match or does not decode raises :class:`DataIntegrityError`;
nothing here ever returns partial or empty data. Split assignment helpers live here too, so the
build script (``tools/build_data.py``) and the loaders share one definition of every split rule.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from pathlib import Path
from typing import Any

SPLIT_NAMES = ("train", "validation", "test")
_REINSTALL = "Reinstall minillm (e.g. `pip install --force-reinstall --no-deps minillm`) to restore it."


class DataIntegrityError(RuntimeError):
    """A shipped data file does not match its recorded sha256, or cannot be decoded."""


def _data_dir() -> Path:
    """Directory holding the shipped files; tests monkeypatch this to point at a copy."""
    return Path(__file__).resolve().parent / "files"


def read_cards() -> dict[str, Any]:
    """Parse ``cards.json`` from the data directory."""
    path = _data_dir() / "cards.json"
    if not path.is_file():
        raise FileNotFoundError(f"minillm data card index {path} is missing. {_REINSTALL}")
    try:
        cards = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataIntegrityError(f"{path} is not valid JSON ({err}). {_REINSTALL}") from err
    if not isinstance(cards, dict) or not isinstance(cards.get("datasets"), dict):
        raise DataIntegrityError(f"{path} has no 'datasets' mapping. {_REINSTALL}")
    return cards


def dataset_card(name: str) -> dict[str, Any]:
    """The ``cards.json`` entry of one dataset; ``ValueError`` for an unknown name."""
    datasets = read_cards()["datasets"]
    if name not in datasets:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(datasets)}")
    return datasets[name]


def file_entry(dataset: str, filename: str) -> dict[str, Any]:
    for entry in dataset_card(dataset)["files"]:
        if entry["file"] == filename:
            return entry
    raise DataIntegrityError(f"cards.json lists no file {filename!r} for dataset {dataset!r}. {_REINSTALL}")


# Verified digests, keyed by (path, size, mtime_ns): a file is hashed once per process unless it changes.
_VERIFIED: dict[tuple[str, int, int], str] = {}


def sha256_cached(path: Path, data: bytes | None = None) -> str:
    """sha256 of a file (or of ``data``, its already-read contents), memoised per path/size/mtime."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    digest = _VERIFIED.get(key)
    if digest is None:
        digest = hashlib.sha256(path.read_bytes() if data is None else data).hexdigest()
        _VERIFIED[key] = digest
    return digest


def _checked_path(dataset: str, filename: str) -> tuple[Path, dict[str, Any]]:
    entry = file_entry(dataset, filename)
    path = _data_dir() / filename
    if not path.is_file():
        raise FileNotFoundError(f"minillm data file {path} (dataset {dataset!r}) is missing. {_REINSTALL}")
    return path, entry


def _compare(filename: str, path: Path, expected: str, actual: str) -> None:
    if actual != expected:
        raise DataIntegrityError(
            f"checksum mismatch for minillm data file {filename} ({path}): expected sha256 "
            f"{expected}, got {actual}. The file is damaged or was modified. {_REINSTALL}"
        )


def verify_file(dataset: str, filename: str) -> dict[str, Any]:
    """Check a shipped file's sha256 against its card entry (memoised); return the entry."""
    path, entry = _checked_path(dataset, filename)
    _compare(filename, path, entry["sha256"], sha256_cached(path))
    return entry


def read_verified(dataset: str, filename: str) -> bytes:
    """Return the decompressed bytes of a shipped file after checking its sha256 against the card."""
    path, entry = _checked_path(dataset, filename)
    data = path.read_bytes()
    _compare(filename, path, entry["sha256"], sha256_cached(path, data))
    try:
        raw = lzma.decompress(data)
    except (lzma.LZMAError, EOFError) as err:
        raise DataIntegrityError(
            f"minillm data file {filename} ({path}) cannot be decompressed: {err}. {_REINSTALL}"
        ) from err
    if not raw:
        raise DataIntegrityError(f"minillm data file {filename} ({path}) decompressed to nothing. {_REINSTALL}")
    return raw


def read_jsonl(dataset: str, filename: str) -> list[dict[str, Any]]:
    """Verified, decompressed JSON-lines file as a list of dicts; row count must match the card."""
    raw = read_verified(dataset, filename)
    try:
        rows = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line]
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataIntegrityError(
            f"minillm data file {filename} is not valid UTF-8 JSON lines ({err}). {_REINSTALL}"
        ) from err
    expected = dataset_card(dataset)["stats"]["rows"]
    if len(rows) != expected:
        raise DataIntegrityError(
            f"minillm data file {filename} holds {len(rows)} rows, its card says {expected}. {_REINSTALL}"
        )
    return rows


# ---- split rules (shared with tools/build_data.py) -------------------------------------------------

def hash_bucket(key: str) -> int:
    """Stable bucket 0-99 of a record: int(sha1(key as UTF-8)) mod 100. Independent of every other row."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 100


def bucket_split(key: str, train_pct: int, validation_pct: int) -> str:
    """Split name for a record key: buckets [0, train) train, [train, train+val) validation, rest test."""
    bucket = hash_bucket(key)
    if bucket < train_pct:
        return "train"
    if bucket < train_pct + validation_pct:
        return "validation"
    return "test"


def split_lines(text: str, train_frac: float = 0.90, validation_frac: float = 0.05) -> tuple[str, str, str]:
    """Cut one text at line boundaries into contiguous (train, validation, test) parts by line count.

    With n lines, train gets lines [0, round(0.90 n)), validation [round(0.90 n), round(0.95 n)), and
    test the rest, so the parts concatenate back to ``text``.
    """
    lines = text.splitlines(keepends=True)
    n = len(lines)
    i1 = round(n * train_frac)
    i2 = round(n * (train_frac + validation_frac))
    return "".join(lines[:i1]), "".join(lines[i1:i2]), "".join(lines[i2:])
