"""The recorded recipes behind ``minillm.hub.load_pretrained``: one entry per chapter model.

A recipe names a function ``trainer(progress: bool) -> (model, metadata)`` that builds and trains a
model deterministically (fixed seed, fixed data, fixed steps). Bump ``version`` whenever the recipe
changes, so stale cached checkpoints are retrained. Chapters add their entries here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Recipe:
    name: str  # the name chapters ask for
    trainer: str  # "module:function" building and training the model
    description: str  # one line for listings
    version: int = 1  # bump when the recipe changes


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("tour-bigram", "minillm.models.bigram_recipe:train_tour_bigram",
           "ch00 tour: character bigram LM on Shakespeare (seconds on a CPU)"),
    Recipe("ch06-seq2seq-en-es", "minillm.models.seq2seq:train_en_es_recipe",
           "ch06: GRU encoder-decoder with additive attention, English->Spanish verses"),
    Recipe("ch04-mlp-shakespeare", "minillm.models.mlp_lm:train_mlp_shakespeare",
           "ch04: Bengio MLP character LM on Shakespeare (context 16)"),
    Recipe("ch05-lstm-shakespeare", "minillm.models.char_rnn:train_lstm_shakespeare",
           "ch05: 2-layer character LSTM on Shakespeare"),
    Recipe("ch08-gpt-shakespeare", "minillm.models.gpt_recipe:train_gpt_shakespeare",
           "ch08: 4-layer character GPT (width 128, context 128) on Shakespeare"),
]}


def train_shakespeare_char_recipe(build_model: Callable[[Any], Any], *, block_size: int,
                                  batch_size: int, val_batches: int | None = None,
                                  progress: bool = True,
                                  config: Any = None, **train_overrides: Any) -> tuple[Any, dict]:
    """The common shape of every Shakespeare character recipe: seed 0, the shared character
    vocabulary, ``build_model(vocab)``, then ``minillm.train.train`` on random training windows
    with a fixed validation set, on the CPU. Returns (model, metadata with vocab and history)."""
    import torch

    from .data import load_shakespeare
    from .device import seed_everything
    from .train import LMBatches, sequential_lm_batches, train
    from .vocab import shakespeare_char_vocab

    seed_everything(0)
    text = load_shakespeare()
    vocab = shakespeare_char_vocab()
    model = build_model(vocab)
    history = train(model, LMBatches(vocab.encode_tensor(text.train), block_size, batch_size, seed=0),
                    config,
                    val_data=sequential_lm_batches(vocab.encode_tensor(text.validation), block_size,
                                                   batch_size, max_batches=val_batches),
                    progress=progress, device=torch.device("cpu"), **train_overrides)
    metadata = {"vocab": vocab.itos, "history": history.to_dict(),
                "metrics": {"val_loss": history.final_val_loss}}
    return model, metadata
