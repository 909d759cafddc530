"""Checks for chapter 5's exercises (recurrent networks)."""

from __future__ import annotations

import torch

from . import Case, CheckResult, run_check
from ..rnn import gru_cell, lstm_cell, rnn_cell


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weights(g: torch.Generator, gates: int, i: int, h: int) -> tuple[torch.Tensor, ...]:
    s = h ** -0.5
    return (torch.randn(gates * h, i, generator=g) * s, torch.randn(gates * h, h, generator=g) * s,
            torch.randn(gates * h, generator=g) * s, torch.randn(gates * h, generator=g) * s)


def _ref_rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh):
    h, outs = h0, []
    for t in range(x.size(1)):
        h = rnn_cell(x[:, t], h, w_ih, w_hh, b_ih, b_hh)
        outs.append(h)
    return torch.stack(outs, dim=1), h


def check_rnn_forward(fn) -> CheckResult:
    """``fn(x, h0, w_ih, w_hh, b_ih, b_hh)`` → (outputs (B, T, H), h_T (B, H)) of a tanh RNN."""
    cases = []
    for seed, (b, t, i, h) in enumerate([(2, 3, 4, 5), (1, 1, 2, 3), (4, 12, 3, 6)]):
        g = _gen(seed)
        cases.append(Case((torch.randn(b, t, i, generator=g), torch.randn(b, h, generator=g),
                           *_weights(g, 1, i, h)), description=f"B={b}, T={t}, I={i}, H={h}"))
    return run_check("rnn_forward", fn, _ref_rnn_forward, cases,
                     hint="loop t over x.size(1): h = tanh(x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh); "
                          "collect every h and torch.stack them along dim=1")


def _ref_lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    return lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)


def check_lstm_cell(fn) -> CheckResult:
    """``fn(x, h, c, w_ih, w_hh, b_ih, b_hh)`` → (h', c'), gates in torch's order i, f, g, o."""
    cases = []
    for seed, (b, i, h) in enumerate([(2, 3, 4), (1, 1, 1), (5, 6, 8)]):
        g = _gen(20 + seed)
        cases.append(Case((torch.randn(b, i, generator=g), torch.randn(b, h, generator=g),
                           torch.randn(b, h, generator=g), *_weights(g, 4, i, h)),
                          description=f"B={b}, I={i}, H={h}"))
    return run_check("lstm_cell", fn, _ref_lstm_cell, cases,
                     hint="gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh, split into 4 chunks of H "
                          "(i, f, g, o); sigmoid on i, f, o, tanh on g; c' = f*c + i*g; h' = o*tanh(c')")


def _ref_gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    return gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)


def check_gru_cell(fn) -> CheckResult:
    """``fn(x, h, w_ih, w_hh, b_ih, b_hh)`` → h', gates in torch's order r, z, n."""
    cases = []
    for seed, (b, i, h) in enumerate([(2, 3, 4), (1, 1, 1), (5, 6, 8)]):
        g = _gen(30 + seed)
        cases.append(Case((torch.randn(b, i, generator=g), torch.randn(b, h, generator=g),
                           *_weights(g, 3, i, h)), description=f"B={b}, I={i}, H={h}"))
    return run_check("gru_cell", fn, _ref_gru_cell, cases,
                     hint="split x @ w_ih.T + b_ih and h @ w_hh.T + b_hh into 3 chunks each (r, z, n); "
                          "n = tanh(i_n + r * h_n) — the reset gate multiplies the hidden part, bias "
                          "included; h' = (1 - z) * n + z * h")


def _ref_clip(grads: list[torch.Tensor], max_norm: float):
    total = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    scale = min(1.0, max_norm / (float(total) + 1e-6))
    return [g * scale for g in grads], float(total)


def check_clip_grad_norm(fn) -> CheckResult:
    """``fn(grads, max_norm)`` → (clipped grads, total norm before clipping), like clip_grad_norm_."""
    g = _gen(40)
    big = [torch.randn(3, 4, generator=g) * 10, torch.randn(5, generator=g) * 10]
    small = [torch.full((2, 2), 0.1), torch.tensor([0.2])]
    cases = [
        Case((big, 1.0), description="a large gradient is scaled down to norm 1"),
        Case((small, 5.0), description="a small gradient is left alone"),
        Case(([torch.tensor([3.0, 0.0]), torch.tensor([[4.0]])], 1.0),
             description="norm 5 over two tensors: the norm is global, not per tensor"),
        Case(([torch.zeros(3)], 1.0), description="all zeros: no division by zero"),
    ]
    return run_check("clip_grad_norm", fn, _ref_clip, cases, atol=1e-5,
                     hint="total = sqrt(sum over tensors of (g**2).sum()); multiply every tensor by "
                          "min(1, max_norm / (total + 1e-6)); return (new list, float(total))")


# ---------------------------------------------------------------------------------------------
# Larger exercise: a complete multi-layer GRU, checked against torch.nn.GRU (gradients included)
# ---------------------------------------------------------------------------------------------

_GRU_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _torch_gru(x, weights, h0=None):
    layers, hidden = len(weights), weights[0][1].size(1)
    gru = torch.nn.GRU(x.size(-1), hidden, layers, batch_first=True).to(x.dtype)
    # run on the given tensors themselves (not copies), so gradients flow back to them
    params = {f"{n}_l{k}": t for k, layer in enumerate(weights) for n, t in zip(_GRU_NAMES, layer)}
    return torch.func.functional_call(gru, params, (x, h0))


def _gru_probe(fn, x, weights, h0):
    """Outputs, final state and the gradients of a fixed loss w.r.t. the input, h0 and every weight."""
    copies = (x.clone(), [tuple(t.clone() for t in layer) for layer in weights],
              None if h0 is None else h0.clone())
    res = fn(x, weights, h0)  # the arguments run_check watches for in-place writes
    if not (isinstance(res, (tuple, list)) and len(res) == 2
            and all(isinstance(r, torch.Tensor) for r in res)):
        return res
    out, h_n = (r.detach() for r in res)
    # the gradients, from a second call on fresh copies that require grad
    x, weights, h0 = copies
    x = x.requires_grad_()
    weights = [tuple(t.requires_grad_() for t in layer) for layer in weights]
    h0 = None if h0 is None else h0.requires_grad_()
    leaves = [x] + ([h0] if h0 is not None else []) + [t for layer in weights for t in layer]
    try:
        out2, h_n2 = fn(x, weights, h0)
        loss = out2.pow(2).sum() + h_n2.sum()
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    except Exception as exc:  # noqa: BLE001 — reported as a wrong answer, with the reason
        return out, h_n, f"no gradients: backpropagating through your function failed ({type(exc).__name__}: {exc})"
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, leaves)]
    return out, h_n, grads


def check_gru_forward(fn) -> CheckResult:
    """``fn(x, weights, h0)`` → (outputs (B, T, H), h_n (L, B, H)) of a multi-layer batch-first GRU.

    Compared with ``torch.nn.GRU`` on the same weights: outputs, final states and the gradients of a
    loss with respect to the input, the initial state and every weight.
    """
    cases = []
    for seed, (b, t, i, h, layers, with_h0) in enumerate(
            [(2, 5, 3, 4, 1, True), (3, 7, 4, 6, 2, True), (1, 4, 2, 3, 3, False)]):
        g = _gen(50 + seed)
        weights = [tuple(w.double() for w in _weights(g, 3, i if k == 0 else h, h)) for k in range(layers)]
        x = torch.randn(b, t, i, generator=g, dtype=torch.double)
        h0 = torch.randn(layers, b, h, generator=g, dtype=torch.double) if with_h0 else None
        cases.append(Case((x, weights, h0), description=f"B={b}, T={t}, I={i}, H={h}, {layers} layer(s)"
                          + ("" if with_h0 else ", h0=None (start from zeros)")))
    def learner(x, weights, h0):
        return _gru_probe(fn, x, weights, h0)

    def reference(x, weights, h0):
        return _gru_probe(_torch_gru, x, weights, h0)

    return run_check("gru_forward", learner, reference, cases, atol=1e-8,
                     hint="for each layer: h = h0[layer] (zeros if h0 is None); for t in range(T): the GRU "
                          "step of exercise 3 on layer_input[:, t]; stack the T states into (B, T, H) — "
                          "they are the next layer's input; h_n stacks every layer's last h into (L, B, H)")
