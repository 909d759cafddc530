"""Data-parallel training across processes (PyTorch DDP), launched by ``torchrun``.

Every process ("rank") holds a full copy of the model and trains on its own share of each global
batch; ``DistributedDataParallel`` averages the gradients across ranks during ``backward``, so after
every optimizer step all copies hold the same weights, equal to one process training on the whole
global batch. ``torchrun`` starts the processes and tells each its place through environment
variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); :func:`init_from_env` reads them
and joins the process group (gloo on CPUs, NCCL on CUDA GPUs). :func:`minillm.train.train` notices a
``DistributedDataParallel`` model and skips the gradient all-reduce on all but the last micro-batch
of an accumulation step (``no_sync``), averages the logged loss across ranks, and shows its progress
bar on rank 0 only. Follows the PyTorch DDP tutorial and nanoGPT's ``train.py``.

A typical script (see :mod:`minillm.distributed_demo`)::

    info = init_from_env()
    model = DistributedDataParallel(GPT(config).to(info.device))
    history = train(model, shard_batches(LMBatches(tokens, 64, 32, seed=0)), steps=100)
    save_checkpoint_on_main(model, "out/ckpt")
    cleanup()
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from . import checkpoint
from .validation import check_int, describe

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = "torchrun --nproc_per_node=2 -m minillm.distributed_demo --steps 20 --out runs/ddp"


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job that :func:`init_from_env` joined."""

    rank: int  # this process, 0 .. world_size - 1 across all nodes
    world_size: int  # processes in the job
    local_rank: int  # this process on its node (picks the GPU)
    device: torch.device  # cuda:<local_rank> under NCCL, cpu under gloo
    backend: str  # "gloo" or "nccl"


def _env_int(name: str, env: dict[str, str]) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {env[name]!r}") from None


def init_from_env(backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables.

    Args:
        backend: "gloo" or "nccl"; None picks NCCL when CUDA is available, else gloo (CPU).

    Raises RuntimeError naming the missing variables when the process was not started by torchrun.
    Calling it again in an initialised process returns the same :class:`DistInfo`.
    """
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; install a build with it")
    env = dict(os.environ)
    missing = [name for name in TORCHRUN_ENV if name not in env]
    if missing:
        raise RuntimeError(f"init_from_env() needs the environment that torchrun sets; missing "
                           f"{', '.join(missing)}. Launch the script with torchrun, e.g. "
                           f"`{LAUNCH_HINT}`")
    rank, world_size, local_rank = (_env_int(n, env) for n in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world_size}), got {rank}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo', 'nccl' or None, got {describe(backend)}")
    if backend == "gloo" and not dist.is_gloo_available():
        raise RuntimeError("this PyTorch build has no gloo backend for CPU training")
    if backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, device, backend)


def is_distributed() -> bool:
    """True inside an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0, and in a plain single-process run: the one process that logs and saves."""
    return get_rank() == 0


def barrier() -> None:
    """Wait until every rank reaches this point (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call once at the end of the script)."""
    if is_distributed():
        dist.destroy_process_group()


def all_reduce_mean(values: list[float], device: torch.device | None = None) -> list[float]:
    """The mean of each number across ranks (the numbers themselves without a process group)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / dist.get_world_size()).tolist()


def _shard(batch: Any, rank: int, world_size: int) -> Any:
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0 or batch.size(0) % world_size:
            raise ValueError(f"a global batch of {tuple(batch.shape)} cannot be split evenly among "
                             f"{world_size} ranks: make the batch size a multiple of the world size")
        share = batch.size(0) // world_size
        return batch[rank * share:(rank + 1) * share]
    if isinstance(batch, dict):
        return {k: _shard(v, rank, world_size) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_shard(v, rank, world_size) for v in batch)
    return batch


def shard_batches(source: Any, rank: int | None = None, world_size: int | None = None) -> Any:
    """A batch source giving this rank its contiguous share of each global batch.

    Every rank draws the same global batch from ``source`` (a zero-argument callable such as
    :class:`minillm.train.LMBatches` with the same seed on every rank, or a re-iterable such as a
    list) and keeps rows ``[rank * B/W, (rank + 1) * B/W)``: the ranks' shares are disjoint and
    together make the global batch, so DDP's averaged gradient equals one process's gradient on the
    whole batch. Drawing the whole batch everywhere is cheap for the course's in-memory token
    tensors; for big datasets use ``torch.utils.data.DistributedSampler`` instead. Every tensor in a
    batch is split along dim 0, whose size must be a multiple of the world size. ``rank`` and
    ``world_size`` default to the current process group's (0 and 1 without one).
    """
    if isinstance(source, torch.Tensor) or not (callable(source) or hasattr(source, "__iter__")):
        raise TypeError(f"source must be a zero-argument callable returning a batch or an iterable "
                        f"of batches, got {describe(source)} of type {type(source).__name__}")
    world_size = check_int("world_size", get_world_size() if world_size is None else world_size, low=1)
    rank = check_int("rank", get_rank() if rank is None else rank, low=0, high=world_size - 1)
    if callable(source) and not hasattr(source, "__iter__"):
        return lambda: _shard(source(), rank, world_size)
    return _ShardedIterable(source, rank, world_size)


class _ShardedIterable:
    """Re-iterable: each pass re-reads ``source`` (train() cycles an iterable)."""

    def __init__(self, source: Any, rank: int, world_size: int):
        self.source, self.rank, self.world_size = source, rank, world_size

    def __iter__(self):
        return (_shard(b, self.rank, self.world_size) for b in self.source)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` (or ``torch.compile``) wrapper."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def log(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only, so a job's output is not repeated once per process."""
    if is_main_process():
        print(*args, **kwargs, flush=True)


def save_checkpoint_on_main(model: nn.Module, path: str | os.PathLike, *,
                            metadata: dict | None = None) -> Path | None:
    """Rank 0 saves ``model`` (unwrapped from DDP) with :func:`minillm.checkpoint.save_checkpoint`,
    crash-safely; the other ranks wait at a barrier until it is complete. Returns the path on rank 0,
    None elsewhere. Every rank must call it (it is a collective)."""
    saved = None
    if is_main_process():
        saved = checkpoint.save_checkpoint(unwrap(model), path, metadata=metadata)
    barrier()
    return saved


def write_json_on_main(path: str | os.PathLike, record: Any) -> Path | None:
    """Rank 0 writes ``record`` as JSON, atomically (a reader never sees half a file); the other
    ranks wait. Returns the path on rank 0, None elsewhere. Every rank must call it."""
    written = None
    if is_main_process():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        written = checkpoint.write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True))
    barrier()
    return written
