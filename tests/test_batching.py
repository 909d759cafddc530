"""Batched KV-cached generation (minillm.batching): each row of a left-padded batch decodes exactly
what ``model.generate`` decodes for that prompt alone — greedy, sampled with a seeded generator,
with per-row lengths and end tokens — on a tiny random Llama and on the real SmolLM2; rows that end
leave the step reports; bad input is refused with a clear message."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.batching import BatchedGenerator, batched_generate, throughput_vs_batch_size
from minillm.models.llama import LlamaConfig, LlamaForCausalLM

V = 64  # vocabulary of the tiny model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """torch on one thread here (restored after): these models gain nothing from a second thread,
    and on a shared, oversubscribed CPU two OpenMP threads spin-waiting for a descheduled partner
    made the tests up to 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    """A tiny random Llama whose logits are spread wide enough that greedy picks are not near-ties
    (padding changes the order of float additions, which could flip a near-tie)."""
    torch.manual_seed(0)
    config = LlamaConfig.tiny(vocab_size=V, hidden_size=32, intermediate_size=64,
                              max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


def make_prompts(lengths, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=g).tolist() for n in lengths]


def alone(model, prompt: list[int], n: int, **kwargs) -> list[int]:
    """The new tokens ``model.generate`` gives for this prompt alone (batch of one, no padding)."""
    return model.generate(torch.tensor([prompt]), n, **kwargs)[0, len(prompt):].tolist()


def test_batched_greedy_equals_one_by_one(model):
    prompts = make_prompts([3, 7, 1, 12, 5])
    out = batched_generate(model, prompts, 10)
    for p, tokens in zip(prompts, out):
        assert tokens == alone(model, p, 10)


def test_per_row_max_new_tokens(model):
    prompts = make_prompts([4, 9, 2])
    gen = BatchedGenerator(model, prompts, [6, 0, 3])
    out = gen.run()
    assert [len(t) for t in out] == [6, 0, 3]
    assert out[0] == alone(model, prompts[0], 6) and out[2] == alone(model, prompts[2], 3)
    assert gen.finish_reasons == ["length", "length", "length"]


def test_steps_stream_each_running_row_until_it_ends(model):
    prompts = make_prompts([5, 2, 8])
    gen = BatchedGenerator(model, prompts, [2, 5, 3])
    steps = list(gen)
    assert [sorted(s) for s in steps] == [[0, 1, 2], [0, 1, 2], [1, 2], [1], [1]]
    for row in range(3):
        assert [s[row] for s in steps if row in s] == gen.tokens[row]
    assert gen.done
    with pytest.raises(RuntimeError, match="finished"):
        gen.step()


def test_rows_that_end_early_at_their_end_token(model):
    prompts = make_prompts([6, 3, 9, 4])
    full = batched_generate(model, prompts, 12, eos_token_id=[None] * 4)
    # each row's end token: a token its own greedy continuation makes at step 2, 4, 6; row 3 has none
    eos = [full[0][2], full[1][4], full[2][6], None]
    gen = BatchedGenerator(model, prompts, 12, eos_token_id=eos)
    steps = list(gen)
    for row, (p, e) in enumerate(zip(prompts, eos)):
        expected = alone(model, p, 12, eos_token_id=e) if e is not None else full[row]
        assert gen.tokens[row] == expected
        if e is not None:
            assert gen.tokens[row][-1] == e and len(gen.tokens[row]) <= [3, 5, 7][row]
            assert gen.finish_reasons[row] == "stop"
            # a finished row is not reported any more
            assert sum(row in s for s in steps) == len(gen.tokens[row])
    assert gen.finish_reasons[3] == "length" and len(gen.tokens[3]) == 12
    assert len(steps) == 12


def test_default_end_token_is_the_config_s(model):
    prompts = make_prompts([3, 5])
    first = batched_generate(model, prompts, 6, eos_token_id=[None, None])
    model.config.eos_token_id = first[1][1]
    try:
        out = batched_generate(model, prompts, 6)
        assert out[1] == alone(model, prompts[1], 6)  # generate also reads the config's end token
        assert out[1][-1] == first[1][1] and len(out[1]) <= 2
    finally:
        model.config.eos_token_id = None


def test_sampled_rows_reproduce_and_equal_generate(model):
    prompts = make_prompts([4, 8, 2])
    temps, seeds = [0.0, 0.8, 1.5], [None, 11, 12]
    out = batched_generate(model, prompts, 10, temperature=temps, seed=seeds)
    assert out[0] == alone(model, prompts[0], 10)  # the greedy row
    for row in (1, 2):
        g = torch.Generator().manual_seed(seeds[row])
        assert out[row] == alone(model, prompts[row], 10, do_sample=True, temperature=temps[row],
                                 generator=g)
    # the same seed gives the same tokens whatever else is in the batch
    again = batched_generate(model, [prompts[2], make_prompts([7], seed=5)[0]], 10,
                             temperature=[1.5, 1.0], seed=[12, 3])
    assert again[0] == out[2]


def test_batch_longer_than_the_context_when_each_row_fits(model):
    # 60 prompt tokens + 2 new, and 2 prompt tokens + 50 new: each row fits the 64-token context,
    # the padded batch (60 + 50 slots) does not — the cache is sized in slots, not positions
    prompts = make_prompts([60, 2])
    out = batched_generate(model, prompts, [2, 50])
    assert out[0] == alone(model, prompts[0], 2) and out[1] == alone(model, prompts[1], 50)


@pytest.mark.parametrize("prompts, kwargs, error, match", [
    ([[1, 2], []], {}, ValueError, r"prompts\[1\] is empty"),
    ([[1, V]], {}, ValueError, rf"prompts\[0\] holds token id {V}, outside the vocabulary \[0, {V}\)"),
    ([[1, -1]], {}, ValueError, r"token id -1"),
    ([[1, 2.0]], {}, TypeError, r"prompts\[0\] must hold ints"),
    ("hello", {}, ValueError, r"prompts must be a non-empty list"),
    ([], {}, ValueError, r"prompts must be a non-empty list"),
    ([[1, 2]], dict(max_new_tokens=-1), ValueError, r"max_new_tokens\[0\] must be >= 0, got -1"),
    ([[1], [2]], dict(max_new_tokens=[3]), ValueError, r"one per prompt \(2\), got 1"),
    ([[1] * 60], dict(max_new_tokens=5), ValueError, r"60 tokens \+ max_new_tokens=5 = 65"),
    ([[1]], dict(temperature=-0.5), ValueError, r"temperature\[0\] must be >= 0"),
    ([[1]], dict(eos_token_id=[V]), ValueError, rf"eos_token_id\[0\] must be <= {V - 1}"),
])
def test_bad_input_is_refused_clearly(model, prompts, kwargs, error, match):
    kwargs = {"max_new_tokens": 4, **kwargs}
    with pytest.raises(error, match=match):
        BatchedGenerator(model, prompts, kwargs.pop("max_new_tokens"), **kwargs)


def test_throughput_vs_batch_size_reports_each_size(model):
    rates = throughput_vs_batch_size(model, make_prompts([3, 5, 7, 2]), [1, 2, 4], 3)
    assert sorted(rates) == [1, 2, 4]
    assert all(math.isfinite(r) and r > 0 for r in rates.values())
    with pytest.raises(ValueError, match="batch_sizes"):
        throughput_vs_batch_size(model, make_prompts([3]), [0], 3)


def test_smollm2_batched_equals_one_by_one():
    from minillm.gguf import smollm2_gguf_path, tokenizer_from_gguf

    try:
        path = smollm2_gguf_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    model, tok = LlamaForCausalLM.from_gguf(path), tokenizer_from_gguf(path)
    questions = ["What is the capital of France?", "Hi", "Name three colours of the rainbow, please."]
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True)
               for q in questions]
    assert len({len(p) for p in prompts}) == 3  # different lengths: the batch really is padded
    out = batched_generate(model, prompts, 8)
    for p, tokens in zip(prompts, out):
        assert tokens == alone(model, p, 8)
