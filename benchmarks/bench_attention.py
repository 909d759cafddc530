"""Attention cost: the fused SDPA kernel versus the explicit softmax, and block-local versus dense.

Forward + backward of one causal multi-head attention layer (batch 1, width 128, 4 heads) at a few
sequence lengths: best-of-5 wall-clock time and the peak bytes of tensors allocated during the call
(``minillm.profiling.peak_memory_bytes``; the CUDA allocator's peak on a GPU).
"""

from __future__ import annotations

import torch

from common import Row
from minillm.attention import (MultiHeadAttention, MultiHeadAttentionExplicit, block_local_attention,
                               causal_mask, scaled_dot_product_attention, split_heads)
from minillm.profiling import peak_memory_bytes, time_call
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
    rows = []
    torch.manual_seed(0)
    fast = MultiHeadAttention(WIDTH, HEADS).to(device)
    slow = MultiHeadAttentionExplicit(WIDTH, HEADS).to(device)
    slow.load_state_dict(fast.state_dict())
    for T in LENGTHS:
        x = torch.randn(1, T, WIDTH, device=device, requires_grad=True)
        t_fast = time_call(_step(fast, x), repeats=5, device=device)
        t_slow = time_call(_step(slow, x), repeats=5, device=device)
        m_fast = peak_memory_bytes(_step(fast, x), device)
        m_slow = peak_memory_bytes(_step(slow, x), device)
        rows.append(Row(f"causal MHA fwd+bwd time, T={T} (SDPA)", t_fast * 1e3, t_slow * 1e3, "ms",
                        higher_is_better=False, reference_name="explicit softmax"))
        rows.append(Row(f"causal MHA fwd+bwd peak memory, T={T} (SDPA)", m_fast / 2**20,
                        m_slow / 2**20, "MiB", higher_is_better=False, reference_name="explicit softmax"))
    T = LENGTHS[-1]
    q, k, v = (split_heads(torch.randn(1, T, WIDTH, device=device), HEADS).requires_grad_(True)
               for _ in range(3))
    mask = causal_mask(T, device=device)

    def dense():
        scaled_dot_product_attention(q, k, v, mask)[0].sum().backward()

    def local():
        block_local_attention(q, k, v, BLOCK).sum().backward()

    rows.append(Row(f"attention core fwd+bwd time, T={T} (block-local b={BLOCK})",
                    time_call(local, device=device) * 1e3, time_call(dense, device=device) * 1e3, "ms",
                    higher_is_better=False, reference_name="dense causal, explicit"))
    rows.append(Row(f"attention core fwd+bwd peak memory, T={T} (block-local)",
                    peak_memory_bytes(local, device) / 2**20, peak_memory_bytes(dense, device) / 2**20,
                    "MiB", higher_is_better=False, reference_name="dense causal, explicit"))
    return rows
