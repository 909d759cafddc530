"""Greedy and beam search over a step function: exhaustive-search parity, beam 1 = greedy, batching."""

from __future__ import annotations

import itertools

import pytest
import torch

from minillm.search import SearchOutput, beam_search, beam_step, greedy_search, reorder_state

PAD, BOS, EOS = 0, 1, 2


class MarkovModel:
    """A toy decoder: each row has its own random bigram table; the state holds the row's table.

    The table lives in the state (row-wise), so beam search must reorder it correctly, and every
    row of a batch decodes differently.
    """

    def __init__(self, batch: int, vocab: int, seed: int, eos_bias: float = 0.0):
        g = torch.Generator().manual_seed(seed)
        self.tables = torch.randn(batch, vocab, vocab, generator=g) * 2.0  # (B, V, V) logits
        self.tables[:, :, EOS] += eos_bias
        self.calls = 0

    def step(self, prefix: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        self.calls += 1
        table = state["table"]  # (N, V, V)
        logits = table[torch.arange(prefix.size(0)), prefix[:, -1]]  # (N, V)
        return logits, state

    def state(self, rows: slice | None = None) -> dict:
        return {"table": self.tables if rows is None else self.tables[rows]}

    def sequence_score(self, row: int, tokens: list[int]) -> float:
        logp = torch.log_softmax(self.tables[row], dim=-1)
        prev, total = BOS, 0.0
        for t in tokens:
            total += float(logp[prev, t])
            prev = t
        return total


def _exhaustive_best(model: MarkovModel, row: int, vocab: int, max_len: int, length_penalty: float):
    """Best hypothesis by brute force over every sequence that ends in EOS or reaches max_len."""
    best, best_tokens = float("-inf"), None
    for n in range(1, max_len + 1):
        for body in itertools.product(range(vocab), repeat=n):
            if EOS in body[:-1]:
                continue  # EOS ends a hypothesis
            if n < max_len and body[-1] != EOS:
                continue  # unfinished hypotheses only count at max_len
            score = model.sequence_score(row, list(body))
            norm = score / n ** length_penalty
            if norm > best:
                best, best_tokens = norm, list(body)
    return best_tokens


def _common(batch: int, max_len: int) -> dict:
    return dict(batch_size=batch, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_new_tokens=max_len)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_matches_exhaustive_search_when_the_beam_holds_everything(length_penalty):
    V, L, B = 4, 3, 3
    model = MarkovModel(B, V, seed=0, eos_bias=0.5)
    out = beam_search(model.step, model.state(), num_beams=V ** L, length_penalty=length_penalty,
                      **_common(B, L))
    for row in range(B):
        expected = _exhaustive_best(model, row, V, L, length_penalty)
        assert out.tokens(row) == expected
        assert float(out.scores[row]) == pytest.approx(model.sequence_score(row, expected), abs=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_beam_size_one_equals_greedy(seed):
    B, V, L = 6, 9, 12
    model = MarkovModel(B, V, seed=seed, eos_bias=-1.0)
    greedy = greedy_search(model.step, model.state(), **_common(B, L))
    beam = beam_search(model.step, model.state(), num_beams=1, **_common(B, L))
    assert torch.equal(greedy.sequences, beam.sequences)
    assert torch.equal(greedy.lengths, beam.lengths)
    assert torch.allclose(greedy.scores, beam.scores)


def test_greedy_picks_the_argmax_and_scores_are_sums_of_log_probs():
    B, V, L = 4, 7, 8
    model = MarkovModel(B, V, seed=3)
    out = greedy_search(model.step, model.state(), **_common(B, L))
    for row in range(B):
        tokens, prev = [], BOS
        while len(tokens) < L:
            prev = int(model.tables[row, prev].argmax())
            tokens.append(prev)
            if prev == EOS:
                break
        assert out.tokens(row) == tokens
        assert int(out.lengths[row]) == len(tokens)
        assert float(out.scores[row]) == pytest.approx(model.sequence_score(row, tokens), abs=1e-5)
        assert out.sequences[row, len(tokens):].eq(PAD).all()  # padding after the end


@pytest.mark.parametrize("num_beams", [1, 3, 5])
def test_batched_search_equals_one_row_at_a_time(num_beams):
    B, V, L = 5, 8, 10
    model = MarkovModel(B, V, seed=11, eos_bias=0.5)
    batched = beam_search(model.step, model.state(), num_beams=num_beams, **_common(B, L))
    for row in range(B):
        alone = beam_search(model.step, model.state(slice(row, row + 1)), num_beams=num_beams,
                            **_common(1, L))
        assert alone.tokens(0) == batched.tokens(row)
        assert float(alone.scores[0]) == pytest.approx(float(batched.scores[row]), abs=1e-5)


def test_scores_returned_are_the_model_scores_of_the_returned_sequences():
    B, V, L = 6, 10, 9
    model = MarkovModel(B, V, seed=5, eos_bias=0.3)
    for lp in (0.0, 0.6, 1.0):
        out = beam_search(model.step, model.state(), num_beams=4, length_penalty=lp, **_common(B, L))
        for row in range(B):
            assert float(out.scores[row]) == pytest.approx(model.sequence_score(row, out.tokens(row)),
                                                           abs=1e-5)


def test_beams_score_between_greedy_and_exhaustive_search_on_this_toy_model():
    B, V, L = 8, 6, 6
    model = MarkovModel(B, V, seed=2, eos_bias=0.2)
    greedy = greedy_search(model.step, model.state(), **_common(B, L))
    exhaustive = beam_search(model.step, model.state(), num_beams=V ** L, length_penalty=0.0,
                             **_common(B, L))
    for k in (2, 4, 8):
        beam = beam_search(model.step, model.state(), num_beams=k, length_penalty=0.0, **_common(B, L))
        assert (beam.scores >= greedy.scores - 1e-5).all()
        assert (beam.scores <= exhaustive.scores + 1e-5).all()


def test_beam_search_can_score_below_greedy_when_the_greedy_path_is_pruned():
    # p(A)=.5, p(B)=.45; after A the best word X has only .3 but then EOS is certain; after B two words
    # have .45 each, so B-Y and B-Z push A-X out of a beam of 2 and then lead nowhere (uniform).
    V, A, B_, X, Y, Z = 8, 3, 4, 5, 6, 7
    table = {(): {A: 0.5, B_: 0.45}, (A,): {X: 0.3, EOS: 0.2}, (A, X): {EOS: 0.99},
             (B_,): {Y: 0.45, Z: 0.45}}

    def step(prefix, state):
        rows = []
        for p in prefix[:, 1:].tolist():
            probs = table.get(tuple(p), {})
            rest = (1.0 - sum(probs.values())) / (V - len(probs))
            rows.append([probs.get(v, rest) for v in range(V)])
        return torch.tensor(rows).log(), state

    greedy = greedy_search(step, None, **_common(1, 4))
    beam2 = beam_search(step, None, num_beams=2, length_penalty=0.0, **_common(1, 4))
    beam3 = beam_search(step, None, num_beams=3, length_penalty=0.0, **_common(1, 4))
    assert greedy.tokens(0) == [A, X, EOS]
    assert float(beam2.scores[0]) < float(greedy.scores[0]) - 1.0  # a search error of beam 2
    assert beam3.tokens(0) == [A, X, EOS]  # one more slot keeps the greedy path alive


def test_length_penalty_trades_raw_score_for_length():
    B, V, L = 8, 6, 8
    model = MarkovModel(B, V, seed=9, eos_bias=1.0)
    raw = beam_search(model.step, model.state(), num_beams=6, length_penalty=0.0, **_common(B, L))
    per_token = beam_search(model.step, model.state(), num_beams=6, length_penalty=1.0, **_common(B, L))
    assert (raw.scores >= per_token.scores - 1e-5).all()  # lp=0 maximises the raw score
    assert (per_token.lengths >= raw.lengths).all()  # normalization can only favour longer outputs here
    assert (per_token.normalized_scores >= raw.normalized_scores - 1e-5).all()


def test_search_stops_when_every_row_has_ended():
    model = MarkovModel(2, 5, seed=0)
    model.tables[:, :, EOS] += 100.0  # EOS is certain at the first step
    out = greedy_search(model.step, model.state(), **_common(2, 20))
    assert model.calls == 1 and out.sequences.shape == (2, 1) and out.lengths.tolist() == [1, 1]
    model.calls = 0
    out = beam_search(model.step, model.state(), num_beams=3, **_common(2, 20))
    assert model.calls == 2  # the second step fills the spare beams with finished hypotheses
    assert out.tokens(0) == [EOS]


def test_beam_step_matches_a_loop_over_all_candidates():
    g = torch.Generator().manual_seed(0)
    scores = -torch.rand(2, 3, generator=g)
    logp = torch.log_softmax(torch.randn(2, 3, 5, generator=g), -1)
    top, beam, tok = beam_step(scores, logp, 4)
    for b in range(2):
        cands = sorted(((float(scores[b, k] + logp[b, k, v]), k, v) for k in range(3) for v in range(5)),
                       reverse=True)[:4]
        assert [(k, v) for _, k, v in cands] == list(zip(beam[b].tolist(), tok[b].tolist()))
        assert torch.allclose(top[b], torch.tensor([s for s, _, _ in cands]))


def test_reorder_state_handles_nested_structures():
    state = {"h": torch.arange(6).view(3, 2), "pair": (torch.arange(3), [torch.arange(3) * 10]), "n": 7}
    out = reorder_state(state, torch.tensor([2, 2, 0]))
    assert out["h"].tolist() == [[4, 5], [4, 5], [0, 1]]
    assert out["pair"][0].tolist() == [2, 2, 0] and out["pair"][1][0].tolist() == [20, 20, 0]
    assert out["n"] == 7


def test_bad_arguments_raise_clear_errors():
    model = MarkovModel(2, 5, seed=0)
    with pytest.raises(ValueError, match="num_beams"):
        beam_search(model.step, model.state(), num_beams=0, **_common(2, 5))
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_search(model.step, model.state(), **_common(2, 0))
    with pytest.raises(ValueError, match="eos_id"):
        greedy_search(model.step, model.state(), batch_size=2, bos_id=1, eos_id=-1, max_new_tokens=3)
    with pytest.raises(ValueError, match=r"logits of shape \(N=3"):  # a step returning (N, 1, V)
        greedy_search(lambda prefix, st: (torch.zeros(3, 1, 5), st), None, **_common(3, 4))
    with pytest.raises(ValueError, match="k must be"):
        beam_step(torch.zeros(1, 2), torch.zeros(1, 2, 3), 7)
    with pytest.raises(ValueError, match=r"beam_scores \(B, K\)"):
        beam_step(torch.zeros(2), torch.zeros(1, 2, 3), 1)


def test_search_output_helpers():
    out = SearchOutput(torch.tensor([[5, 2, 0], [6, 7, 8]]), torch.tensor([-1.0, -6.0]), torch.tensor([2, 3]))
    assert out.tokens(0) == [5, 2] and out.tokens(1) == [6, 7, 8]
    assert out.normalized_scores.tolist() == [-0.5, -2.0]


def _exhaustive_fixed_length(model: MarkovModel, row: int, prompt: list[int], vocab: int, n: int):
    """The most likely n-token continuation of ``prompt`` by brute force (no end token)."""
    logp = torch.log_softmax(model.tables[row], dim=-1)

    def score(body):
        prev, total = prompt[-1], 0.0
        for t in body:
            total += float(logp[prev, t])
            prev = t
        return total

    return list(max(itertools.product(range(vocab), repeat=n), key=score))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.5])
def test_beam_search_with_a_prompt_and_no_end_token_matches_exhaustive_search(length_penalty):
    # the decoder-only case (GPT.generate): prefixes start from a prompt, every hypothesis has
    # max_new_tokens tokens, so the length penalty cannot change the winner
    V, L, B = 4, 3, 3
    model = MarkovModel(B, V, seed=1)
    prompt = torch.tensor([[3, 1], [0, 2], [2, 2]])
    out = beam_search(model.step, model.state(), batch_size=B, bos_id=None, eos_id=None,
                      prompt=prompt, max_new_tokens=L, num_beams=V ** L,
                      length_penalty=length_penalty)
    assert out.sequences.shape == (B, L) and out.lengths.tolist() == [L] * B
    for row in range(B):
        assert out.tokens(row) == _exhaustive_fixed_length(model, row, prompt[row].tolist(), V, L)


def test_beam_search_rejects_bad_prompts_and_penalties():
    model = MarkovModel(2, 5, seed=0)
    common = dict(batch_size=2, bos_id=None, eos_id=None, max_new_tokens=3)
    with pytest.raises(ValueError, match=r"prompt must have shape \(batch_size=2"):
        beam_search(model.step, model.state(), prompt=torch.tensor([[1, 2]]), **common)
    with pytest.raises(TypeError, match="prompt must have a int dtype"):
        beam_search(model.step, model.state(), prompt=torch.zeros(2, 2), **common)
    with pytest.raises(ValueError, match="length_penalty must be a finite number, got nan"):
        beam_search(model.step, model.state(), prompt=torch.ones(2, 1, dtype=torch.long),
                    length_penalty=float("nan"), **common)
    with pytest.raises(TypeError, match="num_beams must be an int"):
        beam_search(model.step, model.state(), prompt=torch.ones(2, 1, dtype=torch.long),
                    num_beams=2.0, **common)
