"""Bottleneck adapters: a small trainable network inside every layer of a frozen model.

Houlsby et al. (2019, "Parameter-Efficient Transfer Learning for NLP") keep a pretrained Transformer
frozen and add, after a sublayer's output projection and before its residual add (and LayerNorm), an
*adapter*: a bottleneck with its own skip connection, ``h + up(act(down(h)))``, down (m, C) and
up (C, m) with m ≪ C. Placement ``"houlsby"`` puts one after attention and one after the feed-forward
net (2 per layer: 2·L·(2·C·m + m + C) parameters); ``"pfeiffer"`` (Pfeiffer et al., 2021,
"AdapterFusion") only after the feed-forward net. The up-projection starts at zero, so the adapted
model starts *equal* to the base model (the paper's near-identity init, made exact), and the down-
projection is drawn from a normal with std ``init_scale`` cut at 2 std, as in the paper. As in the
paper the normalisation layers train too (``train_layer_norms=True``; False: the adapters alone, the
count above exactly). Adapters after cross-attention (T5's decoder) come with "houlsby".

Modules are found by name, as LoRA's in :mod:`minillm.peft` (defaults per model family in
``DEFAULT_TARGET_MODULES``): each sublayer's output projection becomes an :class:`AdapterLayer`
returning ``adapter(base(x))``; no model's forward is patched. So the adapter sits just before the
sublayer's dropout (AdapterHub's just after: equal in eval mode). Unlike LoRA it is non-linear and
cannot be merged into the weights. The API mirrors :class:`minillm.peft.PeftModel`; the directory
(``adapter_config.json`` + ``adapter_model.safetensors``, keys as in the model's state dict) is our
own format: PEFT has no bottleneck adapters.

Shape letters: B batch, T tokens, C width of the sublayer output, m bottleneck size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .peft import (_OUR_CONFIGS, CONFIG_NAME, WEIGHTS_NAME, PeftModel, _atomic_write, _in_out,
                   _names, _split)
from .validation import check_bool, check_choice, check_float, check_int, describe

ADAPTER_TYPE = "BOTTLENECK_ADAPTER"  # written into adapter_config.json so no other loader mistakes it
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu}
_ANY = r"(?:.*\.)?"  # a module path prefix (or none)
# family: (attention output projections, feed-forward output projections), regexes on full names
DEFAULT_TARGET_MODULES = {
    "bert": (_ANY + r"attention\.output\.dense", _ANY + r"layer\.\d+\.output\.dense"),
    "gpt2": (_ANY + r"attn\.c_proj", _ANY + r"mlp\.c_proj"),
    "llama": (_ANY + r"self_attn\.o_proj", _ANY + r"mlp\.down_proj"),
    "t5": (_ANY + r"(?:SelfAttention|EncDecAttention)\.o", _ANY + r"DenseReluDense\.wo"),
}
_ALIASES = {"qwen2": "llama", "qwen3": "llama", "mt5": "t5"}


@dataclass
class AdapterConfig:
    """Where the adapters go and how big they are. ``target_modules`` overrides ``placement``."""

    bottleneck_size: int | None = None  # m; None: C // reduction_factor, or 64 if that is None too
    reduction_factor: int | None = None  # m = C // reduction_factor (at least 1), the paper's other knob
    non_linearity: str = "relu"  # "relu", "gelu" or "swish" (SiLU) inside the bottleneck
    placement: str = "houlsby"  # "houlsby": after attention and feed-forward; "pfeiffer": feed-forward
    init_scale: float = 1e-2  # std of the down-projection's truncated normal; up starts at zero
    target_modules: str | list[str] | None = None  # str: regex on the full name; list: names/suffixes
    train_layer_norms: bool = True  # the paper trains every LayerNorm (here: every *Norm module) too
    modules_to_save: list[str] | None = None  # modules trained in full and saved (e.g. "classifier")

    def __post_init__(self) -> None:
        check_int("bottleneck_size", self.bottleneck_size, low=1, allow_none=True)
        check_int("reduction_factor", self.reduction_factor, low=1, allow_none=True)
        if self.bottleneck_size is not None and self.reduction_factor is not None:
            raise ValueError(f"pass bottleneck_size ({self.bottleneck_size}) or reduction_factor "
                             f"({self.reduction_factor}), not both")
        check_choice("non_linearity", self.non_linearity, tuple(ACTIVATIONS))
        check_choice("placement", self.placement, ("houlsby", "pfeiffer"))
        self.init_scale = check_float("init_scale", self.init_scale, low=0)
        self.target_modules = _names("target_modules", self.target_modules, allow_str=True)
        self.modules_to_save = _names("modules_to_save", self.modules_to_save, allow_str=False)
        check_bool("train_layer_norms", self.train_layer_norms)

    def size_for(self, width: int) -> int:
        """The bottleneck m for a sublayer output of width C."""
        if self.reduction_factor is not None:
            return max(1, width // self.reduction_factor)
        return 64 if self.bottleneck_size is None else self.bottleneck_size

    def to_dict(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), adapter_type=ADAPTER_TYPE)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AdapterConfig":
        if not isinstance(d, dict) or d.get("adapter_type") != ADAPTER_TYPE:
            raise ValueError(f"not a bottleneck-adapter config (adapter_type must be {ADAPTER_TYPE!r}), "
                             f"got {describe(d, 200)}")
        return cls(**{k: v for k, v in d.items() if k != "adapter_type"})


class Adapter(nn.Module):
    """The bottleneck: ``h + up(act(down(h)))``, (B, T, C) → (B, T, C)."""

    def __init__(self, width: int, bottleneck_size: int, non_linearity: str = "relu",
                 init_scale: float = 1e-2):
        super().__init__()
        self.non_linearity = non_linearity
        self.down = nn.Linear(width, bottleneck_size)  # weight (m, C)
        self.up = nn.Linear(bottleneck_size, width)  # weight (C, m)
        nn.init.trunc_normal_(self.down.weight, std=init_scale, a=-2 * init_scale, b=2 * init_scale)
        for t in (self.down.bias, self.up.weight, self.up.bias):
            nn.init.zeros_(t)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(ACTIVATIONS[self.non_linearity](self.down(h)))


class AdapterLayer(nn.Module):
    """A frozen output projection followed by its adapter: ``adapter(base_layer(x))``."""

    def __init__(self, base_layer: nn.Module, adapter: Adapter):
        super().__init__()
        self.base_layer, self.adapter = base_layer, adapter
        self.disabled = False  # True inside AdapterModel.disable_adapter()

    @property
    def weight(self) -> torch.Tensor:  # read by some HF layers (T5's feed-forward checks its dtype)
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)  # (B, T, C)
        return h if self.disabled else self.adapter(h)


def _model_type(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    kind = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    kind = kind if isinstance(kind, str) else _OUR_CONFIGS.get(type(config).__name__)
    return _ALIASES.get(kind, kind)


def _matches(pattern: str, name: str, regex: bool) -> bool:
    """PEFT's rule: a regex matches the whole name; a list entry the name or a ``.``-suffix of it."""
    return bool(re.fullmatch(pattern, name)) if regex else name == pattern or name.endswith("." + pattern)


class AdapterModel(nn.Module):
    """A frozen model with bottleneck adapters: calls, ``generate`` and attributes go to ``.model``."""

    def __init__(self, model: nn.Module, config: AdapterConfig):
        super().__init__()
        if any(isinstance(m, AdapterLayer) for m in model.modules()):
            raise ValueError("the model already has adapters: this package keeps one adapter per model")
        config = dataclasses.replace(config)  # a copy: the user's config stays as given
        names = [n for n, _ in model.named_modules() if n]
        linear = [n for n in names if _in_out(model.get_submodule(n)) is not None]
        if config.target_modules is None:
            kind = _model_type(model)
            if kind not in DEFAULT_TARGET_MODULES:
                raise ValueError(f"target_modules=None, but there is no default for {type(model).__name__} "
                                 f"(model type {kind!r}); pass the output projections of its sublayers, "
                                 f"e.g. from its linear layers {linear[:8]}")
            attention, ffn = DEFAULT_TARGET_MODULES[kind]
            config.target_modules = f"{attention}|{ffn}" if config.placement == "houlsby" else ffn
        regex = isinstance(config.target_modules, str)
        patterns = [config.target_modules] if regex else config.target_modules
        for pattern in patterns:  # every entry must find something: a typo is not dropped silently
            if not any(_matches(pattern, n, regex) for n in names):
                raise ValueError(f"target {pattern!r} matches none of the {len(names)} modules of "
                                 f"{type(model).__name__}; its linear layers are e.g. {linear[:8]}")
        targets = [n for n in names if any(_matches(p, n, regex) for p in patterns)]
        for name in (n for n in targets if n not in linear):
            raise ValueError(f"target module {name!r} is a {type(model.get_submodule(name)).__name__}; "
                             "adapters follow nn.Linear (or transformers' Conv1D) output projections")
        saved = [n for n in names if any(_matches(p, n, False) for p in config.modules_to_save or [])]
        if config.modules_to_save and not saved:
            raise ValueError(f"modules_to_save={config.modules_to_save} matches none of the modules "
                             f"of {type(model).__name__}, e.g. {names[-8:]}")
        for name in targets:
            parent, child = _split(model, name)
            base, width = getattr(parent, child), _in_out(model.get_submodule(name))[1]
            adapter = Adapter(width, config.size_for(width), config.non_linearity, config.init_scale)
            w = base.weight  # the adapter lives where the layer lives, in its (floating) dtype
            adapter.to(device=w.device, dtype=w.dtype if w.is_floating_point() else None)
            setattr(parent, child, AdapterLayer(base, adapter))
        self.model, self.adapter_config, self.targeted_module_names = model, config, targets
        self.modules_to_save = saved
        self._mark_trainable()

    def _trained_names(self) -> set[str]:
        """Parameter names that train: adapters, ``modules_to_save`` and (with the option) norms."""
        keep = [layer.adapter for _, layer in self.adapter_layers()]
        keep += [self.model.get_submodule(n) for n in self.modules_to_save]
        if self.adapter_config.train_layer_norms:
            keep += [m for m in self.model.modules()
                     if isinstance(m, nn.LayerNorm) or type(m).__name__.endswith("Norm")]
        ids = {id(p) for m in keep for p in m.parameters()}
        return {n for n, p in self.model.named_parameters() if id(p) in ids}

    def _mark_trainable(self) -> None:
        names = self._trained_names()
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in names)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # config, generate, ...: the wrapped model's
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self.model, name)

    def get_base_model(self) -> nn.Module:
        """The wrapped model (with its adapter layers)."""
        return self.model

    def adapter_layers(self) -> Iterator[tuple[str, AdapterLayer]]:
        return ((n, m) for n, m in self.model.named_modules() if isinstance(m, AdapterLayer))

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the base model without the adapters inside a ``with`` block (trained norms stay)."""
        layers = [layer for _, layer in self.adapter_layers()]
        try:
            for layer in layers:
                layer.disabled = True
            yield
        finally:
            for layer in layers:
                layer.disabled = False

    def merge_and_unload(self) -> nn.Module:
        raise NotImplementedError(
            "a bottleneck adapter h + up(act(down(h))) is non-linear, so unlike LoRA it cannot be "
            "folded into the frozen weights; keep the AdapterModel for inference, or unload() to get "
            "the base model back without the adapters")

    def unload(self) -> nn.Module:
        """Remove the adapter layers: the model comes back with its own modules (norms as trained)."""
        for name, layer in list(self.adapter_layers()):
            parent, child = _split(self.model, name)
            setattr(parent, child, layer.base_layer)
        return self.model

    # (trainable, all) parameters, shared tensors once, and PEFT's one-line print of them
    get_nb_trainable_parameters = PeftModel.get_nb_trainable_parameters
    print_trainable_parameters = PeftModel.print_trainable_parameters

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changed, keyed as in the model's state dict: adapters, norms if trained,
        ``modules_to_save``."""
        names = self._trained_names()
        return {k: v for k, v in self.model.state_dict().items() if k in names}

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors``, each crash-safe."""
        from safetensors.torch import save_file

        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise FileExistsError(f"{directory} is a file: save_pretrained needs a directory")
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().clone() for k, v in self.adapter_state_dict().items()}
        record = self.adapter_config.to_dict()
        _atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
        _atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(
            json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8"))
        return directory

    @classmethod
    def from_pretrained(cls, model: nn.Module, model_id: str | os.PathLike,
                        is_trainable: bool = False) -> "AdapterModel":
        """Wrap ``model`` with the adapter saved in the directory ``model_id``.

        Raises FileNotFoundError naming a missing file, ValueError naming a tensor whose shape does
        not fit ``model`` (which is then left as it was). Without ``is_trainable`` everything is
        frozen and the model is in eval mode, as in PEFT.
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
        config = AdapterConfig.from_dict(record)
        try:
            state = load_file(str(directory / WEIGHTS_NAME))
        except Exception as e:  # safetensors' own error type names no file
            raise ValueError(f"{directory / WEIGHTS_NAME} is not a safetensors file: {e}") from e
        flags = [(p, p.requires_grad) for p in model.parameters()]
        adapted = cls(model, config)
        try:
            adapted._load_adapter(state)
        except BaseException:  # leave the model as it came: no adapters, same trainable flags
            adapted.unload()
            for p, flag in flags:
                p.requires_grad_(flag)
            raise
        if not is_trainable:
            adapted.requires_grad_(False)
            adapted.eval()
        return adapted

    def _load_adapter(self, state: dict[str, torch.Tensor]) -> None:
        ours = self.adapter_state_dict()
        if set(state) != set(ours):
            raise ValueError(f"the adapter's tensors do not fit the model: it lacks "
                             f"{sorted(set(ours) - set(state))[:4]} and holds the unknown "
                             f"{sorted(set(state) - set(ours))[:4]} (saved from another kind of model?)")
        for key, tensor in state.items():
            if tensor.shape != ours[key].shape:
                raise ValueError(f"adapter tensor {key} has shape {tuple(tensor.shape)}, but the model "
                                 f"expects {tuple(ours[key].shape)}: the adapter was trained on a "
                                 "model of another width or bottleneck")
        self.model.load_state_dict(state, strict=False)


def get_adapter_model(model: nn.Module, config: AdapterConfig) -> AdapterModel:
    """Add bottleneck adapters to ``model`` in place, freeze everything else, and return it wrapped.

    Args:
        model: any ``nn.Module`` (our models and transformers' alike: modules are found by name).
        config: the bottleneck size, non-linearity, placement (or explicit ``target_modules``) and
            what else trains (norms, ``modules_to_save``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, AdapterConfig):
        raise TypeError(f"config must be a minillm.adapters.AdapterConfig, got {type(config).__name__}")
    return AdapterModel(model, config)
