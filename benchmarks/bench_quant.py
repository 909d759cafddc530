"""Weight-only int8 / int4 SmolLM2-135M (``minillm.weight_only``) against fp32: batch-1 decoding.

The same model code (``minillm.models.llama``) runs the de-quantized fp32 weights of the shipped
GGUF and, after ``quantize_weights(model, bits)``, int8 (per output channel) or int4 (groups of 32)
weights in every linear layer, the tied output head included; the embedding table stays fp32.
The quantized layers run torch's fused CPU kernels with bf16 activations (see the module docstring).

Quantized outputs are not bit-identical to fp32's, so before timing the benchmark asserts what must
hold: the quantized model's KV-cached greedy tokens equal its own uncached (recomputed) ones on the
timed prompt, and its fused kernels give the logits of its slow twins (de-quantize + ``F.linear``).
Then, alternating pairs (common.py): batch-1 greedy generation, a PROMPT-token prompt (the start of
the held-out text) and NEW new tokens, quantized vs fp32. Rows without a pair: the weights' memory
(every parameter and buffer, a tied matrix once), perplexity on PPL_TOKENS held-out tokens
(Shakespeare's validation split, SmolLM2's tokenizer; one forward pass), the share of the timed
greedy tokens identical to fp32's (a sequence diverges for good after its first different token), and
the teacher-forced top-1 agreement with fp32 on the held-out tokens.

Reading the quality rows: the GGUF's linear layers are stored as Q4_1 (4 bits, groups of 32 along a
row, a scale and a minimum each) and its embedding/head as Q8_0. int4 with groups of 32 is the same
grid, so on the layers it loses almost nothing here (only the bf16 rounding of its scales); the
perplexity it costs comes mostly from the head, whose Q8_0 values it rounds to 16 levels. A model
trained in 16 bits would lose more at int4.

``MINILLM_BENCH_QUICK=1``: 8 new tokens, 3 pairs, 256 perplexity tokens.

    python benchmarks/run.py quant
"""

from __future__ import annotations

import copy
import os

import torch

from common import Row, assert_same_output, paired_timing, threads

PROMPT, NEW, PAIRS, THREADS, PPL_TOKENS = 32, 32, 5, 2, 1024
if os.environ.get("MINILLM_BENCH_QUICK") == "1":
    NEW, PAIRS, PPL_TOKENS = 8, 3, 256


def held_out_ids(path) -> torch.Tensor:
    """(1, PPL_TOKENS) token ids of Shakespeare's validation text, SmolLM2's tokenizer."""
    from minillm.data import load_shakespeare
    from minillm.tokenizers.gpt2 import ByteLevelBPE

    tok = ByteLevelBPE.from_gguf(path)
    text = load_shakespeare().validation[:8 * PPL_TOKENS]  # ~3-4 characters per token: enough
    ids = torch.tensor([tok.encode(text)[:PPL_TOKENS]])
    assert ids.size(1) == PPL_TOKENS, ids.shape
    return ids


def run() -> list[Row]:
    from minillm.gguf import smollm2_gguf_path
    from minillm.models.llama import LlamaForCausalLM
    from minillm.weight_only import perplexity, quantize_weights, weight_bytes

    print(f"  SmolLM2-135M, fp32 vs int8/int4 weights, greedy {PROMPT}+{NEW}, {THREADS} threads",
          flush=True)
    rows = []
    with threads(THREADS):
        path = smollm2_gguf_path()
        fp32 = LlamaForCausalLM.from_gguf(path)
        fp32.config.eos_token_id = None  # always NEW tokens: no end-of-text stop
        ids = held_out_ids(path)
        prompt = ids[:, :PROMPT]
        with torch.inference_mode():
            top1 = fp32(ids).argmax(-1)  # (1, PPL_TOKENS) fp32's next-token choices
        fp32_tokens = fp32.generate(prompt, NEW)[:, PROMPT:]
        fp32_ppl, fp32_bytes = perplexity(fp32, ids), weight_bytes(fp32)

        for bits in (8, 4):
            name = f"int{bits}" + (" g32" if bits == 4 else "")
            q = quantize_weights(copy.deepcopy(fp32), bits)
            tokens = q.generate(prompt, NEW)
            assert_same_output(tokens, q.generate(prompt, NEW, use_cache=False),
                               f"{name}: KV-cached vs recomputed greedy tokens")
            with torch.inference_mode():
                fused = q(prompt)
                for m in q.modules():
                    m.use_reference = True
                twin = q(prompt)
                for m in q.modules():
                    m.use_reference = False
            # the same roundings on both sides; only the order of additions differs, which moves
            # some bf16-rounded products by one step (2^-8 relative) and, through 30 layers, the
            # logits by up to ~1.6% of their largest (measured, both widths): allow 5%
            assert_same_output(fused, twin, f"{name}: fused kernels vs slow twins, prompt logits",
                               atol=0.05 * float(twin.abs().max()), rtol=0)

            p = paired_timing(lambda: q.generate(prompt, NEW), lambda: fp32.generate(prompt, NEW),
                              repeats=PAIRS, warmup=1)
            rows.append(Row.timed(f"SmolLM2-135M greedy tokens/s, {name}, B1 {PROMPT}+{NEW}", p,
                                  work=NEW, unit="tokens/s",
                                  reference_name="fp32 weights, same model code"))
            print(f"  {name} timed", flush=True)
            rows.append(Row(f"SmolLM2-135M weight memory, {name}", weight_bytes(q) / 1e6,
                            fp32_bytes / 1e6, "MB", higher_is_better=False,
                            reference_name="fp32; the embedding stays fp32 in both"))
            rows.append(Row(f"perplexity, {PPL_TOKENS} held-out tokens, {name}",
                            perplexity(q, ids), fp32_ppl, "ppl", higher_is_better=False,
                            reference_name="fp32"))
            same = tokens[0, PROMPT:] == fp32_tokens[0]
            first = int(same.logical_not().nonzero()[0]) if not bool(same.all()) else NEW
            rows.append(Row(f"greedy tokens identical to fp32's, {name}", float(same.float().mean()),
                            None, "fraction", reference_name=f"of {NEW}; the first {first} identical, "
                                                              "then the texts part"))
            with torch.inference_mode():
                agree = float((q(ids).argmax(-1) == top1).float().mean())
            rows.append(Row(f"teacher-forced top-1 agreement with fp32, {name}", agree, None,
                            "fraction", reference_name=f"on the {PPL_TOKENS} held-out tokens"))
            del q
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
