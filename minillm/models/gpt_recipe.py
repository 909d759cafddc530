"""Recipe of the shipped chapter-8 model: a small character GPT trained on Shakespeare.

Size: 4 layers, 4 heads, width 128, context 128 (~0.8M parameters, ~3.3 MB in fp32). The budget
allowed ~12 MB, but the model had to train in minutes on a 2-core CPU shared with other jobs; a
small model that saw 6M characters beats a larger one that saw a tenth of that. Trained with bf16
autocast where the CPU supports it.
Used by ``minillm.hub.load_pretrained("ch08-gpt-shakespeare")`` and the leaderboard's GPT row.
"""

from __future__ import annotations

from ..recipes import train_shakespeare_char_recipe
from ..train import TrainConfig
from ..vocab import CharVocab
from .gpt import GPT, GPTConfig

RECIPE_NAME = "ch08-gpt-shakespeare"
RECIPE_TRAIN = TrainConfig(steps=1500, lr=3e-3, min_lr=3e-4, warmup_steps=100, weight_decay=0.1,
                           eval_every=250, eval_batches=20)
RECIPE_BATCH = 32


def train_gpt_shakespeare(progress: bool = True) -> tuple[GPT, dict]:
    """Train the chapter-8 GPT from scratch (seed 0); returns (model, metadata)."""
    model, metadata = train_shakespeare_char_recipe(
        lambda vocab: GPT(GPTConfig.shakespeare_small(vocab_size=len(vocab))),
        block_size=GPTConfig.shakespeare_small().block_size, batch_size=RECIPE_BATCH,
        progress=progress, config=RECIPE_TRAIN)
    metadata.update({
        "train_config": {k: (str(v) if not isinstance(v, (int, float, bool, type(None))) else v)
                         for k, v in vars(RECIPE_TRAIN).items()},
        "batch_size": RECIPE_BATCH, "params": model.num_params()})
    metadata["metrics"]["train_seconds"] = round(metadata["history"]["seconds"], 1)
    return model.eval(), metadata


def load_gpt_shakespeare() -> tuple[GPT, CharVocab]:
    """The shipped chapter-8 GPT (eval mode) and its character vocabulary."""
    from ..hub import load_pretrained

    model = load_pretrained(RECIPE_NAME)
    return model, CharVocab(model.checkpoint_metadata["vocab"])


def score_gpt_shakespeare():
    """Leaderboard scorer: bits/char of the shipped GPT on the Shakespeare test split."""
    from ..leaderboard import score_shipped_char_model

    c = GPTConfig.shakespeare_small()
    return score_shipped_char_model(RECIPE_NAME, notes=f"{c.n_layer} layers, width {c.n_embd}, "
                                                       f"context {c.block_size}")
