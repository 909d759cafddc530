"""The BPE GPT recipe's pieces: its tokenizer rebuilt from stored merges, and bits-per-character
scoring of a token-level model equal to the character scorer when tokens are characters."""

from __future__ import annotations

import torch

from minillm.data import load_shakespeare
from minillm.leaderboard import score_char_model, score_token_model
from minillm.models.gpt import GPT, GPTConfig
from minillm.models.gpt_bpe import tokenizer_from_merges, train_bpe_tokenizer


def test_tokenizer_round_trips_through_its_merges():
    text = load_shakespeare().train[:200_000]
    tok = train_bpe_tokenizer(text, vocab_size=300)
    rebuilt = tokenizer_from_merges([list(m) for m in tok.merges])
    sample = load_shakespeare().validation[:20_000]
    assert rebuilt.encode_ordinary(sample) == tok.encode_ordinary(sample)
    assert rebuilt.decode(tok.encode_ordinary(sample)) == sample
    assert len(rebuilt) == len(tok) == 300


def test_token_scoring_equals_character_scoring_when_tokens_are_bytes():
    # With no merges a byte-level BPE token is one byte, and on ASCII text one character: the
    # token scorer must then give exactly the character scorer's bits/char on the same model.
    tok = tokenizer_from_merges([])
    text = "".join(ch for ch in load_shakespeare().test[:6000] if ord(ch) < 128)
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(vocab_size=256, block_size=32)).eval()
    bpc, n_chars, n_tokens = score_token_model(model, tok, text, block_size=32, batch_size=7)
    ref = score_char_model(model, tok.encode_ordinary, block_size=32, text=text, batch_size=7)
    assert n_chars == ref.n_chars == n_tokens
    assert abs(bpc - ref.bpc) < 1e-9


def test_bpe_covers_several_characters_per_token():
    text = load_shakespeare()
    tok = train_bpe_tokenizer(text.train[:500_000], vocab_size=1024)
    sample = text.validation[:50_000]
    assert len(sample) / len(tok.encode_ordinary(sample)) > 2.0


def test_shipped_bpe_gpt_reproduces_its_recorded_validation_loss():
    from minillm.hub import load_pretrained, shipped_path
    from minillm.models.gpt_bpe import RECIPE_BATCH, RECIPE_TRAIN
    from minillm.train import evaluate, sequential_lm_batches

    model = load_pretrained("ch08-gpt-bpe-shakespeare", progress=False)
    assert model.checkpoint_source == str(shipped_path("ch08-gpt-bpe-shakespeare"))
    meta = model.checkpoint_metadata
    tok = tokenizer_from_merges(meta["bpe_merges"])
    assert len(tok) == model.config.vocab_size == 2048
    val = torch.tensor(tok.encode_ordinary(load_shakespeare().validation))
    batches = sequential_lm_batches(val, model.config.block_size, RECIPE_BATCH,
                                    max_batches=RECIPE_TRAIN["eval_batches"])
    loss = evaluate(model, batches, autocast=None)  # fp32 here; recorded under bf16 autocast
    assert abs(loss - meta["metrics"]["val_loss_nats_per_token"]) < 2e-3


def test_shipped_bpe_gpt_beats_every_earlier_leaderboard_row():
    # issue 10's story: the chapter-8 Transformer, given BPE tokens, beats the best counting model
    from minillm.leaderboard import ROWS, score_gpt_bpe_shakespeare
    from minillm.models.gpt_bpe import RECIPE_CONFIG

    bpe = score_gpt_bpe_shakespeare()
    best_ngram = min(row.scorer().bpc for row in ROWS if row.chapter == 1)
    assert bpe.recipe == "ch08-gpt-bpe-shakespeare"
    assert bpe.params == GPT(GPTConfig(**RECIPE_CONFIG)).num_params()
    assert bpe.bpc < best_ngram, (bpe.bpc, best_ngram)
