"""minillm's GPT against Hugging Face ``GPT2LMHeadModel`` with the same config and the same weights.

Config: characters (vocab 65), 6 layers, 6 heads, width 384, context 256, dropout 0; training batch
16, AdamW, 2 threads. The reference is built first and ours is ``GPT.from_hf(reference)``, so both
hold the same weights; logits (and one step's loss) are asserted allclose before anything is timed.

Rows (each timed in alternating pairs, the ratio is the median of paired ratios, see common.py):
- training tokens/s, fp32 and bf16 autocast, against HF with ``activation_function=
  "gelu_pytorch_tanh"`` (the same fused tanh-GELU we use: the main, like-for-like row) and against
  HF's default ``gelu_new`` (op-by-op GELU, within ~3e-6 of ours: the comparison users meet);
- MFU of each side against the fp32 and bf16 matmul peaks measured in this run;
- batch-1 greedy generation of 256 tokens with a KV cache (fp32), tokens asserted identical first;
- peak bytes of tensors created by one training step / one generation (the model's work, not
  imports or weights);
- ``MINILLM_BENCH_QUICK=1``: 4 layers, width 256, context 128, batch 8, 128 new tokens, 3 pairs;
- opt-in (``MINILLM_BENCH_COMPILE=1``): ``torch.compile`` of our model against our eager model, bf16,
  with the first (compiling) step's seconds reported separately.

Both sides use the same optimizer, ``torch.optim.AdamW(fused=True)`` (one fused CPU kernel; the
default per-parameter loop would add the same ~20% to both sides and hide the model's own cost).

    python benchmarks/run.py gpt          # or: python benchmarks/bench_gpt.py
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Callable

import torch
import torch.nn.functional as F

from common import (Row, assert_same_output, matmul_peak, matmul_peaks, paired_timing, peak_rows,
                    peak_tensor_bytes, threads)

VOCAB, BLOCK, LAYERS, HEADS, WIDTH, BATCH, THREADS = 65, 256, 6, 6, 384, 16, 2
TRAIN_PAIRS, GEN_PAIRS, NEW_TOKENS = 5, 3, 256
if os.environ.get("MINILLM_BENCH_QUICK") == "1":  # ~1/10 of the work, for a busy machine
    BLOCK, LAYERS, HEADS, WIDTH, BATCH = 128, 4, 4, 256, 8
    TRAIN_PAIRS, GEN_PAIRS, NEW_TOKENS = 3, 3, 128


def models(hf_activation: str = "gelu_pytorch_tanh"):
    """(ours, HF) with identical weights; ours always uses the fused tanh GELU."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from minillm.models.gpt import GPT

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=BLOCK, n_layer=LAYERS, n_head=HEADS,
                                    n_embd=WIDTH, activation_function=hf_activation, resid_pdrop=0.0,
                                    embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=None))
    ours = GPT.from_hf(hf)
    if ours.config.activation != "gelu_tanh":
        fused = GPT(dataclasses.replace(ours.config, activation="gelu_tanh"))
        fused.load_state_dict(ours.state_dict())
        ours = fused
    return ours, hf


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


def train_step(model, opt, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> Callable:
    """One AdamW training step of ``model`` on (x, y), optionally under bf16 autocast."""

    def step() -> float:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(_logits(model, x).reshape(-1, VOCAB).float(), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def _batch():
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, VOCAB, (BATCH, BLOCK), generator=g),
            torch.randint(0, VOCAB, (BATCH, BLOCK), generator=g))


def flops_per_token(model) -> float:
    """Training FLOPs per token: 6N for the matmuls with weights (N without the position table; a tied
    matrix counted once, as the lm_head matmul) + 12·L·T·C for attention scores and mixing (forward
    + backward), as in the PaLM appendix and nanoGPT's ``estimate_mfu``."""
    return 6 * model.num_params(non_embedding=True) + 12 * LAYERS * BLOCK * WIDTH


def _train_rows(hf_activation: str, peaks: dict, label: str) -> list[Row]:
    ours, hf = models(hf_activation)
    x, y = _batch()
    ours.eval()
    hf.eval()
    with torch.no_grad():
        atol = 1e-5 if hf_activation == "gelu_pytorch_tanh" else 1e-4
        assert_same_output(_logits(ours, x[:2]), _logits(hf, x[:2]), f"GPT logits vs HF ({label})",
                           atol=atol)
    ours.train()
    hf.train()
    rows = []
    fpt = flops_per_token(ours)
    for bf16 in (False, True):
        opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
        opt_h = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True)
        step_o, step_h = train_step(ours, opt_o, x, y, bf16), train_step(hf, opt_h, x, y, bf16)
        if not bf16:  # same weights, same batch: the first step's losses agree
            assert_same_output(torch.tensor(step_o()), torch.tensor(step_h()),
                               f"first training-step loss vs HF ({label})", atol=1e-4)
        dtype = torch.bfloat16 if bf16 else torch.float32
        before = matmul_peak(dtype)  # the load on a shared machine drifts: measure the peak
        p = paired_timing(step_o, step_h, repeats=TRAIN_PAIRS, warmup=1)
        after = matmul_peak(dtype)  # right around the pairs it is compared with
        kind = "bf16 autocast" if bf16 else "fp32"
        rows.append(Row.timed(f"GPT training tokens/s, {kind} [{label}] B{BATCH} T{BLOCK} {LAYERS}L {WIDTH}", p, work=BATCH * BLOCK,
                              unit="tokens/s", reference_name=f"HF GPT2LMHeadModel {hf_activation}, "
                                                              "same weights"))
        if hf_activation == "gelu_pytorch_tanh":
            peak_name = "bf16" if bf16 else "fp32"
            peak = max(before, after, peaks[peak_name])
            mfu = (lambda s: 100 * BATCH * BLOCK / s * fpt / peak)
            rows.append(Row(f"GPT training MFU, {kind} vs same-run {peak_name} matmul peak",
                            mfu(p.ours_s), mfu(p.ref_s), "% of peak", paired_ratio=p.ratio,
                            pairs=p.pairs,
                            reference_name=f"HF; peak {peak / 1e9:.0f} GFLOP/s (just before/after "
                                           f"the pairs: {before / 1e9:.0f}/{after / 1e9:.0f})"))
        if not bf16 and hf_activation == "gelu_pytorch_tanh":
            mem_o = peak_tensor_bytes(step_o) / 2**20
            mem_h = peak_tensor_bytes(step_h) / 2**20
            rows.append(Row("GPT training step, peak tensor memory, fp32", mem_o, mem_h, "MiB",
                            higher_is_better=False,
                            reference_name="HF; bytes created by one step, after warm-up"))
    return rows


def _generation_rows() -> list[Row]:
    ours, hf = models("gelu_pytorch_tanh")
    ours.eval()
    hf.eval()
    prompt = torch.zeros(1, 1, dtype=torch.long)

    def gen_ours(n: int = NEW_TOKENS):
        return ours.generate(prompt, n)

    def gen_hf(n: int = NEW_TOKENS):
        with torch.inference_mode():
            return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                               min_new_tokens=n, do_sample=False, pad_token_id=0)

    assert_same_output(gen_ours(), gen_hf(), "greedy tokens vs HF generate")
    rows = []
    # batch-1 decoding runs tiny ops: a second thread that the OS has preempted stalls every
    # parallel region, so on a busy machine one thread is faster; both settings are reported
    for n in sorted({THREADS, 1}, reverse=True):
        with threads(n):
            p = paired_timing(gen_ours, gen_hf, repeats=GEN_PAIRS, warmup=1)
        rows.append(Row.timed(f"GPT generation tokens/s (B1, {NEW_TOKENS} new, KV cache, fp32, {n} thr)",
                              p, work=NEW_TOKENS, unit="tokens/s",
                              reference_name="HF generate greedy, same weights, same tokens"))
    mem_o = peak_tensor_bytes(lambda: gen_ours(64)) / 2**20
    mem_h = peak_tensor_bytes(lambda: gen_hf(64)) / 2**20
    return rows + [
            Row("GPT generation (64 new), peak tensor memory", mem_o, mem_h, "MiB",
                higher_is_better=False, reference_name="HF generate; ours preallocates a "
                                                       "full-context KV cache, HF's grows")]


def _compile_rows() -> list[Row]:
    ours, _ = models("gelu_pytorch_tanh")
    eager = ours.train()
    compiled_model, _ = models("gelu_pytorch_tanh")
    compiled = torch.compile(compiled_model.train())
    x, y = _batch()
    with torch.no_grad():
        assert_same_output(compiled(x[:2]), eager(x[:2]), "compiled vs eager logits", atol=1e-4)
    step_c = train_step(compiled, torch.optim.AdamW(compiled_model.parameters(), lr=1e-4, fused=True),
                        x, y, bf16=True)
    step_e = train_step(eager, torch.optim.AdamW(eager.parameters(), lr=1e-4, fused=True), x, y,
                        bf16=True)
    t = time.perf_counter()
    step_c()  # compiles forward and backward
    first = time.perf_counter() - t
    p = paired_timing(step_c, step_e, repeats=TRAIN_PAIRS, warmup=1)
    return [Row.timed("GPT training tokens/s, bf16, torch.compile (opt-in)", p, work=BATCH * BLOCK,
                      unit="tokens/s", reference_name="our eager model, same weights"),
            Row("GPT torch.compile: first step (compilation included)", first, None, "s",
                higher_is_better=False, reference_name="one-off cost per process")]


def run() -> list[Row]:
    print(f"  GPT {LAYERS} layers, width {WIDTH}, context {BLOCK}, batch {BATCH}, {THREADS} threads",
          flush=True)
    with threads(THREADS):
        peaks = matmul_peaks()  # best of two each
        rows = _train_rows("gelu_pytorch_tanh", peaks, "HF fused GELU")
        print("  training vs HF fused GELU done", flush=True)
        rows += _train_rows("gelu_new", peaks, "HF default gelu_new")
        print("  training vs HF gelu_new done", flush=True)
        rows += _generation_rows()
        print("  generation done", flush=True)
        if os.environ.get("MINILLM_BENCH_COMPILE") == "1":
            rows += _compile_rows()
        rows += peak_rows(peaks)
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
