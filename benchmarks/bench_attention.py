"""Attention cost: the fused SDPA kernel versus the explicit softmax, and block-local versus dense.

Forward + backward of one causal multi-head attention layer (batch 1, width 128, 4 heads) at a few
sequence lengths: best-of-5 wall-clock time and the peak bytes of tensors allocated during the call
(``common.peak_tensor_bytes``). SDPA and explicit layers share weights and their outputs are
asserted allclose first; timings are paired and alternating (common.py). The block-local rows compare
a *different* attention pattern (each query sees its own block) with dense causal attention: they
measure what the sparsity saves, not two implementations of the same function.
"""

from __future__ import annotations

import torch

from common import Row, assert_same_output, paired_timing, peak_tensor_bytes
from minillm.attention import (MultiHeadAttention, MultiHeadAttentionExplicit, block_local_attention,
                               causal_mask, scaled_dot_product_attention, split_heads)
from minillm.device import pick_device

LENGTHS = (256, 1024, 2048)
WIDTH, HEADS, BLOCK = 128, 4, 128


def _step(module, x):
    def fn():
        x.grad = None
        module(x, causal=True).sum().backward()
    return fn


def run() -> list[Row]:
    device = pick_device()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    rows = []
    torch.manual_seed(0)
    fast = MultiHeadAttention(WIDTH, HEADS).to(device)
    slow = MultiHeadAttentionExplicit(WIDTH, HEADS).to(device)
    slow.load_state_dict(fast.state_dict())
    for T in LENGTHS:
        x = torch.randn(1, T, WIDTH, device=device, requires_grad=True)
        with torch.no_grad():
            assert_same_output(fast(x, causal=True), slow(x, causal=True), f"MHA T={T}", atol=1e-5)
        p = paired_timing(_step(fast, x), _step(slow, x), repeats=5, sync=sync)
        m_fast = peak_tensor_bytes(_step(fast, x))
        m_slow = peak_tensor_bytes(_step(slow, x))
        rows.append(Row.timed(f"causal MHA fwd+bwd time, T={T} (SDPA)", p, unit="ms", scale=1e3,
                              reference_name="explicit softmax, same weights"))
        rows.append(Row(f"causal MHA fwd+bwd peak tensor memory, T={T} (SDPA)", m_fast / 2**20,
                        m_slow / 2**20, "MiB", higher_is_better=False,
                        reference_name="explicit softmax; fused-kernel workspaces are invisible"))
    T = LENGTHS[-1]
    q, k, v = (split_heads(torch.randn(1, T, WIDTH, device=device), HEADS).requires_grad_(True)
               for _ in range(3))
    mask = causal_mask(T, device=device)

    def dense():
        scaled_dot_product_attention(q, k, v, mask)[0].sum().backward()

    def local():
        block_local_attention(q, k, v, BLOCK).sum().backward()

    p = paired_timing(local, dense, repeats=3, sync=sync)
    rows.append(Row.timed(f"attention core fwd+bwd time, T={T} (block-local b={BLOCK})", p, unit="ms",
                          scale=1e3, reference_name="dense causal, explicit: a different pattern"))
    rows.append(Row(f"attention core fwd+bwd peak tensor memory, T={T} (block-local)",
                    peak_tensor_bytes(local) / 2**20, peak_tensor_bytes(dense) / 2**20,
                    "MiB", higher_is_better=False, reference_name="dense causal, explicit: a different pattern"))
    return rows
