"""The recorded recipes behind ``minillm.hub.load_pretrained``: one entry per chapter model.

A recipe names a function ``trainer(progress: bool) -> (model, metadata)`` that builds and trains a
model deterministically (fixed seed, fixed data, fixed steps). Bump ``version`` whenever the recipe
changes, so stale cached checkpoints are retrained. Chapters add their entries here.
"""

from __future__ import annotations

from dataclasses import dataclass


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
