"""minillm.race: equal parameters, the same windows for both models, CPU-time budgets honoured, curves
recorded in bits per character."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from minillm.race import RaceConfig, plot_race, race_models, run_race, time_to_quality

TINY = dict(block_size=32, batch_size=4, n_layer=1, n_head=2, n_embd=32, eval_every=5, eval_tokens=512,
            chunk_steps=3, warmup_steps=2)


def test_models_have_equal_parameters_and_differ_only_in_architecture():
    models = race_models(2048, RaceConfig(**TINY))
    gpt, modern = models.values()
    assert abs(gpt.num_params() - modern.num_params()) <= 0.01 * gpt.num_params()
    x = torch.randint(2048, (2, 32))
    assert gpt(x).shape == modern(x).shape == (2, 32, 2048)
    assert not any("bias" in n for n, _ in modern.named_parameters())
    assert any(".bias" in n for n, _ in gpt.named_parameters())


def test_a_tiny_race_spends_its_budget_and_records_curves():
    record, models = run_race(RaceConfig(budget_cpu_minutes=0.05, **TINY), progress=False)
    assert set(models) == set(record["models"]) and not any(m.training for m in models.values())
    assert set(record["models"]) == {"GPT (ch. 8)", "modern (Llama)"}
    for m in record["models"].values():
        curve = m["curve"]
        assert curve[0]["step"] == 0 and curve[-1]["step"] == m["steps"] >= 6
        assert 0.5 * 3.0 <= m["cpu_seconds"] <= 3.0 * 3.0 + 5  # the budget (3 CPU-s), roughly
        assert all(a["cpu_minutes"] <= b["cpu_minutes"] for a, b in zip(curve, curve[1:]))
        assert curve[-1]["val_bpc"] < curve[0]["val_bpc"]  # it learned something
        assert 0 < curve[-1]["val_bpc"] < 12
    ax = plot_race(record)
    assert len(ax.get_lines()) == 2


def test_time_to_quality_interpolates_between_evaluations():
    curve = [{"cpu_minutes": 0.0, "val_bpc": 4.0}, {"cpu_minutes": 1.0, "val_bpc": 3.0},
             {"cpu_minutes": 3.0, "val_bpc": 2.0}, {"cpu_minutes": 4.0, "val_bpc": 2.5}]
    assert time_to_quality(curve, 3.0) == 1.0
    assert time_to_quality(curve, 2.5) == pytest.approx(2.0)  # halfway from 3.0 (1 min) to 2.0 (3 min)
    assert time_to_quality(curve, 4.5) == 0.0
    assert time_to_quality(curve, 1.9) is None
    with pytest.raises(ValueError, match="target_bpc"):
        time_to_quality(curve, -1)


def test_bad_config():
    with pytest.raises(ValueError, match="n_embd=30 must be a multiple of n_head=4"):
        RaceConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="budget_cpu_minutes"):
        RaceConfig(budget_cpu_minutes=0)


def test_race_recipe_is_registered():
    from minillm.race import RECIPE_NAME, RECIPE_VERSION
    from minillm.recipes import RECIPES

    assert RECIPES[RECIPE_NAME].version == RECIPE_VERSION


def _shipped() -> bool:
    from minillm.hub import shipped_path

    return (shipped_path("ch11-race") / "config.json").is_file()


@pytest.mark.skipif(not _shipped(), reason="ch11-race not shipped yet")
def test_shipped_race_record_and_its_model_reproduce():
    from minillm.data import load_shakespeare
    from minillm.hub import load_pretrained
    from minillm.models.gpt_bpe import load_gpt_bpe_shakespeare
    from minillm.race import _val_bits_per_char

    model = load_pretrained("ch11-race")
    race = model.checkpoint_metadata["race"]
    gpt, modern = race["models"]["GPT (ch. 8)"], race["models"]["modern (Llama)"]
    assert modern["params"] == model.num_params()
    assert abs(gpt["params"] - modern["params"]) <= 0.01 * gpt["params"]
    for m in (gpt, modern):  # steps are planned from 5 calibration steps: the budget is met roughly
        budget = race["config"]["budget_cpu_minutes"] * 60
        assert abs(m["cpu_seconds"] - budget) <= 0.4 * budget
    # the recorded final validation score is this model's: recompute it on the same tokens
    _, tok = load_gpt_bpe_shakespeare()
    T = race["config"]["block_size"]
    ids = torch.tensor(tok.encode_ordinary(load_shakespeare()["validation"]), dtype=torch.long)
    n = min(race["config"]["eval_tokens"] // T, (len(ids) - 1) // T)
    x, y = ids[:n * T].view(n, T), ids[1:n * T + 1].view(n, T)
    chars = len(tok.decode(y.flatten().tolist()))
    assert chars == race["val_chars"]
    assert abs(_val_bits_per_char(model, x, y, chars) - modern["final_val_bpc"]) < 2e-3
