"""One plain training function used by every chapter.

``train`` runs AdamW with a warmup + cosine learning-rate schedule (``get_lr``, a pure function),
gradient accumulation, gradient clipping, mixed precision (autocast), periodic evaluation and a
progress bar, and returns a :class:`History` that ``history.plot()`` turns into a loss curve.
A NaN or infinite loss stops training with :class:`NonFiniteLossError` saying where it happened.
A model wrapped in ``DistributedDataParallel`` or sharded by FSDP2's ``fully_shard`` trains
data-parallel (see :mod:`minillm.distributed`).

Batches are whatever the loss function understands; the default ``lm_loss`` expects ``(x, y)``
with integer tensors of shape (B, T) and a model returning logits (B, T, V). Shape letters:
B batch, T time (sequence length), V vocabulary.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .device import autocast as autocast_ctx
from .device import autocast_dtype, check_device
from .validation import check_bool, check_float, check_int, check_tensor, describe

Batch = Any
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
BatchSource = Callable[[], Batch] | Iterable[Batch]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss (or gradient norm)."""


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train`. Defaults suit small models on a CPU."""

    steps: int = 1000  # optimizer steps (each = accum_steps micro-batches)
    lr: float = 1e-3  # peak learning rate, reached after warmup
    min_lr: float | None = None  # floor of the cosine decay; None = lr / 10
    warmup_steps: int = 50  # linear warmup from lr/warmup_steps to lr
    weight_decay: float = 0.1  # AdamW decay, applied to matrices only (not biases/norms)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    grad_clip: float | None = 1.0  # clip the global gradient norm; None = off
    accum_steps: int = 1  # micro-batches per optimizer step (gradient accumulation)
    eval_every: int = 100  # evaluate every this many steps (and at the end); 0 = never
    eval_batches: int = 20  # validation batches per evaluation
    autocast: Any = "auto"  # "auto" (bf16 where fast), None (fp32), or a torch dtype
    compile: bool = False  # torch.compile the model (rarely worth it on CPU)
    progress: bool = True  # show a tqdm progress bar
    patience: int | None = None  # early stopping: stop after this many evaluations without a new best

    def __post_init__(self) -> None:
        self.steps = check_int("steps", self.steps, low=1)
        self.lr = check_float("lr", self.lr, low=0, low_inclusive=False)
        self.min_lr = check_float("min_lr", self.min_lr, low=0, high=self.lr, allow_none=True)
        self.warmup_steps = check_int("warmup_steps", self.warmup_steps, low=0)
        self.weight_decay = check_float("weight_decay", self.weight_decay, low=0)
        self.betas = check_betas(self.betas)
        # 0 would stop training silently (every update scaled to nothing): use None to turn it off
        self.grad_clip = check_float("grad_clip", self.grad_clip, low=0, low_inclusive=False,
                                     allow_none=True)
        self.accum_steps = check_int("accum_steps", self.accum_steps, low=1)
        self.eval_every = check_int("eval_every", self.eval_every, low=0)
        self.eval_batches = check_int("eval_batches", self.eval_batches, low=1)
        self.autocast = check_autocast("autocast", self.autocast)
        self.compile = check_bool("compile", self.compile)
        self.progress = check_bool("progress", self.progress)
        self.patience = check_int("patience", self.patience, low=1, allow_none=True)


def check_betas(betas: Any, name: str = "betas") -> tuple[float, float]:
    """AdamW's (beta1, beta2): two numbers in [0, 1)."""
    if isinstance(betas, (str, bytes)) or not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{name} must be a pair (beta1, beta2) of numbers in [0, 1), got {describe(betas)}")
    return (check_float(f"{name}[0]", betas[0], low=0, high=1, high_inclusive=False),
            check_float(f"{name}[1]", betas[1], low=0, high=1, high_inclusive=False))


def check_autocast(name: str, value: Any) -> Any:
    """``"auto"``, None (fp32) or one of the mixed-precision dtypes bfloat16 / float16."""
    if value is None or (isinstance(value, str) and value == "auto"):
        return value
    if value in (torch.bfloat16, torch.float16):
        return value
    raise ValueError(f"{name} must be 'auto', None (fp32), torch.bfloat16 or torch.float16, "
                     f"got {describe(value)}")


def _check_source(name: str, source: Any) -> None:
    if isinstance(source, torch.Tensor) or not (callable(source) or hasattr(source, "__iter__")):
        raise TypeError(f"{name} must be a zero-argument callable returning a batch or an iterable of "
                        f"batches, got {describe(source)} of type {type(source).__name__}")


def _check_module(name: str, model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {describe(model)} of type "
                        f"{type(model).__name__}")
    return model


def get_lr(step: int, *, max_lr: float, warmup_steps: int, total_steps: int,
           min_lr: float | None = None) -> float:
    """Learning rate at optimizer step ``step`` (0-based): linear warmup, then cosine to ``min_lr``.

    A pure function, so the schedule can be plotted and tested on its own.
    """
    step = check_int("step", step, low=0)
    max_lr = check_float("max_lr", max_lr, low=0, low_inclusive=False)
    warmup_steps = check_int("warmup_steps", warmup_steps, low=0)
    total_steps = check_int("total_steps", total_steps, low=1)
    min_lr = check_float("min_lr", min_lr, low=0, high=max_lr, allow_none=True)
    min_lr = max_lr / 10 if min_lr is None else min_lr
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


@dataclass
class History:
    """What happened during training; ``plot()`` draws the loss curves."""

    step: list[int] = field(default_factory=list)  # optimizer step of each train record
    train_loss: list[float] = field(default_factory=list)  # mean loss over the step's micro-batches
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # before clipping
    eval_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0  # wall-clock time of the whole run
    items_seen: int = 0  # batch elements (e.g. sequences) processed
    best_step: int | None = None  # with early stopping: the step whose weights were restored
    stopped_early: bool = False  # with early stopping: training ended before `steps`

    @property
    def final_val_loss(self) -> float | None:
        return self.val_loss[-1] if self.val_loss else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**d)

    def plot(self, ax=None, title: str | None = None, smooth: int = 10):
        """Plot train loss (raw and smoothed) and validation loss versus step; returns the Axes."""
        from .plotting import plot_history

        return plot_history(self, ax=ax, title=title, smooth=smooth)


def lm_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Next-token cross-entropy for a batch ``(x, y)`` of shape (B, T); targets -100 are ignored."""
    x, y = batch
    logits = model(x)
    if isinstance(logits, tuple):
        logits = logits[0]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1),
                           ignore_index=-100)


def classification_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Cross-entropy for a batch ``(x, labels)`` with a model returning logits (B, C)."""
    x, labels = batch
    logits = model(x)
    if isinstance(logits, tuple):
        logits = logits[0]
    return F.cross_entropy(logits.float(), labels)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """Move every tensor inside a (nested) tuple/list/dict batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _batch_size(batch: Batch) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.size(0)
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (tuple, list)) and batch:
        return _batch_size(batch[0])
    return 0


def _as_stream(source: BatchSource) -> Iterator[Batch]:
    """A callable is called forever; an iterable is cycled (re-iterated when exhausted)."""
    if callable(source) and not hasattr(source, "__iter__"):
        return (source() for _ in itertools.count())

    def cycle() -> Iterator[Batch]:
        while True:
            empty = True
            for b in source:
                empty = False
                yield b
            if empty:
                raise ValueError("the training data yielded no batches")

    return cycle()


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1,
                   betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (dim >= 2) only: biases, norms and gains are not decayed."""
    _check_module("model", model)
    lr = check_float("lr", lr, low=0, low_inclusive=False)
    weight_decay = check_float("weight_decay", weight_decay, low=0)
    betas = check_betas(betas)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


@torch.no_grad()
def evaluate(model: nn.Module, batches: BatchSource, *, loss_fn: LossFn = lm_loss,
             max_batches: int | None = None, device: torch.device | None = None,
             autocast: Any = "auto") -> float:
    """Mean loss over up to ``max_batches`` batches, in eval mode (restores the previous mode).

    ``batches`` is a re-iterable (a list: a fixed validation set, read from its start each time) or a
    zero-argument callable that samples a batch per call; a callable never runs out, so it needs
    ``max_batches``.
    """
    _check_module("model", model)
    _check_source("batches", batches)
    max_batches = check_int("max_batches", max_batches, low=1, allow_none=True)
    if max_batches is None and callable(batches) and not hasattr(batches, "__iter__"):
        raise ValueError("max_batches must be given when batches is a callable: a callable samples "
                         "batches without end, so evaluation would never finish "
                         "(e.g. evaluate(model, LMBatches(...), max_batches=20))")
    autocast = check_autocast("autocast", autocast)
    device = check_device("device", device) if device is not None else _model_device(model)
    was_training = model.training
    model.eval()
    # a list is re-read from its start each time (a fixed validation set); a callable is sampled
    stream = _as_stream(batches) if callable(batches) and not hasattr(batches, "__iter__") else iter(batches)
    total, n = 0.0, 0
    try:
        for batch in itertools.islice(stream, max_batches):
            with autocast_ctx(device, autocast):
                total += float(loss_fn(model, to_device(batch, device)))
            n += 1
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluation received no batches")
    return total / n


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError(f"{type(model).__name__} has no parameters: pass device= explicitly")
    return param.device


def train(model: nn.Module, train_data: BatchSource, config: TrainConfig | None = None, *,
          val_data: BatchSource | None = None, loss_fn: LossFn = lm_loss,
          optimizer: torch.optim.Optimizer | None = None, device: torch.device | str | None = None,
          history: History | None = None, **overrides: Any) -> History:
    """Train ``model`` and return its :class:`History`.

    Args:
        model: any ``nn.Module``; it is moved to ``device`` (default: where its parameters are).
        train_data: a zero-argument callable returning a batch, or an iterable of batches (cycled).
        config: a :class:`TrainConfig`; keyword ``overrides`` replace its fields
            (``train(model, data, steps=200, lr=3e-3)``).
        val_data: batches for periodic evaluation (callable or re-iterable); None = no evaluation.
        loss_fn: ``loss_fn(model, batch) -> scalar loss``; default next-token cross-entropy.
        optimizer: default AdamW from :func:`make_optimizer`; the LR is set every step by ``get_lr``.
        history: continue an existing history (its step counter carries on).

    A ``torch.nn.parallel.DistributedDataParallel`` model (launched by torchrun, see
    :mod:`minillm.distributed`) gets its gradients all-reduced once per optimizer step: on the last
    micro-batch, the others run under ``model.no_sync()``; an FSDP2 model (``fully_shard``) likewise
    reduce-scatters once, with ``set_requires_gradient_sync(False)`` before the other micro-batches,
    and its clipping norm is that of the whole sharded gradient. Each rank should read its own share
    of the global batch (``shard_batches``). The recorded train loss (and val loss) is the mean over ranks
    and ``items_seen`` the sum, so every rank returns the same History; only rank 0 shows progress.
    """
    _check_module("model", model)
    _check_source("train_data", train_data)
    if val_data is not None:
        _check_source("val_data", val_data)
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or None, got {type(config).__name__} "
                        "(pass options as keywords: train(model, data, steps=100, lr=3e-3))")
    unknown = sorted(set(overrides) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise TypeError(f"unknown training option(s) {unknown}; TrainConfig fields are "
                        f"{[f.name for f in fields(TrainConfig)]}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be a callable loss_fn(model, batch) -> loss, got {describe(loss_fn)}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be a History or None, got {type(history).__name__}")
    cfg = TrainConfig(**{**asdict(config or TrainConfig()), **overrides})
    from .distributed import all_reduce_mean, get_world_size, is_fsdp, is_main_process

    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    fsdp = is_fsdp(model)
    parallel = ddp or fsdp  # the ranks' losses are averaged and checked together
    show = cfg.progress and (not parallel or is_main_process())
    device = check_device("device", device) if device is not None else _model_device(model)
    model.to(device)
    amp_dtype = autocast_dtype(device) if cfg.autocast == "auto" else cfg.autocast
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    optimizer = optimizer or make_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas)
    fwd_model = torch.compile(model) if cfg.compile else model
    hist = history or History()
    start_step = hist.step[-1] + 1 if hist.step else 0
    stream = _as_stream(train_data)
    val_stream = val_data if cfg.eval_every else None
    if cfg.patience is not None and val_stream is None:
        raise ValueError(f"patience={cfg.patience} (early stopping) needs val_data and eval_every > 0, got "
                         f"val_data={'None' if val_data is None else 'given'}, eval_every={cfg.eval_every}")
    best: tuple[float, int, dict] | None = None  # early stopping: (val loss, step, weights)
    since_best, steps_done = 0, 0

    from tqdm.auto import tqdm

    bar = tqdm(range(cfg.steps), desc="training", disable=not show, leave=True)
    t0 = time.perf_counter()
    model.train()
    for i in bar:
        step = start_step + i
        lr = get_lr(i, max_lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                    min_lr=cfg.min_lr)
        for group in optimizer.param_groups:  # a group's "lr_scale" (layer-wise learning rates) scales it
            group["lr"] = lr * group.get("lr_scale", 1.0)
        step_loss, items = 0.0, 0
        for micro in range(cfg.accum_steps):
            batch = to_device(next(stream), device)
            items += _batch_size(batch)
            # DDP all-reduces gradients in backward; accumulate locally until the last micro-batch
            sync = not parallel or micro == cfg.accum_steps - 1
            if fsdp:  # FSDP's switch for the same thing (it has no no_sync)
                model.set_requires_gradient_sync(sync)
            with contextlib.nullcontext() if sync or fsdp else model.no_sync():
                with autocast_ctx(device, amp_dtype):
                    loss = loss_fn(fwd_model, batch)
                loss_value = float(loss.detach())
                if not parallel and not math.isfinite(loss_value):
                    last = f"{hist.train_loss[-1]:.4f}" if hist.train_loss else "none yet"
                    raise NonFiniteLossError(
                        f"loss became {loss_value} at step {step} (micro-batch {micro} of "
                        f"{cfg.accum_steps}, lr {lr:.3g}); last finite step loss: {last}. "
                        "Try a lower learning rate, gradient clipping, or check the inputs for NaN.")
                step_loss += loss_value / cfg.accum_steps
                scaled = loss / cfg.accum_steps
                (scaler.scale(scaled) if scaler else scaled).backward()
        if parallel:  # every rank must reach this collective, so a NaN is checked after it, on all ranks
            step_loss, mean_items = all_reduce_mean([step_loss, items], device)
            items = round(mean_items * get_world_size())
            if not math.isfinite(step_loss):
                raise NonFiniteLossError(
                    f"loss became {step_loss} at step {step} on at least one of {get_world_size()} "
                    f"ranks (lr {lr:.3g}). Try a lower learning rate, gradient clipping, or check "
                    "the inputs for NaN.")
        hist.items_seen += items
        if scaler:
            scaler.unscale_(optimizer)
        params = [p for p in model.parameters() if p.grad is not None]
        max_norm = cfg.grad_clip if cfg.grad_clip is not None else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)  # DTensor shards: the global norm
        grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        if not math.isfinite(grad_norm) and scaler is None:
            raise NonFiniteLossError(
                f"gradient norm became {grad_norm} at step {step} (loss {step_loss:.4f}, lr {lr:.3g}); "
                "try a lower learning rate or gradient clipping.")
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        hist.step.append(step)
        hist.train_loss.append(step_loss)
        hist.lr.append(lr)
        hist.grad_norm.append(grad_norm)
        last_step = i == cfg.steps - 1
        if val_stream is not None and ((i + 1) % cfg.eval_every == 0 or last_step):
            val = evaluate(model.module if ddp else model, val_stream, loss_fn=loss_fn,
                           max_batches=cfg.eval_batches, device=device, autocast=amp_dtype)
            if parallel:  # ranks may hold different validation shards: record their mean everywhere
                val = all_reduce_mean([val], device)[0]
            hist.eval_step.append(step)
            hist.val_loss.append(val)
            if cfg.patience is not None:
                if best is None or val < best[0]:
                    best, since_best = (val, step, _copy_state(model)), 0
                else:
                    since_best += 1
        postfix = {"loss": f"{step_loss:.3f}"}
        if hist.val_loss:
            postfix["val"] = f"{hist.val_loss[-1]:.3f}"
        bar.set_postfix(postfix, refresh=False)
        steps_done = i + 1
        if cfg.patience is not None and since_best >= cfg.patience:
            hist.stopped_early = True
            break
    bar.close()
    seconds = time.perf_counter() - t0
    hist.seconds += seconds
    if best is not None:  # early stopping keeps the weights of the best evaluation
        model.load_state_dict(best[2])
        hist.best_step = best[1]
    if show:  # a plain line that stays readable where the progress widget does not render
        val = f", val loss {hist.val_loss[-1]:.4f}" if hist.val_loss else ""
        stop = "; stopped early" if hist.stopped_early else ""
        if best is not None and hist.best_step != hist.step[-1]:
            stop += f"; weights of step {hist.best_step} (best val loss {best[0]:.4f}) restored"
        print(f"trained {steps_done} steps in {seconds:.1f} s: train loss {hist.train_loss[-1]:.4f}{val}{stop}")
    return hist


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class LMBatches:
    """Random (x, y) windows of length ``block_size`` from a 1-D token tensor, reproducibly seeded.

    Calling the object returns one batch: x and y of shape (B, T), y shifted one token to the left.
    """

    def __init__(self, tokens: torch.Tensor, block_size: int, batch_size: int, seed: int = 0):
        check_tensor("tokens", tokens, ndim=1, dtype_kind="int")
        block_size = check_int("block_size", block_size, low=1)
        batch_size = check_int("batch_size", batch_size, low=1)
        seed = check_int("seed", seed, low=0)
        if len(tokens) <= block_size:
            raise ValueError(f"tokens must hold more than block_size={block_size} tokens, got "
                             f"{len(tokens)}: use a longer text or a smaller block_size")
        self.tokens = tokens.long()
        self.block_size = block_size
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.tokens) - self.block_size
        starts = torch.randint(n, (self.batch_size,), generator=self.generator)
        offsets = torch.arange(self.block_size)
        x = self.tokens[starts[:, None] + offsets]  # (B, T)
        y = self.tokens[starts[:, None] + offsets + 1]  # (B, T)
        return x, y


def sequential_lm_batches(tokens: torch.Tensor, block_size: int, batch_size: int,
                          max_batches: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping (x, y) windows covering ``tokens`` in order: a deterministic evaluation set.

    ``max_batches`` keeps the first that many batches; None keeps all.
    """
    check_tensor("tokens", tokens, ndim=1, dtype_kind="int")
    block_size = check_int("block_size", block_size, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    max_batches = check_int("max_batches", max_batches, low=1, allow_none=True)
    n_windows = (len(tokens) - 1) // block_size
    if n_windows < 1:
        raise ValueError(f"tokens must hold more than block_size={block_size} tokens, got "
                         f"{len(tokens)}: use a longer text or a smaller block_size")
    usable = n_windows * block_size
    x = tokens[:usable].long().view(n_windows, block_size)  # (N, T)
    y = tokens[1:usable + 1].long().view(n_windows, block_size)  # (N, T)
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n_windows, batch_size)]
    return batches if max_batches is None else batches[:max_batches]
