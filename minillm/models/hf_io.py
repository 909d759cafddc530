"""Hugging Face model directories (``config.json`` + weights): read and written in one place.

Every model of the course that loads from or saves for ``transformers`` — GPT-2, BERT, T5 — goes
through these two functions, so each gets the same checks and the same error messages: a missing
directory or file is a ``FileNotFoundError``; anything else that is not a Hugging Face directory of
the expected model type (a minillm checkpoint, invalid JSON, an unreadable weights file, another
model type) is a ``ValueError`` naming the file and the problem. Writing is crash-safe: each file is
written under a temporary name in the same directory and renamed into place, so an interrupted save
never leaves a half-written ``model.safetensors`` where a good one was.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference


def read_hf_directory(directory: str | os.PathLike, model_type: str, *, what: str
                      ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config dict, state dict) of a Hugging Face directory holding a ``model_type`` model.

    ``what`` names the model in messages, e.g. "GPT-2". Weights come from ``model.safetensors``, or
    else ``pytorch_model.bin`` (loaded with ``weights_only=True``: no code runs while reading it).
    """
    directory = Path(directory)
    expected = f"expected a Hugging Face {what} directory (config.json + {' or '.join(WEIGHT_FILES)})"
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory: {expected}")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json: {expected}")
    weights = next((directory / n for n in WEIGHT_FILES if (directory / n).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{directory} has no {' or '.join(WEIGHT_FILES)}: {expected}")
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{directory / 'config.json'} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{directory / 'config.json'} must hold a JSON object, got "
                         f"{type(config).__name__}")
    if "format_version" in config and "config" in config:
        raise ValueError(f"{directory} is a minillm checkpoint, not a Hugging Face {what} directory: "
                         "load it with minillm.checkpoint.load_checkpoint")
    if config.get("model_type", model_type) != model_type:
        raise ValueError(f"{directory} holds a {config.get('model_type')!r} model, expected "
                         f"{model_type!r}")
    try:
        if weights.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                state = load_file(str(weights))
            except SafetensorError as err:
                raise OSError(str(err)) from None
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        raise ValueError(f"{weights} cannot be read ({err})") from None
    return config, state


def write_hf_directory(directory: str | os.PathLike, config: dict[str, Any],
                       tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed), each
    file crash-safe (temporary name, then an atomic rename). Returns the directory."""
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise FileExistsError(f"{directory} is a file: save_pretrained needs a directory")
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}

    def atomic(name: str, write) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, directory / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    atomic("model.safetensors", lambda path: save_file(tensors, path, metadata={"format": "pt"}))
    atomic("config.json", lambda path: Path(path).write_text(json.dumps(config, indent=2),
                                                             encoding="utf-8"))
    return directory
