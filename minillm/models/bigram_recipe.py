"""Recipe for the tour's character bigram model (used by ``minillm.hub``)."""

from __future__ import annotations

import torch

from ..data import load_shakespeare
from ..device import seed_everything
from ..train import LMBatches, sequential_lm_batches, train
from ..vocab import shakespeare_char_vocab
from .bigram import BigramConfig, BigramLM


def train_tour_bigram(progress: bool = True) -> tuple[BigramLM, dict]:
    """300 AdamW steps of a character bigram model on the Shakespeare training split (seed 0)."""
    seed_everything(0)
    text = load_shakespeare()
    vocab = shakespeare_char_vocab()
    train_ids = vocab.encode_tensor(text.train)
    val_ids = vocab.encode_tensor(text.validation)
    model = BigramLM(BigramConfig(vocab_size=len(vocab)))
    history = train(model, LMBatches(train_ids, block_size=64, batch_size=64, seed=0),
                    val_data=sequential_lm_batches(val_ids, 64, 64, max_batches=20), steps=300,
                    lr=0.1, warmup_steps=10, eval_every=100, weight_decay=0.0, autocast=None,
                    progress=progress, device=torch.device("cpu"))
    metadata = {"vocab": vocab.itos, "history": history.to_dict(),
                "metrics": {"val_loss": history.final_val_loss}}
    return model, metadata
