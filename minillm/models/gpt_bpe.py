"""The chapter-8 BPE model: a GPT over a 2,048-token byte-level BPE of Shakespeare (its tokenizer,
its size, and loading it). Its training recipe is in ``minillm.recipes``, its scorer in
``minillm.leaderboard``.

Chapter 8's character GPT sees 128 characters of context and must spend its capacity spelling.
Over byte-level BPE tokens (chapter 3) trained on the same training split, each token covers about
2.7 characters, so the same 128-position context spans ~350 characters and every training step
covers ~2.7× more text for almost the same compute. Scored in **bits per character** of the same
test text as every other leaderboard row (total nats of the test tokens / (characters covered ×
ln 2)), so the rows stay comparable.

Size: 6 layers, 8 heads, width 256, context 128 tokens (~5.3M parameters), AdamW with warmup and
cosine decay, batch 32, bf16 autocast where the CPU supports it.
"""

from __future__ import annotations

from ..tokenizers.gpt2 import ByteLevelBPE, bytes_to_unicode
from .gpt import GPT

RECIPE_NAME = "ch08-gpt-bpe-shakespeare"
BPE_VOCAB_SIZE = 2048
RECIPE_CONFIG = dict(vocab_size=BPE_VOCAB_SIZE, block_size=128, n_layer=6, n_head=8, n_embd=256)
RECIPE_TRAIN = dict(steps=2000, lr=1.5e-3, min_lr=1.5e-4, warmup_steps=100, weight_decay=0.1,
                   eval_every=250, eval_batches=20)
RECIPE_BATCH = 32


def train_bpe_tokenizer(text: str, vocab_size: int = BPE_VOCAB_SIZE) -> ByteLevelBPE:
    """The byte-level BPE of the recipe: learned on ``text`` (the training split), no special tokens."""
    return ByteLevelBPE.train(text, vocab_size, special_tokens=())


def tokenizer_from_merges(merges: list[list[str]]) -> ByteLevelBPE:
    """Rebuild the recipe's tokenizer from its merges (as stored in the checkpoint metadata)."""
    byte_encoder = bytes_to_unicode()
    names = [byte_encoder[b] for b in byte_encoder]
    for a, b in merges:
        if a + b not in names:  # as ByteLevelBPE.train and .truncate number them
            names.append(a + b)
    return ByteLevelBPE({t: i for i, t in enumerate(names)}, [tuple(m) for m in merges],
                        special_tokens=())


def load_gpt_bpe_shakespeare() -> tuple[GPT, ByteLevelBPE]:
    """The shipped BPE GPT (eval mode) and its tokenizer."""
    from ..hub import load_pretrained

    model = load_pretrained(RECIPE_NAME)
    return model, tokenizer_from_merges(model.checkpoint_metadata["bpe_merges"])
