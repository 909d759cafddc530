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

    def flaky_replace(src, dst):
        if ".saving-" in str(src) and not str(src).endswith(".tmp"):  # new copy about to move in
            raise KeyboardInterrupt("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", flaky_replace)
    monkeypatch.setattr(ckpt, "_abandon", lambda *a: None)  # a killed process cleans up nothing
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_model(fill=2.0), tmp_path / "ck")
    monkeypatch.undo()
    assert not (tmp_path / "ck").exists()  # the crash really hit the window between renames
    survivor = load_checkpoint(tmp_path / "ck")
    assert torch.all(survivor.table.weight == 1.0)  # the committed copy is adopted first
    save_checkpoint(_model(fill=3.0), tmp_path / "ck")
    assert sorted(os.listdir(tmp_path)) == ["ck"]  # the next save removes the leftovers


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
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt: its sha256"):
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


# ---- nothing a learner saves is lost (issue 9) ---------------------------------------------------

def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_saving_over_a_directory_that_is_not_a_checkpoint_deletes_nothing(tmp_path):
    work = tmp_path / "my_project"
    (work / "data").mkdir(parents=True)
    (work / "notes.txt").write_text("three weeks of notes")
    (work / "data" / "corpus.txt").write_text("to be or not to be")
    before = _tree(work)
    with pytest.raises(FileExistsError, match=r"my_project: the directory is not a minillm checkpoint "
                                              r"\(it holds data, notes.txt\)"):
        save_checkpoint(_model(), work)
    assert _tree(work) == before
    assert sorted(os.listdir(tmp_path)) == ["my_project"]  # no .previous, no .saving-* left


def test_saving_over_a_checkpoint_with_extra_files_or_another_librarys_model_is_refused(tmp_path):
    save_checkpoint(_model(fill=1.0), tmp_path / "ck")
    (tmp_path / "ck" / "README.md").write_text("my best model")
    with pytest.raises(FileExistsError, match="README.md"):
        save_checkpoint(_model(fill=2.0), tmp_path / "ck")
    assert (tmp_path / "ck" / "README.md").read_text() == "my best model"
    assert torch.all(load_checkpoint(tmp_path / "ck").table.weight == 1.0)
    hf = tmp_path / "hf_model"  # a transformers directory has the same two file names
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    (hf / "model.safetensors").write_bytes(b"weights of another library")
    before = _tree(hf)
    with pytest.raises(FileExistsError, match="config.json is not a minillm checkpoint config"):
        save_checkpoint(_model(), hf)
    assert _tree(hf) == before


def test_saving_over_a_file_or_a_link_is_refused_and_the_file_is_kept(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"an old torch.save file")
    with pytest.raises(FileExistsError, match=r"model.pt: it is an existing file"):
        save_checkpoint(_model(), target)
    assert target.read_bytes() == b"an old torch.save file"
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]
    save_checkpoint(_model(fill=1.0), tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(FileExistsError, match="symbolic link"):
        save_checkpoint(_model(fill=2.0), tmp_path / "link")
    assert torch.all(load_checkpoint(tmp_path / "real").table.weight == 1.0)


def test_an_empty_directory_is_a_valid_destination(tmp_path):
    (tmp_path / "ck").mkdir()
    save_checkpoint(_model(fill=4.0), tmp_path / "ck")
    assert torch.all(load_checkpoint(tmp_path / "ck").table.weight == 4.0)


def test_flipped_bytes_in_the_weights_are_detected(tmp_path):
    m = BigramLM(BigramConfig(vocab_size=64))
    save_checkpoint(m, tmp_path / "ck")
    weights = tmp_path / "ck" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])  # still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model.safetensors is corrupt: its sha256 .* changed "
                                              r"after saving"):
        load_checkpoint(tmp_path / "ck")
    record = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert record["format_version"] == ckpt.FORMAT_VERSION == 2
    assert record["weights_bytes"] == len(data)


def test_old_checkpoints_without_a_checksum_still_load(tmp_path):
    save_checkpoint(_model(fill=5.0), tmp_path / "ck")
    cfg = tmp_path / "ck" / "config.json"
    record = json.loads(cfg.read_text())
    for key in ("weights_sha256", "weights_bytes"):
        del record[key]
    cfg.write_text(json.dumps({**record, "format_version": 1}))
    assert torch.all(load_checkpoint(tmp_path / "ck").table.weight == 5.0)
    cfg.write_text(json.dumps({**record, "format_version": 2}))  # format 2 must carry the checksum
    with pytest.raises(CheckpointError, match="'weights_sha256' is missing"):
        load_checkpoint(tmp_path / "ck")


SHIPPED = ckpt.Path(ckpt.__file__).parent / "checkpoints"


@pytest.mark.parametrize("name", sorted(p.name for p in SHIPPED.iterdir() if (p / "config.json").exists()))
def test_shipped_checkpoints_load(name):
    path = SHIPPED / name
    before = sorted(os.listdir(path.parent))
    model = load_checkpoint(path)
    assert isinstance(model, nn.Module) and model.checkpoint_metadata
    assert sorted(os.listdir(path.parent)) == before  # loading writes nothing next to it


def _edit_config(path, edit):
    cfg = path / "config.json"
    record = json.loads(cfg.read_text())
    out = edit(record)
    cfg.write_bytes(out if isinstance(out, bytes) else json.dumps(out).encode())


@pytest.mark.parametrize("edit, message", [
    (lambda r: None, r"config.json is corrupt: expected a JSON object .* got None"),
    (lambda r: [1, 2], r"config.json is corrupt: expected a JSON object"),
    (lambda r: b"\xff\xfe{}", r"config.json is corrupt: it is not UTF-8"),
    (lambda r: {k: v for k, v in r.items() if k != "config"}, r"config.json lacks the field 'config'"),
    (lambda r: {**r, "config": None}, r"field 'config' must be a dict, got None"),
    (lambda r: {**r, "model_class": "minillm.models.bigram.Trigram"}, r"'minillm.models.bigram.Trigram', "
                                                                      r"which is not a model class"),
    (lambda r: {**r, "model_class": "minillm.no_such_module.Model"}, r"which this minillm does not have"),
    (lambda r: {**r, "model_class": "minillm.models.bigram.BigramConfig"}, r"not a model class"),
    (lambda r: {**r, "config": {**r["config"], "n_layer": 4}}, r"config field\(s\) \['n_layer'\] that "
                                                               r"BigramConfig does not have"),
    (lambda r: {**r, "config": {"vocab_size": "many"}}, r"cannot build minillm.models.bigram.BigramLM from"),
    (lambda r: {**r, "config": {"vocab_size": -3}}, r"cannot build minillm.models.bigram.BigramLM from"),
    (lambda r: {**r, "format_version": 99}, r"format version 99, written by a newer minillm"),
    (lambda r: {**r, "aliases": "x"}, r"field 'aliases' must be a dict"),
])
def test_malformed_config_json_is_a_clear_error(tmp_path, edit, message):
    save_checkpoint(_model(), tmp_path / "ck")
    _edit_config(tmp_path / "ck", edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "ck")


def test_map_location_to_a_missing_device_is_a_clear_error(tmp_path, monkeypatch):
    save_checkpoint(_model(), tmp_path / "ck")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"'cuda' was requested for map_location but CUDA is not available"):
        load_checkpoint(tmp_path / "ck", map_location="cuda")
    with pytest.raises(ValueError, match=r"unknown device 'gpu0' for map_location"):
        load_checkpoint(tmp_path / "ck", map_location="gpu0")
    with pytest.raises(TypeError, match="map_location must be a device name"):
        load_checkpoint(tmp_path / "ck", map_location=0.0)


def test_bad_save_arguments_are_clear_errors_and_write_nothing(tmp_path):
    with pytest.raises(TypeError, match="metadata and config must be JSON-serialisable"):
        save_checkpoint(_model(), tmp_path / "ck", metadata={"tensor": torch.zeros(2)})
    with pytest.raises(TypeError, match="metadata must be a dict or None"):
        save_checkpoint(_model(), tmp_path / "ck", metadata=[1, 2])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        save_checkpoint({"w": torch.zeros(2)}, tmp_path / "ck")
    with pytest.raises(TypeError, match="path must be a str or path"):
        save_checkpoint(_model(), 42)
    assert os.listdir(tmp_path) == []
    with pytest.raises(CheckpointError, match="is a file, not a checkpoint directory"):
        (tmp_path / "f").write_text("x")
        load_checkpoint(tmp_path / "f")
