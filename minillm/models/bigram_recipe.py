"""Recipe for the tour's character bigram model (used by ``minillm.hub``)."""

from __future__ import annotations

from ..recipes import train_shakespeare_char_recipe
from .bigram import BigramConfig, BigramLM


def train_tour_bigram(progress: bool = True) -> tuple[BigramLM, dict]:
    """300 AdamW steps of a character bigram model on the Shakespeare training split (seed 0)."""
    return train_shakespeare_char_recipe(
        lambda vocab: BigramLM(BigramConfig(vocab_size=len(vocab))), block_size=64, batch_size=64,
        val_batches=20, progress=progress, steps=300, lr=0.1, warmup_steps=10, eval_every=100,
        weight_decay=0.0, autocast=None)
