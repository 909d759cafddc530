"""Data-parallel training (DDP over gloo on CPU), launched by torchrun as two real processes.

The strongest check is parity: two processes, each on half of every global batch, end with the same
weights as one process on the whole batch (with and without gradient accumulation, with clipping on).
One torchrun launch runs this file as a script (``_worker`` below) and leaves its results in a
directory; the tests compare them with single-process runs made here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import minillm
from _shared import data_parallel_batches, joined_micro_batches
from minillm.checkpoint import load_checkpoint, write_text_atomic
from minillm.distributed import init_from_env, is_main_process, shard_batches, write_json_on_main
from minillm.models.gpt import GPT, GPTConfig
from minillm.train import NonFiniteLossError, lm_loss, train

if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available in this PyTorch build",
                allow_module_level=True)

STEPS, GLOBAL_BATCH, BLOCK, CLIP = 4, 8, 16, 0.05
TRAIN = dict(steps=STEPS, lr=1e-2, warmup_steps=0, grad_clip=CLIP, autocast=None, progress=False,
             eval_every=0)
# fp32 sums in another order (two half-batch means, averaged by the all-reduce) differ from the
# one-batch mean by a few ulps; after 4 AdamW steps the weights agree to well within this
ATOL, RTOL = 1e-5, 1e-4


def _gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig.tiny(vocab_size=11, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16))


def _global_batches(accum):
    """The job's micro-batches: accum of them make one global batch of GLOBAL_BATCH sequences."""
    return data_parallel_batches(BLOCK, GLOBAL_BATCH // accum)


def _combined(accum):
    """One process's view: the accum micro-batches of a step joined into one batch."""
    return joined_micro_batches(_global_batches(accum), accum)


def _worker(out: Path) -> None:
    """Run under torchrun: DDP training for accum_steps 1 and 2, a NaN on one rank, a rank-0 checkpoint."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
    from torch.nn.parallel import DistributedDataParallel

    import minillm.checkpoint
    from minillm.distributed import cleanup, save_checkpoint_on_main

    info = init_from_env()
    rank = info.rank
    result = {}
    for accum in (1, 2):
        model = DistributedDataParallel(_gpt())
        all_reduces = [0]

        def counting_hook(state, bucket, calls=all_reduces):
            calls[0] += 1
            return allreduce_hook(None, bucket)

        model.register_comm_hook(None, counting_hook)
        hist = train(model, shard_batches(_global_batches(accum)), accum_steps=accum, **TRAIN)
        torch.save({k: v.detach().clone() for k, v in model.module.state_dict().items()},
                   out / f"rank{rank}-accum{accum}.pt")
        result[f"accum{accum}"] = {"history": hist.to_dict(), "all_reduces": all_reduces[0]}

    calls = [0]

    def nan_on_rank_1(m, batch):  # rank 1 alone hits a NaN in step 1: both ranks must stop, not hang
        calls[0] += 1
        loss = lm_loss(m, batch)
        return loss * float("nan") if rank == 1 and calls[0] == 2 else loss

    try:
        train(DistributedDataParallel(_gpt()), shard_batches(_global_batches(1)), loss_fn=nan_on_rank_1,
              **TRAIN)
        result["nan"] = "no error"
    except NonFiniteLossError as e:
        result["nan"] = str(e)

    writers = []  # who called save_checkpoint: only rank 0 may
    real_save = minillm.checkpoint.save_checkpoint

    def spying_save(*args, **kwargs):
        writers.append(rank)
        return real_save(*args, **kwargs)

    minillm.checkpoint.save_checkpoint = spying_save
    saved = save_checkpoint_on_main(model, out / "ckpt", metadata={"steps": STEPS})
    # after save_checkpoint_on_main returns, every rank finds a complete checkpoint equal to its weights
    loaded = load_checkpoint(out / "ckpt")
    same = all(torch.equal(loaded.state_dict()[k], v) for k, v in model.module.state_dict().items())
    write_text_atomic(out / f"rank{rank}.json", json.dumps(
        {**result, "writers": writers,
         "returned": None if saved is None else str(saved), "loaded_equal": same}))
    cleanup()


def _torchrun(*args, timeout=180):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    # the workers must import the minillm this test imported (not another installed copy)
    root = str(Path(minillm.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=root)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    _torchrun(__file__, str(out))
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("accum", [1, 2])
def test_two_processes_match_one_process_on_the_combined_batch(ddp_run, accum):
    out, ranks = ddp_run
    reference = _gpt()
    ref = train(reference, _combined(accum), **TRAIN)
    assert all(g > CLIP for g in ref.grad_norm)  # clipping was active in every step
    for rank in (0, 1):
        state = torch.load(out / f"rank{rank}-accum{accum}.pt")
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(state[name], value, atol=ATOL, rtol=RTOL, msg=name)
        hist = ranks[rank][f"accum{accum}"]["history"]
        # the logged loss is the mean over ranks = the combined batch's loss; the norm is the
        # all-reduced gradient's, the one clipping must see
        torch.testing.assert_close(hist["train_loss"], ref.train_loss, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(hist["grad_norm"], ref.grad_norm, atol=1e-6, rtol=1e-5)
        assert hist["items_seen"] == ref.items_seen == STEPS * GLOBAL_BATCH
    h0, h1 = (ranks[r][f"accum{accum}"]["history"] for r in (0, 1))
    h0.pop("seconds"), h1.pop("seconds")
    assert h0 == h1  # every rank returns the same History


def test_accumulation_all_reduces_once_per_optimizer_step(ddp_run):
    """no_sync on all but the last micro-batch: accum_steps=2 costs as many gradient all-reduces as 1."""
    _, ranks = ddp_run
    once = ranks[0]["accum1"]["all_reduces"]
    assert once >= STEPS
    assert ranks[0]["accum2"]["all_reduces"] == once  # without no_sync it would be 2 * once


def test_a_nan_on_one_rank_stops_every_rank(ddp_run):
    _, ranks = ddp_run
    for rank in (0, 1):
        assert "loss became nan at step 1 on at least one of 2 ranks" in ranks[rank]["nan"]


def test_only_rank_0_writes_a_complete_checkpoint(ddp_run):
    out, ranks = ddp_run
    assert ranks[0]["writers"] == [0] and ranks[1]["writers"] == []
    assert ranks[0]["returned"] == str(out / "ckpt") and ranks[1]["returned"] is None
    assert ranks[0]["loaded_equal"] and ranks[1]["loaded_equal"]
    model = load_checkpoint(out / "ckpt")  # checks the weights' sha256 recorded in config.json
    assert model.checkpoint_metadata == {"steps": STEPS}
    final = torch.load(out / "rank0-accum2.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in final.items())
    leftovers = sorted(p.name for p in out.iterdir() if p.name.startswith(".ckpt"))
    assert leftovers == []  # no half-written .saving-* copy, no .previous


def test_shard_batches_splits_each_global_batch_disjointly():
    x = torch.arange(12).view(6, 2)
    shards = [shard_batches(lambda: (x, x + 100), rank=r, world_size=3)() for r in range(3)]
    assert torch.equal(torch.cat([s[0] for s in shards]), x)
    assert torch.equal(torch.cat([s[1] for s in shards]), x + 100)
    listed = shard_batches([(x,), (x,)], rank=1, world_size=2)
    assert [b[0].tolist() for b in listed] == [x[3:].tolist()] * 2  # re-iterable, like a list
    with pytest.raises(ValueError, match="cannot be split evenly among 4 ranks"):
        shard_batches(lambda: x, rank=0, world_size=4)()
    with pytest.raises(ValueError, match="rank must be <= 1"):
        shard_batches(lambda: x, rank=2, world_size=2)


def test_init_from_env_without_torchrun_is_a_clear_error(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match=r"missing RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, "
                                           r"MASTER_PORT.*torchrun --nproc_per_node"):
        init_from_env()


def test_single_process_helpers_and_atomic_json(tmp_path, monkeypatch):
    assert is_main_process()  # no process group: this process is the main one
    path = write_json_on_main(tmp_path / "log.json", {"step": 1})
    assert json.loads(path.read_text()) == {"step": 1}

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # dies before the new file is renamed into place
    with pytest.raises(OSError, match="disk full"):
        write_json_on_main(tmp_path / "log.json", {"step": 2})
    assert json.loads(path.read_text()) == {"step": 1}  # the old log is intact, never half-written


def test_demo_with_two_processes_matches_one_process(tmp_path):
    from minillm.distributed_demo import main

    args = ["--steps", "3", "--batch-size", "8", "--block-size", "32", "--n-layer", "1",
            "--n-embd", "32", "--accum-steps", "2"]
    one = main([*args, "--out", str(tmp_path / "one")])
    _torchrun("-m", "minillm.distributed_demo", *args, "--out", str(tmp_path / "two"))
    two = json.loads((tmp_path / "two" / "log.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    torch.testing.assert_close(two["history"]["train_loss"], one["history"]["train_loss"],
                               atol=1e-5, rtol=1e-5)
    a, b = load_checkpoint(tmp_path / "one" / "checkpoint"), load_checkpoint(tmp_path / "two" / "checkpoint")
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value, atol=ATOL, rtol=RTOL, msg=name)


def test_demo_help_shows_the_launch_commands(capsys):
    from minillm.distributed_demo import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "torchrun --standalone --nproc_per_node=2 -m minillm.distributed_demo" in text
    assert "--nnodes=2" in text and "--node_rank" in text and "--master_addr" in text


if __name__ == "__main__":  # run by torchrun from the ddp_run fixture
    _worker(Path(sys.argv[1]))
