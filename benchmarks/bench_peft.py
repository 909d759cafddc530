"""LoRA and QLoRA: training-step time and memory against full fine-tuning, ours against PEFT.

One randomly initialised Llama-family decoder (Hugging Face ``LlamaForCausalLM``, SmolLM2's layer shape
at reduced depth) is the base everywhere. Rows:

- LoRA (r=8 on q_proj and v_proj) vs full fine-tuning, both with ``minillm.peft`` on the same base:
  AdamW step time (paired, alternating) and peak tensor memory of a step (the gradients and optimizer
  state full fine-tuning needs, after a warm-up step has created both);
- ours vs PEFT on the same base, config and seed: the LoRA weights are asserted identical and the losses
  equal before one training step is timed on each side (paired);
- the frozen base's linear layers in NF4 with double quantization (``minillm.quant``): their bytes
  (packed codes and scales, as stored) vs the same weights in fp32 and bf16.

``MINILLM_BENCH_QUICK=1``: 2 layers, 3 pairs.

    python benchmarks/run.py peft
"""

from __future__ import annotations

import copy
import os

import torch

from common import Row, assert_same_output, paired_timing, peak_tensor_bytes, threads

LAYERS, PAIRS, THREADS, B, T = 6, 5, 2, 4, 128
if os.environ.get("MINILLM_BENCH_QUICK") == "1":
    LAYERS, PAIRS = 2, 3


def base_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=8192, hidden_size=576, intermediate_size=1536, num_hidden_layers=LAYERS,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=512,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def step_fn(model, batch):
    """One AdamW step over the trainable parameters; returns the loss (a float)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> float:
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    step()  # warm-up: creates the gradients and the optimizer state
    return step


def run() -> list[Row]:
    import peft

    from minillm.peft import LoraConfig, get_peft_model
    from minillm.quant import Linear4bit, quantize_model

    print(f"  Llama base: {LAYERS} layers × SmolLM2's width, batch {B}×{T}, {THREADS} threads", flush=True)
    rows = []
    with threads(THREADS):
        batch = torch.randint(0, 8192, (B, T), generator=torch.Generator().manual_seed(0))
        base = base_model()
        full = copy.deepcopy(base).train()
        torch.manual_seed(1)
        lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=8, target_modules=["q_proj", "v_proj"])).train()
        lora_step, full_step = step_fn(lora, batch), step_fn(full, batch)
        p = paired_timing(lora_step, full_step, repeats=PAIRS, warmup=1)
        rows.append(Row.timed("training step, LoRA r=8 (q,v) vs full fine-tuning", p, unit="ms", scale=1e3,
                              reference_name="full fine-tuning, same base and batch"))
        trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
        rows.append(Row("trainable parameters, LoRA vs full fine-tuning", trainable,
                        sum(p.numel() for p in full.parameters()), "params", higher_is_better=False,
                        reference_name="full fine-tuning"))
        rows.append(Row("peak tensor memory of a training step, LoRA vs full", peak_tensor_bytes(lora_step) / 2 ** 20,
                        peak_tensor_bytes(full_step) / 2 ** 20, "MiB", higher_is_better=False,
                        reference_name="full fine-tuning (its gradients of every weight)"))
        print("  LoRA vs full done", flush=True)

        config = dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
        torch.manual_seed(2)
        ours = get_peft_model(copy.deepcopy(base), LoraConfig(**config)).train()
        torch.manual_seed(2)
        theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**config)).train()
        for (n1, p1), (n2, p2) in zip(sorted((n, p) for n, p in ours.named_parameters() if "lora_" in n),
                                      sorted((n, p) for n, p in theirs.named_parameters() if "lora_" in n)):
            assert_same_output(p1.detach(), p2.detach(), f"LoRA weight {n1} vs {n2}")
        with torch.no_grad():
            assert_same_output(ours(input_ids=batch, labels=batch).loss, theirs(input_ids=batch, labels=batch).loss,
                               "loss, ours vs PEFT")
        p = paired_timing(step_fn(ours, batch), step_fn(theirs, batch), repeats=PAIRS, warmup=1)
        rows.append(Row.timed("LoRA training step, minillm.peft vs PEFT", p, unit="ms", scale=1e3,
                              reference_name=f"peft {peft.__version__}, same base, config and seed"))
        print("  ours vs PEFT done", flush=True)

        body = copy.deepcopy(base)
        quantize_model(body)  # every linear layer but the (tied) output head; embeddings stay as they are
        layers = [m for m in body.modules() if isinstance(m, Linear4bit)]
        n_weights = sum(m.out_features * m.in_features for m in layers)
        nf4 = sum(b.numel() * b.element_size() for m in layers for b in m.buffers(recurse=False))
        rows.append(Row(f"weights of the {len(layers)} quantized layers: NF4 + double quant vs fp32",
                        nf4 / 2 ** 20, 4 * n_weights / 2 ** 20, "MiB", higher_is_better=False,
                        reference_name=f"fp32; NF4 = {8 * nf4 / n_weights:.3f} bits per weight, from the stored bytes"))
        rows.append(Row(f"weights of the {len(layers)} quantized layers: NF4 + double quant vs bf16",
                        nf4 / 2 ** 20, 2 * n_weights / 2 ** 20, "MiB", higher_is_better=False, reference_name="bf16"))
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
