"""minillm.best: chapter 11's best-recipe run records an honest curve and budget, and the shipped
checkpoint's recorded score is its own."""

from __future__ import annotations

import pytest

from minillm.best import BestConfig, train_best

TINY = dict(block_size=32, batch_size=4, n_layer=1, n_head=2, n_embd=32, intermediate_size=64,
            eval_every=10, eval_tokens=512, warmup_steps=2)


def test_a_tiny_run_records_its_curve_and_cpu_time():
    model, meta = train_best(BestConfig(budget_cpu_minutes=0.02, **TINY), progress=False)
    curve = meta["curve"]
    assert not model.training
    assert curve[0]["step"] == 0 and curve[-1]["step"] == meta["steps"] >= 21  # calibration + ≥1 step
    assert all(a["cpu_minutes"] <= b["cpu_minutes"] for a, b in zip(curve, curve[1:]))
    assert curve[-1]["val_bpc"] < curve[0]["val_bpc"]  # it learned something
    assert meta["cpu_minutes"] >= curve[-1]["cpu_minutes"]  # the final evaluation is counted too
    assert meta["tokens_seen"] == meta["steps"] * 4 * 32


def test_bad_config():
    with pytest.raises(ValueError, match="n_embd=30 must be a multiple of n_head=4"):
        BestConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="budget_cpu_minutes"):
        BestConfig(budget_cpu_minutes=-1)


def test_recipe_is_registered():
    from minillm.best import RECIPE_NAME, RECIPE_VERSION
    from minillm.recipes import RECIPES

    assert RECIPES[RECIPE_NAME].version == RECIPE_VERSION


def _shipped() -> bool:
    from minillm.hub import shipped_path

    return (shipped_path("ch11-best") / "config.json").is_file()


@pytest.mark.skipif(not _shipped(), reason="ch11-best not shipped yet")
def test_shipped_best_kept_its_budget_and_its_recorded_score_is_its_own():
    from minillm.data import load_shakespeare
    from minillm.hub import load_pretrained
    from minillm.leaderboard import score_token_model
    from minillm.models.gpt_bpe import load_gpt_bpe_shakespeare

    model = load_pretrained("ch11-best")
    meta = model.checkpoint_metadata
    assert meta["params"] == model.num_params()
    assert meta["cpu_minutes"] <= 1.05 * meta["config"]["budget_cpu_minutes"]
    _, tok = load_gpt_bpe_shakespeare()
    bpc, _, _ = score_token_model(model, tok, load_shakespeare()["validation"],
                                  block_size=meta["config"]["block_size"])
    assert abs(bpc - meta["metrics"]["val_bpc"]) < 1e-3
