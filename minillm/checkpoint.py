"""Checkpoints: a directory holding ``model.safetensors`` and ``config.json``, saved crash-safely.

``config.json`` records the model class (any class under ``minillm``), its dataclass config, the
sha256 of the weights file, and optional metadata (recipe, training history, metrics). Loading
checks that sha256, so a damaged weights file is an error instead of a silently different model;
loading into a model of another configuration names the differing config fields and the missing,
unexpected or mis-shaped tensors.

Saving keeps at least one complete checkpoint loadable at every instant, whenever the process dies:

1. the destination must be absent, an empty directory or a minillm checkpoint: a file, a symbolic
   link or a directory holding anything else is refused and left untouched;
2. the new checkpoint is written into a fresh sibling ``.<name>.saving-<id>/``: the weights first
   (fsynced, their sha256 recorded), then ``config.json`` under a temporary name renamed into place,
   so a directory with a ``config.json`` is complete;
3. two renames swap it in: the old checkpoint becomes ``.<name>.previous``, the new one ``<name>``.
   If ``<name>`` is absent because an earlier save died between those renames, the surviving
   ``.previous`` is left alone and the new checkpoint moves straight in;
4. ``.previous`` and stale ``.saving-*`` siblings are removed.

Loading a ``<name>`` that is missing adopts the committed ``.previous`` if it is complete, else the
newest complete ``.saving-*`` (renamed into place when the directory is writable). One process
writes a given path at a time. Checkpoints of format 1 (before checksums) still load.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
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

from .device import check_device
from .validation import describe

FORMAT_VERSION = 2  # 2: config.json records the sha256 and size of model.safetensors
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
_OWN_FILES = {WEIGHTS, CONFIG}


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


def _saving_dirs(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.saving-*"))


def _sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _remove_dir(path: Path) -> None:
    """Delete a checkpoint copy, its config first: a half-deleted copy never looks complete."""
    try:
        (path / CONFIG).unlink()
    except FileNotFoundError:
        pass
    shutil.rmtree(path)


def _listing(path: Path, limit: int = 6) -> str:
    entries = sorted(os.listdir(path))
    shown = ", ".join(entries[:limit])
    return shown + (f", ... ({len(entries)} entries)" if len(entries) > limit else "")


def _check_destination(path: Path) -> None:
    """Refuse to replace anything that is not a minillm checkpoint (or an empty directory)."""
    keep = "nothing was changed; choose another path, or move it away yourself"
    if path.is_symlink():
        raise FileExistsError(f"refusing to save a checkpoint to {path}: it is a symbolic link "
                              f"(to {os.readlink(path)}); {keep}")
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"refusing to save a checkpoint to {path}: it is an existing file, "
                              f"not a checkpoint directory; {keep}")
    entries = set(os.listdir(path))
    if not entries:
        return
    foreign = entries - _OWN_FILES
    if foreign or CONFIG not in entries:
        raise FileExistsError(f"refusing to save a checkpoint to {path}: the directory is not a "
                              f"minillm checkpoint (it holds {_listing(path)}); {keep}")
    try:
        record = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        ours = isinstance(record, dict) and "model_class" in record and "format_version" in record
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ours = False
    if not ours:
        raise FileExistsError(f"refusing to save a checkpoint to {path}: its {CONFIG} is not a "
                              f"minillm checkpoint config (another library's model?); {keep}")


def _write_weights(tensors: dict[str, torch.Tensor], directory: Path) -> tuple[str, int]:
    """Write and fsync the weights; return their sha256 and size, read back from the disk."""
    save_file(tensors, str(directory / WEIGHTS), metadata={"format": "pt"})
    digest, size = _sha256_file(directory / WEIGHTS)
    fd = os.open(directory / WEIGHTS, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest, size


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half of it:
    a fsynced temporary sibling renamed into place (POSIX ``rename`` is atomic)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def _write_config(text: str, directory: Path) -> None:
    write_text_atomic(directory / CONFIG, text)  # config.json appears complete, after the weights


def _complete(directory: Path) -> bool:
    """A copy that loads: a valid config.json and weights matching their recorded sha256."""
    try:
        record = _read_record(directory)
        expected = record.get("weights_sha256")
        if expected is None:
            return (directory / WEIGHTS).is_file()
        return _sha256_file(directory / WEIGHTS)[0] == expected
    except (CheckpointError, OSError):
        return False


def _abandon(path: Path, tmp: Path, swapping: bool) -> None:
    """After a failed save: put the committed copy back, and drop the new one if that loses nothing."""
    try:
        prev = _previous(path)
        if not path.exists() and _complete(prev):
            os.replace(prev, path)
        if not tmp.exists():
            return
        if not swapping or _complete(path) or not _complete(tmp):
            _remove_dir(tmp)
    except Exception:  # best effort: the next save or load repairs whatever is left
        pass


def _clean_up(path: Path) -> None:
    for stale in (_previous(path), *_saving_dirs(path)):
        if stale.exists():
            try:
                _remove_dir(stale)
            except OSError:
                pass  # retried by the next save


def _as_path(name: str, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or path, got {describe(value)} of type {type(value).__name__}")
    path = Path(value)
    if path.name in ("", ".", ".."):
        path = Path(os.path.abspath(path))
    if not path.name:
        raise ValueError(f"{name} must name a checkpoint directory, got {str(value)!r}")
    return path


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Save ``model`` (weights + config + ``metadata``) to the directory ``path``, crash-safely.

    ``path`` may be absent, an empty directory or an earlier minillm checkpoint (replaced); anything
    else raises FileExistsError and is left untouched. ``metadata`` must be JSON-serialisable.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {describe(metadata)}")
    path = _as_path("path", path)
    _check_destination(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"cannot save a checkpoint to {path}: {path.parent} is a file")
    tensors, aliases = _dedupe_shared(model.state_dict())
    record = {
        "format_version": FORMAT_VERSION,
        "model_class": _class_path(model),
        "config": _config_dict(model),
        "aliases": aliases,
        "metadata": metadata or {},
    }
    try:
        json.dumps(record, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata and config must be JSON-serialisable (dicts with str keys, lists, "
                        f"str, numbers, bool, None): {e}") from e
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.saving-{uuid.uuid4().hex[:8]}")
    swapping = False
    try:
        tmp.mkdir()
        digest, size = _write_weights(tensors, tmp)
        record.update(weights_sha256=digest, weights_bytes=size)
        _write_config(json.dumps(record, indent=2, sort_keys=True), tmp)
        swapping = True  # from here the new copy may be the only complete one
        prev = _previous(path)
        if path.exists():
            if prev.exists():
                _remove_dir(prev)  # safe: path is a complete copy, and so is tmp
            os.replace(path, prev)  # keep the old checkpoint until the new one is in place
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        _abandon(path, tmp, swapping)
        raise
    _clean_up(path)
    return path


def _resolve(path: Path) -> Path:
    """The directory to load from, adopting a complete copy left behind by an interrupted save."""
    if path.is_file():
        raise CheckpointError(f"{path} is a file, not a checkpoint directory")
    if (path / CONFIG).exists():
        return path
    if not path.exists() or (path.is_dir() and not os.listdir(path)):
        saving = sorted((d for d in _saving_dirs(path) if _complete(d)),
                        key=lambda d: (d / CONFIG).stat().st_mtime_ns, reverse=True)
        prev = _previous(path)
        for candidate in ([prev] if _complete(prev) else []) + saving:
            try:
                os.replace(candidate, path)  # adopt it, so the next save starts from a clean state
                return path
            except OSError:
                return candidate  # read-only place, or another process got there first
    if path.exists():
        raise CheckpointError(f"{path} is not a minillm checkpoint: {CONFIG} is missing "
                              f"(the directory holds: {_listing(path) or 'nothing'})")
    raise FileNotFoundError(f"no checkpoint at {path}")


def _read_record(directory: Path) -> dict[str, Any]:
    """The validated ``config.json`` of one checkpoint directory (FileNotFoundError if absent)."""
    cfg = directory / CONFIG
    raw = cfg.read_bytes()
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{cfg} is corrupt: it is not UTF-8 text ({e})") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg} is corrupt: {e}") from e
    if not isinstance(record, dict):
        raise CheckpointError(f"{cfg} is corrupt: expected a JSON object with model_class and config, "
                              f"got {describe(record)}")
    for key in ("model_class", "config"):
        if key not in record:
            raise CheckpointError(f"{cfg} lacks the field {key!r}")
    expected_types = {"model_class": str, "config": dict, "aliases": dict, "metadata": dict,
                      "format_version": int, "weights_sha256": str, "weights_bytes": int}
    for key, kind in expected_types.items():
        if key in record and not isinstance(record[key], kind):
            raise CheckpointError(f"{cfg} is corrupt: field {key!r} must be a {kind.__name__}, "
                                  f"got {describe(record[key])}")
    version = record.get("format_version", 1)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{cfg} has format version {version}, written by a newer minillm "
                              f"(this one reads up to {FORMAT_VERSION}): upgrade minillm")
    if version >= 2 and "weights_sha256" not in record:
        raise CheckpointError(f"{cfg} is corrupt: format {version} records the weights' sha256, "
                              "but the field 'weights_sha256' is missing")
    return record


def read_checkpoint_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint directory."""
    path = _resolve(_as_path("path", path))
    return _read_record(path)


def _build_model(record: dict[str, Any], path: Path) -> nn.Module:
    name = record["model_class"]
    module_name, _, class_name = name.rpartition(".")
    if not (module_name == "minillm" or module_name.startswith("minillm.")):
        raise CheckpointError(f"refusing to build {name!r}: only minillm classes "
                              "can be built from a checkpoint; pass `model=` instead")
    try:
        cls = getattr(importlib.import_module(module_name), class_name, None)
    except ImportError as e:
        raise CheckpointError(f"{path / CONFIG} names the model class {name!r}, which this minillm "
                              f"does not have ({e}); pass `model=`") from e
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise CheckpointError(f"{path / CONFIG} names the model class {name!r}, which is not a model "
                              "class of this minillm; pass `model=`")
    config_cls = getattr(cls, "config_class", None)
    if config_cls is None or not dataclasses.is_dataclass(config_cls):
        raise CheckpointError(f"{name} has no dataclass `config_class` to rebuild it from "
                              f"{path / CONFIG}; pass `model=`")
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(record["config"]) - known)
    if unknown:
        raise CheckpointError(f"{path / CONFIG} holds config field(s) {unknown} that "
                              f"{config_cls.__name__} does not have (saved by another minillm "
                              f"version?); known fields: {sorted(known)}")
    try:
        return cls(config_cls(**record["config"]))
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot build {name} from the config in {path / CONFIG}: {e}") from e


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

    Raises CheckpointError when the weights do not match their recorded sha256 (a damaged file),
    when ``config.json`` is malformed, or, naming the differing config fields or the mismatching
    tensor keys and shapes, when ``model`` was built with another configuration.
    """
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
    device = check_device("map_location", map_location)
    path = _resolve(_as_path("path", path))
    record = _read_record(path)
    if model is None:
        model = _build_model(record, path)
    else:
        current = getattr(model, "config", None)
        if current is not None and dataclasses.is_dataclass(current):
            diff = _config_diff(record["config"], dataclasses.asdict(current))
            if diff:
                raise CheckpointError(f"checkpoint {path} was saved from another config:\n  "
                                      + "\n  ".join(diff))
    weights = path / WEIGHTS
    expected = record.get("weights_sha256")
    if expected is not None:
        try:
            actual, size = _sha256_file(weights)
        except OSError as e:
            raise CheckpointError(f"cannot read weights {weights}: {e}") from e
        if actual != expected:
            raise CheckpointError(
                f"{weights} is corrupt: its sha256 is {actual[:16]}..., but {CONFIG} recorded "
                f"{expected[:16]}... when it was saved ({size} bytes now, "
                f"{record.get('weights_bytes', '?')} then); the file was damaged or changed after "
                "saving. Load another checkpoint or train again.")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read weights {weights}: {e}") from e
    for alias, source in record.get("aliases", {}).items():
        if source in state:
            state[alias] = state[source]
    load_state_dict_checked(model, state)
    model.checkpoint_metadata = record.get("metadata", {})
    return model
