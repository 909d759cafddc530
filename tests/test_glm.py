"""minillm.glm: GLM's blank-infilling examples (Part A / Part B, 2-D positions, the mask), span
sampling, and a tiny GLM that learns to fill blanks of a pattern it can only infer from context."""

from __future__ import annotations

import pytest
import torch

from minillm.glm import (IGNORE_INDEX, TinyGLM, TinyGLMConfig, blank_infilling_example, collate, fill_blanks,
                         glm_attention_mask, sample_spans)

MASK, START, END = 1, 2, 3


def test_example_layout_positions_and_labels():
    ids = [10, 11, 12, 13, 14, 15, 16]
    ex = blank_infilling_example(ids, [(1, 2), (5, 1)], mask_id=MASK, start_id=START, end_id=END)
    # Part A: x0 [M] x3 x4 [M] x6 ; Part B: [S] x1 x2 [S] x5
    assert ex.input_ids.tolist() == [10, 1, 13, 14, 1, 16, 2, 11, 12, 2, 15]
    assert ex.part_a_length == 6
    assert ex.position_ids[0].tolist() == [0, 1, 2, 3, 4, 5, 1, 1, 1, 4, 4]
    assert ex.position_ids[1].tolist() == [0, 0, 0, 0, 0, 0, 1, 2, 3, 1, 2]
    assert ex.labels.tolist() == [IGNORE_INDEX] * 6 + [11, 12, END, 15, END]


def test_attention_mask_is_bidirectional_on_a_and_causal_on_b():
    m = glm_attention_mask(3, 4)
    assert m[:3, :3].all() and not m[:3, 3:].any()  # A sees A both ways, never B
    assert m[3:, :3].all()  # B sees all of A
    assert torch.equal(m[3:, 3:], torch.ones(4, 4, dtype=torch.bool).tril())


def test_shuffled_spans_still_reconstruct_the_text():
    g = torch.Generator().manual_seed(0)
    ids = torch.arange(20, 60)
    for _ in range(20):
        spans = sample_spans(len(ids), ratio=0.3, generator=g)
        ex = blank_infilling_example(ids, spans, mask_id=MASK, start_id=START, end_id=END, generator=g)
        A = ex.part_a_length
        rebuilt, spans_b, cur = ex.input_ids[:A].tolist(), {}, None
        for tok, lab, p in zip(ex.input_ids[A:].tolist(), ex.labels[A:].tolist(), ex.position_ids[0, A:].tolist()):
            if tok == START:
                cur = spans_b.setdefault(p, [])
            if lab != END:
                cur.append(lab)
        out = []
        for i, t in enumerate(rebuilt):
            out.extend(spans_b[i] if t == MASK else [t])
        assert out == ids.tolist()
        assert abs(sum(k for _, k in spans) - 0.3 * len(ids)) <= 1


def test_bad_input():
    with pytest.raises(ValueError, match="non-overlapping"):
        blank_infilling_example([5, 6, 7, 8], [(0, 2), (1, 2)], mask_id=MASK, start_id=START, end_id=END)
    with pytest.raises(ValueError, match="spans is empty"):
        blank_infilling_example([5, 6], [], mask_id=MASK, start_id=START, end_id=END)
    with pytest.raises(ValueError, match="has no \\[MASK\\]"):
        fill_blanks(TinyGLM(TinyGLMConfig()), [5, 6], mask_id=MASK, start_id=START, end_id=END)


def _counting(g):
    step, start = int(torch.randint(1, 4, (1,), generator=g)), int(torch.randint(4, 20, (1,), generator=g))
    return torch.arange(12) * step + start  # ids 5 .. 52: a blank is known from its neighbours


def test_a_tiny_glm_learns_and_fill_blanks_equals_one_pass_over_its_own_answers():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = TinyGLM(TinyGLMConfig(vocab_size=64, d_model=64, n_heads=4, n_layers=2, max_positions=32))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        batch = collate([blank_infilling_example(s := _counting(g), sample_spans(len(s), ratio=0.25, generator=g),
                                                 mask_id=MASK, start_id=START, end_id=END, generator=g)
                         for _ in range(32)])
        _, loss = model(**batch)
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 1.0, (losses[:10], losses[-10:])
    model.eval()
    s = _counting(g)
    spans = [(2, 1), (7, 2)]
    ex = blank_infilling_example(s, spans, mask_id=MASK, start_id=START, end_id=END)
    answers = fill_blanks(model, ex.input_ids[:ex.part_a_length], mask_id=MASK, start_id=START, end_id=END,
                          max_span=4)
    # rebuild the example the model wrote (its answers as Part B) and run it once, teacher-forced:
    # the argmax at every Part B position must be the token fill_blanks chose there (or [END])
    A = ex.part_a_length
    tokens, pos1, pos2 = ex.input_ids[:A].tolist(), list(range(A)), [0] * A
    for (m, ans) in zip([2, 6], answers):  # the two [MASK] positions in Part A
        tokens += [START] + ans
        pos1 += [m] * (len(ans) + 1)
        pos2 += list(range(1, len(ans) + 2))
    logits = model(torch.tensor([tokens]), torch.tensor([[pos1, pos2]]), glm_attention_mask(A, len(tokens) - A)[None])
    argmax, k = logits[0, A:].argmax(-1).tolist(), 0
    for ans in answers:
        chosen = argmax[k:k + len(ans) + 1]
        assert chosen[:len(ans)] == ans and (len(ans) == 4 or chosen[len(ans)] == END)
        k += len(ans) + 1
