"""The RL sampling loop (chapter 15): batched, KV-cached rollouts against a naive loop.

PPO and GRPO spend most of their time sampling responses. The row compares, on the same model and
prompts, ``minillm.rl.sample_responses`` (the whole batch at once, the prompt read once, one new token
per step through a key/value cache) with ``sample_responses_naive`` (one prompt at a time, the whole
sequence recomputed at every step — the loop one writes first). Greedy decoding, so both sides must
produce the same tokens, asserted before timing; the rate is generated tokens per second.

The model: chapter 8's BPE GPT shape (6 layers, width 256, context 128), randomly initialised; 16
prompts of 32 tokens (a GRPO step: 4 prompts × 4 responses), 48 new tokens each.

``MINILLM_BENCH_QUICK=1``: 8 prompts, 16 new tokens, 3 pairs.

    python benchmarks/run.py rl
"""

from __future__ import annotations

import os

import torch

from common import Row, assert_same_output, paired_timing, threads

PROMPTS, PROMPT_LEN, NEW, PAIRS, THREADS = 16, 32, 48, 5, 2
if os.environ.get("MINILLM_BENCH_QUICK") == "1":
    PROMPTS, NEW, PAIRS = 8, 16, 3


def run() -> list[Row]:
    from minillm.models.gpt import GPT, GPTConfig
    from minillm.rl import sample_responses, sample_responses_naive

    print(f"  GPT 6×256, {PROMPTS} prompts × {PROMPT_LEN} tokens, {NEW} new tokens, {THREADS} threads", flush=True)
    with threads(THREADS):
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=2048, block_size=128, n_layer=6, n_head=8, n_embd=256)).eval()
        prompts = torch.randint(0, 2048, (PROMPTS, PROMPT_LEN), generator=torch.Generator().manual_seed(0))
        fast = lambda: sample_responses(model, prompts, NEW, do_sample=False)  # noqa: E731
        naive = lambda: sample_responses_naive(model, prompts, NEW, do_sample=False)  # noqa: E731
        a, b = fast(), naive()
        assert_same_output(a.sequences, b.sequences, "greedy rollouts, batched+cached vs naive")
        assert_same_output(a.log_probs, b.log_probs, "rollout log-probs", atol=1e-4)
        p = paired_timing(fast, naive, repeats=PAIRS, warmup=1)
    return [Row.timed("RL rollouts: generated tokens/s, batched + KV cache vs naive loop", p,
                      work=PROMPTS * NEW, unit="tokens/s",
                      reference_name="one prompt at a time, whole sequence recomputed each step")]
