"""The shared Hugging Face directory reader/writer (minillm.models.hf_io): crash-safe writes and the
same clear errors for every model type."""

from __future__ import annotations

import json

import pytest
import torch

from minillm.models import hf_io
from minillm.models.hf_io import read_hf_directory, write_hf_directory


def test_round_trip_and_no_temporary_files_left(tmp_path):
    tensors = {"a.weight": torch.arange(6.0).view(2, 3).t(), "b": torch.ones(4)}  # a non-contiguous one
    write_hf_directory(tmp_path / "m", {"model_type": "toy", "n": 3}, tensors)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    config, state = read_hf_directory(tmp_path / "m", "toy", what="toy")
    assert config == {"model_type": "toy", "n": 3}
    assert state.keys() == tensors.keys() and all(torch.equal(state[k], tensors[k]) for k in tensors)


def test_an_interrupted_save_keeps_the_previous_weights(tmp_path, monkeypatch):
    write_hf_directory(tmp_path, {"model_type": "toy"}, {"w": torch.zeros(3)})
    before = (tmp_path / "model.safetensors").read_bytes()

    def crash(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt  # the learner stops the kernel in the middle of the write

    monkeypatch.setattr("safetensors.torch.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        write_hf_directory(tmp_path, {"model_type": "toy"}, {"w": torch.ones(3)})
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_pytorch_model_bin_is_read_when_there_is_no_safetensors(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "toy"}))
    torch.save({"w": torch.full((2,), 7.0)}, tmp_path / "pytorch_model.bin")
    _, state = read_hf_directory(tmp_path, "toy", what="toy")
    assert torch.equal(state["w"], torch.full((2,), 7.0))
    assert hf_io.WEIGHT_FILES[0] == "model.safetensors"  # preferred when both exist


@pytest.mark.parametrize("setup, exc, fragment", [
    (lambda d: None, FileNotFoundError, "has no config.json: expected a Hugging Face toy directory"),
    (lambda d: (d / "config.json").write_text("{}"), FileNotFoundError,
     "has no model.safetensors or pytorch_model.bin"),
    (lambda d: ((d / "config.json").write_text("[1]"), (d / "model.safetensors").write_bytes(b"x")),
     ValueError, "must hold a JSON object, got list"),
    (lambda d: ((d / "config.json").write_text('{"model_type": "bert"}'),
                (d / "model.safetensors").write_bytes(b"x")), ValueError,
     "holds a 'bert' model, expected 'toy'"),
    (lambda d: ((d / "config.json").write_text("{}"), (d / "model.safetensors").write_bytes(b"x")),
     ValueError, "model.safetensors cannot be read"),
])
def test_what_is_not_a_directory_of_the_type_is_named(tmp_path, setup, exc, fragment):
    setup(tmp_path)
    with pytest.raises(exc, match=fragment):
        read_hf_directory(tmp_path, "toy", what="toy")
