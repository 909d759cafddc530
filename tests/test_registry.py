"""The recipe and leaderboard registries hold functions: every entry resolves and has the right shape."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from minillm.hub import shipped_path
from minillm.leaderboard import ROWS, Row, Score, score_row
from minillm.recipes import RECIPES, Recipe, recipe


def test_every_recipe_is_a_function_taking_progress():
    assert {"tour-bigram", "ch04-mlp-shakespeare", "ch05-lstm-shakespeare", "ch06-seq2seq-en-es",
            "ch08-gpt-shakespeare"} <= set(RECIPES)
    for name, r in RECIPES.items():
        assert isinstance(r, Recipe) and r.name == name and r.description
        assert isinstance(r.version, int) and r.version >= 1
        assert callable(r.trainer), name
        params = inspect.signature(r.trainer).parameters
        assert "progress" in params and params["progress"].default is True, name
        # nothing else may be required: load_pretrained calls trainer(progress=...)
        required = [p for p in params.values()
                    if p.default is inspect.Parameter.empty and p.name != "progress"
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        assert not required, f"{name}: {required}"


def test_every_leaderboard_row_holds_a_scorer_without_arguments():
    assert len(ROWS) >= 8 and len({r.name for r in ROWS}) == len(ROWS)
    assert [r.chapter for r in ROWS] == sorted(r.chapter for r in ROWS)  # chapter order
    for row in ROWS:
        assert isinstance(row, Row) and callable(row.scorer), row.name
        params = inspect.signature(row.scorer).parameters.values()
        assert all(p.default is not inspect.Parameter.empty for p in params), row.name


def test_shipped_checkpoints_match_their_recipes():
    from minillm.checkpoint import read_checkpoint_config

    from minillm.hub import SHIPPED_DIR

    shipped = sorted(p.name for p in SHIPPED_DIR.iterdir() if p.is_dir() and not p.name.startswith("_"))
    assert {"tour-bigram", "ch08-gpt-shakespeare", "ch09-bert-en", "ch09-bert-zh-char"} <= set(shipped)
    for name in shipped:  # every shipped checkpoint was written by its registered recipe's version
        assert name in RECIPES, f"{name} is shipped but no recipe of that name is registered"
        meta = read_checkpoint_config(shipped_path(name))["metadata"]
        assert meta["recipe"] == name and meta["recipe_version"] == RECIPES[name].version


def test_a_new_recipe_is_one_decorated_function(monkeypatch):
    monkeypatch.setattr("minillm.recipes.RECIPES", dict(RECIPES))
    from minillm import recipes

    @recipe("test-only", "a recipe registered by a test", version=3)
    def train_test_only(progress: bool = True):
        return None, {}

    assert recipes.RECIPES["test-only"] == Recipe("test-only", train_test_only,
                                                  "a recipe registered by a test", 3)
    with pytest.raises(ValueError, match="'test-only' is already registered"):
        recipe("test-only", "again")(train_test_only)
    with pytest.raises(TypeError, match="must register a function"):
        recipe("not-callable", "x")("minillm.recipes:train_tour_bigram")


def test_score_row_runs_the_row_scorer():
    row = Row("constant", 0, lambda: Score(1.5, 10))
    assert score_row(row) == Score(1.5, 10)


def test_importing_the_registries_is_cheap():
    # recipes are imported by the hub at load time: they must not pull in torch or the models
    code = ("import sys, minillm.recipes; "
            "print(sorted(m for m in ('torch', 'minillm.models.gpt', 'minillm.train') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_t5_recipes_are_registered_under_the_module_names_and_version():
    """Chapter 10's recipe wrappers live in recipes.py (no import cycle); their names and version are
    minillm.models.t5_pretrain's, so a change there that forgets recipes.py fails here."""
    from minillm.models import t5_pretrain

    for name, version in ((t5_pretrain.PRETRAIN_NAME, t5_pretrain.PRETRAIN_VERSION),
                          (t5_pretrain.MULTITASK_NAME, t5_pretrain.MULTITASK_VERSION)):
        assert name in RECIPES, name
        assert RECIPES[name].version == version, name
