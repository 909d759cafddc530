"""Bad inputs to the models, their configs, generation, search, vocabularies and the leaderboard.

Every row of the tables below is one bad input: calling ``fn(*args, **kwargs)`` must raise
``exc`` with a message containing ``fragment`` (which names the argument and the bad value, or
what was expected). A wrong result, a hang or an exception from deep inside torch fails the test.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from minillm.hub import load_pretrained
from minillm.leaderboard import leaderboard, score_char_model
from minillm.models.bigram import BigramConfig, BigramLM
from minillm.models.char_rnn import CharRNN, CharRNNConfig
from minillm.models.gpt import GPT, GPTConfig, KVCache
from minillm.models.mlp_lm import MLPLM, MLPLMConfig
from minillm.models.mlp_lm import WordVocab as WordLMVocab
from minillm.models.seq2seq import (RandomBatches, Seq2Seq, Seq2SeqConfig, WordVocab, fixed_batches,
                                    pad_batch, perplexity, translate)
from minillm.sampling import sample_next
from minillm.transformer import BlockConfig, TinyLMConfig, TinyTransformerLM
from minillm.vocab import CharVocab

V = 13  # vocabulary of the small models below
NAN = float("nan")

torch.manual_seed(0)
BIGRAM = BigramLM(BigramConfig(vocab_size=V))
MLP = MLPLM(MLPLMConfig(vocab_size=V, context=4, n_embd=4, n_hidden=8))
RNN = CharRNN(CharRNNConfig(vocab_size=V, n_embd=4, hidden_size=8, num_layers=1))
GPT_TINY = GPT(GPTConfig.tiny(vocab_size=V)).eval()
TINY_LM = TinyTransformerLM(TinyLMConfig(vocab_size=V, max_len=16, n_layers=1,
                                         block=BlockConfig(d_model=16, n_heads=2)))
S2S = Seq2Seq(Seq2SeqConfig(20, 20, emb_dim=8, hidden_dim=8, attn_dim=4)).eval()
PROMPT = torch.tensor([[1, 2, 3]])
EMPTY = torch.zeros(1, 0, dtype=torch.long)
GENERATORS = {"bigram": BIGRAM.generate, "mlp": MLP.generate, "rnn": RNN.generate,
              "gpt": GPT_TINY.generate}


def _cases_for_every_generate():
    rows = [
        ((PROMPT, -1), {}, ValueError, "max_new_tokens must be >= 0, got -1"),
        ((PROMPT, 2.5), {}, TypeError, "max_new_tokens must be an int, got 2.5"),
        ((PROMPT, "3"), {}, TypeError, "max_new_tokens must be an int, got '3'"),
        ((PROMPT, 3), {"temperature": NAN}, ValueError, "temperature must be a finite number, got nan"),
        ((PROMPT, 3), {"temperature": "hot"}, TypeError, "temperature must be a number, got 'hot'"),
        ((PROMPT, 3), {"temperature": 0}, ValueError, "temperature must be > 0, got 0.0"),
        ((PROMPT, 3), {"top_k": 0}, ValueError, "top_k must be >= 1, got 0"),
        ((PROMPT, 3), {"top_k": 2.0}, TypeError, "top_k must be an int or None, got 2.0"),
        ((PROMPT, 3), {"top_p": 1.5}, ValueError, "top_p must be in (0, 1], got 1.5"),
        ((PROMPT, 3), {"top_p": NAN}, ValueError, "top_p must be a finite number, got nan"),
        ((torch.tensor([[1, V]]), 3), {}, ValueError, f"token ids in [0, {V}), got {V}"),
        ((torch.tensor([[-1, 2]]), 3), {}, ValueError, f"token ids in [0, {V}), got -1"),
        ((torch.tensor([[1.0, 2.0]]), 3), {}, TypeError, "must have a int dtype, got torch.float32"),
        ((torch.tensor([1, 2]), 3), {}, ValueError, "must have 2 dimensions, got shape (2,)"),
        (([[1, 2]], 3), {}, TypeError, "must be a torch.Tensor, got list"),
    ]
    for model, generate in GENERATORS.items():
        for args, kwargs, exc, fragment in rows:
            yield pytest.param(generate, args, kwargs, exc, fragment, id=f"{model}-{fragment[:40]}")
        empty = "at least one token"
        yield pytest.param(generate, (EMPTY, 3), {}, ValueError, empty, id=f"{model}-empty prompt")


GPT_ONLY = [
    ((PROMPT, 3), {"num_beams": 0}, ValueError, "num_beams must be >= 1, got 0"),
    ((PROMPT, 3), {"num_beams": 2.0}, TypeError, "num_beams must be an int, got 2.0"),
    ((PROMPT, 3), {"num_beams": 2, "length_penalty": NAN}, ValueError,
     "length_penalty must be a finite number, got nan"),
    ((PROMPT, 3), {"num_beams": 2, "do_sample": True}, ValueError, "beam search is deterministic"),
    ((PROMPT, 31), {"num_beams": 2}, ValueError, "prompt + max_new_tokens - 1 <= block_size"),
    ((torch.ones(1, 33, dtype=torch.long), 1), {}, ValueError, "longer than the context window"),
    ((PROMPT, 3), {"do_sample": "yes"}, TypeError, "do_sample must be True or False"),
    ((PROMPT.to(torch.int16), 3), {}, TypeError, "must be int64 or int32, got torch.int16"),
]


@pytest.mark.parametrize("fn, args, kwargs, exc, fragment", [
    *_cases_for_every_generate(),
    *[pytest.param(GPT_TINY.generate, a, k, e, f, id=f"gpt-{f[:40]}") for a, k, e, f in GPT_ONLY],
])
def test_generate_rejects_bad_arguments(fn, args, kwargs, exc, fragment):
    with pytest.raises(exc, match=re.escape(fragment)):
        fn(*args, **kwargs)


def _kv_overflow():
    cache = KVCache(GPT_TINY.config, 1, max_len=4)
    GPT_TINY(torch.ones(1, 3, dtype=torch.long), past_key_values=cache)
    GPT_TINY(torch.ones(1, 2, dtype=torch.long), past_key_values=cache)  # 3 + 2 > 4


def _all_minus_inf():
    sample_next(torch.full((2, 5), float("-inf")))


def _top_k_then_nan():
    sample_next(torch.tensor([[0.0, NAN, 1.0]]), do_sample=False)


MODEL_CASES = [
    # forward passes: ids out of range, negative, float, wrong shape
    (BIGRAM, (torch.tensor([[V]]),), ValueError, f"token ids in [0, {V}), got {V}"),
    (BIGRAM, (torch.tensor([[-2]]),), ValueError, f"token ids in [0, {V}), got -2"),
    (BIGRAM, (torch.tensor([[0.5]]),), TypeError, "must have a int dtype, got torch.float32"),
    (BIGRAM, (torch.tensor([1, 2]),), ValueError, "must have 2 dimensions"),
    (TINY_LM, (torch.tensor([[V]]),), ValueError, f"token ids in [0, {V}), got {V}"),
    (TINY_LM, (torch.tensor([[-1]]),), ValueError, f"token ids in [0, {V}), got -1"),
    (TINY_LM, (torch.tensor([[0.5]]),), TypeError, "must have a int dtype, got torch.float32"),
    (TINY_LM, (torch.ones(1, 17, dtype=torch.long),), ValueError, "17 tokens is longer than max_len=16"),
    (lambda: TINY_LM(torch.ones(2, 4, dtype=torch.long), torch.ones(2, 5)), (), ValueError,
     "attention_mask must have the shape of idx (2, 4), got (2, 5)"),
    (GPT_TINY, (torch.tensor([[0.5]]),), TypeError, "must have a int dtype, got torch.float32"),
    # the key/value cache
    (_kv_overflow, (), ValueError, "the cache holds max_len=4 positions and 3 are filled: cannot add 2"),
    (KVCache, (GPT_TINY.config, 1), {"max_len": 64}, ValueError, "max_len=64 is longer than"),
    (KVCache, (GPT_TINY.config, 0), ValueError, "batch_size must be >= 1, got 0"),
    # sampling on logits with nothing to pick
    (_all_minus_inf, (), ValueError, "are -inf for every token"),
    (_top_k_then_nan, (), ValueError, "hold NaN"),
    # vocabularies
    (CharVocab("abc").decode, ([1.7],), TypeError, "ids[0] must be an int, got 1.7"),
    (CharVocab("abc").decode, (torch.tensor([1.0]),), TypeError, "integer ids, got a tensor of dtype"),
    (CharVocab("abc").decode, ([3],), ValueError, "ids [3] are outside the vocabulary [0, 3)"),
    (CharVocab("abc").decode, ("ab",), TypeError, "ids must be a sequence of integer ids, got str"),
    (CharVocab("abc").encode, (None,), TypeError, "text must be a str, got None"),
    (WordLMVocab.from_text, ("a b", 1), ValueError, "max_size must be at least 2"),
    (WordVocab.build, ([["a"]],), {"min_freq": 0}, ValueError, "min_freq must be >= 1, got 0"),
    (WordVocab(list(WordVocab.specials) + ["x"]).decode, ([2.5],), TypeError,
     "ids[0] must be an int, got 2.5"),
    # seq2seq batches and decoding
    (lambda: S2S(torch.tensor([[4, 5], [6, 7]]), torch.tensor([[1, 4]])), (), ValueError,
     "src and tgt_in must hold the same number of sentences, got 2 and 1"),
    (translate, (S2S, []), ValueError, "sources must not be empty"),
    (translate, (S2S, [[4, 5]]), {"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
    (translate, (S2S, [[]]), ValueError, "must hold at least one token, got shape (1, 0)"),
    (S2S.encode, (torch.tensor([[4, 5], [0, 0]]),), ValueError, "rows [1] are all padding"),
    (S2S.generate, (torch.tensor([[4, 5]]),), {"num_beams": 0}, ValueError,
     "num_beams must be >= 1, got 0"),
    (S2S.generate, (torch.tensor([[4, 5]]),), {"num_beams": 2, "length_penalty": NAN}, ValueError,
     "length_penalty must be a finite number, got nan"),
    (S2S.generate, (torch.tensor([[4, 5]]),), {"max_new_tokens": 0}, ValueError,
     "max_new_tokens must be >= 1, got 0"),
    (pad_batch, ([],), ValueError, "at least one example"),
    (pad_batch, ([[4, 5, 6]],), TypeError, "examples[0] must be a (source ids, target ids) pair"),
    (RandomBatches, ([([4], [5])], 0), ValueError, "batch_size must be >= 1, got 0"),
    (RandomBatches, ([], 4), ValueError, "examples must not be empty"),
    (fixed_batches, ([([4], [5])], 0), ValueError, "batch_size must be >= 1, got 0"),
    (perplexity, (S2S, []), ValueError, "batches must not be empty"),
    # the leaderboard scorer
    (score_char_model, (BIGRAM, CharVocab("abc").encode), {"block_size": 8, "text": "abcabc"},
     ValueError, "text must hold at least block_size + 1 = 9 characters to score one window, got 6"),
    (score_char_model, (BIGRAM, CharVocab("abc").encode), {"block_size": 0, "text": "abc"},
     ValueError, "block_size must be >= 1, got 0"),
    (score_char_model, (BIGRAM, CharVocab("abc").encode), {"block_size": 2, "text": 42},
     TypeError, "text must be a str, got 42"),
    (leaderboard, (), {"upto_chapter": "4"}, TypeError, "upto_chapter must be an int or None"),
    # Hugging Face objects
    (GPT.from_hf, (BIGRAM,), TypeError, "GPT2Config or its dict, got BigramConfig"),
    (GPT.config_from_hf, ({"n_embd": 8},), ValueError, "the GPT-2 config lacks the fields"),
    (GPT.from_hf, ("gpt2",), TypeError, "model must be a transformers GPT2LMHeadModel, got str"),
    (GPT.config_from_hf, (42,), TypeError, "hf_config must be a transformers GPT2Config or its dict"),
    # the hub
    (load_pretrained, (42,), TypeError, "name must be a str, got 42"),
    (load_pretrained, ("tour-bigram",), {"retrain": "no"}, TypeError, "retrain must be True or False"),
]


def _rows(cases):
    for case in cases:
        fn, args, *rest = case
        kwargs = rest.pop(0) if isinstance(rest[0], dict) else {}
        exc, fragment = rest
        yield pytest.param(fn, args, kwargs, exc, fragment, id=fragment[:50])


@pytest.mark.parametrize("fn, args, kwargs, exc, fragment", list(_rows(MODEL_CASES)))
def test_models_and_helpers_reject_bad_inputs(fn, args, kwargs, exc, fragment):
    with pytest.raises(exc, match=re.escape(fragment)):
        fn(*args, **kwargs)


CONFIG_CASES = [
    (GPTConfig, {"layer_norm_eps": -1}, ValueError, "layer_norm_eps must be > 0, got -1.0"),
    (GPTConfig, {"layer_norm_eps": NAN}, ValueError, "layer_norm_eps must be a finite number, got nan"),
    (GPTConfig, {"vocab_size": 0}, ValueError, "vocab_size must be >= 1, got 0"),
    (GPTConfig, {"n_layer": 2.0}, TypeError, "n_layer must be an int, got 2.0"),
    (GPTConfig, {"dropout": 1.0}, ValueError, "dropout must be < 1, got 1.0"),
    (GPTConfig, {"bias": "yes"}, TypeError, "bias must be True or False, got 'yes'"),
    (GPTConfig, {"activation": "relu"}, ValueError, "activation must be one of"),
    (BigramConfig, {"vocab_size": 0}, ValueError, "vocab_size must be >= 1, got 0"),
    (BigramConfig, {"vocab_size": "82"}, TypeError, "vocab_size must be an int, got '82'"),
    (MLPLMConfig, {"dropout": NAN}, ValueError, "dropout must be a finite number, got nan"),
    (MLPLMConfig, {"direct": 1}, TypeError, "direct must be True or False, got 1"),
    (CharRNNConfig, {"num_layers": 0}, ValueError, "num_layers must be >= 1, got 0"),
    (CharRNNConfig, {"cell": "transformer"}, ValueError, "cell must be one of"),
    (Seq2SeqConfig, {"emb_dim": 0}, ValueError, "emb_dim must be >= 1, got 0"),
    (Seq2SeqConfig, {"dropout": -0.1}, ValueError, "dropout must be >= 0, got -0.1"),
    (Seq2SeqConfig, {"src_vocab_size": 2}, ValueError, "eos_id must be <= 1, got 2"),
    (BlockConfig, {"layer_norm_eps": 0}, ValueError, "layer_norm_eps must be > 0, got 0.0"),
    (BlockConfig, {"d_ff": 0}, ValueError, "d_ff must be >= 1, got 0"),
    (TinyLMConfig, {"positional": "rope"}, ValueError, "positional must be one of"),
    (TinyLMConfig, {"max_len": 0}, ValueError, "max_len must be >= 1, got 0"),
    (TinyLMConfig, {"block": 128}, TypeError, "block must be a BlockConfig (or its dict), got int"),
]


@pytest.mark.parametrize("config_class, fields, exc, fragment", [
    pytest.param(*case, id=f"{case[0].__name__}-{fragment}") for case in CONFIG_CASES
    for fragment in [case[3][:40]]
])
def test_configs_validate_every_field(config_class, fields, exc, fragment):
    with pytest.raises(exc, match=re.escape(fragment)):
        config_class(**fields)


# ----------------------------------------------------------------- Hugging Face directories

@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """A good GPT-2 directory and broken variants of it."""
    root = tmp_path_factory.mktemp("hf")
    good = GPT_TINY.save_pretrained(root / "good")
    dirs = {"good": good}

    wrong_shape = root / "wrong_shape"
    GPT(GPTConfig.tiny(vocab_size=V, n_embd=16)).save_pretrained(wrong_shape)
    (wrong_shape / "config.json").write_text((good / "config.json").read_text())  # says n_embd 32
    dirs["wrong_shape"] = wrong_shape

    missing = root / "missing"
    GPT_TINY.save_pretrained(missing)
    (missing / "model.safetensors").unlink()
    dirs["missing"] = missing

    from minillm.checkpoint import save_checkpoint
    dirs["minillm"] = save_checkpoint(GPT_TINY, root / "minillm_checkpoint")

    corrupt_json = root / "corrupt_json"
    GPT_TINY.save_pretrained(corrupt_json)
    (corrupt_json / "config.json").write_bytes(b"\xff\xfe{not json")
    dirs["corrupt_json"] = corrupt_json

    corrupt_weights = root / "corrupt_weights"
    GPT_TINY.save_pretrained(corrupt_weights)
    (corrupt_weights / "model.safetensors").write_bytes(b"\x00" * 64)
    dirs["corrupt_weights"] = corrupt_weights

    not_gpt2 = root / "not_gpt2"
    GPT_TINY.save_pretrained(not_gpt2)
    cfg = json.loads((not_gpt2 / "config.json").read_text())
    (not_gpt2 / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    dirs["not_gpt2"] = not_gpt2

    missing_field = root / "missing_field"
    GPT_TINY.save_pretrained(missing_field)
    cfg.pop("n_layer")
    (missing_field / "config.json").write_text(json.dumps(cfg))
    dirs["missing_field"] = missing_field

    a_file = root / "a_file.txt"
    a_file.write_text("not a directory")
    dirs["a_file"] = a_file
    dirs["nowhere"] = root / "does_not_exist"
    return dirs


@pytest.mark.parametrize("name, exc, fragment", [
    ("minillm", ValueError, "is a minillm checkpoint, not a Hugging Face GPT-2 directory"),
    ("wrong_shape", ValueError, "transformer.wte.weight: GPT-2 shape (13, 16) vs ours (13, 32)"),
    ("missing", FileNotFoundError, "has no model.safetensors"),
    ("corrupt_json", ValueError, "config.json is not valid JSON"),
    ("corrupt_weights", ValueError, "model.safetensors cannot be read"),
    ("not_gpt2", ValueError, "holds a 'llama' model, expected 'gpt2'"),
    ("missing_field", ValueError, "the GPT-2 config lacks the fields ['n_layer']"),
    ("a_file", FileNotFoundError, "is not a directory"),
    ("nowhere", FileNotFoundError, "is not a directory"),
])
def test_from_pretrained_rejects_what_is_not_a_gpt2_directory(hf_dirs, name, exc, fragment):
    with pytest.raises(exc, match=re.escape(fragment)):
        GPT.from_pretrained(hf_dirs[name])


def test_from_pretrained_loads_the_good_directory_exactly(hf_dirs):
    # the control: the same helper that built the broken variants builds a loadable directory
    loaded = GPT.from_pretrained(hf_dirs["good"])
    x = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(loaded(x), GPT_TINY(x))


def test_save_pretrained_refuses_files_and_non_gpt2_models(tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    with pytest.raises(FileExistsError, match="is a file"):
        GPT_TINY.save_pretrained(target)
    assert target.read_text() == "keep me"
    with pytest.raises(ValueError, match="pre_ln=False"):
        GPT(GPTConfig.tiny(pre_ln=False)).save_pretrained(tmp_path / "post_ln")


def test_generate_with_zero_new_tokens_returns_the_prompt_unchanged():
    # the boundary next to the rejected max_new_tokens=-1: 0 is allowed and adds nothing
    for generate in GENERATORS.values():
        assert torch.equal(generate(PROMPT, 0), PROMPT)


def test_more_beams_than_tokens_still_returns_a_real_hypothesis():
    # num_beams > vocab_size is allowed: the surplus beams sit at -inf and must never be returned
    out = GPT_TINY.generate(PROMPT, 4, num_beams=2 * V)
    assert out.shape == (1, 7) and torch.equal(out[:, :3], PROMPT)
    with torch.no_grad():
        logp = torch.log_softmax(GPT_TINY(out[:, :-1]).float(), dim=-1)[0, 2:]  # (4, V)
    score = float(logp.gather(1, out[0, 3:, None]).sum())
    assert math.isfinite(score)
