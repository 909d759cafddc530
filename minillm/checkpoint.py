"""Checkpoints: a directory holding ``model.safetensors`` and ``config.json``, written atomically.

Saving writes a fresh temporary directory next to the destination, then swaps it in with two
renames; if the process dies at any moment, either the new or the previous checkpoint is on disk
(an interrupted swap is repaired by the next load). Loading into a model of another configuration
names the differing config fields and the missing, unexpected or mis-shaped tensors.

``config.json`` records the model class (any class under ``minillm``), its dataclass config, and
optional metadata (recipe, training history, metrics).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model it is loaded into."""


def _class_path(model: nn.Module) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def _config_dict(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise TypeError(f"{type(model).__name__} needs a dataclass `.config` attribute to be saved "
                        "with its configuration")
    return dataclasses.asdict(config)


def _dedupe_shared(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors refuses tensors that share memory (tied weights): keep one name, record aliases."""
    kept: dict[tuple, str] = {}
    tensors, aliases = {}, {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key in kept:
            aliases[name] = kept[key]
        else:
            kept[key] = name
            tensors[name] = t.detach().contiguous().cpu()
    return tensors, aliases


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _previous(path: Path) -> Path:
    return path.with_name(f".{path.name}.previous")


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Save ``model`` (weights + config + ``metadata``) to the directory ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, aliases = _dedupe_shared(model.state_dict())
    record = {
        "format_version": FORMAT_VERSION,
        "model_class": _class_path(model),
        "config": _config_dict(model),
        "aliases": aliases,
        "metadata": metadata or {},
    }
    tmp = path.with_name(f".{path.name}.saving-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        with open(tmp / CONFIG, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        prev = _previous(path)
        if prev.exists():
            shutil.rmtree(prev)
        if path.exists():
            os.replace(path, prev)  # keep the old checkpoint until the new one is in place
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(_previous(path), ignore_errors=True)
    return path


def _resolve(path: Path) -> Path:
    """The checkpoint directory, recovering the previous one if a save died mid-swap."""
    if (path / CONFIG).exists():
        return path
    prev = _previous(path)
    if not path.exists() and (prev / CONFIG).exists():
        os.replace(prev, path)  # the save was interrupted between its two renames
        return path
    if path.exists():
        raise CheckpointError(f"{path} is not a minillm checkpoint: {CONFIG} is missing")
    raise FileNotFoundError(f"no checkpoint at {path}")


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory."""
    path = _resolve(Path(path))
    try:
        with open(path / CONFIG, encoding="utf-8") as f:
            record = json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / CONFIG} is corrupt: {e}") from e
    for key in ("model_class", "config"):
        if key not in record:
            raise CheckpointError(f"{path / CONFIG} lacks the field {key!r}")
    return record


def _build_model(record: dict[str, Any]) -> nn.Module:
    module_name, _, class_name = record["model_class"].rpartition(".")
    if not (module_name == "minillm" or module_name.startswith("minillm.")):
        raise CheckpointError(f"refusing to build {record['model_class']!r}: only minillm classes "
                              "can be built from a checkpoint; pass `model=` instead")
    cls = getattr(importlib.import_module(module_name), class_name)
    config_cls = cls.config_class
    return cls(config_cls(**record["config"]))


def _config_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(saved) | set(current))
    return [f"{k}: checkpoint {saved.get(k, '<absent>')!r} vs model {current.get(k, '<absent>')!r}"
            for k in keys if saved.get(k, "<absent>") != current.get(k, "<absent>")]


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``model``, raising CheckpointError that lists every key/shape mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatches:\n  " + "\n  ".join(shapes))
        if missing:
            parts.append("missing from checkpoint:\n  " + "\n  ".join(missing))
        if unexpected:
            parts.append("not in model:\n  " + "\n  ".join(unexpected))
        raise CheckpointError("checkpoint does not fit the model\n" + "\n".join(parts))
    model.load_state_dict(state)


def load_checkpoint(path: str | os.PathLike, model: nn.Module | None = None, *,
                    map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a checkpoint directory; build the model from its config unless ``model`` is given.

    Raises CheckpointError naming the differing config fields, or the mismatching tensor keys and
    shapes, when ``model`` was built with another configuration.
    """
    path = _resolve(Path(path))
    record = read_checkpoint_config(path)
    if model is None:
        model = _build_model(record)
    else:
        current = getattr(model, "config", None)
        if current is not None and dataclasses.is_dataclass(current):
            diff = _config_diff(record["config"], dataclasses.asdict(current))
            if diff:
                raise CheckpointError(f"checkpoint {path} was saved from another config:\n  "
                                      + "\n  ".join(diff))
    try:
        state = load_file(str(path / WEIGHTS), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read weights {path / WEIGHTS}: {e}") from e
    for alias, source in record.get("aliases", {}).items():
        if source in state:
            state[alias] = state[source]
    load_state_dict_checked(model, state)
    model.checkpoint_metadata = record.get("metadata", {})
    return model
