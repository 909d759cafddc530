"""minillm's T5 against Hugging Face ``T5ForConditionalGeneration`` with the same weights.

Rows (each timed in alternating pairs, the ratio is the median of paired ratios, see common.py):
- training tokens/s (input + target tokens), fp32 and bf16 autocast: T5 v1.1 (gated-GELU, untied
  head), 32,128-token vocabulary, 4+4 layers, width 256, 4 heads of 64, feed-forward 1024, inputs
  of 128 and targets of 32 tokens, batch 8, dropout 0, AdamW(fused=True) on both sides. The reference
  is HF's default (SDPA) attention; ours is ``T5ForConditionalGeneration.from_hf(reference)``, and
  the logits and the first step's loss are asserted allclose before anything is timed;
- MFU of each side against the fp32 and bf16 matmul peaks measured in this run (FLOPs counted per
  batch: 6 × weights × the tokens each weight sees — cross-attention keys/values see the input —
  plus 12 × inner width × attended pairs);
- greedy generation tokens/s, fp32, batch 4, inputs of 64, 32 new tokens: ours ``generate`` vs HF
  ``generate`` (both with their key/value caches); the generated tokens are asserted identical first;
- ``MINILLM_BENCH_QUICK=1``: 2+2 layers, inputs of 64, targets of 16, batch 4, 16 new tokens, 3 pairs.

    python benchmarks/run.py t5          # or: python benchmarks/bench_t5.py
"""

from __future__ import annotations

import contextlib
import os
from typing import Callable

import torch

from common import (Row, assert_same_output, matmul_peak, matmul_peaks, paired_timing, peak_rows,
                    threads)

VOCAB, LAYERS, HEADS, D_KV, WIDTH, FFN, SRC, TGT, BATCH, THREADS = 32128, 4, 4, 64, 256, 1024, 128, 32, 8, 2
GEN_BATCH, GEN_SRC, GEN_NEW = 4, 64, 32
TRAIN_PAIRS, GEN_PAIRS = 5, 5
if os.environ.get("MINILLM_BENCH_QUICK") == "1":  # a fraction of the work, for a busy machine
    LAYERS, SRC, TGT, BATCH, GEN_NEW = 2, 64, 16, 4, 16
    TRAIN_PAIRS, GEN_PAIRS = 3, 3


def models():
    """(ours, HF T5ForConditionalGeneration) with identical weights (HF's default SDPA attention)."""
    from transformers import T5Config, T5ForConditionalGeneration

    from minillm.models import t5

    torch.manual_seed(0)
    hf = T5ForConditionalGeneration(T5Config(
        vocab_size=VOCAB, d_model=WIDTH, d_kv=D_KV, d_ff=FFN, num_layers=LAYERS, num_heads=HEADS,
        dropout_rate=0.0, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        decoder_start_token_id=0))
    hf.lm_head.weight = torch.nn.Parameter(torch.randn_like(hf.lm_head.weight) * WIDTH ** -0.5)
    return t5.T5ForConditionalGeneration.from_hf(hf), hf


def _batch(B: int, S: int, T: int):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(2, VOCAB, (B, S), generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1::2, S - S // 4:] = 0  # every other input padded by a quarter
    y = torch.randint(2, VOCAB, (B, T), generator=g)
    return x, mask, y


def train_step(model, opt, x, mask, y, bf16: bool) -> Callable:
    """One AdamW step of teacher-forced training (the model's own loss)."""

    def step() -> float:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = model(input_ids=x, attention_mask=mask, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def flops_per_batch(model, B: int, S: int, T: int) -> float:
    """6 × (weights × tokens they see) + 12 × inner × attended (query, key) pairs, forward+backward."""
    c = model.config
    inner = c.num_heads * c.d_kv
    attn = 4 * c.d_model * inner
    ff = (3 if c.feed_forward_proj.startswith("gated") else 2) * c.d_model * c.d_ff
    enc = c.num_layers * (attn + ff) * S
    dec = c.num_decoder_layers * ((attn + 2 * c.d_model * inner + ff) * T  # self, cross q/o, FF
                                  + 2 * c.d_model * inner * S)  # cross-attention keys/values
    head = c.d_model * c.vocab_size * T
    pairs = c.num_layers * S * S + c.num_decoder_layers * (T * T + T * S)
    return B * (6 * (enc + dec + head) + 12 * inner * pairs)


def _train_rows(peaks: dict) -> list[Row]:
    ours, hf = models()
    x, mask, y = _batch(BATCH, SRC, TGT)
    ours.eval()
    hf.eval()
    with torch.no_grad():
        assert_same_output(ours(input_ids=x[:2], attention_mask=mask[:2], labels=y[:2]).logits,
                           hf(input_ids=x[:2], attention_mask=mask[:2], labels=y[:2]).logits,
                           "T5 logits vs HF", atol=1e-4, rtol=1e-4)
    ours.train()
    hf.train()
    rows, fpb = [], flops_per_batch(ours, BATCH, SRC, TGT)
    tokens = BATCH * (SRC + TGT)
    for bf16 in (False, True):
        opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
        opt_h = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True)
        step_o = train_step(ours, opt_o, x, mask, y, bf16)
        step_h = train_step(hf, opt_h, x, mask, y, bf16)
        if not bf16:  # same weights, same batch: the first step's losses agree
            assert_same_output(torch.tensor(step_o()), torch.tensor(step_h()),
                               "first T5 training-step loss vs HF", atol=1e-4)
        dtype = torch.bfloat16 if bf16 else torch.float32
        before = matmul_peak(dtype)
        p = paired_timing(step_o, step_h, repeats=TRAIN_PAIRS, warmup=1)
        after = matmul_peak(dtype)
        kind = "bf16 autocast" if bf16 else "fp32"
        rows.append(Row.timed(f"T5 v1.1 training tokens/s, {kind}, B{BATCH} S{SRC} T{TGT} "
                              f"{LAYERS}+{LAYERS}L {WIDTH}", p, work=tokens, unit="tokens/s",
                              reference_name="HF T5ForConditionalGeneration (SDPA), same weights"))
        peak_name = "bf16" if bf16 else "fp32"
        peak = max(before, after, peaks[peak_name])
        mfu = (lambda s: 100 * fpb / s / peak)
        rows.append(Row(f"T5 training MFU, {kind} vs same-run {peak_name} matmul peak",
                        mfu(p.ours_s), mfu(p.ref_s), "% of peak", paired_ratio=p.ratio, pairs=p.pairs,
                        reference_name=f"HF; peak {peak / 1e9:.0f} GFLOP/s (just before/after the "
                                       f"pairs: {before / 1e9:.0f}/{after / 1e9:.0f})"))
    return rows


def _generate_rows() -> list[Row]:
    ours, hf = models()
    ours.eval()
    hf.eval()
    x, mask, _ = _batch(GEN_BATCH, GEN_SRC, 1)

    def gen_ours():
        return ours.generate(x, mask, max_new_tokens=GEN_NEW)

    def gen_hf():
        with torch.inference_mode():
            return hf.generate(input_ids=x, attention_mask=mask, max_new_tokens=GEN_NEW, do_sample=False)

    a, b = gen_ours(), gen_hf()
    assert_same_output(a, b, "T5 greedy tokens vs HF generate")
    new = GEN_BATCH * (a.size(1) - 1)
    p = paired_timing(gen_ours, gen_hf, repeats=GEN_PAIRS, warmup=1)
    return [Row.timed(f"T5 greedy generation tokens/s, fp32, B{GEN_BATCH} S{GEN_SRC} +{a.size(1) - 1}",
                      p, work=new, unit="tokens/s",
                      reference_name="HF generate (SDPA, its cache), identical tokens")]


def run() -> list[Row]:
    print(f"  T5 v1.1 {LAYERS}+{LAYERS} layers, width {WIDTH}, vocab {VOCAB}, inputs {SRC}, targets "
          f"{TGT}, batch {BATCH}, {THREADS} threads", flush=True)
    with threads(THREADS):
        peaks = matmul_peaks()
        rows = _train_rows(peaks)
        print("  training done", flush=True)
        rows += _generate_rows()
        print("  generation done", flush=True)
        rows += peak_rows(peaks)
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
