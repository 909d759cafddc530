"""Prompt tuning, prefix tuning and P-tuning (minillm.prompt_tuning) against Hugging Face PEFT 0.21.2
on tiny random transformers models whose weights our GPT / Llama / BERT / T5 copy: the same initial
prompt under the same seed, the same logits, loss and prompt gradients, the same printed counts, the
same adapter files (saved by us, loaded by PEFT, and the other way round); prefixes as past key/values
against a written-out twin; and clear errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from minillm.prompt_tuning import (CausalLMOutput, PrefixTuningConfig, PromptEncoderConfig, PromptModel,
                                   PromptTuningConfig, get_prompt_model)

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

from minillm.models.bert import BertForSequenceClassification as OurBertCls  # noqa: E402
from minillm.models.bert import BertForTokenClassification as OurBertTok  # noqa: E402
from minillm.models.gpt import GPT  # noqa: E402
from minillm.models.llama import LlamaForCausalLM as OurLlama  # noqa: E402
from minillm.models.t5 import T5ForConditionalGeneration as OurT5  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]
V = 64  # vocabulary of the tiny models
N = 3  # virtual tokens


def hf_gpt2(hidden: int = 32, layers: int = 2):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=hidden, n_layer=layers, n_head=4,
                                     bos_token_id=0, eos_token_id=None)
    config._attn_implementation = "eager"
    return transformers.GPT2LMHeadModel(config).eval()


def hf_llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=None, eos_token_id=None,
        pad_token_id=None, tie_word_embeddings=False)
    config._attn_implementation = "eager"
    return transformers.LlamaForCausalLM(config).eval()


def hf_bert():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32,
                                     attn_implementation="eager")
    return transformers.BertForSequenceClassification(config).eval()


def hf_t5(layers: int = 3):
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=layers,
                                   num_decoder_layers=layers, num_heads=4, decoder_start_token_id=0)
    return transformers.T5ForConditionalGeneration(config).eval()


HF = {"gpt2": hf_gpt2, "llama": hf_llama, "bert": hf_bert, "t5": hf_t5}
OURS = {"gpt2": GPT, "llama": OurLlama, "bert": OurBertCls, "t5": OurT5}
TASK = {"gpt2": "CAUSAL_LM", "llama": "CAUSAL_LM", "bert": "SEQ_CLS", "t5": "SEQ_2_SEQ_LM"}
METHODS = {  # name: (PEFT's config class, ours, extra fields)
    "prompt": (peft.PromptTuningConfig, PromptTuningConfig, {}),
    "prefix": (peft.PrefixTuningConfig, PrefixTuningConfig, {}),
    "prefix_projection": (peft.PrefixTuningConfig, PrefixTuningConfig,
                          dict(prefix_projection=True, encoder_hidden_size=24)),
    "ptuning_mlp": (peft.PromptEncoderConfig, PromptEncoderConfig, dict(encoder_hidden_size=24)),
    "ptuning_lstm": (peft.PromptEncoderConfig, PromptEncoderConfig,
                     dict(encoder_reparameterization_type="LSTM", encoder_hidden_size=12)),
}


def configs(kind: str, method: str, **kw):
    ref_cls, our_cls, extra = METHODS[method]
    fields = dict(task_type=TASK[kind], num_virtual_tokens=N, **extra, **kw)
    return ref_cls(**fields), our_cls(**fields)


def pair(kind: str, method: str, seed: int = 1, **kw):
    """PEFT on transformers' model and ours on our copy of it, each wrapped from `seed`."""
    hf = HF[kind]()
    mine = OURS[kind].from_hf(hf)
    ref_config, our_config = configs(kind, method, **kw)
    torch.manual_seed(seed)
    ref = peft.get_peft_model(hf, ref_config)
    torch.manual_seed(seed)
    ours = get_prompt_model(mine, our_config)
    return ref, ours


def tokens(shape=(2, 7), seed=0, high=V):
    return torch.randint(1, high, shape, generator=torch.Generator().manual_seed(seed))


def padded_mask(ids):
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # right padding in the second row
    return mask


def close(a, b, atol=1e-5):
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-5)


def ref_table(ref) -> torch.Tensor:
    return ref.prompt_encoder["default"].embedding.weight


# ---------------------------------------------------------------- causal LMs: parity with PEFT


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("method", list(METHODS))
def test_causal_lm_init_logits_loss_and_gradients_equal_peft(kind, method):
    ref, ours = pair(kind, method)
    close(ours.get_prompt_embedding_to_save(), ref.get_prompt_embedding_to_save("default"), atol=0)
    ids = tokens()
    mask = padded_mask(ids)
    labels = ids.clone()
    labels[1, -2:] = -100
    y_ref = ref(input_ids=ids, attention_mask=mask, labels=labels)
    y = ours(ids, attention_mask=mask, labels=labels)
    assert isinstance(y, CausalLMOutput)
    T = N + ids.size(1) if method.startswith(("prompt", "ptuning")) else ids.size(1)
    assert y.logits.shape == (2, T, V)  # prompt tuning: logits over N + T positions
    close(y.logits, y_ref.logits)
    close(y.loss, y_ref.loss)
    with torch.no_grad():
        base = ours.base_model(ids, attention_mask=mask)
    assert (base - y.logits[:, -ids.size(1):]).abs().max() > 1e-3  # the prompt changes the output
    y.loss.backward()
    y_ref.loss.backward()
    ref_params = dict(ref.prompt_encoder["default"].named_parameters())
    our_params = dict(ours.prompt_encoder.named_parameters())
    assert sorted(ref_params) == sorted(our_params)  # PEFT's parameter names, e.g. mlp_head.0.weight
    for name, p in our_params.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        close(p.grad, ref_params[name].grad)
    assert all(p.grad is None for p in ours.base_model.parameters())  # the model stays frozen


@pytest.mark.parametrize("method", ["prompt", "prefix", "ptuning_mlp"])
def test_trainable_set_and_printed_counts_equal_peft(method, capsys):
    ref, ours = pair("gpt2", method)
    ref.print_trainable_parameters()
    expected = capsys.readouterr().out
    ours.print_trainable_parameters()
    assert capsys.readouterr().out == expected
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == \
        {"prompt_encoder." + n for n, _ in ours.prompt_encoder.named_parameters()}


def test_inputs_embeds_and_position_ids_as_peft():
    ref, ours = pair("gpt2", "prefix")
    ids = tokens()
    y = ours(ids).logits
    close(ours(inputs_embeds=ours.base_model.transformer.wte(ids)).logits, y, atol=0)
    positions = torch.arange(7)[None]  # prefix tuning shifts them past the prefix, as PEFT
    close(ours(ids, position_ids=positions).logits, y, atol=0)
    close(ref(input_ids=ids, position_ids=positions).logits, y)
    ref, ours = pair("gpt2", "prompt")
    with pytest.warns(UserWarning, match="position_ids"):  # prompt tuning ignores them, as PEFT
        close(ours(ids, position_ids=positions).logits, ours(ids).logits, atol=0)


def _tokenizer_dir(tmp_path):
    """A tiny word-level Hugging Face tokenizer on disk (PEFT loads it by path; no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[UNK]"] + [f"w{i}" for i in range(1, 40)] + ["classify", "the", "review", "please"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.save_pretrained(tmp_path)
    return fast


@pytest.mark.parametrize("text", ["classify the review", "please classify the review w3 w7 w9"])
def test_text_init_equals_peft(text, tmp_path):
    """Shorter text is repeated to N tokens, longer is cut: both as PEFT."""
    tokenizer = _tokenizer_dir(tmp_path)
    kw = dict(prompt_tuning_init="TEXT", prompt_tuning_init_text=text)
    hf = hf_gpt2()
    mine = GPT.from_hf(hf)
    torch.manual_seed(1)
    ref = peft.get_peft_model(hf, peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5,
                                                          tokenizer_name_or_path=str(tmp_path), **kw))
    torch.manual_seed(1)
    ours = get_prompt_model(mine, PromptTuningConfig(num_virtual_tokens=5, **kw), tokenizer=tokenizer)
    ids = tokenizer(text)["input_ids"]
    expected = mine.transformer.wte.weight[(ids * 5)[:5]]
    assert torch.equal(ours.get_prompt_embedding_to_save(), expected)
    assert torch.equal(ref.get_prompt_embedding_to_save("default"), expected)
    x = tokens()
    close(ours(x).logits, ref(input_ids=x).logits)
    vocab = tokenizer.get_vocab()  # a plain function str -> ids works too
    plain = get_prompt_model(GPT.from_hf(hf), PromptTuningConfig(num_virtual_tokens=5, **kw),
                             tokenizer=lambda s: [vocab[w] for w in s.split()])
    assert torch.equal(plain.get_prompt_embedding_to_save(), expected)


def test_text_init_with_a_minillm_tokenizer():
    from minillm.vocab import CharVocab

    vocab = CharVocab("abcdefgh")  # encode() like every minillm tokenizer
    model = get_prompt_model(GPT.from_hf(hf_gpt2()), PromptTuningConfig(
        num_virtual_tokens=4, prompt_tuning_init="TEXT", prompt_tuning_init_text="hag"), tokenizer=vocab)
    ids = vocab.encode("hag") + vocab.encode("h")  # 3 tokens, repeated to 4
    assert torch.equal(model.get_prompt_embedding_to_save(), model.base_model.transformer.wte.weight[ids])
    with pytest.raises(ValueError, match=r"outside the model's vocabulary \[0, 64\)"):
        get_prompt_model(GPT.from_hf(hf_gpt2()), PromptTuningConfig(
            num_virtual_tokens=4, prompt_tuning_init="TEXT", prompt_tuning_init_text="x"),
            tokenizer=lambda text: [99])


def test_sample_vocab_init_equals_peft():
    ref, ours = pair("llama", "prompt", prompt_tuning_init="SAMPLE_VOCAB")
    table = ours.get_prompt_embedding_to_save()
    assert torch.equal(table, ref.get_prompt_embedding_to_save("default"))
    words = ours.base_model.model.embed_tokens.weight
    assert all(any(torch.equal(row, w) for w in words) for row in table)  # copies of word vectors


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_generate_equals_greedy_decoding_with_peft(method):
    """Greedy tokens equal greedy decoding with PEFT's forward. (PEFT 0.21.2's own cached
    ``generate`` on transformers 5 is not the reference: after the first new token each step gets
    the virtual tokens again plus only the newest token, so it drifts from its own forward.)"""
    ref, ours = pair("gpt2", method)
    ids = tokens((2, 4))
    expected = ids
    with torch.no_grad():
        for _ in range(5):
            step = ref(input_ids=expected).logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            expected = torch.cat([expected, step], dim=1)
    assert torch.equal(ours.generate(ids, 5), expected)
    assert torch.equal(ours.generate(ids, 5, attention_mask=torch.ones_like(ids)), expected)


@pytest.mark.parametrize("kind,method", [("llama", "prefix"), ("gpt2", "ptuning_mlp"), ("t5", "prompt")])
def test_disable_adapter_runs_the_plain_model_as_peft(kind, method):
    ref, ours = pair(kind, method)
    ids = tokens()
    labels = tokens((2, 4), seed=5) if kind == "t5" else ids
    with ref.disable_adapter(), ours.disable_adapter():
        y_ref, y = ref(input_ids=ids, labels=labels), ours(ids, labels=labels)
    close(y.logits, y_ref.logits)
    close(y.loss, y_ref.loss)
    assert not ours.disabled
    with torch.no_grad():
        assert (ours(ids, labels=labels).logits[:, -1] - y.logits[:, -1]).abs().max() > 1e-4


def test_bf16_model_keeps_an_fp32_prompt_as_peft():
    hf = hf_llama()
    mine = OurLlama.from_hf(hf).to(torch.bfloat16)
    hf.to(torch.bfloat16)
    for method in ("prompt", "prefix"):
        ref_config, our_config = configs("llama", method)
        torch.manual_seed(1)
        ref = peft.get_peft_model(hf, ref_config)
        torch.manual_seed(1)
        ours = get_prompt_model(mine, our_config)
        assert ours.prompt_encoder.embedding.weight.dtype == torch.float32
        ids = tokens()
        y = ours(ids).logits
        assert y.dtype == torch.bfloat16
        close(y.float(), ref(input_ids=ids).logits.float(), atol=8e-3)  # bf16 rounding; the prompt moves ~0.2
        ref.base_model.requires_grad_(True)  # PEFT froze the shared model: undo before the next wrap
        mine.requires_grad_(True)


# ---------------------------------------------------------------- adapters between PEFT and us


def _train_a_little(ours: PromptModel, seed: int = 2) -> None:
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed)
        for p in ours.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("method", ["prompt", "prefix_projection", "ptuning_mlp"])
def test_adapter_saved_by_us_loads_in_peft_and_back(kind, method, tmp_path):
    ref_new, ours = pair(kind, method)
    _train_a_little(ours)
    ours.save_pretrained(tmp_path / "ours")
    ref_new.save_pretrained(tmp_path / "peft")
    saved = load_file(tmp_path / "ours" / "adapter_model.safetensors")
    peft_saved = load_file(tmp_path / "peft" / "adapter_model.safetensors")
    assert set(saved) == set(peft_saved) == {"prompt_embeddings"}
    ours_json = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    peft_json = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    info = {"peft_version", "auto_mapping", "revision", "tokenizer_kwargs"}
    assert {k: v for k, v in ours_json.items() if k not in info} == \
        {k: v for k, v in peft_json.items() if k not in info}

    ref = peft.PeftModel.from_pretrained(HF[kind](), tmp_path / "ours")
    ids = tokens()
    mask = padded_mask(ids)
    expected = ours(ids, attention_mask=mask).logits
    close(ref(input_ids=ids, attention_mask=mask).logits, expected)
    mine = PromptModel.from_pretrained(OURS[kind].from_hf(HF[kind]()), tmp_path / "ours")
    close(mine(ids, attention_mask=mask).logits, expected)
    assert not any(p.requires_grad for p in mine.parameters()) and not mine.training

    ref.save_pretrained(tmp_path / "again")  # PEFT's own file of our adapter, back into ours
    back = PromptModel.from_pretrained(OURS[kind].from_hf(HF[kind]()), tmp_path / "again", is_trainable=True)
    close(back(ids, attention_mask=mask).logits, expected)
    assert {n for n, p in back.named_parameters() if p.requires_grad} == {"prompt_encoder.embedding.weight"}


def test_adapter_trained_in_peft_loads_in_ours(tmp_path):
    ref, _ = pair("llama", "prefix")
    with torch.no_grad():
        ref_table(ref).mul_(0.5).add_(1.0)
    ref.save_pretrained(tmp_path)
    mine = PromptModel.from_pretrained(OurLlama.from_hf(hf_llama()), tmp_path)
    ids = tokens()
    close(mine(ids).logits, ref(input_ids=ids).logits)
    assert mine.peft_config["default"].num_attention_heads == 2  # GQA: key/value heads, as PEFT


# ---------------------------------------------------------------- BERT sequence classification


@pytest.mark.parametrize("method", ["prompt", "ptuning_mlp"])
def test_bert_classification_equals_peft(method, tmp_path):
    ref, ours = pair("bert", method)
    close(ours.get_prompt_embedding_to_save(), ref.get_prompt_embedding_to_save("default"), atol=0)
    ids = tokens()
    mask, labels = padded_mask(ids), torch.tensor([0, 1])
    segments = (torch.arange(7) > 3).long().expand(2, -1)  # token_type_ids: get zeros in front
    y_ref = ref(input_ids=ids, attention_mask=mask, token_type_ids=segments, labels=labels)
    y = ours(ids, attention_mask=mask, token_type_ids=segments, labels=labels)
    close(y.logits, y_ref.logits)
    close(y.loss, y_ref.loss)
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {"base_model.classifier.weight", "base_model.classifier.bias"} | \
        {"prompt_encoder." + n for n, _ in ours.prompt_encoder.named_parameters()}
    assert ours.get_nb_trainable_parameters()[0] == ref.get_nb_trainable_parameters()[0]

    _train_a_little(ours)
    ours.save_pretrained(tmp_path / "ours")
    assert set(load_file(tmp_path / "ours" / "adapter_model.safetensors")) == \
        {"prompt_embeddings", "base_model.classifier.weight", "base_model.classifier.bias"}
    loaded = peft.PeftModel.from_pretrained(hf_bert(), tmp_path / "ours")
    expected = ours(ids, attention_mask=mask).logits
    close(loaded(input_ids=ids, attention_mask=mask).logits, expected)
    loaded.save_pretrained(tmp_path / "peft")
    back = PromptModel.from_pretrained(OurBertCls.from_hf(hf_bert()), tmp_path / "peft")
    close(back(ids, attention_mask=mask).logits, expected)


def test_bert_prefix_tuning_equals_explicit_prefix():
    """transformers 5's BERT takes no past_key_values, so PEFT cannot prefix-tune it; ours can. The
    twin: the same prefixes handed to the encoder directly, with positions starting after them."""
    torch.manual_seed(1)
    model = get_prompt_model(OurBertCls.from_hf(hf_bert()), PrefixTuningConfig(num_virtual_tokens=N))
    ids, labels = tokens(), torch.tensor([1, 0])
    mask = padded_mask(ids)
    y = model(ids, attention_mask=mask, labels=labels)
    pkv = model.get_prompt(2)
    assert len(pkv) == 2 and pkv[0][0].shape == (2, 4, N, 8)
    base = model.base_model
    full_mask = torch.cat([torch.ones(2, N, dtype=mask.dtype), mask], dim=1)
    twin = base(ids, attention_mask=full_mask, past_key_values=pkv, position_ids=torch.arange(N, N + 7),
                labels=labels)
    close(y.logits, twin.logits, atol=0)
    assert (base(ids, attention_mask=mask).logits - y.logits).abs().max() > 1e-4
    y.loss.backward()
    assert model.prompt_encoder.embedding.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- BERT token classification (NER)


def hf_bert_tokens(num_labels: int = 5):
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=32, num_labels=num_labels,
                                     attn_implementation="eager")
    return transformers.BertForTokenClassification(config).eval()


def token_pair(method: str, seed: int = 1):
    ref_cls, our_cls, extra = METHODS[method]
    fields = dict(task_type="TOKEN_CLS", num_virtual_tokens=N, **extra)
    hf = hf_bert_tokens()
    mine = OurBertTok.from_hf(hf)
    torch.manual_seed(seed)
    ref = peft.get_peft_model(hf, ref_cls(**fields))
    torch.manual_seed(seed)
    return ref, get_prompt_model(mine, our_cls(**fields))


def token_labels(mask):
    labels = torch.randint(0, 5, mask.shape, generator=torch.Generator().manual_seed(3))
    labels[mask == 0] = -100
    labels[:, 0] = -100  # [CLS]
    return labels


@pytest.mark.parametrize("method", ["prompt", "ptuning_mlp", "ptuning_lstm"])
def test_bert_token_classification_equals_peft(method, tmp_path):
    """Prompt tuning / P-tuning v1 on NER: logits over N+T positions as PEFT's; our loss skips the
    virtual tokens (PEFT passes the (B, T) labels on unchanged and the loss fails on the length)."""
    ref, ours = token_pair(method)
    assert ours.peft_config["default"].task_type == "TOKEN_CLS"
    close(ours.get_prompt_embedding_to_save(), ref.get_prompt_embedding_to_save("default"), atol=0)
    ids = tokens()
    mask = padded_mask(ids)
    y_ref = ref(input_ids=ids, attention_mask=mask)
    labels = token_labels(mask)
    y = ours(ids, attention_mask=mask, labels=labels)
    assert y.logits.shape == (2, N + 7, 5)
    close(y.logits, y_ref.logits)
    expected_loss = torch.nn.functional.cross_entropy(y_ref.logits[:, N:].reshape(-1, 5), labels.reshape(-1),
                                                      ignore_index=-100)
    close(y.loss, expected_loss)
    assert {n for n, p in ours.named_parameters() if p.requires_grad} >= \
        {"base_model.classifier.weight", "base_model.classifier.bias"}
    assert ours.get_nb_trainable_parameters()[0] == ref.get_nb_trainable_parameters()[0]
    _train_a_little(ours)
    ours.save_pretrained(tmp_path / "ours")
    loaded = peft.PeftModel.from_pretrained(hf_bert_tokens(), tmp_path / "ours")
    expected = ours(ids, attention_mask=mask).logits
    close(loaded(input_ids=ids, attention_mask=mask).logits, expected)
    loaded.save_pretrained(tmp_path / "peft")
    back = PromptModel.from_pretrained(OurBertTok.from_hf(hf_bert_tokens()), tmp_path / "peft")
    close(back(ids, attention_mask=mask).logits, expected)


def _explicit_bert_tokens_with_prefix(model: OurBertTok, ids, mask, prefixes):
    """BERT for token classification written out (post-LN, eval mode) with prefix keys/values
    concatenated inside every layer's attention; positions P .. P+T-1, as PEFT feeds BERT."""
    B, T = ids.shape
    P = prefixes[0][0].size(2)
    bert, c = model.bert, model.config
    nh, hs = c.num_attention_heads, c.hidden_size // c.num_attention_heads
    e = bert.embeddings
    x = e.word_embeddings(ids) + e.token_type_embeddings.weight[0] + e.position_embeddings(torch.arange(P, P + T))
    x = e.LayerNorm(x)
    keep = torch.cat([torch.ones(B, P, dtype=torch.bool), mask.bool()], dim=1)  # (B, P+T)
    for layer, (pk, pv) in zip(bert.encoder.layer, prefixes):
        a = layer.attention.self
        heads = lambda t: t.view(B, T, nh, hs).transpose(1, 2)  # noqa: E731  (B, nh, T, hs)
        q, k, v = heads(a.query(x)), heads(a.key(x)), heads(a.value(x))
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)  # (B, nh, P+T, hs)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hs)  # (B, nh, T, P+T)
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
        h = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, nh * hs)
        x = layer.attention.output.LayerNorm(layer.attention.output.dense(h) + x)
        x = layer.output.LayerNorm(layer.output.dense(layer.intermediate(x)) + x)
    return model.classifier(x)  # (B, T, L)


@pytest.mark.parametrize("projection", [False, True])
def test_ptuning_v2_token_classification_equals_written_out_bert(projection):
    """P-tuning v2 (deep prompts: prefix tuning, no projection) for NER: one logit row per real token,
    equal to BERT written out with the prefixes concatenated inside each attention."""
    torch.manual_seed(1)
    extra = dict(prefix_projection=True, encoder_hidden_size=24) if projection else {}
    model = get_prompt_model(OurBertTok.from_hf(hf_bert_tokens()),
                             PrefixTuningConfig(task_type="TOKEN_CLS", num_virtual_tokens=N, **extra))
    with torch.no_grad():  # a non-trivial (trained-looking) prefix
        for p in model.prompt_encoder.parameters():
            p.normal_(0, 0.5)
    ids = tokens()
    mask = padded_mask(ids)
    labels = token_labels(mask)
    y = model(ids, attention_mask=mask, labels=labels)
    assert y.logits.shape == (2, 7, 5)
    twin = _explicit_bert_tokens_with_prefix(model.base_model, ids, mask, model.get_prompt(2))
    close(y.logits, twin)
    close(y.loss, torch.nn.functional.cross_entropy(twin.reshape(-1, 5), labels.reshape(-1), ignore_index=-100))
    assert (model.base_model(ids, attention_mask=mask).logits - y.logits).abs().max() > 1e-3
    y.loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"base_model.classifier.weight", "base_model.classifier.bias"} | \
        {"prompt_encoder." + n for n, _ in model.prompt_encoder.named_parameters()}
    assert all(p.grad.abs().sum() > 0 for p in model.prompt_encoder.parameters())


def test_token_classification_labels_must_match_the_input():
    model = get_prompt_model(OurBertTok.from_hf(hf_bert_tokens()), PromptTuningConfig(num_virtual_tokens=N))
    with pytest.raises(ValueError, match=r"labels.*\(2, 7\)"):
        model(tokens(), labels=torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="task_type='SEQ_CLS' does not fit bert.*'TOKEN_CLS'"):
        get_prompt_model(OurBertTok.from_hf(hf_bert_tokens()),
                         PromptTuningConfig(num_virtual_tokens=N, task_type="SEQ_CLS"))


# ---------------------------------------------------------------- prefixes: the slow twin


def _explicit_gpt_with_prefix(model: GPT, ids, mask, prefixes):
    """GPT-2 written out with prefix keys/values concatenated inside each attention: the real tokens
    sit at positions P .. P+T-1, see every prefix key (unless masked) and the earlier tokens."""
    B, T = ids.shape
    P = prefixes[0][0].size(2)
    c = model.config
    hs = c.n_embd // c.n_head
    x = model.transformer.wte(ids) + model.transformer.wpe.weight[P:P + T]  # (B, T, C)
    visible = torch.ones(T, P + T, dtype=torch.bool).tril(diagonal=P)  # (T, P+T)
    real = torch.cat([torch.ones(B, P, dtype=torch.bool), mask.bool()], dim=1)  # (B, P+T)
    visible = visible[None, None] & real[:, None, None, :]  # (B, 1, T, P+T)
    for block, (pk, pv) in zip(model.transformer.h, prefixes):
        h = block.ln_1(x)
        q, k, v = block.attn.c_attn(h).split(c.n_embd, dim=2)
        q, k, v = (t.view(B, T, c.n_head, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        k, v = torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)  # (B, nh, P+T, hs)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, P+T)
        att = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, c.n_embd)  # (B, T, C)
        x = x + block.attn.c_proj(y)
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(model.transformer.ln_f(x))


def test_prefix_as_past_key_values_equals_explicit_concatenation():
    torch.manual_seed(3)
    model = get_prompt_model(GPT.from_hf(hf_gpt2()), PrefixTuningConfig(num_virtual_tokens=N,
                                                                        prefix_projection=True))
    ids = tokens()
    mask = padded_mask(ids)
    prefixes = model.get_prompt(2)
    raw = model.prompt_encoder()  # (N, L·2·C): chunk 2l = layer l's keys, 2l+1 its values
    k1 = raw.view(N, 4, 4, 8)[:, 2].permute(1, 0, 2)  # layer 1's keys (nh, N, hs)
    assert torch.equal(prefixes[1][0][0], k1)
    expected = _explicit_gpt_with_prefix(model.base_model, ids, mask, prefixes)
    close(model(ids, attention_mask=mask).logits, expected)


# ---------------------------------------------------------------- T5


@pytest.mark.parametrize("method", ["prompt", "ptuning_mlp"])
def test_t5_prompt_tuning_equals_peft(method, tmp_path):
    ref, ours = pair("t5", method)
    table = ours.get_prompt_embedding_to_save()
    assert table.shape == (2 * N, 32)  # PEFT sizes it for two submodules; the encoder uses the first N
    close(table, ref.get_prompt_embedding_to_save("default"), atol=0)
    ids, labels = tokens(), tokens((2, 4), seed=5)
    mask = padded_mask(ids)
    y_ref = ref(input_ids=ids, attention_mask=mask, labels=labels)
    y = ours(ids, attention_mask=mask, labels=labels)
    assert y.logits.shape == (2, 4, V)  # the decoder is untouched
    close(y.logits, y_ref.logits)
    close(y.loss, y_ref.loss)
    _train_a_little(ours)
    ours.save_pretrained(tmp_path)
    loaded = peft.PeftModel.from_pretrained(hf_t5(), tmp_path)
    close(loaded(input_ids=ids, attention_mask=mask, labels=labels).logits,
          ours(ids, attention_mask=mask, labels=labels).logits)


@pytest.mark.parametrize("method", ["prefix", "prefix_projection"])
def test_t5_prefix_tuning_equals_peft(method):
    """Decoder self-attention only, with PEFT's layout of the chunks over three decoder layers."""
    ref, ours = pair("t5", method)
    ids, labels = tokens(), tokens((2, 4), seed=5)
    dec_mask = torch.ones_like(labels)
    y_ref = ref(input_ids=ids, labels=labels, decoder_attention_mask=dec_mask)
    y = ours(ids, labels=labels, decoder_attention_mask=dec_mask)
    close(y.logits, y_ref.logits)
    close(y.loss, y_ref.loss)
    layers = ref.get_prompt(2).self_attention_cache.layers
    for (k, v), layer in zip(ours.get_prompt(2), layers):
        close(k, layer.keys, atol=1e-6)  # PEFT projects a batch of tables, we project one
        close(v, layer.values, atol=1e-6)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kw,error,match", [
    (dict(num_virtual_tokens=0), ValueError, "num_virtual_tokens must be >= 1, got 0"),
    (dict(num_virtual_tokens=-2), ValueError, "got -2"),
    (dict(num_virtual_tokens=None), TypeError, "num_virtual_tokens must be an int"),
    (dict(num_virtual_tokens=2.0), TypeError, "num_virtual_tokens"),
    (dict(num_virtual_tokens=2, task_type="QUESTION_ANS"), ValueError, "task_type"),
    (dict(num_virtual_tokens=2, prompt_tuning_init="TEXT"), ValueError, "prompt_tuning_init_text"),
    (dict(num_virtual_tokens=2, prompt_tuning_init="text"), ValueError, "prompt_tuning_init")])
def test_bad_config_values(kw, error, match):
    with pytest.raises(error, match=match):
        PromptTuningConfig(**kw)


def test_bad_encoder_configs():
    with pytest.raises(ValueError, match="encoder_reparameterization_type"):
        PromptEncoderConfig(num_virtual_tokens=2, encoder_reparameterization_type="GRU")
    with pytest.raises(ValueError, match="init_weights"):
        PrefixTuningConfig(num_virtual_tokens=2, init_weights="ones")


def test_virtual_tokens_must_leave_room_in_the_context():
    with pytest.raises(ValueError, match="num_virtual_tokens=32 leaves no room.*block_size=32"):
        get_prompt_model(GPT.from_hf(hf_gpt2()), PromptTuningConfig(num_virtual_tokens=32))
    model = get_prompt_model(GPT.from_hf(hf_gpt2()), PrefixTuningConfig(num_virtual_tokens=30))
    with pytest.raises(ValueError, match=r"30 virtual tokens \+ 7 tokens = 37 positions.*block_size=32"):
        model(tokens())
    assert model(tokens((2, 2))).logits.shape == (2, 2, V)
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 2\) \(B, T\) like the input"):
        model(tokens((2, 2)), labels=tokens((2, 3)))


class NoPastGPT(GPT):
    """A GPT whose forward takes no past_key_values (as a model without a usable cache)."""

    def forward(self, input_ids=None, *, inputs_embeds=None, attention_mask=None):
        return super().forward(input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask)


def test_prefix_tuning_needs_past_key_values():
    model = NoPastGPT(GPT.from_hf(hf_gpt2()).config)
    with pytest.raises(ValueError, match="prefix tuning needs.*NoPastGPT.forward does not"):
        get_prompt_model(model, PrefixTuningConfig(num_virtual_tokens=2))
    prompted = get_prompt_model(model, PromptTuningConfig(num_virtual_tokens=2))
    assert prompted(tokens()).logits.shape == (2, 9, V)


def test_wrong_model_task_or_tokenizer():
    with pytest.raises(TypeError, match="supports minillm's GPT.*got GPT2LMHeadModel"):
        get_prompt_model(hf_gpt2(), PromptTuningConfig(num_virtual_tokens=2))
    with pytest.raises(ValueError, match="task_type='SEQ_CLS' does not fit gpt2.*'CAUSAL_LM'"):
        get_prompt_model(GPT.from_hf(hf_gpt2()),
                         PromptTuningConfig(num_virtual_tokens=2, task_type="SEQ_CLS"))
    with pytest.raises(ValueError, match="needs the tokenizer"):
        get_prompt_model(GPT.from_hf(hf_gpt2()), PromptTuningConfig(
            num_virtual_tokens=2, prompt_tuning_init="TEXT", prompt_tuning_init_text="hi"))
    with pytest.raises(TypeError, match="config must be a PromptTuningConfig"):
        get_prompt_model(GPT.from_hf(hf_gpt2()), peft.PromptTuningConfig(num_virtual_tokens=2))
    with pytest.raises(ValueError, match="token_dim=48 does not fit"):
        get_prompt_model(GPT.from_hf(hf_gpt2()), PromptTuningConfig(num_virtual_tokens=2, token_dim=48))


def save_gpt2(config, directory) -> None:
    get_prompt_model(GPT.from_hf(hf_gpt2()), config).save_pretrained(directory)


@pytest.mark.parametrize("other,match", [(dict(hidden=48), "token_dim=32 does not fit.*token_dim=48"),
                                         (dict(layers=3), "num_layers=2 does not fit.*num_layers=3")])
def test_loading_onto_another_width_or_depth_fails_clearly(other, match, tmp_path):
    torch.manual_seed(0)
    save_gpt2(PrefixTuningConfig(num_virtual_tokens=N), tmp_path)
    target = GPT.from_hf(hf_gpt2(**other))
    with pytest.raises(ValueError, match=match):
        PromptModel.from_pretrained(target, tmp_path)
    assert all(p.requires_grad for p in target.parameters())  # left as it was


def test_loading_a_table_of_the_wrong_shape_names_both_shapes(tmp_path):
    save_gpt2(PromptTuningConfig(num_virtual_tokens=N), tmp_path)
    save_file({"prompt_embeddings": torch.zeros(N, 40)}, tmp_path / "adapter_model.safetensors")
    target = GPT.from_hf(hf_gpt2())
    with pytest.raises(ValueError, match=r"prompt_embeddings has shape \(3, 40\).*expects \(3, 32\)"):
        PromptModel.from_pretrained(target, tmp_path)
    assert all(p.requires_grad for p in target.parameters())


@pytest.mark.parametrize("missing", ["adapter_config.json", "adapter_model.safetensors"])
def test_missing_adapter_file(missing, tmp_path):
    save_gpt2(PromptTuningConfig(num_virtual_tokens=N), tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        PromptModel.from_pretrained(GPT.from_hf(hf_gpt2()), tmp_path)


def test_save_leaves_no_temporary_files_and_refuses_a_file(tmp_path):
    model = get_prompt_model(GPT.from_hf(hf_gpt2()), PromptTuningConfig(num_virtual_tokens=N))
    model.save_pretrained(tmp_path / "a")
    model.save_pretrained(tmp_path / "a")  # overwriting is fine
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adapter_config.json",
                                                                 "adapter_model.safetensors"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        model.save_pretrained(tmp_path / "f")


def test_minillm_peft_routes_prompt_learning_configs(tmp_path):
    # PEFT's one entry point: get_peft_model and PeftModel.from_pretrained take every method
    import minillm.peft as our_peft

    assert our_peft.PromptTuningConfig is PromptTuningConfig and our_peft.PrefixTuningConfig is PrefixTuningConfig
    _, config = configs("gpt2", "prompt")
    torch.manual_seed(1)
    ours = our_peft.get_peft_model(OURS["gpt2"].from_hf(HF["gpt2"]()), config)
    assert isinstance(ours, PromptModel)
    _train_a_little(ours)
    ours.save_pretrained(tmp_path / "a")
    back = our_peft.PeftModel.from_pretrained(OURS["gpt2"].from_hf(HF["gpt2"]()), tmp_path / "a")
    assert isinstance(back, PromptModel)
    ids = tokens()
    close(back(ids).logits, ours(ids).logits)
    with pytest.raises(TypeError, match="LoraConfig or a prompt-learning config"):
        our_peft.get_peft_model(OURS["gpt2"].from_hf(HF["gpt2"]()), {"r": 8})
