"""SmolLM2-135M-Instruct in minillm's Llama against Hugging Face ``LlamaForCausalLM``, same weights.

Both models hold the de-quantized fp32 weights of the shipped GGUF (ours from
``LlamaForCausalLM.from_gguf``; HF's built from our ``save_pretrained`` directory, its default SDPA
attention). Logits on the prompt and the greedy tokens are asserted equal before anything is timed.

Rows (alternating pairs, median of paired ratios, see common.py):
- prefill tokens/s: one forward over a batch-1 prompt of PREFILL tokens;
- batch-1 greedy generation tokens/s: a 32-token prompt, GEN_NEW new tokens, each side's KV cache;
- the memory-bandwidth bound of batch-1 decoding: every new token reads all the weights once
  (fp32: 4 bytes × parameters, the tied embedding counted once, as the output matrix), so
  tokens/s ≤ copy bandwidth / weight bytes; the copy bandwidth is measured in this run (a 256 MiB
  tensor copied, best of 5, counting read + write bytes);
- the race's time-to-quality (from the shipped ``ch11-race`` record, measured while it trained): CPU
  minutes the modern decoder needed to reach the GPT's final validation bits/char, against the GPT's
  own minutes (lower is better; read off each curve by linear interpolation);
- ``MINILLM_BENCH_QUICK=1``: prefill 64, 8 new tokens, 3 pairs.

    python benchmarks/run.py llama
"""

from __future__ import annotations

import os
import tempfile
import time

import torch

from common import Row, assert_same_output, paired_timing, threads

PREFILL, GEN_PROMPT, GEN_NEW, PAIRS, THREADS = 256, 32, 32, 5, 2
if os.environ.get("MINILLM_BENCH_QUICK") == "1":
    PREFILL, GEN_NEW, PAIRS = 64, 8, 3


def models():
    """(ours, HF) with SmolLM2's weights; HF loads our save_pretrained directory."""
    from transformers import AutoModelForCausalLM

    from minillm.gguf import smollm2_gguf_path
    from minillm.models.llama import LlamaForCausalLM

    ours = LlamaForCausalLM.from_gguf(smollm2_gguf_path())
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        hf = AutoModelForCausalLM.from_pretrained(tmp, torch_dtype=torch.float32).eval()
    return ours, hf


def copy_bandwidth(mib: int = 256, repeats: int = 5) -> float:
    """Bytes/s of a large tensor copy (read + write counted), best of ``repeats``."""
    src = torch.empty(mib * 2 ** 20 // 4, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * 4 / best


def run() -> list[Row]:
    print(f"  SmolLM2-135M fp32, prefill {PREFILL}, generate {GEN_PROMPT}+{GEN_NEW}, {THREADS} threads",
          flush=True)
    with threads(THREADS):
        ours, hf = models()
        g = torch.Generator().manual_seed(0)
        prompt = torch.randint(200, ours.config.vocab_size, (1, PREFILL), generator=g)
        with torch.inference_mode():
            assert_same_output(ours(prompt), hf(prompt).logits, "SmolLM2 logits vs HF", atol=1e-4, rtol=1e-4)

        def prefill_ours():
            with torch.inference_mode():
                return ours(prompt)

        def prefill_hf():
            with torch.inference_mode():
                return hf(prompt).logits

        p = paired_timing(prefill_ours, prefill_hf, repeats=PAIRS, warmup=1)
        rows = [Row.timed(f"SmolLM2-135M prefill tokens/s, fp32, B1 T{PREFILL}", p, work=PREFILL,
                          unit="tokens/s", reference_name="HF LlamaForCausalLM (SDPA), same weights")]
        print("  prefill done", flush=True)

        short = prompt[:, :GEN_PROMPT]
        ours.config.eos_token_id = None  # always GEN_NEW tokens on both sides: no end-of-text stop
        hf.generation_config.eos_token_id = None

        def gen_ours():
            return ours.generate(short, GEN_NEW)

        def gen_hf():
            with torch.inference_mode():
                return hf.generate(short, attention_mask=torch.ones_like(short), max_new_tokens=GEN_NEW,
                                   do_sample=False, pad_token_id=0)

        assert_same_output(gen_ours(), gen_hf(), "SmolLM2 greedy tokens vs HF generate")
        p = paired_timing(gen_ours, gen_hf, repeats=PAIRS, warmup=1)
        rows.append(Row.timed(f"SmolLM2-135M greedy generation tokens/s, fp32, B1 {GEN_PROMPT}+{GEN_NEW}", p,
                              work=GEN_NEW, unit="tokens/s",
                              reference_name="HF generate (SDPA, its cache), identical tokens"))
        print("  generation done", flush=True)
        weight_bytes = sum(t.numel() * t.element_size() for t in ours.state_dict().values()
                           if t.data_ptr() != ours.lm_head.weight.data_ptr()) + \
            ours.lm_head.weight.numel() * ours.lm_head.weight.element_size()
        bw = copy_bandwidth()
        ours_tps = GEN_NEW / p.ours_s
        rows.append(Row("batch-1 decoding vs the memory-bandwidth bound (weights read once per token)",
                        ours_tps, bw / weight_bytes, "tokens/s",
                        reference_name=f"bound = {bw / 1e9:.1f} GB/s copy bandwidth / {weight_bytes / 1e6:.0f} MB "
                                       "of fp32 weights; ratio = share of the bound reached"))
    rows.append(race_row())
    return rows


def race_row() -> Row:
    """Time-to-quality of the shipped race: CPU minutes to the GPT's final validation score."""
    from minillm.hub import load_pretrained
    from minillm.race import time_to_quality

    race = load_pretrained("ch11-race").checkpoint_metadata["race"]
    gpt, modern = race["models"]["GPT (ch. 8)"], race["models"]["modern (Llama)"]
    target = gpt["final_val_bpc"]
    return Row(f"race time-to-quality: CPU-minutes to {target:.3f} validation bits/char (ch11-race record)",
               time_to_quality(modern["curve"], target), time_to_quality(gpt["curve"], target), "CPU-min",
               higher_is_better=False, reference_name=f"chapter 8's GPT, same parameters, data and schedule "
                                                      f"({race['threads']} thread)")


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
