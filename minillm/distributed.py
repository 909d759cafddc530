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

Training at scale shards what DDP replicates. :func:`wrap_model` picks one of :data:`STRATEGIES`:
``"ddp"`` (every rank holds everything), ``"zero"`` (ZeRO stage 1: DDP plus
``ZeroRedundancyOptimizer``, so each rank keeps the AdamW state of about 1/W of the parameters; build
the optimizer with :func:`make_distributed_optimizer`) and ``"fsdp"`` (FSDP2 ``fully_shard``: each
rank keeps 1/W of every parameter, gradient and optimizer state, gathering a block's full weights
only while it computes). All three run on CPUs over gloo and give the same weights as one process on
the global batch; :func:`state_bytes` counts what this rank holds, and
:func:`save_checkpoint_on_main` gathers a sharded model into one full checkpoint. Follows the ZeRO
paper (Rajbhandari et al., 2020) and the PyTorch FSDP2 tutorial.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from . import checkpoint
from .validation import check_int, describe

STRATEGIES = ("ddp", "fsdp", "zero")  # what wrap_model() accepts; see the module docstring
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


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without a process group."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


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
    """The model inside a ``DistributedDataParallel`` (or ``torch.compile``) wrapper.

    An FSDP2 model is returned as it is: ``fully_shard`` changes the module in place (its parameters
    become shards), so there is no plain model inside; use :func:`full_state_dict` for its weights.
    """
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
    """Rank 0 saves ``model`` (unwrapped from DDP; an FSDP model's shards gathered into one full
    model) with :func:`minillm.checkpoint.save_checkpoint`, crash-safely; the other ranks wait at a
    barrier until it is complete. Returns the path on rank 0, None elsewhere. Every rank must call
    it (it is a collective)."""
    saved = None
    if is_fsdp(model):  # every rank takes part in gathering the shards; rank 0 writes a plain copy
        state = full_state_dict(model)
        if is_main_process():
            plain = _plain_copy(model)
            plain.load_state_dict(state)
            saved = checkpoint.save_checkpoint(plain, path, metadata=metadata)
    elif is_main_process():
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


# ---------------------------------------------------------------------------------------------
# sharded training: ZeRO-1 and FSDP2


def check_strategy(strategy: Any) -> str:
    """``strategy`` if it is one of :data:`STRATEGIES`, else a ValueError naming it and the choices."""
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(repr(s) for s in STRATEGIES)}, "
                         f"got {describe(strategy)}")
    return strategy


def is_fsdp(model: nn.Module) -> bool:
    """True for a module sharded by FSDP2's ``fully_shard`` (its parameters are DTensor shards)."""
    fsdp = sys.modules.get("torch.distributed.fsdp")  # not imported yet: nothing can be sharded
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


def wrap_model(model: nn.Module, strategy: str = "ddp", device: torch.device | None = None) -> nn.Module:
    """Prepare ``model`` for data-parallel training in the current process group.

    Args:
        model: the plain model, with the same initial weights on every rank.
        strategy: ``"ddp"`` or ``"zero"`` wrap it in ``DistributedDataParallel`` (for ``"zero"`` also
            build the optimizer with :func:`make_distributed_optimizer`); ``"fsdp"`` applies FSDP2's
            ``fully_shard`` to every block of each ``nn.ModuleList`` (so one block at a time is
            gathered in full) and then to the whole model, in place.
        device: where the model trains; default where its parameters are.

    Build the optimizer after wrapping: FSDP replaces the parameters by their shards.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    strategy = check_strategy(strategy)
    if not is_distributed():
        raise RuntimeError(f"wrap_model(strategy={strategy!r}) needs a process group: call "
                           f"init_from_env() first, in a script launched with `{LAUNCH_HINT}`")
    if device is None:
        device = next(model.parameters()).device
    model = model.to(device)
    if strategy in ("ddp", "zero"):
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (get_world_size(),))
    blocks = [block for m in model.modules() if isinstance(m, nn.ModuleList) for block in m]
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)  # the rest: embeddings, final norm, head
    return model


def make_distributed_optimizer(model: nn.Module, strategy: str, lr: float, weight_decay: float = 0.1,
                               betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.Optimizer:
    """AdamW for a model from :func:`wrap_model`, with :func:`minillm.train.make_optimizer`'s groups.

    ``"zero"`` gives a ``ZeroRedundancyOptimizer``: each rank keeps the AdamW state of its share of
    the parameters (whole tensors, balanced by size), updates that share and broadcasts it. The
    others give a plain AdamW (under FSDP its state is sharded like the parameters it updates).
    """
    from .train import make_optimizer

    strategy = check_strategy(strategy)
    plain = make_optimizer(model, lr, weight_decay, betas)
    if strategy != "zero":
        return plain
    from torch.distributed.optim import ZeroRedundancyOptimizer

    groups = [{k: v for k, v in g.items() if k not in plain.defaults or k == "weight_decay"}
              for g in plain.param_groups if g["params"]]
    return ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, lr=lr, betas=betas)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t  # a DTensor's shard on this rank


def _nbytes(tensors: Any) -> int:
    seen, total = set(), 0
    for t in tensors:
        t = _local(t)
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.numel())
        if key not in seen:  # a tensor shared by two names (tied weights) is held once
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes of parameters, gradients and optimizer state that THIS rank holds right now.

    A DTensor (FSDP) counts its local shard only; a ``ZeroRedundancyOptimizer`` counts the state of
    its local optimizer. Gradients count only while they exist (after ``backward``, before
    ``zero_grad``); transient buffers (DDP's gradient buckets, FSDP's gathered blocks) are not counted.
    """
    params = list(model.parameters())
    grads = [p.grad for p in params if p.grad is not None]
    states = []
    if optimizer is not None:
        inner = getattr(optimizer, "optim", optimizer)  # ZeroRedundancyOptimizer's local optimizer
        states = [v for s in inner.state.values() for v in s.values()
                  if isinstance(v, torch.Tensor) and v.dim() > 0]  # not the scalar step counters
    return {"param_bytes": _nbytes(params), "grad_bytes": _nbytes(grads),
            "optimizer_bytes": _nbytes(states)}


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU. An FSDP model's shards are gathered to rank 0, so every
    rank must call it (a collective) and the other ranks get an empty dict: no rank but one ever
    holds a full copy. Other models give their (unwrapped) state dict on every rank."""
    if not is_fsdp(model):
        return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                broadcast_from_rank0=False))


def _plain_copy(model: nn.Module) -> nn.Module:
    """A fresh, unsharded instance of an FSDP model's own class (built from its ``.config``)."""
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(model).__mro__[1:]
               if issubclass(c, nn.Module) and not issubclass(c, FSDPModule))
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"{cls.__name__} needs a `.config` attribute to be rebuilt unsharded for saving")
    with torch.random.fork_rng(devices=[]):  # building must not move this rank's random stream
        return cls(config)
