"""Teaching RNN/LSTM/GRU against torch.nn (outputs and gradients), the char RNN, and the checks.

Parity runs in float64 so that 1e-6 is a meaningful bound on the *implementation* (in float32 the
two summation orders alone differ by ~1e-7 per step and the gap grows with depth and length).
"""

from __future__ import annotations

import pytest
import torch
from _shared import counted_loss
from torch import nn

from minillm.checks import ch05
from minillm.models.char_rnn import CharRNN, CharRNNConfig
from minillm.rnn import (GRUCellTeaching, GRUTeaching, LSTMCellTeaching, LSTMTeaching,
                         RNNCellTeaching, RNNTeaching, input_gradient_norms)

TOL = 1e-6
B, T, I, H, L = 3, 7, 5, 6, 3

KINDS = {
    "lstm": (LSTMTeaching, nn.LSTM, {}),
    "gru": (GRUTeaching, nn.GRU, {}),
    "rnn_tanh": (RNNTeaching, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (RNNTeaching, nn.RNN, {"nonlinearity": "relu"}),
}


def _pair(kind: str, batch_first: bool = True, bias: bool = True):
    ours_cls, ref_cls, kw = KINDS[kind]
    torch.manual_seed(0)
    ref = ref_cls(I, H, num_layers=L, bias=bias, batch_first=batch_first, **kw).double()
    ours = ours_cls(I, H, num_layers=L, bias=bias, batch_first=batch_first, **kw).double()
    ours.load_state_dict(ref.state_dict())  # same names and shapes: a key-for-key copy
    return ours, ref


def _state(kind: str, g: torch.Generator):
    h0 = torch.randn(L, B, H, generator=g, dtype=torch.double)
    if kind == "lstm":
        return (h0.requires_grad_(), torch.randn(L, B, H, generator=g, dtype=torch.double).requires_grad_())
    return h0.requires_grad_()


def _leaves(x, hx):
    return [x] + (list(hx) if isinstance(hx, tuple) else [hx] if hx is not None else [])


def _flat(state):
    return torch.cat([s.flatten() for s in state]) if isinstance(state, tuple) else state.flatten()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("with_state", [True, False])
def test_multilayer_parity_outputs_and_gradients(kind, batch_first, with_state):
    ours, ref = _pair(kind, batch_first)
    g = torch.Generator().manual_seed(1)
    shape = (B, T, I) if batch_first else (T, B, I)
    results = []
    for model in (ours, ref):
        x = torch.randn(*shape, generator=g.manual_seed(1), dtype=torch.double).requires_grad_()
        hx = _state(kind, g) if with_state else None
        out, state = model(x, hx)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=torch.double)
        loss = (out * weights).sum() + _flat(state).pow(2).sum()
        leaves = _leaves(x, hx) + list(model.parameters())
        grads = torch.autograd.grad(loss, leaves)
        results.append((out, _flat(state), grads))
    (o1, s1, g1), (o2, s2, g2) = results
    assert o1.shape == o2.shape == ((B, T, H) if batch_first else (T, B, H))
    torch.testing.assert_close(o1, o2, atol=TOL, rtol=0)
    torch.testing.assert_close(s1, s2, atol=TOL, rtol=0)
    assert len(g1) == len(g2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=TOL, rtol=0)


@pytest.mark.parametrize("ours_cls, ref_cls", [(RNNCellTeaching, nn.RNNCell),
                                               (LSTMCellTeaching, nn.LSTMCell),
                                               (GRUCellTeaching, nn.GRUCell)])
def test_cell_parity(ours_cls, ref_cls):
    torch.manual_seed(0)
    ref = ref_cls(I, H).double()
    ours = ours_cls(I, H).double()
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, I, generator=g, dtype=torch.double)
    h = torch.randn(B, H, generator=g, dtype=torch.double)
    state = (h, torch.randn(B, H, generator=g, dtype=torch.double)) if ours_cls is LSTMCellTeaching else h
    a, b = ours(x, state), ref(x, state)
    torch.testing.assert_close(_flat(a), _flat(b), atol=TOL, rtol=0)
    torch.testing.assert_close(_flat(ours(x)), _flat(ref(x)), atol=TOL, rtol=0)  # zero state


def test_parity_without_bias_and_in_float32():
    ours, ref = _pair("lstm", bias=False)
    assert not any("bias" in n for n, _ in ours.named_parameters())
    ours, ref = ours.float(), ref.float()
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-5, rtol=0)


def test_same_initialisation_as_torch():
    torch.manual_seed(5)
    ref = nn.GRU(I, H, num_layers=2)
    torch.manual_seed(5)
    ours = GRUTeaching(I, H, num_layers=2)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    for (n, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
        assert torch.equal(a, b), n


def test_dropout_between_layers_only_in_training():
    ours, ref = _pair("lstm")
    ours.dropout = 0.5
    x = torch.randn(B, T, I, generator=torch.Generator().manual_seed(6), dtype=torch.double)
    ours.eval()
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=TOL, rtol=0)
    ours.train()
    assert (ours(x)[0] - ref(x)[0]).abs().max() > 1e-3


def test_bad_inputs_raise_clear_errors():
    lstm = LSTMTeaching(I, H, num_layers=2, batch_first=True)
    with pytest.raises(ValueError, match="I=5"):
        lstm(torch.randn(B, T, I + 1))
    with pytest.raises(ValueError, match="h_0"):
        lstm(torch.randn(B, T, I), (torch.zeros(1, B, H), torch.zeros(2, B, H)))
    with pytest.raises(TypeError, match="tuple"):
        lstm(torch.randn(B, T, I), torch.zeros(2, B, H))
    with pytest.raises(ValueError, match="hidden_size"):
        GRUTeaching(I, 0)
    with pytest.raises(ValueError, match="nonlinearity"):
        RNNTeaching(I, H, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout"):
        LSTMTeaching(I, H, dropout=1.0)


def test_gradient_norms_vanish_for_tanh_rnn_and_survive_with_lstm_forget_gate():
    torch.manual_seed(0)
    x = torch.randn(8, 60, 16, generator=torch.Generator().manual_seed(0))
    rnn = RNNCellTeaching(16, 32)  # torch's default init: recurrent gain well below 1
    lstm = LSTMCellTeaching(16, 32)
    with torch.no_grad():
        lstm.bias_ih[32:64] = 3.0  # forget gate near 1: the cell state carries the gradient
    g_rnn, g_lstm = input_gradient_norms(rnn, x), input_gradient_norms(lstm, x)
    assert g_rnn.shape == g_lstm.shape == (60,)
    assert g_rnn[0] < 1e-6 * g_rnn[-1]  # vanished over 59 steps
    assert g_lstm[0] > 1e-2 * g_lstm[-1]  # still there
    with pytest.raises(TypeError):
        input_gradient_norms(nn.LSTMCell(16, 32), x)


# ---- the character model on the fused torch modules ---------------------------------------

@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_char_rnn_state_carrying_equals_one_pass(cell):
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=11, cell=cell, n_embd=8, hidden_size=16, num_layers=2)).eval()
    idx = torch.randint(0, 11, (2, 20))
    full, _ = model(idx)
    first, state = model(idx[:, :12])
    second, _ = model(idx[:, 12:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), full, atol=1e-6, rtol=0)


def test_char_rnn_matches_teaching_lstm():
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=11, n_embd=8, hidden_size=16, num_layers=2)).double().eval()
    teaching = LSTMTeaching(8, 16, num_layers=2, batch_first=True).double()
    teaching.load_state_dict(model.rnn.state_dict())
    idx = torch.randint(0, 11, (3, 9))
    emb = model.wte(idx)
    torch.testing.assert_close(model.rnn(emb)[0], teaching(emb)[0], atol=TOL, rtol=0)


def test_char_rnn_generate_is_seeded_and_validates():
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=11, n_embd=8, hidden_size=16, num_layers=1))
    prompt = torch.tensor([[1, 2, 3]])
    a = model.generate(prompt, 10, generator=torch.Generator().manual_seed(0))
    b = model.generate(prompt, 10, generator=torch.Generator().manual_seed(0))
    assert a.shape == (1, 13) and torch.equal(a, b) and torch.equal(a[:, :3], prompt)
    assert model.training  # generate restores the mode
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt, 1, temperature=0)
    with pytest.raises(ValueError, match=r"\[0, 11\)"):
        model(torch.tensor([[11]]))
    with pytest.raises(TypeError):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="cell"):
        CharRNNConfig(cell="transformer")


def test_char_lstm_learns_real_shakespeare():
    from minillm.data import load_shakespeare
    from minillm.train import LMBatches, sequential_lm_batches, train
    from minillm.vocab import CharVocab

    text = load_shakespeare().validation
    vocab = CharVocab.from_text(text)
    ids = vocab.encode_tensor(text)
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=len(vocab), n_embd=16, hidden_size=64, num_layers=1))
    val = sequential_lm_batches(ids[-20_000:], 64, 16, max_batches=5)
    hist = train(model, LMBatches(ids[:-20_000], 64, 16, seed=0), val_data=val, steps=60, lr=1e-2,
                 warmup_steps=5, eval_every=60, autocast=None, progress=False)
    # 60 steps of a tiny LSTM: clearly past the counted unigram (it learned context), on its way to
    # the counted bigram
    assert hist.val_loss[-1] < counted_loss(ids[:-20_000].long(), val, order=1) - 0.3


# ---- the exercise checks accept the reference and reject a wrong answer ---------------------

def test_checks_accept_reference_and_reject_mistakes(monkeypatch):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    from minillm.rnn import gru_cell, lstm_cell

    assert ch05.check_lstm_cell(lambda x, h, c, *w: lstm_cell(x, (h, c), *w))
    assert ch05.check_gru_cell(gru_cell)
    assert ch05.check_rnn_forward(ch05._ref_rnn_forward)
    assert ch05.check_clip_grad_norm(ch05._ref_clip)

    def swapped_gates(x, h, c, w_ih, w_hh, b_ih, b_hh):  # i and f exchanged
        i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, -1)
        c = torch.sigmoid(i) * c + torch.sigmoid(f) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    assert not ch05.check_lstm_cell(swapped_gates)
    assert not ch05.check_gru_cell(lambda x, h, *w: (1 - 0.5) * gru_cell(x, h, *w) + 0.5 * h)
    assert not ch05.check_rnn_forward(lambda x, h0, *w: (x, h0))
    assert not ch05.check_clip_grad_norm(lambda gs, m: ([g.clamp(-m, m) for g in gs], 0.0))

