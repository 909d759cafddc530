"""Bottleneck adapters (minillm.adapters) against their slow twin: BERT, GPT and Llama run layer by
layer by hand with the adapter formula written out, on random non-zero adapter weights; the
near-identity start equal to the base model bit for bit; what trains and gets gradients; parameter
counts; placements; save/load; errors; and a short training run that lowers the loss."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from minillm.adapters import (Adapter, AdapterConfig, AdapterLayer, AdapterModel,
                              get_adapter_model)
from minillm.models.bert import BertConfig, BertForSequenceClassification, BertModel
from minillm.models.gpt import GPT, GPTConfig
from minillm.models.llama import LlamaConfig, LlamaForCausalLM, rope_cos_sin
from minillm.models.t5 import T5Config, T5ForConditionalGeneration

ACTS = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu}


def make(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "bert":
        return BertModel(BertConfig.tiny()).eval()
    if kind == "gpt":
        return GPT(GPTConfig.tiny()).eval()
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig.tiny()).eval()
    return T5ForConditionalGeneration(T5Config.tiny()).eval()


def randomize(adapted: AdapterModel, seed: int = 1) -> None:
    """Non-zero adapter weights, so that the slow twin has something to agree with."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in adapted.adapter_layers():
            for p in layer.adapter.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def by_hand(h: torch.Tensor, adapter: Adapter, act: str) -> torch.Tensor:
    """h + up(act(down(h))), written out from the adapter's tensors."""
    d, u = adapter.down, adapter.up
    return h + ACTS[act](h @ d.weight.T + d.bias) @ u.weight.T + u.bias


def bert_by_hand(base: BertModel, adapters: dict, ids: torch.Tensor, act: str) -> torch.Tensor:
    T = ids.size(1)
    h = base.embeddings(base.embeddings.word_embeddings(ids), None, torch.arange(T)[None])
    for i, layer in enumerate(base.encoder.layer):
        a = layer.attention.output.dense(layer.attention.self(h)[0])  # (B, T, C)
        a = by_hand(a, adapters[f"encoder.layer.{i}.attention.output.dense"], act)
        h = layer.attention.output.LayerNorm(a + h)  # post-LN: adapter before the residual + LN
        f = layer.output.dense(layer.intermediate(h))
        f = by_hand(f, adapters[f"encoder.layer.{i}.output.dense"], act)
        h = layer.output.LayerNorm(f + h)
    return h


def gpt_by_hand(base: GPT, adapters: dict, ids: torch.Tensor, act: str) -> torch.Tensor:
    tr = base.transformer
    x = tr.wte(ids) + tr.wpe(torch.arange(ids.size(1)))
    for i, block in enumerate(tr.h):  # pre-LN: x + adapter(sublayer(LN(x)))
        x = x + by_hand(block.attn(block.ln_1(x)), adapters[f"transformer.h.{i}.attn.c_proj"], act)
        x = x + by_hand(block.mlp(block.ln_2(x)), adapters[f"transformer.h.{i}.mlp.c_proj"], act)
    return base.lm_head(tr.ln_f(x))


def llama_by_hand(base: LlamaForCausalLM, adapters: dict, ids: torch.Tensor, act: str) -> torch.Tensor:
    c, m = base.config, base.model
    x = m.embed_tokens(ids)
    cos, sin = rope_cos_sin(torch.arange(ids.size(1))[None], c.head_dim, c.rope_theta)
    for i, layer in enumerate(m.layers):
        a = layer.self_attn(layer.input_layernorm(x), cos, sin)
        x = x + by_hand(a, adapters[f"model.layers.{i}.self_attn.o_proj"], act)
        f = layer.mlp(layer.post_attention_layernorm(x))
        x = x + by_hand(f, adapters[f"model.layers.{i}.mlp.down_proj"], act)
    return base.lm_head(m.norm(x))


def run(model, kind, ids):
    out = model(ids)
    return out.last_hidden_state if kind == "bert" else out


TWINS = {"bert": bert_by_hand, "gpt": gpt_by_hand, "llama": llama_by_hand}


@pytest.mark.parametrize("act", ["relu", "gelu", "swish"])
@pytest.mark.parametrize("kind", ["bert", "gpt", "llama"])
def test_equals_layer_by_layer_twin(kind, act):
    base = make(kind)
    adapted = get_adapter_model(copy.deepcopy(base), AdapterConfig(bottleneck_size=8, non_linearity=act))
    randomize(adapted)
    ids = torch.randint(0, 60, (3, 11), generator=torch.Generator().manual_seed(2))
    adapters = {n: layer.adapter for n, layer in adapted.adapter_layers()}
    assert len(adapters) == 4  # 2 layers × (attention, feed-forward)
    with torch.no_grad():
        want = TWINS[kind](base, adapters, ids, act)
        got = run(adapted, kind, ids)
        plain = run(base, kind, ids)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - plain).abs().max() > 1e-2  # the adapters really change the output


@pytest.mark.parametrize("kind", ["bert", "gpt", "llama", "t5"])
def test_near_identity_start_equals_base_exactly(kind):
    base = make(kind)
    adapted = get_adapter_model(copy.deepcopy(base), AdapterConfig(bottleneck_size=4))
    ids = torch.randint(0, 60, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        if kind == "t5":
            got, want = adapted(ids, decoder_input_ids=ids).logits, base(ids, decoder_input_ids=ids).logits
        else:
            got, want = run(adapted, kind, ids), run(base, kind, ids)
    assert torch.equal(got, want)
    for _, layer in adapted.adapter_layers():
        assert layer.adapter.down.weight.abs().max() > 0  # only up starts at zero
        assert layer.adapter.down.weight.abs().max() <= 2e-2  # truncated at 2 · init_scale
        assert not layer.adapter.up.weight.any()


def test_default_targets_per_family_and_placement():
    def targets(kind, placement):
        return get_adapter_model(make(kind), AdapterConfig(placement=placement)).targeted_module_names

    assert targets("bert", "houlsby") == [f"encoder.layer.{i}.{s}" for i in range(2)
                                          for s in ("attention.output.dense", "output.dense")]
    assert targets("bert", "pfeiffer") == ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]
    assert targets("gpt", "pfeiffer") == ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"]
    assert targets("llama", "houlsby") == [f"model.layers.{i}.{s}" for i in range(2)
                                           for s in ("self_attn.o_proj", "mlp.down_proj")]
    t5 = targets("t5", "houlsby")
    L = T5Config.tiny().num_layers
    assert len(t5) == 2 * L + 3 * L  # encoder: self-attn + ff; decoder: self-attn + cross + ff
    assert sum(n.endswith("EncDecAttention.o") for n in t5) == L
    assert all(n.startswith(("encoder.", "decoder.")) for n in t5)
    # a user list of suffixes and a user regex
    assert targets_from(make("gpt"), ["attn.c_proj"]) == ["transformer.h.0.attn.c_proj",
                                                           "transformer.h.1.attn.c_proj"]
    assert targets_from(make("gpt"), r"transformer\.h\.1\.mlp\.c_proj") == ["transformer.h.1.mlp.c_proj"]


def targets_from(model, target_modules):
    return get_adapter_model(model, AdapterConfig(target_modules=target_modules)).targeted_module_names


@pytest.mark.parametrize("placement,per_layer", [("houlsby", 2), ("pfeiffer", 1)])
def test_parameter_counts(placement, per_layer, capsys):
    c = GPTConfig.tiny()
    L, C, m = c.n_layer, c.n_embd, 8
    model = get_adapter_model(make("gpt"), AdapterConfig(bottleneck_size=m, placement=placement,
                                                         train_layer_norms=False))
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == per_layer * L * (2 * C * m + m + C)
    assert total == sum(p.numel() for p in make("gpt").parameters()) + trainable
    model.print_trainable_parameters()
    assert f"trainable params: {trainable:,d} || all params: {total:,d}" in capsys.readouterr().out
    with_norms = get_adapter_model(make("gpt"), AdapterConfig(bottleneck_size=m, placement=placement))
    norms = sum(p.numel() for n, p in make("gpt").named_parameters() if ".ln_" in n or "ln_f" in n)
    assert with_norms.get_nb_trainable_parameters()[0] == trainable + norms
    # reduction_factor: m = C // factor
    by_factor = get_adapter_model(make("gpt"), AdapterConfig(reduction_factor=4, train_layer_norms=False))
    assert by_factor.get_nb_trainable_parameters()[0] == 2 * L * (2 * C * (C // 4) + C // 4 + C)


@pytest.mark.parametrize("train_norms", [False, True])
def test_only_adapters_train_and_get_gradients(train_norms):
    model = get_adapter_model(make("bert"), AdapterConfig(bottleneck_size=4, train_layer_norms=train_norms))
    for name, p in model.model.named_parameters():
        is_norm = "LayerNorm" in name
        assert p.requires_grad == (".adapter." in name or (train_norms and is_norm)), name
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    model(ids).last_hidden_state.square().mean().backward()
    for name, p in model.model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, name
        elif ".adapter.down." in name:  # zero until up moves: up starts at zero
            assert not p.grad.any(), name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    randomize(model)
    model.zero_grad()
    model(ids).last_hidden_state.square().mean().backward()
    for name, p in model.model.named_parameters():
        if ".adapter." in name:
            assert p.grad.abs().sum() > 0, name


def test_disable_adapter_and_unload():
    base = make("gpt")
    model = get_adapter_model(copy.deepcopy(base), AdapterConfig(bottleneck_size=4))
    randomize(model)
    ids = torch.randint(0, 60, (2, 8))
    with torch.no_grad():
        adapted = model(ids)
        with model.disable_adapter():
            assert torch.equal(model(ids), base(ids))
        assert torch.equal(model(ids), adapted)
        plain = model.unload()
        assert not any(isinstance(m, AdapterLayer) for m in plain.modules())
        assert torch.equal(plain(ids), base(ids))
    with pytest.raises(NotImplementedError, match="cannot be folded"):
        model.merge_and_unload()


@pytest.mark.parametrize("kind", ["gpt", "llama"])
def test_generate_goes_through_the_adapters(kind):
    base = make(kind)
    model = get_adapter_model(copy.deepcopy(base), AdapterConfig(bottleneck_size=4))
    ids = torch.randint(0, 60, (1, 4))
    assert torch.equal(model.generate(ids, 6), base.generate(ids, 6))  # identity at the start
    randomize(model)
    with torch.no_grad():
        logits = model(ids)[:, -1]
    assert model.generate(ids, 1)[0, -1] == logits.argmax(-1)[0]


def test_save_load_round_trip(tmp_path):
    base = make("bert")
    model = get_adapter_model(copy.deepcopy(base), AdapterConfig(bottleneck_size=6, non_linearity="gelu"))
    randomize(model)
    with torch.no_grad():
        model.model.encoder.layer[0].output.LayerNorm.weight.add_(0.5)  # a trained norm is saved too
    model.save_pretrained(tmp_path / "ad")
    record = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert record["adapter_type"] == "BOTTLENECK_ADAPTER" and record["bottleneck_size"] == 6
    assert sorted(p.name for p in (tmp_path / "ad").iterdir()) == ["adapter_config.json",
                                                                  "adapter_model.safetensors"]
    loaded = AdapterModel.from_pretrained(copy.deepcopy(base), tmp_path / "ad")
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        assert torch.equal(loaded(ids).last_hidden_state, model(ids).last_hidden_state)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    trainable = AdapterModel.from_pretrained(copy.deepcopy(base), tmp_path / "ad", is_trainable=True)
    assert trainable.get_nb_trainable_parameters() == model.get_nb_trainable_parameters()
    loaded.save_pretrained(tmp_path / "again")  # a frozen, loaded adapter still saves all of itself
    from safetensors.torch import load_file
    first, second = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in ("ad", "again"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_bad_configs():
    with pytest.raises(ValueError, match="bottleneck_size must be >= 1, got 0"):
        AdapterConfig(bottleneck_size=0)
    with pytest.raises(ValueError, match="reduction_factor must be >= 1"):
        AdapterConfig(reduction_factor=-2)
    with pytest.raises(ValueError, match="not both"):
        AdapterConfig(bottleneck_size=8, reduction_factor=4)
    with pytest.raises(ValueError, match="non_linearity must be one of.*'tanh'"):
        AdapterConfig(non_linearity="tanh")
    with pytest.raises(ValueError, match="placement"):
        AdapterConfig(placement="parallel")
    with pytest.raises(TypeError, match="train_layer_norms"):
        AdapterConfig(train_layer_norms="yes")
    with pytest.raises(ValueError, match="target_modules must be"):
        AdapterConfig(target_modules=[])


def test_bad_targets_name_what_was_looked_at():
    with pytest.raises(ValueError, match=r"target 'c_fcc' matches none of the \d+ modules of GPT.*c_attn"):
        get_adapter_model(make("gpt"), AdapterConfig(target_modules=["attn.c_proj", "c_fcc"]))
    with pytest.raises(ValueError, match="'transformer.h.0.ln_1' is a LayerNorm"):
        get_adapter_model(make("gpt"), AdapterConfig(target_modules=["ln_1"]))
    with pytest.raises(ValueError, match="no default for Sequential"):
        get_adapter_model(torch.nn.Sequential(torch.nn.Linear(4, 4)), AdapterConfig())
    with pytest.raises(ValueError, match="modules_to_save"):
        get_adapter_model(make("gpt"), AdapterConfig(modules_to_save=["classifier"]))
    model = get_adapter_model(make("gpt"), AdapterConfig())
    with pytest.raises(ValueError, match="already has adapters"):
        get_adapter_model(model.model, AdapterConfig())
    with pytest.raises(TypeError, match="AdapterConfig"):
        get_adapter_model(make("gpt"), {"bottleneck_size": 4})


def test_load_errors_leave_the_model_as_it_was(tmp_path):
    get_adapter_model(make("gpt"), AdapterConfig(bottleneck_size=4)).save_pretrained(tmp_path / "ad")
    wider = GPT(GPTConfig.tiny(n_embd=48)).eval()
    flags = [p.requires_grad for p in wider.parameters()]
    with pytest.raises(ValueError, match=r"adapter.down.weight has shape \(4, 32\), but the model "
                                         r"expects \(4, 48\)"):
        AdapterModel.from_pretrained(wider, tmp_path / "ad")
    assert not any(isinstance(m, AdapterLayer) for m in wider.modules())
    assert [p.requires_grad for p in wider.parameters()] == flags
    with pytest.raises(ValueError, match="matches none of the .* modules of LlamaForCausalLM"):
        AdapterModel.from_pretrained(make("llama"), tmp_path / "ad")  # GPT's saved targets
    record = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    (tmp_path / "ad" / "adapter_config.json").write_text(json.dumps(dict(record, train_layer_norms=False)))
    with pytest.raises(ValueError, match=r"do not fit the model: it lacks \[\] and holds the unknown "
                                         r"\['transformer.h.0.ln_1.bias'"):
        AdapterModel.from_pretrained(make("gpt"), tmp_path / "ad")  # the norms it holds are not wanted
    (tmp_path / "ad" / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors does not exist"):
        AdapterModel.from_pretrained(make("gpt"), tmp_path / "ad")
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    (tmp_path / "lora" / "adapter_model.safetensors").write_bytes(
        (tmp_path / "ad" / "adapter_config.json").read_bytes())
    with pytest.raises(ValueError, match="not a bottleneck-adapter config"):
        AdapterModel.from_pretrained(make("gpt"), tmp_path / "lora")
    config = (tmp_path / "ad" / "adapter_config.json").read_bytes()
    (tmp_path / "lora" / "adapter_config.json").write_bytes(config)
    with pytest.raises(ValueError, match="adapter_model.safetensors is not a safetensors file"):
        AdapterModel.from_pretrained(make("gpt"), tmp_path / "lora")


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    net = BertForSequenceClassification(BertConfig.tiny(num_labels=2, hidden_dropout_prob=0.0,
                                                        attention_probs_dropout_prob=0.0))
    frozen = {n: p.detach().clone() for n, p in net.named_parameters()}
    model = get_adapter_model(net, AdapterConfig(bottleneck_size=8, modules_to_save=["classifier"]))
    ids = torch.randint(5, 100, (16, 12), generator=torch.Generator().manual_seed(0))
    labels = torch.arange(16) % 2
    ids[labels == 1, 3] = 1  # class 1: token 1 at position 3
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    model.train()
    losses = []
    for _ in range(15):
        loss = model(ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses
    for n, p in model.model.named_parameters():  # the base weights did not move
        base = n.replace(".base_layer", "")
        if base in frozen and not p.requires_grad:
            assert torch.equal(p, frozen[base]), n


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama", "t5"])
def test_transformers_models_get_their_family_defaults(family):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    small = dict(vocab_size=64, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    model = {"gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
                 n_layer=2, n_embd=32, n_head=4, n_positions=32, **small)),  # Conv1D layers
             "bert": lambda: transformers.BertModel(transformers.BertConfig(
                 num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                 **small)),
             "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
                 num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=64, **small)),
             "t5": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
                 num_layers=2, d_model=32, num_heads=4, d_kv=8, d_ff=64, decoder_start_token_id=0,
                 **small))}[family]().eval()
    base = copy.deepcopy(model)
    adapted = get_adapter_model(model, AdapterConfig(bottleneck_size=4, train_layer_norms=False))
    assert len(adapted.targeted_module_names) == (10 if family == "t5" else 4)
    C, m = 32, 4
    n = len(adapted.targeted_module_names)
    assert adapted.get_nb_trainable_parameters()[0] == n * (2 * C * m + m + C)
    ids = torch.randint(1, 64, (2, 5))
    kwargs = {"decoder_input_ids": ids} if family == "t5" else {}
    with torch.no_grad():
        got, want = adapted(ids, **kwargs), base(ids, **kwargs)
    key = "last_hidden_state" if family == "bert" else "logits"
    assert torch.equal(got[key], want[key])


def test_adapters_follow_the_base_dtype():
    base = make("gpt").to(torch.bfloat16)
    model = get_adapter_model(copy.deepcopy(base), AdapterConfig(bottleneck_size=4))
    assert {p.dtype for _, layer in model.adapter_layers() for p in layer.adapter.parameters()} == {
        torch.bfloat16}
    ids = torch.randint(0, 60, (2, 6))
    with torch.no_grad():
        assert torch.equal(model(ids), base(ids))
    randomize(model)
    model(ids).float().square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
