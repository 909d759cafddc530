"""Recurrent networks written out step by step: the teaching versions of RNN, LSTM and GRU.

Each cell is first a plain function (``rnn_cell``, ``lstm_cell``, ``gru_cell``) that maps one time
step's input and the previous state to the next state, with the equations of the papers:

* Elman RNN: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)``.
* LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000): gates
  ``i, f, g, o`` from one fused matmul; ``c' = f*c + i*g``, ``h' = o*tanh(c')``.
* GRU (Cho et al. 2014): ``r, z`` gates; ``n = tanh(W_in x + b_in + r*(W_hn h + b_hn))``,
  ``h' = (1-z)*n + z*h``.

The ``*CellTeaching`` modules wrap one cell; ``RNNTeaching``, ``LSTMTeaching`` and ``GRUTeaching``
stack ``num_layers`` of them and loop over time in Python. Parameter names, shapes, gate order
and initialisation follow ``torch.nn.RNN/LSTM/GRU`` exactly, so ``teaching.load_state_dict(
torch_module.state_dict())`` copies a torch module key for key and both give the same outputs and
gradients (``tests/test_rnn.py``). They are for reading and for experiments that need every
intermediate state; train with the fused ``torch.nn`` modules, which are faster (about 1.5-2.5x
for a forward + backward pass at the chapter's sizes on a 2-core CPU: ``benchmarks/bench_rnn.py``). Not covered: bidirectional layers and ``proj_size``.

Shape letters: B batch, T time, I input size, H hidden size, L layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .validation import check_bool, check_float, check_int, check_tensor

__all__ = [
    "rnn_cell", "lstm_cell", "gru_cell",
    "RNNCellTeaching", "LSTMCellTeaching", "GRUCellTeaching",
    "RNNTeaching", "LSTMTeaching", "GRUTeaching",
    "input_gradient_norms",
]


# ---------------------------------------------------------------------------------------------
# One time step, as functions
# ---------------------------------------------------------------------------------------------

def rnn_cell(x: torch.Tensor, h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
             b_ih: torch.Tensor | None = None, b_hh: torch.Tensor | None = None,
             nonlinearity: str = "tanh") -> torch.Tensor:
    """One Elman RNN step: x (B, I), h (B, H) → h' (B, H)."""
    pre = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)  # (B, H)
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def lstm_cell(x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], w_ih: torch.Tensor,
              w_hh: torch.Tensor, b_ih: torch.Tensor | None = None,
              b_hh: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step: x (B, I), (h, c) each (B, H) → (h', c'). Gate order i, f, g, o (as torch)."""
    h, c = state
    gates = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=-1)  # each (B, H)
    i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
    g = torch.tanh(g)
    c = f * c + i * g  # the cell state: a gated running sum, the "constant error carousel"
    h = o * torch.tanh(c)
    return h, c


def gru_cell(x: torch.Tensor, h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
             b_ih: torch.Tensor | None = None, b_hh: torch.Tensor | None = None) -> torch.Tensor:
    """One GRU step: x (B, I), h (B, H) → h' (B, H). Gate order r, z, n (as torch)."""
    gi = F.linear(x, w_ih, b_ih)  # (B, 3H)
    gh = F.linear(h, w_hh, b_hh)  # (B, 3H)
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)  # reset gate: how much of h feeds the candidate
    z = torch.sigmoid(i_z + h_z)  # update gate: keep the old state (z=1) or take the candidate
    n = torch.tanh(i_n + r * h_n)  # the reset gate multiplies W_hn h + b_hn, bias included (as torch)
    return (1 - z) * n + z * h


_GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _check_sizes(input_size: int, hidden_size: int, num_layers: int = 1) -> None:
    check_int("input_size", input_size, low=1)
    check_int("hidden_size", hidden_size, low=1)
    check_int("num_layers", num_layers, low=1)


def _init_uniform(module: nn.Module, hidden_size: int) -> None:
    """torch's initialisation for recurrent layers: every parameter ~ U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


# ---------------------------------------------------------------------------------------------
# Cells as modules (same parameter names as torch.nn.RNNCell / LSTMCell / GRUCell)
# ---------------------------------------------------------------------------------------------

class _CellTeaching(nn.Module):
    mode = "rnn"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        _check_sizes(input_size, hidden_size)
        self.input_size, self.hidden_size = input_size, hidden_size
        gates = _GATES[self.mode] * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size))
        self.weight_hh = nn.Parameter(torch.empty(gates, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gates)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(gates)) if bias else None
        _init_uniform(self, hidden_size)

    def _zeros(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.size(0), self.hidden_size)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.size(-1) != self.input_size:
            raise ValueError(f"expected input of shape (B, {self.input_size}), got {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"


class RNNCellTeaching(_CellTeaching):
    """An Elman RNN cell (tanh or relu), parameter-compatible with ``torch.nn.RNNCell``."""

    mode = "rnn"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = nonlinearity

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(x)
        h = self._zeros(x) if h is None else h
        return rnn_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                        self.nonlinearity)


class LSTMCellTeaching(_CellTeaching):
    """An LSTM cell, parameter-compatible with ``torch.nn.LSTMCell``."""

    mode = "lstm"

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_input(x)
        state = (self._zeros(x), self._zeros(x)) if state is None else state
        return lstm_cell(x, state, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


class GRUCellTeaching(_CellTeaching):
    """A GRU cell, parameter-compatible with ``torch.nn.GRUCell``."""

    mode = "gru"

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(x)
        h = self._zeros(x) if h is None else h
        return gru_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)


# ---------------------------------------------------------------------------------------------
# Multi-layer networks (same parameter names and calling convention as torch.nn.RNN/LSTM/GRU)
# ---------------------------------------------------------------------------------------------

class _RecurrentTeaching(nn.Module):
    """A stack of cells looped over time in Python; see the module docstring."""

    mode = "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0):
        super().__init__()
        _check_sizes(input_size, hidden_size, num_layers)
        check_bool("bias", bias)
        check_bool("batch_first", batch_first)
        dropout = check_float("dropout", dropout, low=0, high=1, high_inclusive=False)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        gates = _GATES[self.mode] * hidden_size
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size
            setattr(self, f"weight_ih_l{layer}", nn.Parameter(torch.empty(gates, width)))
            setattr(self, f"weight_hh_l{layer}", nn.Parameter(torch.empty(gates, hidden_size)))
            if bias:
                setattr(self, f"bias_ih_l{layer}", nn.Parameter(torch.empty(gates)))
                setattr(self, f"bias_hh_l{layer}", nn.Parameter(torch.empty(gates)))
        _init_uniform(self, hidden_size)

    def layer_weights(self, layer: int) -> tuple[torch.Tensor, ...]:
        """(w_ih, w_hh, b_ih, b_hh) of one layer (biases None when ``bias=False``)."""
        get = lambda name: getattr(self, f"{name}_l{layer}", None)  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def _step(self, x, state, weights):  # one cell step; state layout depends on the cell
        raise NotImplementedError

    def _initial(self, x: torch.Tensor, hx) -> list:
        raise NotImplementedError

    def _final(self, states: list):
        raise NotImplementedError

    def _check_state(self, h: torch.Tensor, batch: int, what: str) -> None:
        expected = (self.num_layers, batch, self.hidden_size)
        if tuple(h.shape) != expected:
            raise ValueError(f"{what} must have shape (L, B, H) = {expected}, got {tuple(h.shape)}")

    def forward(self, x: torch.Tensor, hx: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """x (B, T, I) if ``batch_first`` else (T, B, I) → (output, final state), as torch does."""
        check_tensor("x", x, dtype_kind="float")
        if x.dim() != 3 or x.size(-1) != self.input_size:
            layout = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"expected input of shape {layout} with I={self.input_size}, "
                             f"got {tuple(x.shape)}")
        if not self.batch_first:
            x = x.transpose(0, 1)  # (B, T, I)
        states = self._initial(x, hx)  # one state per layer
        layer_input = x
        for layer in range(self.num_layers):
            weights = self.layer_weights(layer)
            state, outputs = states[layer], []
            for t in range(layer_input.size(1)):
                state = self._step(layer_input[:, t], state, weights)
                outputs.append(state[0] if isinstance(state, tuple) else state)
            states[layer] = state
            layer_input = torch.stack(outputs, dim=1)  # (B, T, H)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, self.dropout, training=True)
        output = layer_input if self.batch_first else layer_input.transpose(0, 1)
        return output, self._final(states)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}")


class RNNTeaching(_RecurrentTeaching):
    """A multi-layer Elman RNN looped in Python; drop-in for ``torch.nn.RNN`` (unidirectional)."""

    mode = "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout)
        self.nonlinearity = nonlinearity

    def _step(self, x, h, weights):
        return rnn_cell(x, h, *weights, nonlinearity=self.nonlinearity)

    def _initial(self, x, hx):
        if hx is None:
            return [x.new_zeros(x.size(0), self.hidden_size) for _ in range(self.num_layers)]
        self._check_state(hx, x.size(0), "h_0")
        return list(hx.unbind(0))

    def _final(self, states):
        return torch.stack(states)  # (L, B, H)


class GRUTeaching(RNNTeaching):
    """A multi-layer GRU looped in Python; drop-in for ``torch.nn.GRU`` (unidirectional)."""

    mode = "gru"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0):
        super().__init__(input_size, hidden_size, num_layers, "tanh", bias, batch_first, dropout)

    def _step(self, x, h, weights):
        return gru_cell(x, h, *weights)


class LSTMTeaching(_RecurrentTeaching):
    """A multi-layer LSTM looped in Python; drop-in for ``torch.nn.LSTM`` (unidirectional)."""

    mode = "lstm"

    def _step(self, x, state, weights):
        return lstm_cell(x, state, *weights)

    def _initial(self, x, hx):
        if hx is None:
            zeros = x.new_zeros(x.size(0), self.hidden_size)
            return [(zeros, zeros) for _ in range(self.num_layers)]
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError("an LSTM's initial state must be a tuple (h_0, c_0), "
                            f"got {type(hx).__name__}")
        self._check_state(hx[0], x.size(0), "h_0")
        self._check_state(hx[1], x.size(0), "c_0")
        return list(zip(hx[0].unbind(0), hx[1].unbind(0)))

    def _final(self, states):
        h = torch.stack([s[0] for s in states])  # (L, B, H)
        c = torch.stack([s[1] for s in states])  # (L, B, H)
        return h, c


# ---------------------------------------------------------------------------------------------
# Backpropagation through time, measured
# ---------------------------------------------------------------------------------------------

def input_gradient_norms(cell: nn.Module, inputs: torch.Tensor,
                         readout: torch.Tensor | None = None) -> torch.Tensor:
    """How strongly the last step's output depends on each earlier input: ‖∂L/∂x_t‖ for every t.

    ``cell`` is an ``RNNCellTeaching``/``LSTMCellTeaching``/``GRUCellTeaching``; ``inputs`` is
    (B, T, I). The loss ``L = readout · h_T`` (a fixed random readout unless given) depends on the
    inputs only through backpropagation through time, so the returned (T,) tensor — the gradient
    norm for input step t, averaged over the batch — shows how the error signal shrinks (vanishing)
    or grows (exploding) as it travels back ``T - 1 - t`` steps.
    """
    if not isinstance(cell, _CellTeaching):
        raise TypeError(f"expected a *CellTeaching module, got {type(cell).__name__}")
    check_tensor("inputs", inputs, ndim=3, dtype_kind="float")
    if inputs.size(-1) != cell.input_size or inputs.size(1) < 1:
        raise ValueError(f"inputs must have shape (B, T >= 1, I={cell.input_size}), "
                         f"got {tuple(inputs.shape)}")
    x = inputs.detach().clone().requires_grad_(True)
    if readout is None:
        g = torch.Generator().manual_seed(0)
        readout = torch.randn(cell.hidden_size, generator=g, dtype=x.dtype) / math.sqrt(cell.hidden_size)
    state = None
    for t in range(x.size(1)):
        state = cell(x[:, t], state)
    h_last = state[0] if isinstance(state, tuple) else state  # (B, H)
    loss = (h_last @ readout.to(h_last.dtype)).sum()
    (grad,) = torch.autograd.grad(loss, x)  # (B, T, I)
    return grad.norm(dim=-1).mean(dim=0)  # (T,)
