"""The three pretraining paradigms on equal terms: encoder-only (masked LM), decoder-only (next token)
and encoder–decoder (span corruption), pretrained with the same parameter count on the same text with
the same budget, then compared on the same downstream tasks.

Raffel et al. (2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", §3.2–3.3) compare architectures and objectives at matched parameters or compute;
Wang et al. (2022, "What Language Model Architecture and Pretraining Objective Work Best for Zero-Shot
Generalization?") do it again for zero-shot use. This module is that experiment at toy scale:

* **One tokenizer** for all three: chapter 10's :class:`~minillm.tokenizers.t5_bpe.T5BPETokenizer`
  (4,096 ids) learned on the training splits of the course corpus. BERT's ``[MASK]`` is the sentinel
  ``<extra_id_0>`` (id 4095), GPT's document separator is ``</s>`` (the token stream already puts one
  after each source), T5 uses its sentinels as usual.
* **Three models of one size** (:func:`model_configs`, :func:`param_counts`): width 128, 4 heads,
  128 positions, tied input/output embeddings, plain GELU feed-forward everywhere, no dropout. BERT
  and GPT have 4 layers, T5 2 + 2; each ``d_ff`` is chosen so the totals agree within 0.1%.
* **Same data, same budget** (:func:`train_paradigm`): the same random 128-token windows (one
  generator drives the window starts of all three), batch 32, the same steps and AdamW schedule,
  fp32. Only the objective differs: MLM (15%, 80/10/10, :func:`minillm.mlm.mask_tokens`), next
  token, span corruption (15%, mean span 3). The metadata records how many tokens carry a loss and
  the training FLOPs: at equal parameters the encoder–decoder spends about half the FLOPs per
  window, since each token passes through only one of its two stacks.
* **Same downstream tasks** (:func:`compare_paradigms`): sentiment (Rotten Tomatoes), English→
  Spanish translation (chapter 6's pairs), and two zero-shot probes (next token, fill-in-the-middle).
  For sentiment the encoder–decoder is fine-tuned like BERT (mean-pooled encoder + linear head): the
  head is then identical for the two bidirectional models, so the comparison isolates what
  pretraining put into the encoder — and the ED pays for its equal parameter count with an encoder
  of half the depth (its decoder is not needed to classify). Text-to-text would use the decoder too
  but mixes in how fast a decoder learns to read its encoder, which was slow in chapter 10.

Shape letters: B batch, T sequence length, W window (128), C width, V vocabulary, N probe positions.
"""

from __future__ import annotations

import copy
import resource
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .validation import check_choice, check_int

PARADIGMS = ("ae", "ar", "ed")  # autoencoding (BERT), autoregressive (GPT), encoder-decoder (T5)
NAMES = {"ae": "encoder-only (MLM)", "ar": "decoder-only (next token)",
         "ed": "encoder-decoder (span corruption)"}
RECIPE_NAMES = {p: f"ch10-paradigm-{p}" for p in PARADIGMS}
RECIPE_VERSION = 1
PAD, EOS = 0, 1  # T5BPETokenizer's <pad> and </s>
IGNORE_INDEX = -100


@dataclass
class ParadigmConfig:
    """Sizes, data and budget shared by the three pretraining runs (the shipped recipes' values)."""

    vocab_size: int = 4096  # T5BPETokenizer: 3 specials + BPE + 100 sentinels
    d_model: int = 128  # C for all three
    n_heads: int = 4  # heads of 32
    positions: int = 128  # longest input (BERT/GPT learned positions, T5 decoder length)
    ae_layers: int = 4  # BERT blocks
    ar_layers: int = 4  # GPT blocks
    ed_layers: int = 2  # T5 encoder blocks = decoder blocks
    ae_d_ff: int = 492  # feed-forward widths that equalise the totals (see param_counts)
    ar_d_ff: int = 512
    ed_d_ff: int = 404
    window: int = 128  # W: tokens per pretraining window
    batch_size: int = 32  # windows per step
    steps: int = 140  # optimizer steps (same for all three): ~7 min for BERT/GPT on one slow thread
    lr: float = 2e-3  # AdamW peak
    min_lr: float = 2e-4  # cosine floor
    warmup_steps: int = 14
    eval_every: int = 70
    eval_batches: int = 4  # fixed validation windows (seed + 1), each paradigm on its own objective
    mlm_probability: float = 0.15  # BERT: per-token chance of being predicted
    noise_density: float = 0.15  # T5: share of tokens dropped
    mean_span: float = 3.0  # T5: mean dropped-span length
    seed: int = 0

    @classmethod
    def tiny(cls, **overrides) -> "ParadigmConfig":
        """A test size: width 32, 2 heads, windows of 32, a few steps."""
        return cls(**{**dict(d_model=32, n_heads=2, positions=128, ae_layers=2, ar_layers=2, ed_layers=1,
                             ae_d_ff=64, ar_d_ff=64, ed_d_ff=64, window=32, batch_size=4, steps=3,
                             warmup_steps=1, eval_every=3, eval_batches=1), **overrides})


# ----------------------------------------------------------------------------- models


def build_model(paradigm: str, cfg: ParadigmConfig | None = None) -> nn.Module:
    """A freshly initialised BERT (``ae``), GPT (``ar``) or T5 (``ed``) of the config's size."""
    from .models.bert import BertConfig, BertForMaskedLM
    from .models.gpt import GPT, GPTConfig
    from .models.t5 import T5Config, T5ForConditionalGeneration

    check_choice("paradigm", paradigm, PARADIGMS)
    c = cfg or ParadigmConfig()
    if paradigm == "ae":
        return BertForMaskedLM(BertConfig(
            vocab_size=c.vocab_size, hidden_size=c.d_model, num_hidden_layers=c.ae_layers,
            num_attention_heads=c.n_heads, intermediate_size=c.ae_d_ff, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, max_position_embeddings=c.positions, type_vocab_size=1,
            pad_token_id=PAD))
    if paradigm == "ar":
        return GPT(GPTConfig(vocab_size=c.vocab_size, block_size=c.positions, n_layer=c.ar_layers,
                             n_head=c.n_heads, n_embd=c.d_model, dropout=0.0, tie_weights=True))
    return T5ForConditionalGeneration(T5Config(
        vocab_size=c.vocab_size, d_model=c.d_model, d_kv=c.d_model // c.n_heads, d_ff=c.ed_d_ff,
        num_layers=c.ed_layers, num_decoder_layers=c.ed_layers, num_heads=c.n_heads,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gelu",
        tie_word_embeddings=True, dropout_rate=0.0, n_positions=c.positions))


def param_counts(cfg: ParadigmConfig | None = None) -> dict[str, int]:
    """Total parameters of each paradigm's model (a tied matrix counted once)."""
    return {p: sum(t.numel() for t in build_model(p, cfg).parameters()) for p in PARADIGMS}


def _path_params(paradigm: str, model: nn.Module) -> tuple[int, int]:
    """(params a source/input token passes through, params a target/decoder token passes through) as
    matmuls: lookup tables (positions, the embedding as input) excluded, the tied head included."""
    c = model.config
    named = dict(model.named_parameters())
    if paradigm == "ed":
        enc = sum(p.numel() for n, p in named.items() if n.startswith("encoder."))
        dec = sum(p.numel() for n, p in named.items() if n.startswith("decoder."))
        return enc, dec + c.vocab_size * c.d_model
    tables = ("embeddings.position_embeddings", "embeddings.token_type_embeddings", "transformer.wpe")
    n = sum(p.numel() for k, p in named.items() if not any(t in k for t in tables))
    return n, 0


# ----------------------------------------------------------------------------- data and objectives


class WindowBatches:
    """Calling it returns (B, W) random windows of ``stream``; the same seed gives the same windows,
    and each paradigm's own randomness (masks, spans) comes from a second generator, so the three
    runs see exactly the same text."""

    def __init__(self, paradigm: str, stream: torch.Tensor, cfg: ParadigmConfig, seed: int):
        self.paradigm = check_choice("paradigm", paradigm, PARADIGMS)
        self.stream, self.cfg = stream, cfg
        if len(stream) <= cfg.window:
            raise ValueError(f"the token stream must be longer than window={cfg.window}, got {len(stream)}")
        self.windows = torch.Generator().manual_seed(seed)
        self.noise = torch.Generator().manual_seed(seed + 10_000)

    def sample_windows(self) -> torch.Tensor:
        W = self.cfg.window
        starts = torch.randint(len(self.stream) - W + 1, (self.cfg.batch_size,), generator=self.windows)
        return torch.stack([self.stream[s:s + W] for s in starts.tolist()])  # (B, W)

    def __call__(self):
        return objective_batch(self.paradigm, self.sample_windows(), self.cfg, self.noise)


def objective_batch(paradigm: str, windows: torch.Tensor, cfg: ParadigmConfig,
                    generator: torch.Generator | None = None):
    """One paradigm's training batch from (B, W) windows: AE (inputs, labels) both (B, W), labels -100
    except at the chosen positions; AR (x, y) both (B, W-1); ED (input_ids, attention_mask, labels)."""
    from .mlm import mask_tokens
    from .models.t5_pretrain import pad_examples
    from .span_corruption import span_corrupt

    V = cfg.vocab_size
    if paradigm == "ae":
        return mask_tokens(windows, vocab_size=V, mask_token_id=V - 1, special_ids=(PAD,),
                           mlm_probability=cfg.mlm_probability, generator=generator)
    if paradigm == "ar":
        return windows[:, :-1], windows[:, 1:]  # (B, W-1) each
    examples = []
    for row in windows:
        inputs, targets = span_corrupt(row, vocab_size=V, noise_density=cfg.noise_density,
                                       mean_noise_span_length=cfg.mean_span, generator=generator)
        examples.append((inputs.tolist() + [EOS], targets.tolist() + [EOS]))
    return pad_examples(examples)


def objective_loss(paradigm: str):
    """``loss_fn(model, batch)`` of a paradigm's pretraining objective (for :func:`minillm.train.train`)."""
    from .models.t5_pretrain import t5_loss
    from .train import lm_loss

    check_choice("paradigm", paradigm, PARADIGMS)
    if paradigm == "ae":
        return lambda model, batch: model(batch[0], labels=batch[1]).loss
    return lm_loss if paradigm == "ar" else t5_loss


def _batch_stats(paradigm: str, batch, window: int, path: tuple[int, int]) -> dict[str, float]:
    """Per-window share of tokens carrying a loss and training FLOPs (6 × params × positions)."""
    if paradigm == "ae":
        inputs, labels = batch
        B, loss_tok, flops = inputs.size(0), int((labels != IGNORE_INDEX).sum()), 6 * path[0] * inputs.numel()
    elif paradigm == "ar":
        x, y = batch
        B, loss_tok, flops = x.size(0), int((y != IGNORE_INDEX).sum()), 6 * path[0] * x.numel()
    else:
        ids, mask, labels = batch
        B, loss_tok = ids.size(0), int((labels != IGNORE_INDEX).sum())
        flops = 6 * (path[0] * ids.numel() + path[1] * labels.numel())
    return {"loss_fraction": loss_tok / (B * window), "flops": flops}


def load_corpus(tokenizer=None, max_chars: int | None = None):
    """(tokenizer, train stream (N,), validation stream (M,)): chapter 10's tokenizer learned on the
    training splits when none is given (deterministic, ~15 s)."""
    from .models.t5_pretrain import corpus_texts, token_stream
    from .tokenizers.t5_bpe import T5BPETokenizer

    texts = corpus_texts("train", max_chars)
    if tokenizer is None:
        tokenizer = T5BPETokenizer.train(list(texts.values()), 4096)
    return (tokenizer, token_stream(tokenizer, texts),
            token_stream(tokenizer, corpus_texts("validation", max_chars)))


def validation_batches(paradigm: str, val_ids: torch.Tensor, cfg: ParadigmConfig) -> list:
    """The fixed validation batches (seed + 1): the same windows for all three paradigms."""
    batches = WindowBatches(paradigm, val_ids, cfg, cfg.seed + 1)
    return [batches() for _ in range(cfg.eval_batches)]


def train_paradigm(paradigm: str, progress: bool = True, *, cfg: ParadigmConfig | None = None,
                   corpus: tuple | None = None, max_chars: int | None = None) -> tuple[nn.Module, dict]:
    """Pretrain one paradigm's model with its objective on the shared windows (CPU, fp32).

    Args:
        paradigm: ``"ae"``, ``"ar"`` or ``"ed"``.
        cfg: sizes and budget (default: the shipped recipe's :class:`ParadigmConfig`).
        corpus: ``(tokenizer, train_ids, val_ids)`` from :func:`load_corpus` (default: built here).
        max_chars: cut each corpus source (tests).
    """
    from .device import seed_everything
    from .train import train

    check_choice("paradigm", paradigm, PARADIGMS)
    cfg = cfg or ParadigmConfig()
    tokenizer, train_ids, val_ids = corpus or load_corpus(max_chars=max_chars)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} ids but cfg.vocab_size={cfg.vocab_size}")
    seed_everything(cfg.seed)
    model = build_model(paradigm, cfg)
    val = validation_batches(paradigm, val_ids, cfg)
    tcfg = dict(steps=cfg.steps, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps,
                eval_every=cfg.eval_every, eval_batches=cfg.eval_batches, autocast=None)
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    history = train(model, WindowBatches(paradigm, train_ids, cfg, cfg.seed), val_data=val,
                    loss_fn=objective_loss(paradigm), progress=progress, device=torch.device("cpu"), **tcfg)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    path = _path_params(paradigm, model)
    stats = [_batch_stats(paradigm, b, cfg.window, path) for b in val]  # same distribution as training
    per_step = {k: sum(s[k] for s in stats) / len(stats) for k in ("loss_fraction", "flops")}
    metadata = {
        "paradigm": paradigm, "tokenizer": tokenizer.to_dict(), "paradigm_config": asdict(cfg),
        "history": history.to_dict(), "train_config": tcfg, "params": sum(p.numel() for p in model.parameters()),
        "path_params": list(path), "corpus_tokens": len(train_ids),
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.window,  # the same text for all three
        "loss_fraction": round(per_step["loss_fraction"], 4),  # of the window's tokens, per step
        "train_flops": float(f"{per_step['flops'] * cfg.steps:.4g}"),  # matmuls only, no attention scores
        "metrics": {"val_loss": history.final_val_loss,
                    "train_seconds": round(time.perf_counter() - wall0, 1),
                    "train_cpu_seconds": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
                    "threads": torch.get_num_threads()},
    }
    return model.eval(), metadata


def load_paradigms() -> tuple[dict[str, nn.Module], Any]:
    """The three shipped pretrained models (eval mode) and their shared tokenizer."""
    from .hub import load_pretrained
    from .tokenizers.t5_bpe import T5BPETokenizer

    models = {p: load_pretrained(RECIPE_NAMES[p]) for p in PARADIGMS}
    return models, T5BPETokenizer.from_dict(models["ae"].checkpoint_metadata["tokenizer"])


# ----------------------------------------------------------------------------- zero-shot probes


def probe_positions(stream: torch.Tensor, n: int = 1000, side: int = 32, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` fixed positions of ``stream``: left contexts (N, side), hidden tokens (N,), right (N, side)."""
    n, side = check_int("n", n, low=1), check_int("side", side, low=1)
    if len(stream) < 2 * side + 2:
        raise ValueError(f"the stream must hold at least 2*side+2={2 * side + 2} tokens, got {len(stream)}")
    pos = torch.randint(side, len(stream) - side, (n,), generator=torch.Generator().manual_seed(seed))
    offsets = torch.arange(side)
    return stream[pos[:, None] - side + offsets], stream[pos], stream[pos[:, None] + 1 + offsets]


@torch.no_grad()
def zero_shot_predict(paradigm: str, model: nn.Module, left: torch.Tensor,
                      right: torch.Tensor | None = None, batch_size: int = 250) -> torch.Tensor:
    """Top-1 guess (N,) for the token after ``left`` (N, L) — or between ``left`` and ``right`` —
    without fine-tuning: AR the next-token argmax (``right`` unused: it cannot look ahead), AE a
    ``[MASK]`` (sentinel 0) at the gap, ED sentinel 0 at the gap and the first token it decodes after
    writing that sentinel."""
    check_choice("paradigm", paradigm, PARADIGMS)
    model.eval()
    V = model.config.vocab_size
    out = []
    for i in range(0, len(left), batch_size):
        lt = left[i:i + batch_size]
        B = lt.size(0)
        gap = torch.full((B, 1), V - 1, dtype=torch.long)
        rt = right[i:i + batch_size] if right is not None else lt[:, :0]
        if paradigm == "ar":
            h = model.hidden_states(lt)[:, -1]  # (B, C)
            logits = model.lm_head(h)
        elif paradigm == "ae":
            h = model.bert(torch.cat([lt, gap, rt], 1)).last_hidden_state[:, lt.size(1)]  # (B, C)
            logits = model.cls.predictions(h)  # (B, V): the MLM head at the gap only
        else:
            ids = torch.cat([lt, gap, rt, torch.full((B, 1), EOS)], 1)  # (B, S)
            dec = torch.cat([torch.full((B, 1), model.config.decoder_start_token_id), gap], 1)  # (B, 2)
            logits = model(ids, decoder_input_ids=dec).logits[:, 1]  # (B, V)
        out.append(logits.argmax(-1))
    return torch.cat(out)


# ----------------------------------------------------------------------------- fine-tuning


class Classifier(nn.Module):
    """A pretrained backbone + linear head: AE and ED mean-pool the (encoder) states over real tokens,
    AR reads the state of the last real token (the only one that has seen the whole text)."""

    def __init__(self, paradigm: str, backbone: nn.Module, num_labels: int = 2):
        super().__init__()
        self.paradigm, self.backbone = paradigm, backbone
        self.head = nn.Linear(_width(backbone), num_labels)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != PAD).long()  # (B, T)
        if self.paradigm == "ar":
            h = self.backbone.hidden_states(ids)  # right padding + causal: padding never seen
            return self.head(h[torch.arange(ids.size(0)), mask.sum(1) - 1])  # (B, labels)
        if self.paradigm == "ae":
            h = self.backbone.bert(ids, attention_mask=mask).last_hidden_state  # (B, T, C)
        else:
            dec = torch.zeros(ids.size(0), 1, dtype=torch.long)
            h = self.backbone(ids, attention_mask=mask, decoder_input_ids=dec).encoder_last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1))  # (B, labels)


def _width(model: nn.Module) -> int:
    c = model.config
    return getattr(c, "hidden_size", None) or getattr(c, "n_embd", None) or c.d_model


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r)
    return out


def _sampler(items: list, batch_size: int, collate, seed: int):
    g = torch.Generator().manual_seed(seed)
    return lambda: collate([items[j] for j in torch.randint(len(items), (batch_size,), generator=g).tolist()])


def _ar_pair(en: list[int], es: list[int]) -> tuple[list[int], list[int]]:
    """"english </s> spanish </s>" as (x, y): y is -100 until the first Spanish token."""
    seq = en + [EOS] + es + [EOS]
    return seq[:-1], [IGNORE_INDEX] * len(en) + seq[len(en) + 1:]


def _ar_collate(pairs):
    return _pad([x for x, _ in pairs], PAD), _pad([y for _, y in pairs], IGNORE_INDEX)


@torch.no_grad()
def _ar_translate(model: nn.Module, sources: list[list[int]], max_new_tokens: int,
                  progress: bool = False) -> list[list[int]]:
    """Greedy continuation of "english </s>", prompts of equal length batched (no padding needed)."""
    from tqdm.auto import tqdm

    out: list[list[int]] = [[] for _ in sources]
    by_len: dict[int, list[int]] = {}
    for i, s in enumerate(sources):
        by_len.setdefault(len(s) + 1, []).append(i)
    for L, idx in tqdm(by_len.items(), desc="generate (greedy)", disable=not progress, leave=False):
        prompt = torch.tensor([sources[i] + [EOS] for i in idx])  # (B, L)
        new = model.generate(prompt, min(max_new_tokens, model.config.block_size - L))[:, L:]
        for i, row in zip(idx, new.tolist()):
            out[i] = row[:row.index(EOS)] if EOS in row else row
    return out


def compare_paradigms(models: dict[str, nn.Module], tokenizer: Any, *, finetune_steps: int,
                      progress: bool = True, seed: int = 0, batch_size: int = 32, lr: float = 1e-3,
                      sentiment_limit: int | None = None, translation_limit: int | None = None,
                      probe_n: int = 1000, max_len: int = 64) -> list[dict]:
    """Fine-tune and probe the three pretrained models identically; one row per paradigm.

    Args:
        models: ``{"ae": BertForMaskedLM, "ar": GPT, "ed": T5ForConditionalGeneration}`` (copied,
            never modified).
        tokenizer: their shared :class:`~minillm.tokenizers.t5_bpe.T5BPETokenizer`.
        finetune_steps: AdamW steps (batch ``batch_size``, peak ``lr``) of each fine-tuning run.
        sentiment_limit / translation_limit: score only the first test examples (None: all).
        probe_n: zero-shot positions of the validation text (32 tokens either side).
        max_len: tokens kept per review / per translation side.
    """
    from tqdm.auto import tqdm

    from .data import load_rotten_tomatoes
    from .device import seed_everything
    from .models.seq2seq import prepare_en_es
    from .models.t5_pretrain import (corpus_texts, generate_texts, pad_examples, t5_loss,
                                     token_stream, translation_bleu)
    from .train import classification_loss, evaluate, lm_loss, train

    if not isinstance(models, dict) or set(models) != set(PARADIGMS):
        raise ValueError(f"models must be a dict with keys {list(PARADIGMS)}, got "
                         f"{sorted(models) if isinstance(models, dict) else type(models).__name__}")
    finetune_steps = check_int("finetune_steps", finetune_steps, low=1)
    enc = lambda text: tokenizer.encode(text, add_eos=False)[:max_len - 1]  # noqa: E731
    tc = dict(steps=finetune_steps, lr=lr, min_lr=lr / 10, warmup_steps=max(1, finetune_steps // 10),
              eval_every=0, autocast=None, progress=progress, device=torch.device("cpu"))
    rows = {p: {"paradigm": p, "model": NAMES[p], "params": sum(t.numel() for t in m.parameters())}
            for p, m in models.items()}
    for p, m in models.items():
        meta = getattr(m, "checkpoint_metadata", {})
        rows[p].update(pretrain_tokens=meta.get("tokens_seen"), pretrain_flops=meta.get("train_flops"),
                       pretrain_loss_fraction=meta.get("loss_fraction"),
                       pretrain_val_loss_own_objective=meta.get("metrics", {}).get("val_loss"))

    # -- zero-shot probes on the validation text: the same positions for all three
    val_ids = token_stream(tokenizer, corpus_texts("validation"))
    left, target, right = probe_positions(val_ids, probe_n, 32, seed)
    t0 = time.process_time()
    for p in tqdm(PARADIGMS, desc="zero-shot probes", disable=not progress):
        nxt = zero_shot_predict(p, models[p], left)
        fim = zero_shot_predict(p, models[p], left, right)
        rows[p].update(zero_shot_next_token_acc=round(float((nxt == target).float().mean()), 4),
                       zero_shot_fill_middle_acc=round(float((fim == target).float().mean()), 4),
                       probe_n=probe_n)
    vcfg = ParadigmConfig(vocab_size=tokenizer.vocab_size)
    ar_val = validation_batches("ar", val_ids, vcfg)
    rows["ar"]["next_token_val_loss"] = round(evaluate(models["ar"], ar_val, loss_fn=lm_loss, autocast=None), 4)
    for p in ("ae", "ed"):
        rows[p]["next_token_val_loss"] = None
    seconds = {"probes": time.process_time() - t0}

    # -- sentiment: the same steps, batch, lr; accuracy on the test split
    rt = load_rotten_tomatoes()
    train_rt = [(enc(x.text) + [EOS], x.label) for x in rt.train]
    test_rt = [(enc(x.text) + [EOS], x.label) for x in rt.test][:sentiment_limit]
    collate = lambda b: (_pad([i for i, _ in b], PAD), torch.tensor([y for _, y in b]))  # noqa: E731
    t0 = time.process_time()
    for p in PARADIGMS:
        seed_everything(seed)
        clf = Classifier(p, copy.deepcopy(models[p]))
        train(clf, _sampler(train_rt, batch_size, collate, seed), loss_fn=classification_loss, **tc)
        clf.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(test_rt), 128):
                ids, y = collate(test_rt[i:i + 128])
                correct += int((clf(ids).argmax(-1) == y).sum())
        rows[p].update(sentiment_accuracy=round(correct / len(test_rt), 4), sentiment_n=len(test_rt))

    # -- English -> Spanish: AR as "english </s> spanish </s>", ED seq2seq; greedy; BLEU on test
    pairs = prepare_en_es().pairs  # chapter 6's pairs (at most 20 words a side), as task_texts uses
    train_pairs = [(enc(q.en), enc(q.es)) for q in pairs["train"]]
    val_pairs = [(enc(q.en), enc(q.es)) for q in pairs["validation"]][:256]
    test_pairs = pairs["test"][:translation_limit]
    refs = [q.es for q in test_pairs]
    seconds["sentiment"] = time.process_time() - t0
    t0 = time.process_time()
    rows["ae"].update(bleu_en_es=None, translation_val_loss=None,
                      bleu_note="not applicable: an encoder-only model cannot generate left to right")
    for p in ("ar", "ed"):
        seed_everything(seed)
        model = copy.deepcopy(models[p])
        if p == "ar":
            items, collate_fn, loss = [_ar_pair(e, s) for e, s in train_pairs], _ar_collate, lm_loss
            val = [_ar_collate([_ar_pair(e, s) for e, s in val_pairs[i:i + 64]]) for i in range(0, len(val_pairs), 64)]
        else:
            items, collate_fn, loss = [(e + [EOS], s + [EOS]) for e, s in train_pairs], pad_examples, t5_loss
            val = [pad_examples([(e + [EOS], s + [EOS]) for e, s in val_pairs[i:i + 64]])
                   for i in range(0, len(val_pairs), 64)]
        train(model, _sampler(items, batch_size, collate_fn, seed), loss_fn=loss, **tc)
        model.eval()
        if p == "ar":
            new = _ar_translate(model, [enc(q.en) for q in test_pairs], 48, progress)
            hyps = [tokenizer.decode(h) for h in new]
        else:
            hyps = generate_texts(model, tokenizer, [q.en for q in test_pairs], max_new_tokens=48,
                                  progress=progress)
        rows[p].update(bleu_en_es=round(translation_bleu(hyps, refs), 2), bleu_n=len(test_pairs),
                       translation_val_loss=round(evaluate(model, val, loss_fn=loss, autocast=None), 4),
                       translation_sample=hyps[0])
    seconds["translation"] = time.process_time() - t0
    for r in rows.values():  # CPU seconds of each stage, all three paradigms together
        r.update(finetune_steps=finetune_steps, **{f"cpu_seconds_{k}": round(v, 1) for k, v in seconds.items()})
    return [rows[p] for p in PARADIGMS]


def plot_paradigms(rows: list[dict]):
    """Grouped bars of :func:`compare_paradigms` rows: accuracies (left), BLEU (right); returns the figure."""
    import matplotlib.pyplot as plt

    acc = [("sentiment_accuracy", "sentiment"), ("zero_shot_next_token_acc", "zero-shot\nnext token"),
           ("zero_shot_fill_middle_acc", "zero-shot\nfill middle")]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(rows)
    top = max([1.0] + [1.25 * (r.get("bleu_en_es") or 0) for r in rows])
    for k, r in enumerate(rows):
        xs = [i + (k - (len(rows) - 1) / 2) * width for i in range(len(acc))]
        ax.bar(xs, [r.get(m) or 0 for m, _ in acc], width, label=r["model"])
        bleu = r.get("bleu_en_es")
        bx.bar(k, bleu or 0, 0.7, color=f"C{k}")
        bx.text(k, (bleu or 0) + 0.02 * top, "n/a" if bleu is None else f"{bleu:.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(acc)), [n for _, n in acc])
    ax.set(ylabel="accuracy", ylim=(0, 1))
    bx.set_ylim(0, top)
    ax.legend(fontsize=8, loc="upper right")
    bx.set_xticks(range(len(rows)), [r["paradigm"] for r in rows])
    bx.set_title("BLEU en→es (greedy)")
    fig.tight_layout()
    return fig
