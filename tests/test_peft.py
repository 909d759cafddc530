"""LoRA (minillm.peft) against Hugging Face PEFT 0.21.2 on tiny random transformers models: the same
initial A under the same seed, bit-equal outputs and gradients, equal merged weights, the same
module matching, trainable sets, saved keys and printed counts; adapters moving both ways between
PEFT and our own GPT / Llama; merged vs unmerged; and clear errors for bad configs and adapters."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from minillm.peft import LoraConfig, LoraLinear, PeftModel, get_peft_model

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
from peft.tuners.lora import LoraLayer  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from minillm.models.bert import BertModel as OurBert  # noqa: E402
from minillm.models.gpt import GPT  # noqa: E402
from minillm.models.llama import LlamaForCausalLM as OurLlama  # noqa: E402
from minillm.models.t5 import T5ForConditionalGeneration as OurT5  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to False"),
              pytest.mark.filterwarnings("ignore::FutureWarning")]
V = 64  # vocabulary of the tiny models


def hf_llama(seed: int = 0, hidden: int = 32):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=V, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=None, eos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
    config._attn_implementation = "eager"
    return transformers.LlamaForCausalLM(config).eval()


def hf_gpt2(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=None)
    config._attn_implementation = "eager"
    return transformers.GPT2LMHeadModel(config).eval()


def hf_bert(seed: int = 0, cls: str = "BertModel"):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64,
                                     max_position_embeddings=32, attn_implementation="eager")
    return getattr(transformers, cls)(config).eval()


def hf_t5(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.T5Config(vocab_size=V, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                                   num_decoder_layers=1, num_heads=4, decoder_start_token_id=0)
    return transformers.T5ForConditionalGeneration(config).eval()


HF = {"llama": hf_llama, "gpt2": hf_gpt2, "bert": hf_bert}
OURS = {"llama": OurLlama, "gpt2": GPT, "bert": OurBert, "t5": OurT5}


def tokens(shape=(2, 7), seed=0):
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed))


def output(model, ids):
    y = model(input_ids=ids)
    if isinstance(y, torch.Tensor):
        return y
    return y.logits if getattr(y, "logits", None) is not None else y.last_hidden_state


def peft_lora(ref) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name in the base model: (A weight, B weight)} of a PEFT model."""
    return {n: (m.lora_A["default"].weight, m.lora_B["default"].weight)
            for n, m in ref.base_model.model.named_modules() if isinstance(m, LoraLayer)}


def our_lora(model: PeftModel) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {n: (m.lora_A.weight, m.lora_B.weight) for n, m in model.base_model.lora_layers()}


@torch.no_grad()
def randomise_b(*loras: dict, seed: int = 3) -> None:
    """Give every B the same random values in each model (at init B = 0 hides every bug)."""
    g = torch.Generator().manual_seed(seed)
    for name in sorted(loras[0]):
        value = 0.1 * torch.randn(loras[0][name][1].shape, generator=g)
        for lora in loras:
            lora[name][1].copy_(value)


@torch.no_grad()
def copy_lora(src: dict, dst: dict) -> None:
    assert sorted(src) == sorted(dst)
    for name in src:
        for s, d in zip(src[name], dst[name]):
            d.copy_(s)


def pair(kind: str, config_kw: dict, seed: int = 1):
    """The same HF model wrapped by PEFT and by us, each from `seed` (PEFT's random stream)."""
    torch.manual_seed(seed)
    ref = peft.get_peft_model(HF[kind](), peft.LoraConfig(**config_kw))
    torch.manual_seed(seed)
    ours = get_peft_model(HF[kind](), LoraConfig(**config_kw))
    return ref, ours


# ---------------------------------------------------------------- parity with PEFT


@pytest.mark.parametrize("kind", ["llama", "gpt2", "bert"])
def test_init_outputs_and_gradients_equal_peft(kind):
    ref, ours = pair(kind, dict(r=4, lora_alpha=8))
    a, b = peft_lora(ref), our_lora(ours)
    assert sorted(a) == sorted(b) and len(a) >= 2
    for name in a:
        assert torch.equal(a[name][0], b[name][0]), name  # same random stream
        assert not a[name][1].any() and not b[name][1].any()  # B starts at zero
    ids = tokens()
    y0 = output(ours, ids).detach()
    assert torch.equal(output(ref, ids), y0)
    randomise_b(a, b)
    y_ref, y_ours = output(ref, ids), output(ours, ids)
    assert (y_ours - y0).abs().max() > 1e-4  # the adapter now changes the output
    assert torch.equal(y_ref, y_ours)  # same order of operations: bit-exact
    y_ref.pow(2).mean().backward()
    y_ours.pow(2).mean().backward()
    for name in a:
        for p, q in zip(a[name], b[name]):
            assert q.grad is not None and q.grad.abs().sum() > 0
            assert torch.equal(p.grad, q.grad), name


def test_dropout_in_training_equals_peft():
    ref, ours = pair("llama", dict(r=4, lora_dropout=0.5, init_lora_weights=False))
    assert isinstance(our_lora_layer(ours).lora_dropout, nn.Dropout)
    ids = tokens()
    ref.train(), ours.train()
    torch.manual_seed(7)
    y_ref = output(ref, ids)
    torch.manual_seed(7)
    y_ours = output(ours, ids)
    assert torch.equal(y_ref, y_ours)
    ours.eval()
    assert not torch.equal(output(ours, ids), y_ours)  # dropout really was on


def our_lora_layer(model: PeftModel) -> LoraLinear:
    return next(layer for _, layer in model.base_model.lora_layers())


def test_init_lora_weights_false_keeps_linear_init_as_peft():
    ref, ours = pair("llama", dict(r=4, init_lora_weights=False))
    a, b = peft_lora(ref), our_lora(ours)
    for name in a:
        assert b[name][1].abs().sum() > 0
        assert torch.equal(a[name][0], b[name][0]) and torch.equal(a[name][1], b[name][1])


def test_bf16_base_keeps_fp32_adapter_as_peft():
    torch.manual_seed(1)
    ref = peft.get_peft_model(hf_llama().to(torch.bfloat16), peft.LoraConfig(r=4))
    torch.manual_seed(1)
    ours = get_peft_model(hf_llama().to(torch.bfloat16), LoraConfig(r=4))
    a, b = peft_lora(ref), our_lora(ours)
    for name in a:
        assert b[name][0].dtype == torch.float32 and torch.equal(a[name][0], b[name][0])
    randomise_b(a, b)
    ids = tokens()
    y = output(ours, ids)
    assert y.dtype == torch.bfloat16 and torch.equal(output(ref, ids), y)
    for (n, p), (m, q) in zip(ref.merge_and_unload().named_parameters(),
                              ours.merge_and_unload().named_parameters()):
        assert n == m and p.dtype == q.dtype and torch.equal(p, q), n


def test_rslora_scaling_equals_peft():
    ref, ours = pair("llama", dict(r=4, lora_alpha=16, use_rslora=True))
    ref_layer = next(m for m in ref.modules() if isinstance(m, LoraLayer))
    assert our_lora_layer(ours).scaling == ref_layer.scaling["default"] == 16 / math.sqrt(4) == 8.0
    randomise_b(peft_lora(ref), our_lora(ours))
    ids = tokens()
    assert torch.equal(output(ref, ids), output(ours, ids))


@pytest.mark.parametrize("kind", ["llama", "gpt2", "bert", "t5"])
def test_default_target_modules_equal_peft_on_our_models(kind):
    hf = hf_t5() if kind == "t5" else HF[kind]()
    mine = get_peft_model(OURS[kind].from_hf(hf), LoraConfig())
    ref = peft.get_peft_model(hf, peft.LoraConfig())
    expected = set(peft_lora(ref))
    assert len(expected) >= 2 and set(our_lora(mine)) == expected
    assert set(mine.peft_config["default"].target_modules) == set(ref.peft_config["default"].target_modules)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_our_models_with_lora_equal_peft_on_hf(kind):
    """Our GPT (nn.Linear c_attn) and Llama, with PEFT's LoRA weights, equal PEFT on transformers'
    model (GPT-2: Conv1D c_attn, stored transposed)."""
    hf = HF[kind]()
    mine = get_peft_model(OURS[kind].from_hf(hf), LoraConfig(r=4, lora_alpha=8))
    ref = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8))
    randomise_b(peft_lora(ref))
    copy_lora(peft_lora(ref), our_lora(mine))
    ids = tokens()
    expected = output(ref, ids)
    torch.testing.assert_close(output(mine, ids), expected, atol=1e-5, rtol=1e-5)
    with ref.disable_adapter(), mine.disable_adapter():  # and without the adapter
        base = output(ref, ids)
        torch.testing.assert_close(output(mine, ids), base, atol=1e-5, rtol=1e-5)
    assert (base - expected).abs().max() > 1e-3


def test_generate_goes_through_the_adapter():
    hf = hf_llama()
    mine = get_peft_model(OurLlama.from_hf(hf), LoraConfig(r=4))
    ref = peft.get_peft_model(hf, peft.LoraConfig(r=4))
    randomise_b(peft_lora(ref), seed=5)
    copy_lora(peft_lora(ref), our_lora(mine))
    ids = tokens((1, 5))
    expected = ref.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                            do_sample=False)
    assert torch.equal(mine.generate(ids, 6), expected)
    with mine.disable_adapter():
        plain = mine.generate(ids, 6)
    assert torch.equal(plain, OurLlama.from_hf(hf_llama()).generate(ids, 6))
    assert mine.config is mine.get_base_model().config  # attributes reach the wrapped model


# ---------------------------------------------------------------- merging


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_merge_equals_unmerged_and_peft(kind):
    ref, ours = pair(kind, dict(r=4, lora_alpha=8))
    randomise_b(peft_lora(ref), our_lora(ours))
    ids = tokens()
    unmerged = output(ours, ids)
    name = next(iter(our_lora(ours)))
    layer = ours.get_base_model().get_submodule(name)
    original = layer.base_layer.weight.detach().clone()

    ours.merge_adapter()
    assert layer.merged and not torch.equal(layer.base_layer.weight, original)
    with pytest.raises(ValueError, match="merged"), ours.disable_adapter():
        pass
    torch.testing.assert_close(output(ours, ids), unmerged, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="already merged"):
        ours.merge_adapter()
    with pytest.raises(ValueError, match="already merged"):
        layer.merge()
    ours.unmerge_adapter()
    torch.testing.assert_close(layer.base_layer.weight, original, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="not merged"):
        ours.unmerge_adapter()

    base_cls = type(layer.base_layer)
    plain = ours.merge_and_unload()
    assert not any(isinstance(m, LoraLinear) for m in plain.modules())
    assert type(plain.get_submodule(name)) is base_cls  # nn.Linear (Llama) or Conv1D (GPT-2)
    torch.testing.assert_close(output(plain, ids), unmerged, atol=1e-5, rtol=1e-5)
    ref_plain = ref.merge_and_unload()
    for (n, p), (m, q) in zip(ref_plain.named_parameters(), plain.named_parameters()):
        assert n == m and torch.equal(p, q), n  # PEFT's merged weights, bit for bit


def test_unload_restores_the_original_model():
    hf, copy = hf_llama(), hf_llama()
    model = get_peft_model(hf, LoraConfig(r=4, init_lora_weights=False))
    model.merge_adapter()
    plain = model.unload()
    for (n, p), (m, q) in zip(plain.named_parameters(), copy.named_parameters()):
        assert n == m
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- trainable parameters and counts


@pytest.mark.parametrize("kind,kw", [("llama", dict(r=4)), ("gpt2", dict(r=8, lora_alpha=16)),
                                     ("bert", dict(r=2, bias="all")),
                                     ("bert", dict(r=2, bias="lora_only", target_modules=["key"]))])
def test_print_trainable_parameters_equals_peft(kind, kw, capsys):
    ref, ours = pair(kind, kw)
    ref.print_trainable_parameters()
    expected = capsys.readouterr().out
    ours.print_trainable_parameters()
    got = capsys.readouterr().out
    assert got == expected and got.startswith("trainable params: ")
    assert ours.get_nb_trainable_parameters() == ref.get_nb_trainable_parameters()


def _plain_name(name: str) -> str:
    return name.replace(".default.", ".").replace(".modules_to_save.", ".")


@pytest.mark.parametrize("bias,modules_to_save", [("none", None), ("all", None), ("lora_only", None),
                                                  ("none", ["classifier"]),
                                                  ("lora_only", ["classifier"])])
def test_trainable_set_saved_keys_and_loading_equal_peft(bias, modules_to_save, tmp_path):
    kw = dict(r=2, bias=bias, modules_to_save=modules_to_save)
    torch.manual_seed(1)
    ref = peft.get_peft_model(hf_bert(cls="BertForSequenceClassification"), peft.LoraConfig(**kw))
    torch.manual_seed(1)
    ours = get_peft_model(hf_bert(cls="BertForSequenceClassification"), LoraConfig(**kw))
    ref_trainable = {_plain_name(n) for n, p in ref.named_parameters() if p.requires_grad}
    ours_trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert ours_trainable == ref_trainable
    assert ours.get_nb_trainable_parameters()[0] == ref.get_nb_trainable_parameters()[0]

    with torch.no_grad():  # "train" PEFT's model, save it, load it into ours
        g = torch.Generator().manual_seed(2)
        for p in ref.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    ref.save_pretrained(tmp_path / "peft")
    ours.save_pretrained(tmp_path / "ours")
    ref_keys = set(load_file(tmp_path / "peft" / "adapter_model.safetensors"))
    assert set(load_file(tmp_path / "ours" / "adapter_model.safetensors")) == ref_keys

    loaded = PeftModel.from_pretrained(hf_bert(cls="BertForSequenceClassification"), tmp_path / "peft")
    ids = tokens()
    torch.testing.assert_close(output(loaded, ids), output(ref, ids), atol=1e-6, rtol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    trainable = PeftModel.from_pretrained(hf_bert(cls="BertForSequenceClassification"),
                                          tmp_path / "peft", is_trainable=True)
    assert {n for n, p in trainable.named_parameters() if p.requires_grad} == ref_trainable


# ---------------------------------------------------------------- adapters between PEFT and us


def test_adapter_saved_by_us_loads_in_peft(tmp_path):
    hf = hf_llama()
    mine = get_peft_model(OurLlama.from_hf(hf), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1))
    randomise_b(our_lora(mine))
    mine.eval()
    mine.save_pretrained(tmp_path)
    ref = peft.PeftModel.from_pretrained(hf, tmp_path)
    for name, (a, b) in peft_lora(ref).items():
        assert torch.equal(a, our_lora(mine)[name][0]) and torch.equal(b, our_lora(mine)[name][1])
    config = ref.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (4, 8, 0.1, "none")
    assert set(config.target_modules) == {"q_proj", "v_proj"}
    ids = tokens()
    torch.testing.assert_close(output(mine, ids), output(ref, ids), atol=1e-5, rtol=1e-5)
    # the same files PEFT writes for that config
    ref.save_pretrained(tmp_path / "peft")
    assert set(load_file(tmp_path / "adapter_model.safetensors")) == \
        set(load_file(tmp_path / "peft" / "adapter_model.safetensors"))


def test_adapter_saved_by_us_from_our_gpt_loads_in_peft_on_conv1d(tmp_path):
    hf = hf_gpt2()
    mine = get_peft_model(GPT.from_hf(hf), LoraConfig(r=4))
    assert mine.peft_config["default"].fan_in_fan_out is False  # our c_attn is an nn.Linear
    randomise_b(our_lora(mine))
    mine.save_pretrained(tmp_path)
    ref = peft.PeftModel.from_pretrained(hf, tmp_path)
    ids = tokens()
    torch.testing.assert_close(output(mine, ids), output(ref, ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_adapter_saved_by_peft_loads_in_ours(kind, tmp_path):
    ref = peft.get_peft_model(HF[kind](), peft.LoraConfig(r=4, lora_alpha=16, use_rslora=True))
    randomise_b(peft_lora(ref))
    ref.save_pretrained(tmp_path)
    mine = PeftModel.from_pretrained(OURS[kind].from_hf(HF[kind]()), tmp_path)
    assert mine.peft_config["default"].use_rslora and our_lora_layer(mine).scaling == 8.0
    ids = tokens()
    torch.testing.assert_close(output(mine, ids), output(ref, ids), atol=1e-5, rtol=1e-5)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert LoraConfig.from_dict(config).target_modules is not None


# ---------------------------------------------------------------- module matching


class Toy(nn.Module):
    """Names like a decoder's: model.layers.{0,1}.self_attn.{q_proj, q_proj_x, xq_proj, k_proj},
    lm_head: "q_proj" must match the first only (a suffix after a dot)."""

    def __init__(self):
        super().__init__()
        layer = lambda: nn.ModuleDict({"self_attn": nn.ModuleDict(  # noqa: E731
            {"q_proj": nn.Linear(8, 8), "q_proj_x": nn.Linear(8, 8), "xq_proj": nn.Linear(8, 8),
             "k_proj": nn.Linear(8, 4)})})
        self.model = nn.ModuleDict({"embed": nn.Embedding(10, 8),
                                    "layers": nn.ModuleList([layer(), layer()])})
        self.lm_head = nn.Linear(8, 10)


@pytest.mark.parametrize("targets", [["q_proj"], ["k_proj", "lm_head"], ["self_attn.q_proj_x"],
                                     ["model.layers.1.self_attn.k_proj"], r".*\.0\..*_proj",
                                     r"model\.layers\.\d\.self_attn\.q_proj", r".*q_proj.*"])
def test_target_matching_equals_peft(targets):
    torch.manual_seed(0)
    ref = peft.get_peft_model(Toy(), peft.LoraConfig(r=2, target_modules=targets))
    torch.manual_seed(0)
    ours = get_peft_model(Toy(), LoraConfig(r=2, target_modules=targets))
    assert set(our_lora(ours)) == set(peft_lora(ref))
    for name, (a, _) in peft_lora(ref).items():
        assert torch.equal(a, our_lora(ours)[name][0])


def test_list_matches_suffixes_and_regex_matches_full_names():
    names = set(our_lora(get_peft_model(Toy(), LoraConfig(target_modules=["q_proj"]))))
    assert names == {"model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"}
    for pattern in ("q_proj", "self_attn.q_proj"):  # a string must match the whole name
        with pytest.raises(ValueError, match="matches none"):
            get_peft_model(Toy(), LoraConfig(target_modules=pattern))
        with pytest.raises(ValueError):
            peft.get_peft_model(Toy(), peft.LoraConfig(target_modules=pattern))


def test_no_match_names_modules_and_leaves_model_alone():
    model = Toy()
    with pytest.raises(ValueError, match=r"query.*model\.layers\.0\.self_attn\.q_proj"):
        get_peft_model(model, LoraConfig(target_modules=["query"]))
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="Embedding"):
        get_peft_model(model, LoraConfig(target_modules=["embed", "lm_head"]))
    with pytest.raises(ValueError, match="modules_to_save=.'classifier'.*lm_head"):
        get_peft_model(model, LoraConfig(target_modules=["q_proj"], modules_to_save=["classifier"]))
    assert not any(isinstance(m, LoraLinear) for m in model.modules())


def test_unknown_model_type_asks_for_target_modules():
    with pytest.raises(ValueError, match=r"pass target_modules.*model\.layers\.0\.self_attn\.q_proj"):
        get_peft_model(Toy(), LoraConfig())


def test_config_is_not_changed_and_wrapping_twice_fails():
    config = LoraConfig(r=4)
    model = get_peft_model(hf_gpt2(), config)
    assert config.target_modules is None and config.fan_in_fan_out is False
    assert model.peft_config["default"].target_modules == ["c_attn"]
    assert model.peft_config["default"].fan_in_fan_out is True  # Conv1D, as PEFT sets it
    with pytest.raises(ValueError, match="already has LoRA"):
        get_peft_model(model.get_base_model(), config)


@pytest.mark.parametrize("kw,error,match", [
    (dict(r=0), ValueError, "r must be >= 1, got 0"), (dict(r=-2), ValueError, "got -2"),
    (dict(r=2.0), TypeError, "r must be an int"), (dict(bias="some"), ValueError, "'some'"),
    (dict(lora_dropout=1.0), ValueError, "lora_dropout"), (dict(target_modules=[]), ValueError, "target"),
    (dict(target_modules=[3]), ValueError, "target_modules"),
    (dict(init_lora_weights="gaussian"), TypeError, "init_lora_weights")])
def test_bad_config_values(kw, error, match):
    with pytest.raises(error, match=match):
        LoraConfig(**kw)


def test_config_dict_round_trip_and_peft_json(tmp_path):
    config = LoraConfig(r=4, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                        bias="lora_only", use_rslora=True, modules_to_save=["lm_head"])
    d = config.to_dict()
    assert d["peft_type"] == "LORA" and LoraConfig.from_dict(json.loads(json.dumps(d))) == config
    ref = peft.get_peft_model(hf_llama(), peft.LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj"]))
    ref.save_pretrained(tmp_path)
    loaded = LoraConfig.from_dict(json.loads((tmp_path / "adapter_config.json").read_text()))
    assert (loaded.r, loaded.lora_alpha, loaded.target_modules) == (4, 32, ["q_proj"])
    with pytest.raises(ValueError, match="use_dora"):
        LoraConfig.from_dict(dict(d, use_dora=True))
    with pytest.raises(ValueError, match="PREFIX_TUNING"):
        LoraConfig.from_dict(dict(d, peft_type="PREFIX_TUNING"))


# ---------------------------------------------------------------- bad adapters


def test_loading_onto_another_shape_names_key_and_shapes(tmp_path):
    get_peft_model(hf_llama(hidden=32), LoraConfig(r=4)).save_pretrained(tmp_path)
    other = hf_llama(hidden=48)
    with pytest.raises(ValueError, match=r"lora_A\.weight has shape \(4, 32\).*expects \(4, 48\)"):
        PeftModel.from_pretrained(other, tmp_path)
    assert not any(isinstance(m, LoraLinear) for m in other.modules())  # left as it was
    assert all(p.requires_grad for p in other.parameters())


def test_loading_an_adapter_with_foreign_keys_names_them(tmp_path):
    get_peft_model(Toy(), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    state = load_file(weights)
    state["base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"] = torch.zeros(2, 8)
    save_file(state, weights)
    with pytest.raises(ValueError, match=r"does not have.*layers\.7\.self_attn"):
        PeftModel.from_pretrained(Toy(), tmp_path)


@pytest.mark.parametrize("missing", ["adapter_config.json", "adapter_model.safetensors"])
def test_missing_adapter_file(missing, tmp_path):
    get_peft_model(hf_llama(), LoraConfig(r=4)).save_pretrained(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing):
        PeftModel.from_pretrained(hf_llama(), tmp_path)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        PeftModel.from_pretrained(hf_llama(), tmp_path / "nowhere")
