"""Train a tiny character GPT on Shakespeare data-parallel: ``torchrun -m minillm.distributed_demo``.

Each rank draws the same global batch (same seed) and trains on its share (``shard_batches``) with
``--strategy`` ddp (DistributedDataParallel), zero (DDP + ZeRO-1 sharded optimizer state) or fsdp
(FSDP2: parameters, gradients and optimizer state sharded). Rank 0 prints, writes the full checkpoint
(``OUT/checkpoint``, crash-safe) and a JSON log (``OUT/log.json``: settings, world size, the History,
seconds per step, and every rank's ``memory``: bytes of parameters, gradients and optimizer state it
holds). Run without torchrun it trains in one process on the whole global batch, which is the
baseline the parallel run reproduces.
"""

from __future__ import annotations

import argparse
import os
import time

# = minillm.distributed.STRATEGIES, repeated so that --help does not import torch (a test checks they agree)
STRATEGY_CHOICES = ("ddp", "fsdp", "zero")
EPILOG = """\
how to launch (--batch-size is the global batch; it must be a multiple of the number of processes):

  one process, the baseline:
    python -m minillm.distributed_demo --steps 20 --out runs/ddp1

  2 processes on this machine (CPU: gloo; one GPU each when CUDA is available: NCCL):
    torchrun --standalone --nproc_per_node=2 -m minillm.distributed_demo --steps 20 --out runs/ddp2

  the same with sharded state (ZeRO-1 optimizer sharding, or FSDP2 full sharding):
    torchrun --standalone --nproc_per_node=2 -m minillm.distributed_demo --strategy fsdp --out runs/fsdp2

  all GPUs of one node (say 8):
    torchrun --standalone --nproc_per_node=8 -m minillm.distributed_demo --steps 200 --out runs/ddp8

  2 nodes x 8 GPUs: run on every node, with the first node's address and a free port,
  --node_rank=0 on the first node and --node_rank=1 on the second:
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 \\
        --master_addr=10.0.0.1 --master_port=29500 \\
        -m minillm.distributed_demo --steps 200 --out runs/ddp16
  (the output directory must be on a disk rank 0 can write; only rank 0 writes)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m minillm.distributed_demo", description=__doc__,
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="optimizer steps (default 20)")
    p.add_argument("--out", required=True, help="directory for checkpoint/ and log.json")
    p.add_argument("--batch-size", type=int, default=32, help="global batch, all ranks together")
    p.add_argument("--block-size", type=int, default=64, help="characters per sequence")
    p.add_argument("--accum-steps", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="model init and batch sampling (same on all ranks)")
    p.add_argument("--strategy", choices=STRATEGY_CHOICES, default="ddp",
                   help="ddp: replicate everything; zero: shard the optimizer state (ZeRO-1); fsdp: "
                        "shard parameters, gradients and optimizer state (FSDP2). Default ddp; "
                        "ignored without torchrun")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    import torch

    from .data import load_shakespeare
    from .distributed import (all_gather_object, cleanup, init_from_env, log, make_distributed_optimizer,
                              save_checkpoint_on_main, shard_batches, state_bytes, wrap_model,
                              write_json_on_main)
    from .models.gpt import GPT, GPTConfig
    from .train import LMBatches, lm_loss, make_optimizer, to_device, train
    from .vocab import shakespeare_char_vocab

    launched = "RANK" in os.environ  # torchrun sets it; a plain `python -m` run is one process
    info = init_from_env() if launched else None
    world_size = info.world_size if info else 1
    device = info.device if info else torch.device("cpu")
    if args.batch_size % (world_size * args.accum_steps):
        raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of processes x "
                         f"--accum-steps = {world_size} x {args.accum_steps}")
    try:
        text = load_shakespeare()
        vocab = shakespeare_char_vocab()
        torch.manual_seed(args.seed)  # the same initial weights everywhere (DDP also broadcasts rank 0's)
        config = GPTConfig.tiny(vocab_size=len(vocab), block_size=args.block_size,
                                n_layer=args.n_layer, n_embd=args.n_embd)
        model = GPT(config).to(device)
        strategy = args.strategy if info else "none"
        if info:
            model = wrap_model(model, args.strategy, device)
            optimizer = make_distributed_optimizer(model, args.strategy, args.lr)
        else:
            optimizer = make_optimizer(model, args.lr)
        micro_batch = args.batch_size // args.accum_steps  # one micro-batch of the whole job
        batches = shard_batches(LMBatches(vocab.encode_tensor(text.train), args.block_size, micro_batch,
                                          seed=args.seed))
        log(f"{world_size} process(es) on {device} ({info.backend if info else 'no process group'}, "
            f"strategy {strategy}): global batch {args.batch_size} = {world_size} x {args.accum_steps} x "
            f"{micro_batch // world_size} sequences of {args.block_size} characters")
        starts = []  # when each micro-batch's loss began: step k starts at starts[k * accum_steps]

        def timed_loss(m, batch):
            starts.append(time.perf_counter())
            return lm_loss(m, batch)

        t0 = time.perf_counter()
        history = train(model, batches, optimizer=optimizer, loss_fn=timed_loss, steps=args.steps,
                        lr=args.lr, warmup_steps=min(10, args.steps), accum_steps=args.accum_steps,
                        eval_every=0, autocast=None, progress=True)
        seconds = time.perf_counter() - t0
        step_starts = [*starts[::args.accum_steps], t0 + seconds]
        step_seconds = [b - a for a, b in zip(step_starts, step_starts[1:])]
        # the first step pays one-off costs (allocations, FSDP's lazy init), so it is left out
        timed = step_seconds[1:] or step_seconds
        # one more backward, not stepped, to count the gradients each rank holds
        model.zero_grad(set_to_none=True)
        lm_loss(model, to_device(batches(), device)).backward()
        memory = state_bytes(model, optimizer)
        model.zero_grad(set_to_none=True)
        record = {"args": vars(args), "world_size": world_size, "device": str(device),
                  "strategy": strategy, "seconds_per_step": seconds / args.steps,
                  "step_seconds": step_seconds, "mean_step_seconds": sum(timed) / len(timed),
                  "memory": all_gather_object(memory), "history": history.to_dict()}
        save_checkpoint_on_main(model, os.path.join(args.out, "checkpoint"),
                                metadata={"vocab": vocab.itos, "history": history.to_dict(),
                                          "block_size": args.block_size, "world_size": world_size})
        write_json_on_main(os.path.join(args.out, "log.json"), record)
        mib = {k: v / 2**20 for k, v in memory.items()}
        log(f"{record['mean_step_seconds'] * 1000:.0f} ms/step after the first; rank 0 holds "
            f"{mib['param_bytes']:.2f} MiB parameters, {mib['grad_bytes']:.2f} MiB gradients, "
            f"{mib['optimizer_bytes']:.2f} MiB optimizer state; wrote {args.out}/checkpoint and "
            f"{args.out}/log.json")
        return record
    finally:
        cleanup()


if __name__ == "__main__":
    main()
