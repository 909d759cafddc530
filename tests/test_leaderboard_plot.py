"""Training cost of leaderboard rows: recomputed from checkpoints, never typed."""

from __future__ import annotations

import pytest

from minillm.hub import load_pretrained
from minillm.leaderboard import score_gpt_shakespeare
from minillm.leaderboard_plot import find_checkpoint, training_costs


def test_neural_cost_is_six_n_d_from_the_checkpoint():
    s = score_gpt_shakespeare()
    row = {"model": "char GPT", "bpc": s.bpc, "params": s.params, "recipe": s.recipe}
    (cost,) = training_costs([row])
    model = load_pretrained("ch08-gpt-shakespeare")
    meta = model.checkpoint_metadata
    n = sum(p.numel() for p in model.parameters())
    d = meta["history"]["items_seen"] * meta["block_size"]  # sequences x tokens per sequence
    assert cost.size == n == s.params
    assert cost.train_tokens == d
    assert cost.operations == pytest.approx(6.0 * n * d, rel=0, abs=0)
    assert cost.recipe == "ch08-gpt-shakespeare" and cost.chars_per_token == 1.0


def test_rows_without_a_checkpoint_name_are_refused():
    with pytest.raises(ValueError, match="names no checkpoint"):
        find_checkpoint({"model": "mystery", "bpc": 2.0, "params": 10}, models={})
    with pytest.raises(ValueError, match="neither shipped nor cached"):
        find_checkpoint({"model": "x", "bpc": 2.0, "params": 10, "recipe": "nope"}, models={})


@pytest.mark.parametrize("bad", [None, "rows", [], [{"model": "x"}]])
def test_bad_input(bad):
    with pytest.raises((TypeError, ValueError)):
        training_costs(bad)
