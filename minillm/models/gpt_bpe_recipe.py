"""Recipe of the shipped chapter-8 BPE model: a GPT over a 2,048-token byte-level BPE of Shakespeare.

Chapter 8's character GPT sees 128 characters of context and must spend its capacity spelling.
Over byte-level BPE tokens (chapter 3) trained on the same training split, each token covers about
2.7 characters, so the same 128-position context spans ~350 characters and every training step
covers ~2.7× more text for almost the same compute. Scored in **bits per character** of the same
test text as every other leaderboard row (total nats of the test tokens / (characters covered ×
ln 2)), so the rows stay comparable.

Size: 6 layers, 8 heads, width 256, context 128 tokens (~5.3M parameters), AdamW with warmup and
cosine decay, batch 32, bf16 autocast where the CPU supports it. Used by
``minillm.hub.load_pretrained("ch08-gpt-bpe-shakespeare")`` and the leaderboard's BPE GPT row.
"""

from __future__ import annotations

import resource
import time

import torch

from ..tokenizers.gpt2 import ByteLevelBPE
from ..train import TrainConfig
from .gpt import GPT, GPTConfig

RECIPE_NAME = "ch08-gpt-bpe-shakespeare"
BPE_VOCAB_SIZE = 2048
RECIPE_CONFIG = dict(vocab_size=BPE_VOCAB_SIZE, block_size=128, n_layer=6, n_head=8, n_embd=256)
RECIPE_TRAIN = TrainConfig(steps=2500, lr=1.5e-3, min_lr=1.5e-4, warmup_steps=100, weight_decay=0.1,
                           eval_every=250, eval_batches=20)
RECIPE_BATCH = 32


def train_bpe_tokenizer(text: str, vocab_size: int = BPE_VOCAB_SIZE) -> ByteLevelBPE:
    """The byte-level BPE of the recipe: learned on ``text`` (the training split), no special tokens."""
    return ByteLevelBPE.train(text, vocab_size, special_tokens=())


def tokenizer_from_merges(merges: list[list[str]]) -> ByteLevelBPE:
    """Rebuild the recipe's tokenizer from its merges (as stored in the checkpoint metadata)."""
    from ..tokenizers.gpt2 import bytes_to_unicode

    byte_encoder = bytes_to_unicode()
    names = [byte_encoder[b] for b in byte_encoder]
    for a, b in merges:
        names.append(a + b)
    return ByteLevelBPE({t: i for i, t in enumerate(names)}, [tuple(m) for m in merges],
                        special_tokens=())


def train_gpt_bpe_shakespeare(progress: bool = True) -> tuple[GPT, dict]:
    """Train the BPE tokenizer and then the GPT from scratch (seed 0); returns (model, metadata)."""
    from ..data import load_shakespeare
    from ..device import seed_everything
    from ..train import LMBatches, sequential_lm_batches, train

    seed_everything(0)
    text = load_shakespeare()
    tokenizer = train_bpe_tokenizer(text.train)
    train_ids = torch.tensor(tokenizer.encode_ordinary(text.train), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode_ordinary(text.validation), dtype=torch.long)
    model = GPT(GPTConfig(**RECIPE_CONFIG))
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    history = train(model, LMBatches(train_ids, RECIPE_CONFIG["block_size"], RECIPE_BATCH, seed=0),
                    RECIPE_TRAIN,
                    val_data=sequential_lm_batches(val_ids, RECIPE_CONFIG["block_size"], RECIPE_BATCH,
                                                   max_batches=RECIPE_TRAIN.eval_batches),
                    progress=progress, device=torch.device("cpu"))
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    chars_per_token = len(text.train) / len(train_ids)
    metadata = {
        "bpe_merges": [list(m) for m in tokenizer.merges],
        "history": history.to_dict(),
        "train_config": {k: (str(v) if not isinstance(v, (int, float, bool, type(None))) else v)
                         for k, v in vars(RECIPE_TRAIN).items()},
        "batch_size": RECIPE_BATCH, "params": model.num_params(),
        "tokens_seen": RECIPE_TRAIN.steps * RECIPE_BATCH * RECIPE_CONFIG["block_size"],
        "chars_per_token_train": round(chars_per_token, 4),
        "metrics": {"val_loss_nats_per_token": history.final_val_loss,
                    "train_seconds": round(wall1 - wall0, 1),
                    "train_cpu_seconds": round((cpu1.ru_utime + cpu1.ru_stime)
                                               - (cpu0.ru_utime + cpu0.ru_stime), 1),
                    "threads": torch.get_num_threads()},
    }
    return model.eval(), metadata


def load_gpt_bpe_shakespeare() -> tuple[GPT, ByteLevelBPE]:
    """The shipped BPE GPT (eval mode) and its tokenizer."""
    from ..hub import load_pretrained

    model = load_pretrained(RECIPE_NAME)
    return model, tokenizer_from_merges(model.checkpoint_metadata["bpe_merges"])


@torch.no_grad()
def score_token_model(model: torch.nn.Module, tokenizer: ByteLevelBPE, text: str, *,
                      block_size: int, batch_size: int = 32) -> tuple[float, int, int]:
    """Score a token-level LM on ``text`` in bits per character.

    The token ids are cut into windows of ``block_size + 1`` overlapping by one, as
    ``minillm.leaderboard.score_char_model`` does for characters, so every token after the first is
    predicted exactly once. Returns (bits per character, characters scored, tokens scored): the
    characters scored are those of every token but the first.
    """
    from ..leaderboard import bits_per_char

    ids = torch.tensor(tokenizer.encode_ordinary(text), dtype=torch.long)
    n_windows = (len(ids) - 1) // block_size
    if n_windows < 1:
        raise ValueError(f"text of {len(ids)} tokens is too short for one window of "
                         f"{block_size + 1} tokens")
    used = ids[:n_windows * block_size + 1]
    n_chars = len(tokenizer.decode(used[1:].tolist()))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for start in range(0, n_windows, batch_size):
            rows = range(start, min(start + batch_size, n_windows))
            x = torch.stack([used[r * block_size:(r + 1) * block_size] for r in rows]).to(device)
            y = torch.stack([used[r * block_size + 1:(r + 1) * block_size + 1] for r in rows]).to(device)
            logits = model(x)
            total += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum"))
    finally:
        model.train(was_training)
    return bits_per_char(total, n_chars), n_chars, n_windows * block_size


def score_gpt_bpe_shakespeare():
    """Leaderboard scorer: bits/char of the shipped BPE GPT on the Shakespeare test split."""
    from ..leaderboard import Score, test_text

    model, tokenizer = load_gpt_bpe_shakespeare()
    bpc, n_chars, n_tokens = score_token_model(model, tokenizer, test_text(),
                                               block_size=model.config.block_size)
    c = model.config
    return Score(bpc, n_chars, model.num_params(),
                 f"{c.n_layer} layers, width {c.n_embd}, context {c.block_size} BPE tokens "
                 f"(~{n_chars / n_tokens:.1f} chars each)")
