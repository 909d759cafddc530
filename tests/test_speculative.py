"""Greedy speculative decoding (minillm.speculative): the output equals the target's greedy
``generate`` for any draft (a smaller model, the target itself, one that always disagrees), the
statistics count what happened, the end token stops it as in ``generate``, bad input is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minillm.models.gpt import GPT, GPTConfig
from minillm.models.llama import LlamaConfig, LlamaForCausalLM
from minillm.speculative import speculative_generate

V = 64  # vocabulary of the tiny models


def llama(seed: int, **overrides) -> LlamaForCausalLM:
    """A tiny random Llama whose logits are spread wide enough that greedy picks are not near-ties."""
    torch.manual_seed(seed)
    config = LlamaConfig.tiny(**{**dict(vocab_size=V, hidden_size=32, intermediate_size=64,
                                         max_position_embeddings=64), **overrides})
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


def prompt(P: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (1, P), generator=torch.Generator().manual_seed(seed))


class Contrarian(LlamaForCausalLM):
    """A draft that always proposes a token the target would not pick (target's argmax + 1)."""

    @classmethod
    def of(cls, target: LlamaForCausalLM) -> "Contrarian":
        model = cls(target.config).eval()
        model.load_state_dict(target.state_dict())
        return model

    def forward(self, input_ids, past_key_values=None):
        logits = super().forward(input_ids, past_key_values=past_key_values)  # (B, T, V)
        wrong = (logits.argmax(-1) + 1) % logits.size(-1)
        return nn.functional.one_hot(wrong, logits.size(-1)).float()


@pytest.fixture(scope="module")
def target() -> LlamaForCausalLM:
    return llama(0)


@pytest.fixture(scope="module")
def draft() -> LlamaForCausalLM:
    return llama(1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("P,new", [(1, 13), (5, 17), (9, 22)])
def test_output_equals_target_greedy(target, draft, k, P, new):
    ids = prompt(P, seed=P)
    expected = target.generate(ids, new)
    got, stats = speculative_generate(target, draft, ids, new, num_draft_tokens=k)
    assert torch.equal(got, expected)
    assert 0 <= stats["accepted"] <= stats["proposed"]
    assert stats["target_forwards"] * (k + 1) >= new  # at most k + 1 tokens per target forward


def test_draft_equal_to_target_accepts_everything(target):
    for k in (1, 3, 5):
        ids = prompt(4, seed=k)
        new = 23
        got, stats = speculative_generate(target, target, ids, new, num_draft_tokens=k)
        assert torch.equal(got, target.generate(ids, new))
        assert stats["acceptance_rate"] == 1.0 and stats["accepted"] == stats["proposed"] > 0
        assert stats["target_forwards"] == -(-new // (k + 1))  # ceil: k + 1 tokens per forward


def test_a_draft_that_always_disagrees_changes_nothing(target):
    ids = prompt(6, seed=3)
    got, stats = speculative_generate(target, Contrarian.of(target), ids, 15, num_draft_tokens=3)
    assert torch.equal(got, target.generate(ids, 15))
    assert stats["accepted"] == 0 and stats["acceptance_rate"] == 0.0 and stats["proposed"] > 0
    assert stats["target_forwards"] == 15  # one token per target forward


def test_stale_cache_tail_is_never_read(target, draft):
    # a rollback leaves rejected keys past cache.length; poisoning them must change nothing
    from minillm.models.llama import KVCache

    original = KVCache.update

    def poisoned(self, layer, k, v):
        self.k[layer, :, :, self.length:] = float("nan")
        self.v[layer, :, :, self.length:] = float("nan")
        return original(self, layer, k, v)

    ids = prompt(3, seed=7)
    expected = target.generate(ids, 20)
    KVCache.update = poisoned
    try:
        got, _ = speculative_generate(target, draft, ids, 20, num_draft_tokens=4)
    finally:
        KVCache.update = original
    assert torch.equal(got, expected)


def test_end_token_stops_like_generate(target, draft):
    ids = prompt(5, seed=11)
    full = target.generate(ids, 20)
    eos = int(full[0, 5 + 6])  # the 7th new token ends the text
    expected = target.generate(ids, 20, eos_token_id=eos)
    assert expected.size(1) < full.size(1)
    for k in (1, 3, 5):
        got, _ = speculative_generate(target, draft, ids, 20, num_draft_tokens=k, eos_token_id=eos)
        assert torch.equal(got, expected)
        got, _ = speculative_generate(target, target, ids, 20, num_draft_tokens=k, eos_token_id=eos)
        assert torch.equal(got, expected)


def test_gpt_target_and_draft():
    torch.manual_seed(0)
    target = GPT(GPTConfig.tiny(vocab_size=V)).eval()
    draft = GPT(GPTConfig.tiny(vocab_size=V, n_layer=1, n_embd=16, n_head=2)).eval()
    with torch.no_grad():
        target.lm_head.weight.mul_(20)
    ids = prompt(4)
    got, _ = speculative_generate(target, draft, ids, 19, num_draft_tokens=3)
    assert torch.equal(got, target.generate(ids, 19))


def test_no_new_tokens(target, draft):
    ids = prompt(3)
    got, stats = speculative_generate(target, draft, ids, 0)
    assert torch.equal(got, ids) and stats["target_forwards"] == 0


def test_bad_input(target, draft):
    ids = prompt(4)
    with pytest.raises(ValueError, match="vocab_size"):
        speculative_generate(target, llama(2, vocab_size=V + 1), ids, 5)
    with pytest.raises(ValueError, match="batch size 1"):
        speculative_generate(target, draft, torch.zeros(2, 4, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="num_draft_tokens"):
        speculative_generate(target, draft, ids, 5, num_draft_tokens=0)
    with pytest.raises(ValueError, match="context window"):
        speculative_generate(target, draft, ids, 61)
    with pytest.raises(ValueError, match="draft's context window"):
        speculative_generate(target, llama(3, max_position_embeddings=8), ids, 5)
    with pytest.raises(ValueError, match="at least one token"):
        speculative_generate(target, draft, torch.zeros(1, 0, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="token ids"):
        speculative_generate(target, draft, torch.full((1, 3), V), 5)
    with pytest.raises(TypeError, match="GPT or LlamaForCausalLM"):
        speculative_generate(target, nn.Linear(2, 2), ids, 5)


@pytest.mark.parametrize("proposed, picks, kept", [
    ([5, 6, 7], [5, 6, 7, 8], [5, 6, 7, 8]),  # every guess right: all k, plus the target's next
    ([5, 6, 7], [5, 9, 7, 8], [5, 9]),  # the run stops at the first miss, even if a later guess matches
    ([5, 6, 7], [1, 6, 7, 8], [1]),  # the first guess wrong: only the target's own token
    ([], [3], [3]),  # nothing proposed: one plain decoding step
])
def test_greedy_accept_keeps_the_leading_right_guesses_and_the_targets_token(proposed, picks, kept):
    from minillm.speculative import greedy_accept

    out = greedy_accept(torch.tensor(proposed, dtype=torch.long), torch.tensor(picks))
    assert out.tolist() == kept


def test_greedy_accept_rejects_mismatched_lengths():
    from minillm.speculative import greedy_accept

    with pytest.raises(ValueError, match="one token more than proposed"):
        greedy_accept(torch.tensor([1, 2]), torch.tensor([1, 2]))
    with pytest.raises(TypeError):
        greedy_accept(torch.tensor([1.0]), torch.tensor([1, 2]))
