"""The Bengio MLP LM: windows vs a per-position loop, causality, the word vocabulary, the
embedding projection, checkpoints, real-data learning, the leaderboard row, and the checks."""

from __future__ import annotations

import math

import pytest
import torch
from _shared import counted_loss
import torch.nn.functional as F

from minillm.checks import ch04
from minillm.models.mlp_lm import (MLPLM, MLPLMConfig, WordVocab, context_windows,
                                   nearest_neighbours, project_2d, split_words)


def _model(**kw) -> MLPLM:
    torch.manual_seed(0)
    cfg = dict(vocab_size=13, context=4, n_embd=5, n_hidden=7)
    cfg.update(kw)
    return MLPLM(MLPLMConfig(**cfg)).eval()


def _slow_logits(model: MLPLM, idx: torch.Tensor) -> torch.Tensor:
    """The formula position by position: x = [C(w_{t-n+1}); ...; C(w_t)], logits = U tanh(Hx + d) + b."""
    n, pad = model.config.context, model.pad_id
    rows = []
    for b in range(idx.size(0)):
        for t in range(idx.size(1)):
            ids = [int(idx[b, s]) if s >= 0 else pad for s in range(t - n + 1, t + 1)]
            x = torch.cat([model.wte.weight[i] for i in ids])
            logits = model.head(torch.tanh(model.hidden(x)))
            if model.direct is not None:
                logits = logits + model.direct(x)
            rows.append(logits)
    return torch.stack(rows).view(idx.size(0), idx.size(1), -1)


@pytest.mark.parametrize("direct", [False, True])
def test_unfolded_windows_equal_the_per_position_formula(direct):
    model = _model(direct=direct)
    idx = torch.randint(0, 13, (3, 9), generator=torch.Generator().manual_seed(1))
    fast = model(idx)
    assert fast.shape == (3, 9, 13)
    torch.testing.assert_close(fast, _slow_logits(model, idx), atol=1e-6, rtol=0)


def test_context_windows_pad_before_the_start():
    w = context_windows(torch.tensor([[5, 6, 7]]), 3, pad_id=0)
    assert w.tolist() == [[[0, 0, 5], [0, 5, 6], [5, 6, 7]]]


def test_logits_depend_only_on_the_last_context_tokens():
    model = _model()
    idx = torch.randint(0, 13, (2, 12), generator=torch.Generator().manual_seed(2))
    base = model(idx)
    changed = idx.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 13
    out = model(changed)
    torch.testing.assert_close(out[:, :5], base[:, :5])  # the past does not see the future
    torch.testing.assert_close(out[:, 9:], base[:, 9:])  # 4 positions later, token 5 is forgotten
    assert (out[:, 5:9] - base[:, 5:9]).abs().max() > 1e-4


def test_generate_uses_the_window_and_is_seeded():
    model = _model()
    prompt = torch.tensor([[1, 2, 3, 4, 5, 6]])
    a = model.generate(prompt, 8, generator=torch.Generator().manual_seed(0))
    b = model.generate(prompt, 8, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1, 14) and torch.equal(a, b)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 1, temperature=-1.0)


def test_bad_inputs_raise_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match=r"\[0, 13\)"):
        model(torch.tensor([[13]]))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="context"):
        MLPLMConfig(context=0)


def test_checkpoint_round_trip(tmp_path):
    from minillm.checkpoint import load_checkpoint, save_checkpoint

    model = _model(direct=True)
    save_checkpoint(model, tmp_path / "mlp")
    loaded = load_checkpoint(tmp_path / "mlp").eval()
    idx = torch.randint(0, 13, (2, 6))
    assert torch.equal(model(idx), loaded(idx))


def test_word_vocab_on_shakespeare():
    from minillm.data import load_shakespeare

    text = load_shakespeare().validation
    vocab = WordVocab.from_text(text, max_size=500)
    assert len(vocab) == 500 and vocab.itos[0] == "<unk>"
    assert vocab.itos[1] in {",", "the", "."}  # the most frequent tokens come first
    ids = vocab.encode("The king, my lord!")
    assert vocab.decode(ids) == "the king, my lord!"
    assert vocab.encode("zyxwvut") == [0]
    assert split_words("Ne'er o'er-look'd it.") == ["ne'er", "o'er", "-", "look'd", "it", "."]
    with pytest.raises(ValueError):
        vocab.decode([500])


def test_project_2d_matches_pca_and_neighbours():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(40, 6, generator=g) * torch.tensor([5.0, 3.0, 0.1, 0.1, 0.1, 0.1])
    coords = project_2d(w)
    assert coords.shape == (40, 2)
    # reference PCA: eigenvectors of the covariance matrix with the two largest eigenvalues
    centered = (w - w.mean(0)).double()
    _, vecs = torch.linalg.eigh(centered.T @ centered)  # ascending eigenvalues
    ref = centered @ vecs[:, [-1, -2]]
    torch.testing.assert_close(coords.double().abs(), ref.abs(), atol=1e-4, rtol=0)  # up to sign
    assert coords[:, 0].var() > coords[:, 1].var()
    w2 = torch.tensor([[1.0, 0.0], [0.9, 0.1], [-1.0, 0.0], [0.0, 1.0]])
    assert [i for i, _ in nearest_neighbours(w2, 0, k=2)] == [1, 3]
    with pytest.raises(ValueError):
        project_2d(torch.randn(5))


def test_mlp_learns_real_shakespeare():
    from minillm.data import load_shakespeare
    from minillm.train import LMBatches, sequential_lm_batches, train
    from minillm.vocab import CharVocab

    text = load_shakespeare().validation
    vocab = CharVocab.from_text(text)
    ids = vocab.encode_tensor(text)
    torch.manual_seed(0)
    model = MLPLM(MLPLMConfig(vocab_size=len(vocab), context=6, n_embd=8, n_hidden=64))
    val = sequential_lm_batches(ids[-20_000:], 64, 32, max_batches=5)
    hist = train(model, LMBatches(ids[:-20_000], 64, 32, seed=0), val_data=val, steps=150, lr=1e-2,
                 warmup_steps=10, eval_every=150, autocast=None, progress=False)
    # context 6 after 150 steps: at least as good as the counted bigram on the same windows
    assert hist.val_loss[-1] < counted_loss(ids[:-20_000].long(), val, order=2)


def test_leaderboard_rows_score_the_shipped_models():
    from minillm.checkpoint import read_checkpoint_config
    from minillm.hub import RECIPES, shipped_path
    from minillm.leaderboard import ROWS, score_lstm_shakespeare, score_mlp_shakespeare, score_row

    rows = {r.scorer: r for r in ROWS}
    mlp = rows[score_mlp_shakespeare]
    lstm = rows[score_lstm_shakespeare]
    assert (mlp.chapter, lstm.chapter) == (4, 5)
    for name in ("ch04-mlp-shakespeare", "ch05-lstm-shakespeare"):
        meta = read_checkpoint_config(shipped_path(name))["metadata"]  # shipped, never retrained
        assert meta["recipe_version"] == RECIPES[name].version, f"{name}: shipped checkpoint is stale"
    s_mlp, s_lstm = score_row(mlp), score_row(lstm)
    assert s_mlp.n_chars == s_lstm.n_chars > 200_000
    assert 1.0 < s_lstm.bpc < s_mlp.bpc < math.log2(82)  # the LSTM beats the MLP; both beat uniform


def test_checks_accept_reference_and_reject_mistakes(monkeypatch):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    assert ch04.check_embedding_as_matmul(lambda ids, w: w[ids])
    assert ch04.check_context_windows(ch04._ref_windows)
    assert ch04.check_mlp_forward(ch04._ref_mlp_forward)
    assert ch04.check_cross_entropy(lambda logits, y: F.cross_entropy(logits, y))

    assert not ch04.check_embedding_as_matmul(lambda ids, w: F.one_hot(ids, w.size(0)).float() @ w.T[:, :0])
    assert not ch04.check_context_windows(lambda ids, n, p: context_windows(ids[None], n, 0)[0])
    assert not ch04.check_mlp_forward(lambda wi, e, w1, b1, w2, b2: torch.relu(e[wi].flatten(1) @ w1.T + b1) @ w2.T + b2)
    naive = lambda l, y: -(l.exp() / l.exp().sum(-1, keepdim=True)).log()[torch.arange(len(y)), y].mean()  # noqa: E731
    assert not ch04.check_cross_entropy(naive)  # overflows on the huge-logit case

