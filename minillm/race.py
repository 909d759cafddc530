"""Chapter 11's race: chapter 8's GPT against the modern decoder on equal terms.

Two decoders of the same parameter count (within 1%), the same 2,048-token byte-level BPE of
Shakespeare (chapter 8's, taken from the shipped ``ch08-gpt-bpe-shakespeare``), the same random
training windows in the same order, the same optimizer, learning-rate schedule and batch — and the
same **CPU-time budget**. Only the architecture differs:

| | GPT (chapter 8) | modern decoder (Llama recipe) |
|---|---|---|
| norm | LayerNorm (with bias) | RMSNorm |
| positions | learned table added to the input | RoPE inside attention |
| feed-forward | GELU MLP, 4·C | SwiGLU, ~8/3·C (three matrices, so equal parameters) |
| biases | everywhere | none |

A faster architecture gets more steps out of the same budget, so it is timed, not counted: each
model first runs :data:`CALIBRATION_STEPS` steps to measure its CPU seconds per step, then gets as
many steps as fit the budget (the cosine schedule is planned over them). The two train in
alternating chunks, so both see the same machine (another process on the CPU slows both alike).
Every ``eval_every`` steps the validation text is scored in **bits per character** (total nats of
its tokens / (characters × ln 2), as the leaderboard scores), recorded against the model's CPU
minutes so far: :func:`plot_race` draws those curves.

Shape letters: B batch, T context (tokens), V vocabulary.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .validation import check_float, check_int

__all__ = ["RaceConfig", "race_models", "run_race", "plot_race", "time_to_quality", "train_race", "RECIPE_NAME",
           "RECIPE_VERSION"]

CALIBRATION_STEPS = 5
RECIPE_NAME = "ch11-race"
RECIPE_VERSION = 1
RECIPE_BUDGET_CPU_MINUTES = 7.0  # per model, on one thread


@dataclass
class RaceConfig:
    budget_cpu_minutes: float = 6.0  # per model
    block_size: int = 128  # context, tokens
    batch_size: int = 16
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 192
    lr: float = 2e-3
    min_lr: float = 2e-4
    warmup_steps: int = 30
    weight_decay: float = 0.1
    eval_every: int = 50
    eval_tokens: int = 16_384  # validation tokens scored at each evaluation
    chunk_steps: int = 10  # steps one model runs before the other takes a turn
    seed: int = 0

    def __post_init__(self) -> None:
        check_float("budget_cpu_minutes", self.budget_cpu_minutes, low=0, low_inclusive=False)
        for name in ("block_size", "batch_size", "n_layer", "n_head", "n_embd", "eval_every",
                     "eval_tokens", "chunk_steps"):
            check_int(name, getattr(self, name), low=1)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")


def _swiglu_width(n_embd: int, target_params: int, build) -> int:
    """The SwiGLU inner width (a multiple of 8) whose model has the parameter count closest to
    ``target_params``."""
    best = None
    for inner in range(8, 8 * n_embd + 1, 8):
        n = build(inner).num_params()
        if best is None or abs(n - target_params) < abs(best[1] - target_params):
            best = (inner, n)
        if n > target_params:
            break
    return best[0]


def race_models(vocab_size: int, config: RaceConfig) -> dict[str, nn.Module]:
    """{"GPT (ch. 8)": GPT, "modern (Llama)": LlamaForCausalLM}, equal parameters within 1%, both
    with tied input/output embeddings and seeded the same way."""
    from .models.gpt import GPT, GPTConfig
    from .models.llama import LlamaConfig, LlamaForCausalLM

    c = config
    torch.manual_seed(c.seed)
    gpt = GPT(GPTConfig(vocab_size=vocab_size, block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head,
                        n_embd=c.n_embd, dropout=0.0))

    def llama(inner: int) -> LlamaForCausalLM:
        return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=c.n_embd, intermediate_size=inner,
                                            num_hidden_layers=c.n_layer, num_attention_heads=c.n_head,
                                            max_position_embeddings=4 * c.block_size, tie_word_embeddings=True))

    inner = _swiglu_width(c.n_embd, gpt.num_params(), llama)
    torch.manual_seed(c.seed)
    modern = llama(inner)
    if abs(modern.num_params() - gpt.num_params()) > 0.01 * gpt.num_params():
        raise RuntimeError(f"could not match parameters: GPT {gpt.num_params():,}, modern {modern.num_params():,}")
    return {"GPT (ch. 8)": gpt, "modern (Llama)": modern}


def _windows(ids: torch.Tensor, n: int, T: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(len(ids) - T - 1, (n,), generator=g)
    x = torch.stack([ids[s:s + T] for s in starts.tolist()])  # (B, T)
    y = torch.stack([ids[s + 1:s + T + 1] for s in starts.tolist()])
    return x, y


@torch.no_grad()
def _val_bits_per_char(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_chars: int) -> float:
    model.eval()
    nats = sum(float(F.cross_entropy(model(x[i:i + 32]).flatten(0, 1), y[i:i + 32].flatten(), reduction="sum"))
               for i in range(0, len(x), 32))
    model.train()
    return nats / (n_chars * math.log(2))


@dataclass
class _Runner:
    """One model's training state: its optimizer, planned steps, and curve."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    batches: torch.Generator
    steps: int = 0
    planned: int = 0
    cpu_seconds: float = 0.0
    curve: list[dict] = field(default_factory=list)


def run_race(config: RaceConfig | None = None, *, progress: bool = True) -> tuple[dict, dict[str, nn.Module]]:
    """Train both :func:`race_models` under one CPU-time budget each. Returns (record, models): the
    record is JSON-able — the config, each model's parameters, steps, seconds per step and curve of
    {"step", "cpu_minutes", "val_bpc"} (validation text of the Shakespeare split)."""
    from tqdm.auto import tqdm

    from .data import load_shakespeare
    from .models.gpt_bpe import load_gpt_bpe_shakespeare
    from .train import get_lr, make_optimizer

    c = config or RaceConfig()
    _, tokenizer = load_gpt_bpe_shakespeare()
    text = load_shakespeare()
    train_ids = torch.tensor(tokenizer.encode_ordinary(text["train"]), dtype=torch.long)
    val_ids = torch.tensor(tokenizer.encode_ordinary(text["validation"]), dtype=torch.long)
    n_val = min(c.eval_tokens // c.block_size, (len(val_ids) - 1) // c.block_size)
    vx = val_ids[:n_val * c.block_size].view(n_val, c.block_size)
    vy = val_ids[1:n_val * c.block_size + 1].view(n_val, c.block_size)
    val_chars = len(tokenizer.decode(vy.flatten().tolist()))
    vocab = tokenizer.vocab_size
    runners = [_Runner(name, m, make_optimizer(m, c.lr, c.weight_decay), torch.Generator().manual_seed(c.seed))
               for name, m in race_models(vocab, c).items()]

    def step(r: _Runner) -> None:
        x, y = _windows(train_ids, c.batch_size, c.block_size, r.batches)  # same windows for both
        lr = get_lr(r.steps, max_lr=c.lr, warmup_steps=c.warmup_steps, total_steps=max(r.planned, r.steps + 1),
                    min_lr=c.min_lr)
        for group in r.optimizer.param_groups:
            group["lr"] = lr
        t0 = time.process_time()
        loss = F.cross_entropy(r.model(x).flatten(0, 1), y.flatten())
        r.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(r.model.parameters(), 1.0)
        r.optimizer.step()
        r.cpu_seconds += time.process_time() - t0
        r.steps += 1
        if r.steps % c.eval_every == 0 or r.steps == r.planned:
            r.curve.append({"step": r.steps, "cpu_minutes": round(r.cpu_seconds / 60, 3),
                            "val_bpc": round(_val_bits_per_char(r.model, vx, vy, val_chars), 4)})

    for r in runners:  # calibrate: CPU seconds per step → the steps the budget buys
        r.curve.append({"step": 0, "cpu_minutes": 0.0, "val_bpc": round(_val_bits_per_char(r.model, vx, vy, val_chars), 4)})
        r.planned = 10 ** 9
        for _ in range(CALIBRATION_STEPS):
            step(r)
        r.planned = max(CALIBRATION_STEPS + 1, int(c.budget_cpu_minutes * 60 / (r.cpu_seconds / r.steps)))
    bar = tqdm(total=sum(r.planned for r in runners), initial=sum(r.steps for r in runners),
               desc="race", disable=not progress)
    while any(r.steps < r.planned for r in runners):
        for r in runners:  # alternate chunks: both models see the same machine
            for _ in range(min(c.chunk_steps, r.planned - r.steps)):
                step(r)
                bar.update(1)
    bar.close()
    record = {"config": asdict(c), "val_chars": val_chars, "threads": torch.get_num_threads(),
            "models": {r.name: {"params": r.model.num_params(), "steps": r.steps,
                                "cpu_seconds": round(r.cpu_seconds, 1),
                                "seconds_per_step": round(r.cpu_seconds / r.steps, 4),
                                "tokens_seen": r.steps * c.batch_size * c.block_size,
                                "final_val_bpc": r.curve[-1]["val_bpc"], "curve": r.curve}
                       for r in runners}}
    return record, {r.name: r.model.eval() for r in runners}


def train_race(progress: bool = True) -> tuple[nn.Module, dict]:
    """The recipe ``ch11-race``: :func:`run_race` with the default config and a budget of
    :data:`RECIPE_BUDGET_CPU_MINUTES` per model; ships the modern decoder, the whole race in its
    metadata (``metadata["race"]``)."""
    from .device import seed_everything

    seed_everything(0)
    record, models = run_race(RaceConfig(budget_cpu_minutes=RECIPE_BUDGET_CPU_MINUTES), progress=progress)
    modern = models["modern (Llama)"]
    return modern, {"race": record, "params": modern.num_params(),
                    "tokens_seen": record["models"]["modern (Llama)"]["tokens_seen"],
                    "metrics": {"val_bpc": record["models"]["modern (Llama)"]["final_val_bpc"],
                                "gpt_val_bpc": record["models"]["GPT (ch. 8)"]["final_val_bpc"]}}


def time_to_quality(curve: list[dict], target_bpc: float) -> float | None:
    """The CPU minutes at which a race curve first reaches ``target_bpc`` (linear interpolation between
    the two evaluations around it), or None if it never does."""
    check_float("target_bpc", target_bpc, low=0, low_inclusive=False)
    for before, after in zip(curve, curve[1:]):
        if after["val_bpc"] <= target_bpc:
            if before["val_bpc"] <= target_bpc:
                return before["cpu_minutes"]
            share = (before["val_bpc"] - target_bpc) / (before["val_bpc"] - after["val_bpc"])
            return before["cpu_minutes"] + share * (after["cpu_minutes"] - before["cpu_minutes"])
    return curve[0]["cpu_minutes"] if curve and curve[0]["val_bpc"] <= target_bpc else None


def plot_race(record: dict, ax=None):
    """Validation bits/char against CPU minutes, one curve per model; returns the axes."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 4))[1]
    for name, m in record["models"].items():
        curve = m["curve"][1:]  # skip the untrained point, it squashes the axis
        ax.plot([p["cpu_minutes"] for p in curve], [p["val_bpc"] for p in curve], marker=".",
                label=f"{name}: {m['params'] / 1e6:.2f}M params, {m['steps']} steps, "
                      f"{m['seconds_per_step']:.2f} s/step")
    ax.set(xlabel="CPU minutes (1 thread)" if record.get("threads") == 1 else "CPU minutes",
           ylabel="validation bits per character",
           title="same parameters, data and budget: GPT vs the Llama recipe")
    ax.legend(fontsize=8)
    return ax
