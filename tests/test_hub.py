"""Chapter hand-off: shipped checkpoints, cache after first training, recipe versions."""

import pytest
import torch

import minillm.hub as hub
from minillm.models.bigram import BigramConfig, BigramLM
from minillm.recipes import RECIPES, Recipe


def test_shipped_tour_model_loads_without_training(monkeypatch, tmp_path):
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "train_recipe", lambda *a, **k: pytest.fail("must not retrain"))
    model = hub.load_pretrained("tour-bigram")
    assert isinstance(model, BigramLM)
    assert model.checkpoint_source == str(hub.shipped_path("tour-bigram"))
    meta = model.checkpoint_metadata
    assert meta["recipe"] == "tour-bigram" and len(meta["vocab"]) == model.config.vocab_size
    assert meta["metrics"]["val_loss"] == pytest.approx(_recomputed_tour_val_loss(model), abs=1e-5)


def _tour_validation_batches():
    from minillm.data import load_shakespeare
    from minillm.train import sequential_lm_batches
    from minillm.vocab import shakespeare_char_vocab

    # the recipe's validation set: 20 batches of 64 sequential windows of 64 characters
    ids = shakespeare_char_vocab().encode_tensor(load_shakespeare().validation)
    return sequential_lm_batches(ids, 64, 64, max_batches=20)


def _recomputed_tour_val_loss(model) -> float:
    from minillm.train import evaluate

    return evaluate(model, _tour_validation_batches(), autocast=None)


def test_shipped_tour_bigram_is_as_good_as_a_counted_bigram():
    from minillm.data import load_shakespeare
    from minillm.vocab import shakespeare_char_vocab

    model = hub.load_pretrained("tour-bigram", progress=False)
    loss = _recomputed_tour_val_loss(model)
    # reference: the count-based bigram of the training split (add-0.1 smoothing), same windows
    vocab = shakespeare_char_vocab()
    train = vocab.encode_tensor(load_shakespeare().train).long()
    counts = torch.full((len(vocab), len(vocab)), 0.1)
    counts.index_put_((train[:-1], train[1:]), torch.ones(len(train) - 1), accumulate=True)
    logp = torch.log(counts / counts.sum(1, keepdim=True))  # (V, V) row: current char
    batches = _tour_validation_batches()
    x = torch.cat([b[0] for b in batches]).flatten()
    y = torch.cat([b[1] for b in batches]).flatten()
    counted = float(-logp[x, y].mean())
    assert abs(loss - counted) < 0.05, (loss, counted)


def _fake_recipe(monkeypatch, version=1):
    calls = []

    def trainer(progress=True):
        calls.append(1)
        m = BigramLM(BigramConfig(vocab_size=4))
        with torch.no_grad():
            m.table.weight.fill_(float(len(calls)))
        return m, {"history": {}, "metrics": {"val_loss": 1.0}}

    monkeypatch.setitem(RECIPES, "fake", Recipe("fake", trainer, "test recipe", version))
    return calls


def test_first_use_trains_then_the_cache_is_used(monkeypatch, tmp_path):
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path))
    calls = _fake_recipe(monkeypatch)
    first = hub.load_pretrained("fake", progress=False)
    second = hub.load_pretrained("fake", progress=False)
    assert len(calls) == 1
    assert second.checkpoint_source == str(tmp_path / "checkpoints" / "fake")
    assert torch.equal(first.table.weight, second.table.weight)
    hub.load_pretrained("fake", retrain=True, progress=False)
    assert len(calls) == 2


def test_a_changed_recipe_version_retrains(monkeypatch, tmp_path):
    monkeypatch.setenv("MINILLM_CACHE", str(tmp_path))
    calls = _fake_recipe(monkeypatch, version=1)
    hub.load_pretrained("fake", progress=False)
    monkeypatch.setitem(RECIPES, "fake", Recipe("fake", RECIPES["fake"].trainer, "test recipe", 2))
    model = hub.load_pretrained("fake", progress=False)
    assert len(calls) == 2 and model.checkpoint_metadata["recipe_version"] == 2


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="tour-bigram"):
        hub.load_pretrained("no-such-model")


def test_the_recorded_tour_recipe_reproduces_the_shipped_checkpoint():
    model, meta = hub.train_recipe("tour-bigram", progress=False)
    shipped = hub.load_pretrained("tour-bigram")
    torch.testing.assert_close(model.table.weight, shipped.table.weight, atol=1e-5, rtol=1e-5)
    assert meta["metrics"]["val_loss"] == pytest.approx(shipped.checkpoint_metadata["metrics"]["val_loss"], abs=1e-5)
