"""Beam search throughput on the chapter-6 translation model: batching versus one sentence at a time.

There is no external reference here: **both columns are our own ``minillm.search`` code** on the same
64 held-out English verses in fp32. "ours" decodes them in padded batches of 64; the reference column
is the same function at batch size 1 (what a loop over sentences without masks would do). The rows
measure what batching buys, not how our search compares with another library. The two sides'
translations are asserted identical before timing; timings are paired and alternating.
"""

from __future__ import annotations

import torch

from common import Row, assert_same_output, paired_timing
from minillm.hub import load_pretrained
from minillm.models.seq2seq import prepare_en_es, translate

N_SENTENCES = 64


def run() -> list[Row]:
    model = load_pretrained("ch06-seq2seq-en-es", progress=False)
    sources = [e for e, _ in prepare_en_es().ids["test"][:N_SENTENCES]]
    rows = []
    for k in (1, 4, 8):
        def batched():
            return translate(model, sources, num_beams=k, batch_size=N_SENTENCES)

        def single():
            return translate(model, sources, num_beams=k, batch_size=1)

        a, b = batched(), single()
        assert_same_output(a.sequences, b.sequences, f"beam {k} translations, batch {N_SENTENCES} vs 1")
        assert_same_output(a.scores, b.scores, f"beam {k} scores, batch {N_SENTENCES} vs 1", atol=1e-4)
        p = paired_timing(batched, single, repeats=2, warmup=0)
        rows.append(Row.timed(f"beam search, beam {k}: sentences/s, batch {N_SENTENCES} vs batch 1", p,
                              work=N_SENTENCES, unit="sentences/s",
                              reference_name="OUR same search at batch 1 (not an external library)"))
    return rows


if __name__ == "__main__":
    from common import format_table

    torch.manual_seed(0)
    print(format_table(run()))
