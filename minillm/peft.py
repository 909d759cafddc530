"""LoRA with PEFT's vocabulary and numerics: ``LoraConfig``, ``get_peft_model``, ``merge_and_unload``.

Low-rank adaptation (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") freezes a
pretrained weight W (O, I) and learns an update ``ΔW = (alpha / r) · B @ A`` of rank r, with A (r, I)
and B (O, r): a layer computes ``W x + (alpha / r) · B (A x)``. B starts at zero, so training starts
from the pretrained model exactly; after training ΔW can be added into W (``merge``), and inference
costs nothing extra. rsLoRA (Kalajdzievski, 2023) scales by ``alpha / sqrt(r)`` instead.

The API and the numbers follow Hugging Face PEFT 0.21.2: the same class and method names, the same
module-name matching, the same random stream (A's initial values equal PEFT's under the same seed),
the same forward order (bit-exact outputs), and the same adapter directory
(``adapter_config.json`` + ``adapter_model.safetensors``, keys ``base_model.model.<module>.lora_A.weight``),
so an adapter saved here loads in PEFT and the other way round. The wrapping mirrors PEFT's three
layers: :class:`PeftModel` → ``.base_model`` (:class:`LoraModel`) → ``.model`` (your model), whose
targeted ``nn.Linear`` (or transformers' GPT-2 ``Conv1D``) modules become :class:`LoraLinear`.
Simplifications: one adapter per model (PEFT's is always named ``"default"``), no DoRA, no LoRA on
embeddings or convolutions, and ``modules_to_save`` trains the module in place instead of a copy.

Shape letters: B batch, T tokens, I in_features, O out_features, r rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .validation import check_bool, check_choice, check_float, check_int, describe

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."  # adapter keys name modules from PeftModel: .base_model (LoraModel) .model
# PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, for the model families of this course
DEFAULT_TARGET_MODULES = {"gpt2": ["c_attn"], "bert": ["query", "value"], "t5": ["q", "v"],
                          "mt5": ["q", "v"], "llama": ["q_proj", "v_proj"],
                          "qwen2": ["q_proj", "v_proj"], "qwen3": ["q_proj", "v_proj"]}
_OUR_CONFIGS = {"GPTConfig": "gpt2", "BertConfig": "bert", "T5Config": "t5"}  # LlamaConfig has model_type
# adapter_config.json keys that describe the adapter's origin and change nothing we compute
_INFO_KEYS = {"peft_version", "auto_mapping", "revision", "inference_mode", "megatron_core",
              "qalora_group_size"}


@dataclass
class LoraConfig:
    """What to adapt and how: PEFT's ``LoraConfig`` fields that plain LoRA uses."""

    r: int = 8  # rank of the update B @ A
    lora_alpha: int = 8  # the update is scaled by lora_alpha / r (lora_alpha / sqrt(r) with rsLoRA)
    lora_dropout: float = 0.0  # dropout on the input of the LoRA branch only
    target_modules: str | list[str] | None = None  # str: regex on the full name; list: names/suffixes
    bias: str = "none"  # which biases train too: "none", "all", or "lora_only" (of adapted layers)
    use_rslora: bool = False  # rank-stabilised scaling lora_alpha / sqrt(r)
    modules_to_save: list[str] | None = None  # modules trained in full and saved with the adapter
    init_lora_weights: bool = True  # True: A Kaiming-uniform, B zero; False: both nn.Linear's init
    fan_in_fan_out: bool = False  # base weights stored (I, O); set on its own for GPT-2's Conv1D
    task_type: str | None = None  # PEFT's task label (e.g. "CAUSAL_LM"), only recorded
    base_model_name_or_path: str | None = None  # only recorded

    def __post_init__(self) -> None:
        check_int("r", self.r, low=1)
        check_float("lora_alpha", self.lora_alpha)
        self.lora_dropout = check_float("lora_dropout", self.lora_dropout, low=0, high=1,
                                        high_inclusive=False)
        self.target_modules = _names("target_modules", self.target_modules, allow_str=True)
        check_choice("bias", self.bias, ("none", "all", "lora_only"))
        check_bool("use_rslora", self.use_rslora)
        self.modules_to_save = _names("modules_to_save", self.modules_to_save, allow_str=False)
        check_bool("init_lora_weights", self.init_lora_weights)
        check_bool("fan_in_fan_out", self.fan_in_fan_out)

    def to_dict(self) -> dict[str, Any]:
        """The fields as PEFT writes them in ``adapter_config.json`` (unused PEFT features off)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d = {k: list(v) if isinstance(v, list) else v for k, v in d.items()}
        d.update(peft_type="LORA", layers_to_transform=None, layers_pattern=None, rank_pattern={},
                 alpha_pattern={}, exclude_modules=None, use_dora=False, lora_bias=False)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoraConfig":
        """Read a PEFT ``adapter_config.json`` dict; a PEFT feature we lack, switched on, is an error."""
        if not isinstance(d, dict):
            raise TypeError(f"an adapter config must be a dict, got {describe(d)}")
        if d.get("peft_type", "LORA") != "LORA":
            raise ValueError(f"peft_type must be 'LORA', got {d['peft_type']!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        used = {k: v for k, v in d.items() if k not in known | _INFO_KEYS | {"peft_type"}
                and v not in (None, False, {}, [])}
        if used:
            raise ValueError(f"the adapter config uses PEFT features this LoRA does not implement: "
                             f"{describe(used, 200)}")
        return cls(**{k: v for k, v in d.items() if k in known})


def _names(name: str, value: Any, *, allow_str: bool) -> str | list[str] | None:
    if value is None or (allow_str and isinstance(value, str)):
        return value
    if isinstance(value, (list, tuple, set)) and value and all(isinstance(v, str) for v in value):
        return sorted(value) if isinstance(value, set) else list(value)
    raise ValueError(f"{name} must be {'a regex string, ' if allow_str else ''}a non-empty list of "
                     f"module names, or None; got {describe(value)}")


def _in_out(module: nn.Module) -> tuple[int, int, bool] | None:
    """(I, O, weight stored transposed) of a layer LoRA can wrap, else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, False
    weight = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return weight.shape[0], weight.shape[1], True  # transformers' GPT-2 layer: weight (I, O)
    return None


class LoraLinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update: ``base(x) + B(A(dropout(x))) * scaling``."""

    def __init__(self, base_layer: nn.Module, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                 use_rslora: bool = False, init_lora_weights: bool = True):
        super().__init__()
        shape = _in_out(base_layer)
        if shape is None:
            raise TypeError(f"LoRA wraps nn.Linear or transformers' Conv1D, got {type(base_layer).__name__}")
        self.in_features, self.out_features, self.fan_in_fan_out = shape
        self.base_layer = base_layer
        self.r, self.lora_alpha = r, lora_alpha
        self.scaling = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        # PEFT's random stream: build A then B (each with nn.Linear's init), then re-initialise both
        self.lora_A = nn.Linear(self.in_features, r, bias=False)  # weight (r, I)
        self.lora_B = nn.Linear(r, self.out_features, bias=False)  # weight (O, r)
        if init_lora_weights:
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)
        weight = base_layer.weight
        for lora in (self.lora_A, self.lora_B):  # base device and dtype, fp16/bf16 upcast to fp32
            lora.to(weight.device)
            if weight.is_floating_point():
                lora.to(weight.dtype)
            if weight.dtype in (torch.float16, torch.bfloat16):
                lora.float()
        self.merged = False  # True while B @ A * scaling is added into the base weight
        self.disabled = False  # True inside PeftModel.disable_adapter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, I) -> (B, T, O)
        result = self.base_layer(x)
        if self.merged or self.disabled:
            return result
        x = x.to(self.lora_A.weight.dtype)
        return (result + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling).to(result.dtype)

    def get_delta_weight(self) -> torch.Tensor:
        """ΔW = B @ A * scaling, shaped like the base weight ((O, I), or (I, O) for Conv1D)."""
        delta = self.lora_B.weight @ self.lora_A.weight  # (O, r) @ (r, I) = (O, I)
        return (delta.T if self.fan_in_fan_out else delta) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Add ΔW into the base weight: the layer then costs one matmul."""
        if self.merged:
            raise ValueError("this LoRA layer is already merged: merging twice would add ΔW twice; "
                             "call unmerge() first")
        self.base_layer.weight += self.get_delta_weight()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ΔW from the base weight again (equal to the original up to rounding)."""
        if not self.merged:
            raise ValueError("this LoRA layer is not merged: there is nothing to unmerge")
        weight = self.base_layer.weight
        weight -= self.get_delta_weight().to(weight.dtype)
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, scaling={self.scaling:g}, merged={self.merged}"


def _is_target(config: LoraConfig, name: str) -> bool:
    """PEFT's matching: a regex matches the whole name; a list entry the name or a ``.``-suffix."""
    if config.modules_to_save and any(re.match(rf"(^|.*\.){m}($|\..*)", name)
                                      for m in config.modules_to_save):
        return False  # a module trained in full gets no adapter
    targets = config.target_modules
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return name in targets or any(name.endswith("." + t) for t in targets)


def _default_targets(model: nn.Module) -> list[str]:
    config = getattr(model, "config", None)
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    if not isinstance(model_type, str):
        model_type = _OUR_CONFIGS.get(type(config).__name__)
    if model_type not in DEFAULT_TARGET_MODULES:
        linear = [n for n, m in model.named_modules() if _in_out(m) is not None]
        raise ValueError(f"target_modules=None, but there is no default for {type(model).__name__} "
                         f"(model type {model_type!r}); pass target_modules, e.g. a few of its linear "
                         f"layers: {linear[:6]}")
    return list(DEFAULT_TARGET_MODULES[model_type])


def _split(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, child = name.rpartition(".")
    return (model.get_submodule(parent) if parent else model), child


class LoraModel(nn.Module):
    """PEFT's middle layer: injects :class:`LoraLinear` into ``model`` (in place) and undoes it."""

    def __init__(self, model: nn.Module, config: LoraConfig):
        super().__init__()
        if any(isinstance(m, LoraLinear) for m in model.modules()):
            raise ValueError("the model already has LoRA layers: this LoRA keeps one adapter per model")
        config = dataclasses.replace(config)  # a copy: the user's config stays as given
        if config.target_modules is None:
            config.target_modules = _default_targets(model)
        names = [n for n, _ in model.named_modules() if n]
        targets = [n for n in names if _is_target(config, n)]
        if not targets:
            linear = [n for n in names if _in_out(model.get_submodule(n)) is not None]
            raise ValueError(f"target_modules={config.target_modules!r} matches none of the "
                             f"{len(names)} modules of {type(model).__name__}; its linear layers "
                             f"are named e.g. {(linear or names)[:8]}")
        for name in targets:
            module = model.get_submodule(name)
            if _in_out(module) is None:
                raise ValueError(f"target module {name!r} is a {type(module).__name__}; LoRA here "
                                 "wraps nn.Linear and transformers' Conv1D only")
            config.fan_in_fan_out |= _in_out(module)[2]  # as PEFT, which warns
        saved = [n for n in names if any(n.endswith(m) for m in config.modules_to_save or [])]
        if config.modules_to_save and not saved:
            raise ValueError(f"modules_to_save={config.modules_to_save} matches none of the modules "
                             f"of {type(model).__name__}, e.g. {names[-8:]}")
        for name in targets:  # named_modules() order: the random stream PEFT draws
            parent, child = _split(model, name)
            setattr(parent, child, LoraLinear(getattr(parent, child), config.r, config.lora_alpha,
                                              config.lora_dropout, config.use_rslora,
                                              config.init_lora_weights))
        self.model = model
        self.peft_config = {"default": config}
        self.targeted_module_names = targets
        self.modules_to_save = saved  # PEFT's match: a plain suffix, no dot needed
        self._mark_trainable(config.bias)

    def _mark_trainable(self, bias: str) -> None:
        """Freeze all but the LoRA weights, the biases ``bias`` names, and ``modules_to_save``."""
        lora = {id(p) for _, layer in self.lora_layers() for p in (layer.lora_A.weight, layer.lora_B.weight)}
        for name, p in self.model.named_parameters():
            p.requires_grad_(id(p) in lora or (bias == "all" and (name == "bias" or name.endswith(".bias"))))
        if bias == "lora_only":
            for _, layer in self.lora_layers():
                if getattr(layer.base_layer, "bias", None) is not None:
                    layer.base_layer.bias.requires_grad_(True)
        for name in self.modules_to_save:
            self.model.get_submodule(name).requires_grad_(True)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self.model, name)

    def lora_layers(self) -> Iterator[tuple[str, LoraLinear]]:
        """(name in the wrapped model, layer) of every LoRA layer."""
        return ((n, m) for n, m in self.model.named_modules() if isinstance(m, LoraLinear))

    def merge_adapter(self) -> None:
        """Merge ΔW into every adapted weight (ValueError if already merged)."""
        if any(layer.merged for _, layer in self.lora_layers()):
            raise ValueError("the adapter is already merged: call unmerge_adapter() first")
        for _, layer in self.lora_layers():
            layer.merge()

    def unmerge_adapter(self) -> None:
        """Take ΔW out of every adapted weight again (ValueError if not merged)."""
        if not any(layer.merged for _, layer in self.lora_layers()):
            raise ValueError("the adapter is not merged: there is nothing to unmerge")
        for _, layer in self.lora_layers():
            if layer.merged:
                layer.unmerge()

    def merge_and_unload(self) -> nn.Module:
        """Merge ΔW into the weights and return the model with its plain layers back."""
        return self._unload(merge=True)

    def unload(self) -> nn.Module:
        """Remove the LoRA layers without merging: the original model comes back."""
        return self._unload(merge=False)

    def _unload(self, merge: bool) -> nn.Module:
        for name, layer in list(self.lora_layers()):
            if merge and not layer.merged:
                layer.merge()
            elif not merge and layer.merged:
                layer.unmerge()
            parent, child = _split(self.model, name)
            setattr(parent, child, layer.base_layer)
        return self.model

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors PEFT saves for this config, under PEFT's key names."""
        config = self.peft_config["default"]
        state = self.model.state_dict()
        keep = set()
        for name, layer in self.lora_layers():
            keep |= {f"{name}.lora_A.weight", f"{name}.lora_B.weight"}
            if config.bias == "lora_only" and getattr(layer.base_layer, "bias", None) is not None:
                keep.add(f"{name}.base_layer.bias")
        if config.bias == "all":
            keep |= {n for n, _ in self.model.named_parameters() if n == "bias" or n.endswith(".bias")}
        for name in self.modules_to_save:
            keep |= {k for k in state if k.startswith(name + ".")}
        return {PREFIX + k: state[k] for k in sorted(keep)}


class PeftModel(nn.Module):
    """A model with a LoRA adapter: calls, ``generate`` and attributes go to the wrapped model."""

    def __init__(self, model: nn.Module, peft_config: LoraConfig):
        super().__init__()
        self.base_model = LoraModel(model, peft_config)

    def forward(self, *args, **kwargs):
        return self.base_model.model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.base_model.model.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    def get_base_model(self) -> nn.Module:
        """The wrapped model (with its LoRA layers)."""
        return self.base_model.model

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the base model without the LoRA branch inside a ``with`` block."""
        layers = [layer for _, layer in self.base_model.lora_layers()]
        if any(layer.merged for layer in layers):
            raise ValueError("the adapter is merged into the weights: call unmerge_adapter() first")
        for layer in layers:
            layer.disabled = True
        try:
            yield
        finally:
            for layer in layers:
                layer.disabled = False

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable parameters, all parameters), shared tensors counted once."""
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
              f"trainable%: {100 * trainable / total:.4f}")

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (each crash-safe) as PEFT."""
        from safetensors.torch import save_file

        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise FileExistsError(f"{directory} is a file: save_pretrained needs a directory")
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().clone() for k, v in self.base_model.adapter_state_dict().items()}
        config = dict(self.peft_config["default"].to_dict(), inference_mode=True)
        _atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
        _atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"))
        return directory

    @classmethod
    def from_pretrained(cls, model: nn.Module, model_id: str | os.PathLike,
                        is_trainable: bool = False) -> "PeftModel":
        """Wrap ``model`` with the adapter saved in the directory ``model_id`` (by us or by PEFT).

        Raises FileNotFoundError naming a missing file, ValueError naming a key whose shape does not
        fit ``model`` (which is then left as it was). Without ``is_trainable`` the adapter is frozen
        and the model in eval mode, as in PEFT.
        """
        from safetensors.torch import load_file

        directory = Path(model_id)
        for file in (directory / CONFIG_NAME, directory / WEIGHTS_NAME):
            if not file.is_file():
                raise FileNotFoundError(f"{file} does not exist: an adapter directory holds "
                                        f"{CONFIG_NAME} and {WEIGHTS_NAME}")
        try:
            record = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{directory / CONFIG_NAME} is not valid JSON: {e}") from e
        if record.get("peft_type", "LORA") in ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING"):
            from .prompt_tuning import PromptModel

            return PromptModel.from_pretrained(model, directory, is_trainable=is_trainable)
        state = load_file(str(directory / WEIGHTS_NAME))
        trainable = [(p, p.requires_grad) for p in model.parameters()]
        peft_model = cls(model, LoraConfig.from_dict(record))
        try:
            peft_model._load_adapter(state)
        except BaseException:  # leave the model as it came: no LoRA layers, same trainable flags
            peft_model.base_model.unload()
            for p, flag in trainable:
                p.requires_grad_(flag)
            raise
        if not is_trainable:
            peft_model.requires_grad_(False)
            peft_model.eval()
        return peft_model

    def _load_adapter(self, state: dict[str, torch.Tensor]) -> None:
        ours = self.base_model.model.state_dict()
        bad = sorted(k for k in state if not k.startswith(PREFIX) or k[len(PREFIX):] not in ours)
        if bad:
            raise ValueError(f"the adapter holds keys the model does not have: {bad[:4]} "
                             f"(saved from another kind of model?)")
        for key, tensor in state.items():
            have = ours[key[len(PREFIX):]]
            if tensor.shape != have.shape:
                raise ValueError(f"adapter tensor {key} has shape {tuple(tensor.shape)}, but the model "
                                 f"expects {tuple(have.shape)}: the adapter was trained on another model")
        missing = sorted(set(self.base_model.adapter_state_dict()) - set(state))
        if missing:
            raise ValueError(f"the adapter lacks the tensors {missing[:4]}")
        self.base_model.model.load_state_dict({k[len(PREFIX):]: v for k, v in state.items()}, strict=False)


def get_peft_model(model: nn.Module, peft_config: LoraConfig) -> PeftModel:
    """Add LoRA layers to ``model`` in place, freeze everything else, and return it wrapped.

    Args:
        model: any ``nn.Module`` (our models and transformers' alike: modules are found by name).
        peft_config: which layers to adapt (``target_modules``; None = the model family's default)
            and the rank, scale, dropout and bias setting.
    """
    from .prompt_tuning import PromptLearningConfig, get_prompt_model

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(peft_config, PromptLearningConfig):  # prompt tuning, P-tuning, prefix tuning
        return get_prompt_model(model, peft_config)
    if not isinstance(peft_config, LoraConfig):
        raise TypeError(f"peft_config must be a minillm.peft.LoraConfig or a prompt-learning config "
                        f"(PromptTuningConfig, PrefixTuningConfig, PromptEncoderConfig), got "
                        f"{type(peft_config).__name__}")
    return PeftModel(model, peft_config)


_PROMPT_NAMES = ("PromptTuningConfig", "PrefixTuningConfig", "PromptEncoderConfig", "PromptModel")


def __getattr__(name: str) -> Any:  # the prompt-learning family lives in minillm.prompt_tuning
    if name in _PROMPT_NAMES:
        from . import prompt_tuning

        return getattr(prompt_tuning, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _atomic_write(target: Path, write: Callable[[str], Any]) -> None:
    """Write through a temporary file in the same directory, then rename: never a half file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
