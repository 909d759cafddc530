"""Checkpoints: round trip, tied weights, atomic writes under a simulated crash, mismatch errors."""

import json
import os

import pytest
import torch
from torch import nn

import minillm.checkpoint as ckpt
from minillm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minillm.models.bigram import BigramConfig, BigramLM


def _model(vocab=5, fill=None):
    m = BigramLM(BigramConfig(vocab_size=vocab))
    with torch.no_grad():
        m.table.weight.copy_(torch.arange(vocab * vocab, dtype=torch.float).view(vocab, vocab)
                             if fill is None else torch.full((vocab, vocab), float(fill)))
    return m


def test_round_trip_builds_the_model_from_its_config(tmp_path):
    m = _model()
    save_checkpoint(m, tmp_path / "ck", metadata={"note": "hello"})
    loaded = load_checkpoint(tmp_path / "ck")
    assert isinstance(loaded, BigramLM) and loaded.config == m.config
    assert torch.equal(loaded.table.weight, m.table.weight)
    assert loaded.checkpoint_metadata == {"note": "hello"}
    record = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert record["model_class"] == "minillm.models.bigram.BigramLM"
    assert sorted(os.listdir(tmp_path)) == ["ck"]  # no temporary directories left behind


class Tied(nn.Module):
    config_class = BigramConfig

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, 4)
        self.head = nn.Linear(4, config.vocab_size, bias=False)
        self.head.weight = self.emb.weight  # weight tying


def test_tied_weights_survive_a_round_trip(tmp_path):
    m = Tied(BigramConfig(6))
    save_checkpoint(m, tmp_path / "tied")
    fresh = Tied(BigramConfig(6))
    load_checkpoint(tmp_path / "tied", model=fresh)
    assert torch.equal(fresh.emb.weight, m.emb.weight)
    assert fresh.head.weight is fresh.emb.weight


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(_model(fill=1.0), tmp_path / "ck")

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")  # the process dies half-way through the write
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_model(fill=2.0), tmp_path / "ck")
    monkeypatch.undo()
    survivor = load_checkpoint(tmp_path / "ck")
    assert torch.all(survivor.table.weight == 1.0)
    assert sorted(os.listdir(tmp_path)) == ["ck"]


def test_crash_between_the_two_renames_is_recovered_on_load(tmp_path, monkeypatch):
    save_checkpoint(_model(fill=1.0), tmp_path / "ck")
    real_replace = os.replace
    calls = {"n": 0}

    def flaky_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # first rename (old → .previous) done; die before the new one moves in
            raise KeyboardInterrupt("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", flaky_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_model(fill=2.0), tmp_path / "ck")
    monkeypatch.undo()
    assert not (tmp_path / "ck").exists()  # the crash really hit the window between renames
    survivor = load_checkpoint(tmp_path / "ck")
    assert torch.all(survivor.table.weight == 1.0)


def test_overwrite_replaces_the_old_checkpoint(tmp_path):
    save_checkpoint(_model(fill=1.0), tmp_path / "ck")
    save_checkpoint(_model(fill=3.0), tmp_path / "ck")
    assert torch.all(load_checkpoint(tmp_path / "ck").table.weight == 3.0)
    assert sorted(os.listdir(tmp_path)) == ["ck"]


def test_loading_into_another_config_names_the_field(tmp_path):
    save_checkpoint(_model(vocab=5), tmp_path / "ck")
    with pytest.raises(CheckpointError, match=r"vocab_size: checkpoint 5 vs model 7"):
        load_checkpoint(tmp_path / "ck", model=_model(vocab=7))


def test_state_dict_mismatch_names_keys_and_shapes():
    m = Tied(BigramConfig(6))
    state = {"emb.weight": torch.zeros(9, 4), "extra.bias": torch.zeros(2)}
    with pytest.raises(CheckpointError) as err:
        ckpt.load_state_dict_checked(m, state)
    msg = str(err.value)
    assert "emb.weight: checkpoint (9, 4) vs model (6, 4)" in msg
    assert "missing from checkpoint:\n  head.weight" in msg
    assert "not in model:\n  extra.bias" in msg


def test_corrupt_or_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(_model(), tmp_path / "ck")
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is corrupt"):
        load_checkpoint(tmp_path / "ck")


def test_only_minillm_classes_are_built_from_a_checkpoint(tmp_path):
    save_checkpoint(_model(), tmp_path / "ck")
    cfg = tmp_path / "ck" / "config.json"
    record = json.loads(cfg.read_text())
    record["model_class"] = "os.system"
    cfg.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="only minillm classes"):
        load_checkpoint(tmp_path / "ck")
