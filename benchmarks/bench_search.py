"""Beam search throughput on the chapter-6 translation model: batched versus one sentence at a time.

Both columns run the same ``minillm.search`` code on the same 64 held-out English verses in fp32;
"ours" decodes them in padded batches of 64, the reference decodes them one by one (batch size 1),
which is what a loop over sentences without masks would have to do.
"""

from __future__ import annotations

import torch

from common import Row, best_of
from minillm.hub import load_pretrained
from minillm.models.seq2seq import prepare_en_es, translate

N_SENTENCES = 64


def run() -> list[Row]:
    model = load_pretrained("ch06-seq2seq-en-es", progress=False)
    sources = [e for e, _ in prepare_en_es().ids["test"][:N_SENTENCES]]
    rows = []
    for k in (1, 4, 8):
        batched = best_of(lambda: translate(model, sources, num_beams=k, batch_size=N_SENTENCES),
                          repeats=3)
        single = best_of(lambda: translate(model, sources, num_beams=k, batch_size=1), repeats=1)
        rows.append(Row(f"beam search, beam {k}: sentences/s (batch {N_SENTENCES})",
                        N_SENTENCES / batched, N_SENTENCES / single, "sentences/s",
                        reference_name="same search, one sentence at a time"))
    return rows


if __name__ == "__main__":
    from common import format_table

    torch.manual_seed(0)
    print(format_table(run()))
