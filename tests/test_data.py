"""Tests for the shipped datasets in minillm.data: checksums, split rules, content and failure modes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import lzma
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import minillm.data as data
from minillm.data import (
    DataIntegrityError,
    Poem,
    SentimentExample,
    Splits,
    TranslationPair,
    _store,
    data_card,
    gpt2_vocab_files,
    load_en_es,
    load_rotten_tomatoes,
    load_shakespeare,
    load_tang_poems,
)

FILES = Path(data.__file__).resolve().parent / "files"
DATASETS = ["shakespeare", "rotten_tomatoes", "en_es", "tang_poems", "gpt2_bpe", "people_daily_ner",
            "chinese_sentiment"]
RECORD_LOADERS = {
    "rotten_tomatoes": (load_rotten_tomatoes, "rotten_tomatoes.jsonl.xz"),
    "en_es": (load_en_es, "en_es.jsonl.xz"),
    "tang_poems": (load_tang_poems, "tang_poems.jsonl.xz"),
}
ALL_LOADERS = {"shakespeare": (load_shakespeare, "shakespeare.jsonl.xz"), **RECORD_LOADERS}
CJK = re.compile(r"[\u4e00-\u9fff]")


def bucket(key: str) -> int:
    """The documented split rule, written out independently of the package."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 100


@pytest.fixture(scope="module")
def loaded() -> dict:
    """Each dataset loaded once for the read-only tests below."""
    return {name: loader() for name, (loader, _) in ALL_LOADERS.items()}


def _cards() -> dict:
    return json.loads((FILES / "cards.json").read_text(encoding="utf-8"))


# ---- shipped files and cards --------------------------------------------------------------------

def test_every_shipped_file_matches_its_card():
    cards = _cards()
    assert sorted(cards["datasets"]) == sorted(DATASETS)
    listed = {"cards.json"}
    for card in cards["datasets"].values():
        for entry in card["files"]:
            blob = (FILES / entry["file"]).read_bytes()
            assert hashlib.sha256(blob).hexdigest() == entry["sha256"], entry["file"]
            assert len(blob) == entry["bytes"]
            raw = lzma.decompress(blob)
            assert hashlib.sha256(raw).hexdigest() == entry["raw_sha256"], entry["file"]
            assert len(raw) == entry["raw_bytes"]
            listed.add(entry["file"])
    assert {p.name for p in FILES.iterdir()} == listed, "every shipped file must be described by cards.json"
    assert sum(p.stat().st_size for p in FILES.iterdir()) < 7_000_000  # the wheel stays small


@pytest.mark.parametrize("name", DATASETS)
def test_card_records_provenance(name):
    card = data_card(name)
    assert card == _cards()["datasets"][name]
    for key in ("licence", "citation", "attribution", "obtained", "splits"):
        assert isinstance(card[key], str) and card[key].strip(), key
    assert card["source"] and card["cleaning"]
    assert card["stats"]["rows"] > 0


def test_data_card_unknown_name():
    with pytest.raises(ValueError, match="shakespeare"):
        data_card("no_such_dataset")


# ---- Splits -------------------------------------------------------------------------------------

def test_splits_access_and_repr():
    s = Splits(train=[1, 2, 3], validation=[4], test=[])
    assert s["train"] == [1, 2, 3] and s["validation"] == [4] and s["test"] == []
    with pytest.raises(KeyError, match="valid"):
        s["dev"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.train = []  # type: ignore[misc]
    assert repr(s) == "Splits(train=3 items, validation=1 items, test=0 items)"
    assert repr(Splits("abc", "d", "")) == "Splits(train=3 chars, validation=1 chars, test=0 chars)"


# ---- Shakespeare ---------------------------------------------------------------------------------

def test_shakespeare_splits(loaded):
    s = loaded["shakespeare"]
    sizes = {name: len(text) for name, text in s.items()}
    total = sum(sizes.values())
    assert sizes["train"] > 4_500_000 and sizes["validation"] > 200_000 and sizes["test"] > 200_000
    assert 0.88 < sizes["train"] / total < 0.92
    assert 0.03 < sizes["validation"] / total < 0.07 and 0.03 < sizes["test"] / total < 0.07
    assert s.train.startswith("A LOVER'S COMPLAINT")  # first work in sorted title order
    assert s.validation[:2000] not in s.train and s.test[:2000] not in s.train + s.validation
    assert load_shakespeare() == s


def test_shakespeare_is_clean_ascii_with_small_vocab(loaded):
    s = loaded["shakespeare"]
    text = s.train + s.validation + s.test
    vocab = set(text)
    assert all(ch.isascii() for ch in vocab)
    assert len(vocab) == data_card("shakespeare")["stats"]["vocab_size"]
    assert 60 <= len(vocab) <= 90
    assert "\r" not in text and "{Aside" not in text
    assert not re.search(r"[ \t]+\n", text)
    works = _store.read_jsonl("shakespeare", "shakespeare.jsonl.xz")
    assert len(works) == 42 and len({w["title"] for w in works}) == 42
    assert all(w["text"].endswith("\n") and "\n\n\n\n" not in w["text"] for w in works)


# ---- record datasets -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "name, key, pct",
    [
        ("rotten_tomatoes", lambda r: r.text, (80, 10, 10)),
        ("en_es", lambda r: r.ref, (90, 5, 5)),
        ("tang_poems", lambda r: "\n".join((r.title, r.author, r.text)), (90, 5, 5)),
    ],
)
def test_record_splits_follow_the_documented_rule(loaded, name, key, pct):
    loader, _ = RECORD_LOADERS[name]
    splits = loaded[name]
    bounds = {"train": (0, pct[0]), "validation": (pct[0], pct[0] + pct[1]), "test": (pct[0] + pct[1], 100)}
    keys = {}
    for split, records in splits.items():
        assert records, f"{name}/{split} is empty"
        lo, hi = bounds[split]
        assert all(lo <= bucket(key(r)) < hi for r in records), split
        keys[split] = {key(r) for r in records}
        assert len(keys[split]) == len(records), f"duplicate keys in {name}/{split}"
    assert not (keys["train"] & keys["validation"] or keys["train"] & keys["test"] or keys["validation"] & keys["test"])
    total = sum(len(records) for _, records in splits.items())
    assert total == data_card(name)["stats"]["rows"]
    if total > 1000:  # proportions only mean something on the larger sets
        for split, p in zip(("train", "validation", "test"), pct):
            assert abs(len(splits[split]) / total - p / 100) < 0.02, split
    assert loader() == splits


def test_rotten_tomatoes_content(loaded):
    rt = loaded["rotten_tomatoes"]
    examples = rt.train + rt.validation + rt.test
    assert all(isinstance(ex, SentimentExample) for ex in examples)
    assert {ex.label for ex in examples} == {0, 1}
    assert all(ex.text and ex.text == ex.text.strip() and "\n" not in ex.text for ex in examples)
    card = data_card("rotten_tomatoes")["stats"]
    assert sum(ex.label for ex in examples) == card["positive"] > card["negative"] > 5000


def test_en_es_pairs(loaded):
    pairs = loaded["en_es"]
    everything = pairs.train + pairs.validation + pairs.test
    assert len(everything) > 10_000
    assert all(isinstance(p, TranslationPair) and p.en.strip() and p.es.strip() and p.ref for p in everything)
    assert all(len(p.en.split()) <= 20 for p in everything)
    by_ref = {p.ref: p for p in everything}
    assert by_ref["Gen 1:1"].en == "In the beginning, God created the heavens and the earth."
    assert by_ref["Gen 1:1"].es == "En el principio crió Dios los cielos y la tierra."
    assert not any("Godcreated" in p.en or "<" in p.en or "<" in p.es for p in everything)


def test_en_es_max_words_filters_within_fixed_splits(loaded):
    full, short = loaded["en_es"], load_en_es(max_words=8)
    for split in ("train", "validation", "test"):
        assert short[split] == [p for p in full[split] if len(p.en.split()) <= 8]
        assert 0 < len(short[split]) < len(full[split])
    with pytest.raises(ValueError):
        load_en_es(max_words=0)
    with pytest.raises(TypeError):
        load_en_es(max_words=2.5)  # type: ignore[arg-type]


def test_tang_poems(loaded):
    tang = loaded["tang_poems"]
    poems = tang.train + tang.validation + tang.test
    assert len(poems) == 313
    assert all(isinstance(p, Poem) and p.title and p.author and CJK.search(p.text) for p in poems)
    assert not any("\x1b" in p.text + p.title + p.author or "[m" in p.text for p in poems)
    assert any(p.author == "李白" and p.text.startswith("床前明月光") for p in poems)


# ---- GPT-2 vocabulary ----------------------------------------------------------------------------

def test_gpt2_vocab_files(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    enc_path, bpe_path = gpt2_vocab_files()
    assert enc_path.is_relative_to(tmp_path) and bpe_path.is_relative_to(tmp_path)
    encoder = json.loads(enc_path.read_text(encoding="utf-8"))
    assert len(encoder) == 50_257 and sorted(encoder.values()) == list(range(50_257))
    assert encoder["<|endoftext|>"] == 50_256
    lines = bpe_path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    assert lines[0].startswith("#version") and len(lines) - 1 == 50_000
    assert all(len(line.split(" ")) == 2 for line in lines[1:])

    mtime = enc_path.stat().st_mtime_ns
    assert gpt2_vocab_files() == (enc_path, bpe_path)
    assert enc_path.stat().st_mtime_ns == mtime, "a good cached copy must not be rewritten"
    enc_path.write_text("{}", encoding="utf-8")  # a damaged cache is repaired, not trusted
    gpt2_vocab_files()
    assert len(json.loads(enc_path.read_text(encoding="utf-8"))) == 50_257
    assert not [p for p in enc_path.parent.iterdir() if p.name.endswith(".tmp")]


# ---- failure modes -------------------------------------------------------------------------------

@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    """A private copy of the shipped files that the loaders read instead of the package's."""
    copy = tmp_path / "files"
    shutil.copytree(FILES, copy)
    monkeypatch.setattr(_store, "_data_dir", lambda: copy)
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path / "cache"))
    return copy


def _flip_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("name", sorted(ALL_LOADERS))
def test_flipped_byte_raises_integrity_error(data_copy, name):
    loader, filename = ALL_LOADERS[name]
    _flip_byte(data_copy / filename)
    expected = data_card(name)["files"][0]["sha256"]
    with pytest.raises(DataIntegrityError, match=re.escape(filename)) as info:
        loader()
    message = str(info.value)
    assert expected in message and "reinstall" in message.lower()
    assert isinstance(info.value, RuntimeError)


def test_flipped_byte_in_gpt2_source(data_copy):
    _flip_byte(data_copy / "gpt2_vocab.bpe.xz")
    with pytest.raises(DataIntegrityError, match="gpt2_vocab.bpe.xz"):
        gpt2_vocab_files()


@pytest.mark.parametrize("name", sorted(ALL_LOADERS))
def test_missing_file_raises_file_not_found(data_copy, name):
    loader, filename = ALL_LOADERS[name]
    (data_copy / filename).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(filename)):
        loader()


def test_missing_cards_raises_file_not_found(data_copy):
    (data_copy / "cards.json").unlink()
    with pytest.raises(FileNotFoundError, match="cards.json"):
        load_tang_poems()


def test_undecompressable_file_with_matching_hash(data_copy):
    """A file whose hash matches a (tampered) card but is not valid xz must still fail loudly."""
    junk = b"not an xz stream" * 10
    (data_copy / "tang_poems.jsonl.xz").write_bytes(junk)
    cards = json.loads((data_copy / "cards.json").read_text(encoding="utf-8"))
    cards["datasets"]["tang_poems"]["files"][0]["sha256"] = hashlib.sha256(junk).hexdigest()
    (data_copy / "cards.json").write_text(json.dumps(cards), encoding="utf-8")
    with pytest.raises(DataIntegrityError, match="decompress"):
        load_tang_poems()


def test_row_count_mismatch_is_an_integrity_error(data_copy):
    cards = json.loads((data_copy / "cards.json").read_text(encoding="utf-8"))
    cards["datasets"]["tang_poems"]["stats"]["rows"] += 1
    (data_copy / "cards.json").write_text(json.dumps(cards), encoding="utf-8")
    with pytest.raises(DataIntegrityError, match="313 rows"):
        load_tang_poems()


def test_verification_is_memoised(data_copy):
    load_tang_poems()
    path = data_copy / "tang_poems.jsonl.xz"
    st = path.stat()
    assert _store._VERIFIED[(str(path), st.st_size, st.st_mtime_ns)] == data_card("tang_poems")["files"][0]["sha256"]


def test_import_reads_no_data():
    """Importing minillm.data (without the parent package's own imports) reads no file and pulls no torch."""
    package_dir = Path(data.__file__).resolve().parents[1]
    code = (
        "import sys, types; pkg = types.ModuleType('minillm'); pkg.__path__ = [sys.argv[1]]; "
        "sys.modules['minillm'] = pkg; import minillm.data, minillm.data._store as s; "
        "assert not s._VERIFIED, s._VERIFIED; assert 'torch' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code, str(package_dir)], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
