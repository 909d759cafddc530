"""Greedy speculative decoding (``minillm.speculative``) against plain greedy decoding of SmolLM2-135M.

The target is SmolLM2-135M-Instruct in our Llama (fp32, de-quantized from the shipped GGUF); the drafts
are chapter 16's two shipped students (``ch16-student-text``, ``ch16-student-distilled``: 12M
parameters, SmolLM2's tokenizer, run in fp32). The prompts are the first PROMPT tokens of held-out
Rotten Tomatoes reviews (the students' training distribution), NEW greedy tokens each, k = K guesses
per round, end token off so every run makes NEW tokens.

Before timing, each speculative output is asserted equal to ``target.generate`` token for token.
Then alternating pairs (common.py) per draft: speculative vs plain on the same prompt. Rows without a
pair: each draft's acceptance rate (accepted / proposed over all prompts) and the tokens each target
forward pass produced. The speed-up depends on the acceptance rate far more than on the code: see
chapter 16, section 6, for the cost model.

``MINILLM_BENCH_QUICK=1``: 2 prompts, 16 new tokens, 1 pair each.

    python benchmarks/run.py speculative
"""

from __future__ import annotations

import os
import statistics

import torch

from common import Row, assert_same_output, paired_timing, threads

PROMPT, NEW, K, PROMPTS, PAIRS, THREADS = 8, 64, 4, 6, 1, 2
if os.environ.get("MINILLM_BENCH_QUICK") == "1":
    NEW, PROMPTS = 16, 2


def run() -> list[Row]:
    from common import Paired

    from minillm.data import load_rotten_tomatoes
    from minillm.hub import load_pretrained
    from minillm.speculative import speculative_generate
    from minillm.students import load_teacher

    print(f"  SmolLM2-135M greedy, {PROMPTS} review openings of {PROMPT} tokens + {NEW}, k = {K}, "
          f"{THREADS} threads", flush=True)
    rows = []
    with threads(THREADS):
        target, tok = load_teacher()
        target.config.eos_token_id = None  # always NEW tokens
        texts = [ex.text for ex in load_rotten_tomatoes().test]
        prompts = [torch.tensor([ids[:PROMPT]]) for ids in (tok.encode(t) for t in texts)
                   if len(ids) > PROMPT + 2][:PROMPTS]
        for name in ("text", "distilled"):
            draft = load_pretrained(f"ch16-student-{name}", progress=False).float().eval()
            proposed = accepted = forwards = 0
            pairs = []
            for p in prompts:
                out, stats = speculative_generate(target, draft, p, NEW, num_draft_tokens=K)
                assert_same_output(out, target.generate(p, NEW), f"{name} draft: speculative vs generate")
                proposed, accepted = proposed + stats["proposed"], accepted + stats["accepted"]
                forwards += stats["target_forwards"]
                pairs.append(paired_timing(
                    lambda p=p: speculative_generate(target, draft, p, NEW, num_draft_tokens=K),
                    lambda p=p: target.generate(p, NEW), repeats=PAIRS, warmup=1))
            ratios = [r for pr in pairs for r in pr.ratios]
            merged = Paired(statistics.median(pr.ours_s for pr in pairs),
                            statistics.median(pr.ref_s for pr in pairs), statistics.median(ratios),
                            len(ratios), ratios)
            rows.append(Row.timed(f"SmolLM2 greedy tokens/s, speculative, {name} draft, k={K}", merged,
                                  work=NEW, unit="tokens/s", reference_name="plain greedy generate"))
            rows.append(Row(f"draft tokens accepted, {name} draft", accepted / proposed, None, "fraction",
                            reference_name=f"of {proposed} proposed"))
            rows.append(Row(f"tokens per target forward, {name} draft", NEW * len(prompts) / forwards, 1.0,
                            "tokens", reference_name="plain decoding: 1"))
            print(f"  {name} draft timed", flush=True)
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
