"""minillm's GPT against Hugging Face ``GPT2LMHeadModel`` of the same configuration.

Config: characters (vocab 65), 6 layers, 6 heads, width 384, context 256; training batch 16, AdamW,
2 CPU threads. Figures: training tokens/s in fp32 and with bf16 autocast; model FLOPs utilisation
(MFU) against an fp32 matmul peak measured here; batch-1 greedy generation of 256 new tokens with a
KV cache (fp32) against HF ``generate``; peak resident memory of each measurement.

Every measurement runs in its own subprocess (``python bench_gpt.py --one NAME`` prints one JSON
line), so peak memory (``ru_maxrss``) belongs to that measurement alone and a slow neighbour cannot
leave caches warm. Ours and HF alternate, twice each, and the faster run of each counts.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

VOCAB, BLOCK, LAYERS, HEADS, WIDTH, BATCH, THREADS = 65, 256, 6, 6, 384, 16, 2
TRAIN_STEPS, WARMUP_STEPS, NEW_TOKENS = 6, 2, 256


def _models(which: str):
    import torch

    torch.manual_seed(0)
    if which == "ours":
        from minillm.models.gpt import GPT, GPTConfig

        return GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=LAYERS, n_head=HEADS,
                             n_embd=WIDTH, dropout=0.0))
    from transformers import GPT2Config, GPT2LMHeadModel

    # HF defaults (gelu_new, SDPA attention); dropout off on both sides for a like-for-like step
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=BLOCK, n_layer=LAYERS,
                                      n_head=HEADS, n_embd=WIDTH, resid_pdrop=0.0, embd_pdrop=0.0,
                                      attn_pdrop=0.0, bos_token_id=0, eos_token_id=None))


def _train(which: str, bf16: bool) -> dict:
    import contextlib

    import torch
    import torch.nn.functional as F

    model = _models(which).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, VOCAB, (BATCH, BLOCK), generator=g)
    y = torch.randint(0, VOCAB, (BATCH, BLOCK), generator=g)

    def step() -> None:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            out = model(x)
            logits = out if isinstance(out, torch.Tensor) else out.logits
            loss = F.cross_entropy(logits.reshape(-1, VOCAB).float(), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(WARMUP_STEPS):
        step()
    times = []
    for _ in range(TRAIN_STEPS):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    n_params = sum(p.numel() for p in model.parameters())
    return {"tokens_per_s": BATCH * BLOCK / min(times), "median_tokens_per_s":
            BATCH * BLOCK / sorted(times)[len(times) // 2], "params": n_params}


def _generate(which: str) -> dict:
    import torch

    model = _models(which).eval()
    prompt = torch.zeros(1, 1, dtype=torch.long)

    def run():
        with torch.inference_mode():
            if which == "ours":
                return model.generate(prompt, NEW_TOKENS)
            return model.generate(prompt, attention_mask=torch.ones_like(prompt),
                                  max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                  do_sample=False, pad_token_id=0)

    out = run()  # warm-up
    assert out.shape == (1, 1 + NEW_TOKENS), out.shape
    times = []
    for _ in range(3):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return {"tokens_per_s": NEW_TOKENS / min(times)}


def _peak() -> dict:
    import torch

    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        n = 2048
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(2):
            a @ b
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        out[str(dtype).replace("torch.", "")] = 2 * n ** 3 / best
    return out


def measure(name: str) -> dict:
    """One measurement in this process: 'train-ours-fp32', 'gen-hf', 'peak', ..."""
    import torch

    torch.set_num_threads(THREADS)
    kind, *rest = name.split("-")
    if kind == "train":
        result = _train(rest[0], bf16=rest[1] == "bf16")
    elif kind == "gen":
        result = _generate(rest[0])
    elif kind == "peak":
        result = _peak()
    else:
        raise ValueError(f"unknown measurement {name!r}")
    result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return result


def _subprocess(name: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TRANSFORMERS_VERBOSITY": "error",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", name],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def flops_per_token(params_no_wpe: int) -> float:
    """Training FLOPs per token: 6N for the matmuls with weights + 12·L·T·C for attention
    (forward + backward), as in the PaLM appendix and nanoGPT's estimate_mfu."""
    return 6 * params_no_wpe + 12 * LAYERS * BLOCK * WIDTH


def run() -> list:
    from common import Row

    names = ["peak", "train-ours-fp32", "train-hf-fp32", "train-ours-bf16", "train-hf-bf16",
             "gen-ours", "gen-hf"]
    results: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(2):  # alternate ours and HF twice: a noisy neighbour hits both
        for n in names:
            r = _subprocess(n)
            results[n].append(r)
            print(f"  {n:18s} {json.dumps({k: round(v, 1) for k, v in r.items()})}", flush=True)

    def best(n: str, key: str = "tokens_per_s") -> float:
        return max(r[key] for r in results[n])

    def mem(n: str) -> float:
        return min(r["maxrss_mb"] for r in results[n])

    peak32 = max(r["float32"] for r in results["peak"])
    params = results["train-ours-fp32"][0]["params"]
    mfu = best("train-ours-fp32") * flops_per_token(params - BLOCK * WIDTH) / peak32
    mfu_hf = best("train-hf-fp32") * flops_per_token(params - BLOCK * WIDTH) / peak32
    hf = "HF GPT2LMHeadModel, same config"
    return [
        Row("GPT training tokens/s, fp32 (B16 T256 6L 384)", best("train-ours-fp32"),
            best("train-hf-fp32"), "tokens/s", reference_name=hf),
        Row("GPT training tokens/s, bf16 autocast", best("train-ours-bf16"),
            best("train-hf-bf16"), "tokens/s", reference_name=hf),
        Row("GPT training MFU, fp32 (vs measured matmul peak)", 100 * mfu, 100 * mfu_hf, "%",
            reference_name=f"HF; peak {peak32 / 1e9:.0f} GFLOP/s fp32 2048² matmul"),
        Row("GPT generation tokens/s (B1, 256 new, KV cache)", best("gen-ours"), best("gen-hf"),
            "tokens/s", reference_name="HF generate, greedy"),
        Row("GPT peak RSS, training fp32", mem("train-ours-fp32"), mem("train-hf-fp32"), "MB",
            higher_is_better=False, reference_name="process max RSS incl. imports"),
        Row("GPT peak RSS, training bf16", mem("train-ours-bf16"), mem("train-hf-bf16"), "MB",
            higher_is_better=False, reference_name="process max RSS incl. imports"),
        Row("GPT peak RSS, generation", mem("gen-ours"), mem("gen-hf"), "MB",
            higher_is_better=False, reference_name="process max RSS incl. imports"),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        sys.path.insert(0, str(ROOT))
        print(json.dumps(measure(sys.argv[2])))
    else:
        sys.path.insert(0, str(HERE))
        sys.path.insert(0, str(ROOT))
        from common import format_table

        print(format_table(run()))
