"""Sharded data-parallel training (ZeRO-1 and FSDP2 over gloo on CPU), launched by torchrun.

As for DDP (tests/test_distributed.py), the strongest check is parity: two processes, each on half
of every global batch, end with the same weights as one process on the whole batch, with gradient
clipping active in every step (so the clipping norm must be the norm of the whole gradient, not of
one rank's shard). The point of sharding is memory, so the tests also assert that each rank holds
about half of DDP's parameter / optimizer-state bytes. One torchrun launch runs this file as a
script (``_worker``) and leaves its results in a directory; the tests compare them here.
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
from minillm.distributed import (STRATEGIES, all_gather_object, check_strategy, full_state_dict,
                                 init_from_env, make_distributed_optimizer, shard_batches, state_bytes,
                                 wrap_model)
from minillm.models.gpt import GPT, GPTConfig
from minillm.train import NonFiniteLossError, lm_loss, train

if not (dist.is_available() and dist.is_gloo_available()):
    pytest.skip("torch.distributed with the gloo backend is not available in this PyTorch build",
                allow_module_level=True)

STEPS, GLOBAL_BATCH, BLOCK, CLIP, LR = 4, 8, 16, 0.05, 1e-2
TRAIN = dict(steps=STEPS, lr=LR, warmup_steps=0, grad_clip=CLIP, autocast=None, progress=False,
             eval_every=0)
# Sharding changes only the order of fp32 sums: FSDP reduce-scatters the two half-batch gradients
# (each a mean over its own half) and divides by 2, DDP all-reduces them, one process sums the whole
# batch at once. These differ by a few ulps (~1e-7 relative), which AdamW (dividing each update by
# the gradient's running RMS) can amplify where a moment is near zero: after 4 steps of lr 1e-2 the
# largest difference measured is 3.3e-6. The same tolerance as the DDP parity test: 3x above that,
# far below one step's change (~lr = 1e-2), so a missing or doubled gradient shard would fail.
ATOL, RTOL = 1e-5, 1e-4
RUNS = [("fsdp", 1), ("fsdp", 2), ("zero", 1), ("zero", 2)]


def _gpt(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig.tiny(vocab_size=11, block_size=BLOCK, n_layer=2, n_head=2, n_embd=16))


def _global_batches(accum):
    return data_parallel_batches(BLOCK, GLOBAL_BATCH // accum)


def _combined(accum):
    """One process's view: the accum micro-batches of a step joined into one batch."""
    return joined_micro_batches(_global_batches(accum), accum)


def _memory(model, optimizer, batch):
    """state_bytes after one more backward (train() leaves no gradients behind)."""
    lm_loss(model, batch).backward()
    held = state_bytes(model, optimizer)
    model.zero_grad(set_to_none=True)
    return held


def _worker(out: Path) -> None:
    """Under torchrun: ZeRO and FSDP training runs, DDP's memory, a NaN on one rank, a checkpoint."""
    from minillm.distributed import cleanup, save_checkpoint_on_main

    info = init_from_env()
    rank = info.rank
    result = {"memory": {}}
    for strategy, accum in RUNS:
        model = wrap_model(_gpt(), strategy)
        optimizer = make_distributed_optimizer(model, strategy, LR)
        data = shard_batches(_global_batches(accum))
        hist = train(model, data, optimizer=optimizer, accum_steps=accum, **TRAIN)
        state = full_state_dict(model)  # FSDP: gathered to rank 0 (the other ranks get {})
        torch.save(state, out / f"rank{rank}-{strategy}-accum{accum}.pt")
        result[f"{strategy}-accum{accum}"] = hist.to_dict()
        result["memory"][strategy] = _memory(model, optimizer, data())
        result[f"{strategy}-local-is-dtensor"] = all(hasattr(p, "to_local") for p in model.parameters())
    ddp = wrap_model(_gpt(), "ddp")
    optimizer = make_distributed_optimizer(ddp, "ddp", LR)
    train(ddp, shard_batches(_global_batches(1)), optimizer=optimizer, **{**TRAIN, "steps": 1})
    result["memory"]["ddp"] = _memory(ddp, optimizer, shard_batches(_global_batches(1))())

    calls = [0]

    def nan_on_rank_1(m, batch):  # rank 1 alone hits a NaN in step 1: both ranks must stop, not hang
        calls[0] += 1
        loss = lm_loss(m, batch)
        return loss * float("nan") if rank == 1 and calls[0] == 2 else loss

    try:
        train(wrap_model(_gpt(), "fsdp"), shard_batches(_global_batches(1)), loss_fn=nan_on_rank_1, **TRAIN)
        result["nan"] = "no error"
    except NonFiniteLossError as e:
        result["nan"] = str(e)

    model = wrap_model(_gpt(), "fsdp")
    train(model, shard_batches(_global_batches(1)), **TRAIN)
    saved = save_checkpoint_on_main(model, out / "ckpt", metadata={"steps": STEPS})
    torch.save(full_state_dict(model), out / f"rank{rank}-saved-state.pt")
    result["returned"] = None if saved is None else str(saved)
    result["gathered"] = all_gather_object(rank)
    write_text_atomic(out / f"rank{rank}.json", json.dumps(result))
    cleanup()


def _torchrun(*args, timeout=180):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    # the workers must import the minillm this test imported (not another installed copy)
    root = str(Path(minillm.__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    _torchrun(__file__, str(out))
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.parametrize("strategy,accum", RUNS)
def test_two_sharded_processes_match_one_process_on_the_combined_batch(sharded_run, strategy, accum):
    out, ranks = sharded_run
    reference = _gpt()
    ref = train(reference, _combined(accum), **TRAIN)
    assert all(g > CLIP for g in ref.grad_norm)  # clipping was active in every step
    state = torch.load(out / f"rank0-{strategy}-accum{accum}.pt")
    assert sorted(state) == sorted(reference.state_dict())
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(state[name], value, atol=ATOL, rtol=RTOL, msg=name)
    for rank in (0, 1):
        hist = ranks[rank][f"{strategy}-accum{accum}"]
        # the clipping norm is the whole gradient's (all shards), the one one process computes
        torch.testing.assert_close(hist["grad_norm"], ref.grad_norm, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(hist["train_loss"], ref.train_loss, atol=1e-6, rtol=1e-5)
        assert hist["items_seen"] == ref.items_seen == STEPS * GLOBAL_BATCH


def test_fsdp_parameters_are_shards_and_zero_keeps_full_ones(sharded_run):
    _, ranks = sharded_run
    assert ranks[0]["fsdp-local-is-dtensor"] and not ranks[0]["zero-local-is-dtensor"]
    assert torch.load(sharded_run[0] / "rank1-fsdp-accum1.pt") == {}  # gathered to rank 0 only
    assert sorted(torch.load(sharded_run[0] / "rank1-zero-accum1.pt")) == sorted(_gpt().state_dict())


def test_each_rank_holds_about_half_of_ddps_state(sharded_run):
    _, ranks = sharded_run
    full = {k: sum(p.numel() * 4 for p in _gpt().parameters()) for k in ("param_bytes", "grad_bytes")}
    for rank in (0, 1):
        mem = ranks[rank]["memory"]
        ddp, zero, fsdp = mem["ddp"], mem["zero"], mem["fsdp"]
        # DDP replicates: every rank holds every parameter, its gradient and AdamW's two moments
        assert ddp["param_bytes"] == ddp["grad_bytes"] == full["param_bytes"]
        assert ddp["optimizer_bytes"] == 2 * full["param_bytes"]
        # ZeRO-1 shards only the optimizer state (whole tensors per rank, balanced by size)
        assert zero["param_bytes"] == ddp["param_bytes"] and zero["grad_bytes"] == ddp["grad_bytes"]
        assert zero["optimizer_bytes"] < 0.6 * ddp["optimizer_bytes"]
        # FSDP shards all three (each tensor split along dim 0, padded to a multiple of 2 rows)
        for kind in ("param_bytes", "grad_bytes", "optimizer_bytes"):
            assert fsdp[kind] < 0.6 * ddp[kind], (rank, kind, fsdp[kind], ddp[kind])
    for strategy in ("zero", "fsdp"):  # and the two ranks together hold (about) one full copy
        total = sum(ranks[r]["memory"][strategy]["optimizer_bytes"] for r in (0, 1))
        assert 2 * full["param_bytes"] <= total <= 1.05 * 2 * full["param_bytes"]


def test_a_nan_on_one_fsdp_rank_stops_every_rank(sharded_run):
    _, ranks = sharded_run
    for rank in (0, 1):
        assert "loss became nan at step 1 on at least one of 2 ranks" in ranks[rank]["nan"]


def test_rank_0_saves_a_full_loadable_checkpoint_of_an_fsdp_model(sharded_run):
    out, ranks = sharded_run
    assert ranks[0]["returned"] == str(out / "ckpt") and ranks[1]["returned"] is None
    model = load_checkpoint(out / "ckpt")  # a plain GPT, checked against the recorded sha256
    assert type(model) is GPT and model.checkpoint_metadata == {"steps": STEPS}
    assert model.lm_head.weight is model.transformer.wte.weight  # the tie survives the round trip
    state = torch.load(out / "rank0-saved-state.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert ranks[0]["gathered"] == ranks[1]["gathered"] == [0, 1]


def test_check_strategy_names_the_bad_value_and_the_choices():
    assert [check_strategy(s) for s in STRATEGIES] == ["ddp", "fsdp", "zero"]
    with pytest.raises(ValueError, match=r"strategy must be one of 'ddp', 'fsdp', 'zero', got 'zero3'"):
        check_strategy("zero3")
    with pytest.raises(ValueError, match="got None"):
        check_strategy(None)
    with pytest.raises(ValueError, match="'fdsp'"):
        make_distributed_optimizer(_gpt(), "fdsp", 1e-3)


def test_wrap_model_needs_a_process_group_and_a_module():
    with pytest.raises(RuntimeError, match=r"strategy='fsdp'.*init_from_env\(\).*torchrun"):
        wrap_model(_gpt(), "fsdp")
    with pytest.raises(ValueError, match="got 'sharded'"):
        wrap_model(_gpt(), "sharded")
    with pytest.raises(TypeError, match="got dict"):
        wrap_model({}, "ddp")


def test_state_bytes_counts_tied_weights_once_and_only_existing_gradients():
    model = _gpt()
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    by_name = sum(p.numel() * 4 for _, p in model.named_parameters(remove_duplicate=False))
    assert size == by_name - model.lm_head.weight.numel() * 4  # lm_head.weight is wte.weight
    optimizer = make_distributed_optimizer(model, "ddp", 1e-3)
    assert state_bytes(model, optimizer) == {"param_bytes": size, "grad_bytes": 0, "optimizer_bytes": 0}
    lm_loss(model, _global_batches(1)()).backward()
    optimizer.step()
    # AdamW keeps two moments per parameter; its scalar step counters are not counted
    assert state_bytes(model, optimizer) == {"param_bytes": size, "grad_bytes": size,
                                             "optimizer_bytes": 2 * size}
    assert state_bytes(model) == {"param_bytes": size, "grad_bytes": size, "optimizer_bytes": 0}


def test_single_process_fallbacks():
    model = _gpt()
    assert all_gather_object({"a": 1}) == [{"a": 1}]
    state = full_state_dict(model)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    optimizer = make_distributed_optimizer(model, "fsdp", 1e-3)  # a plain AdamW with two groups
    assert type(optimizer) is torch.optim.AdamW and len(optimizer.param_groups) == 2


def test_demo_strategy_option(tmp_path, capsys):
    from minillm.distributed_demo import STRATEGY_CHOICES, main, parse_args

    assert STRATEGY_CHOICES == STRATEGIES
    assert parse_args(["--out", "x"]).strategy == "ddp"  # the default keeps DDP
    with pytest.raises(SystemExit):
        parse_args(["--out", "x", "--strategy", "zero3"])
    assert "invalid choice: 'zero3' (choose from" in capsys.readouterr().err

    args = ["--steps", "3", "--batch-size", "8", "--block-size", "32", "--n-layer", "1",
            "--n-embd", "32", "--accum-steps", "2"]
    one = main([*args, "--out", str(tmp_path / "one")])
    _torchrun("-m", "minillm.distributed_demo", *args, "--strategy", "fsdp", "--out", str(tmp_path / "two"))
    two = json.loads((tmp_path / "two" / "log.json").read_text())
    assert (one["strategy"], two["strategy"]) == ("none", "fsdp")
    torch.testing.assert_close(two["history"]["train_loss"], one["history"]["train_loss"],
                               atol=1e-5, rtol=1e-5)
    assert len(two["step_seconds"]) == 3 and two["mean_step_seconds"] > 0
    assert len(two["memory"]) == 2  # one record per rank
    for rank_memory in two["memory"]:
        for kind in ("param_bytes", "grad_bytes", "optimizer_bytes"):
            assert rank_memory[kind] < 0.6 * one["memory"][0][kind]
    a, b = load_checkpoint(tmp_path / "one" / "checkpoint"), load_checkpoint(tmp_path / "two" / "checkpoint")
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value, atol=ATOL, rtol=RTOL, msg=name)


if __name__ == "__main__":  # run by torchrun from the sharded_run fixture
    _worker(Path(sys.argv[1]))
