"""Checks for chapter 8's exercises (GPT): causal attention, temperature, top-p, a KV-cache update."""

from __future__ import annotations

import math

import torch

from . import Case, CheckResult, compare, run_check


def _ref_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v


def check_causal_attention(fn) -> CheckResult:
    """``fn(q, k, v)`` with q, k, v of shape (B, nh, T, hs) → softmax(q kᵀ/√hs + causal mask) v."""
    g = torch.Generator().manual_seed(0)
    cases = [
        Case((torch.randn(1, 1, 1, 4, generator=g),) * 3, description="one token attends to itself"),
        Case(tuple(torch.randn(2, 3, 6, 8, generator=g) for _ in range(3)),
             description="B=2, 3 heads, T=6, hs=8"),
        Case(tuple(torch.randn(1, 2, 5, 16, generator=g) * 4 for _ in range(3)),
             description="large scores: the 1/sqrt(hs) scale matters"),
    ]
    return run_check("causal_attention", fn, _ref_causal_attention, cases, atol=1e-5,
                     hint="scores = q @ k.transpose(-2, -1) / sqrt(hs); set scores above the "
                          "diagonal to -inf (torch.ones(T, T).tril()), softmax over the last dim, @ v")


def _ref_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits / temperature, dim=-1)


def check_softmax_with_temperature(fn) -> CheckResult:
    """``fn(logits, temperature)`` → probabilities softmax(logits / temperature) over the last dim."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 10, generator=g) * 2
    cases = [
        Case((logits, 1.0), description="temperature 1: plain softmax"),
        Case((logits, 0.5), description="temperature 0.5: sharper"),
        Case((logits, 3.0), description="temperature 3: flatter"),
        Case((torch.tensor([100.0, 99.0, 0.0]), 0.1), description="large logits must not overflow"),
    ]
    return run_check("softmax_with_temperature", fn, _ref_temperature, cases, atol=1e-6,
                     hint="divide the logits by the temperature, then torch.softmax(..., dim=-1)")


def _ref_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(-1) - probs
    drop = before >= p
    drop[..., 0] = False
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def _compare_filtered(expected, got, **kw) -> str | None:
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape or not got.is_floating_point():
        return compare(expected, got, **kw)
    if got.isnan().any():
        return (f"result: got NaN at {int(got.isnan().sum())} positions; filtered-out tokens should be "
                f"-inf, kept ones keep their logit")
    if (got == float("inf")).any():
        return f"result: got +inf at {int((got == float('inf')).sum())} positions; use -inf for dropped tokens"
    kept_e, kept_g = expected.isfinite(), got.isfinite()
    if not torch.equal(kept_e, kept_g):
        return (f"kept tokens differ: expected to keep {kept_e.sum(-1).tolist()} per row, "
                f"kept {kept_g.sum(-1).tolist()}")
    return compare(expected[kept_e], got[kept_g], **kw)


def check_top_p_filter(fn) -> CheckResult:
    """``fn(logits, p)`` → logits with -inf for the tokens outside the top-p nucleus."""
    g = torch.Generator().manual_seed(2)
    simple = torch.log(torch.tensor([[0.05, 0.5, 0.15, 0.3]]))
    cases = [
        Case((simple, 0.5), description="probabilities .05 .5 .15 .3, p=0.5: only the 0.5 token"),
        Case((simple, 0.7), description="p=0.7: the 0.5 and 0.3 tokens"),
        Case((simple, 0.01), description="tiny p: the most likely token is always kept"),
        Case((simple, 1.0), description="p=1: keep everything"),
        Case((torch.randn(4, 30, generator=g) * 2, 0.9), description="4 random rows, p=0.9"),
    ]
    return run_check("top_p_filter", fn, _ref_top_p, cases, compare_fn=_compare_filtered,
                     hint="sort descending, softmax, cumsum; drop a token when the probability of the "
                          "tokens before it already reaches p; keep the first; scatter back to the "
                          "original order and masked_fill with -inf")


def _ref_kv_append(cache_k, cache_v, k, v, length):
    end = length + k.size(2)
    cache_k[:, :, length:end] = k
    cache_v[:, :, length:end] = v
    return cache_k[:, :, :end], cache_v[:, :, :end]


def _views_of_the_cache(cache_k: torch.Tensor, cache_v: torch.Tensor, got) -> str | None:
    """The returned prefixes must share memory with the caches (slices, not copies)."""
    if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(t, torch.Tensor) for t in got)):
        return None  # the value comparison already explained the problem
    for name, cache, out in (("cache_k", cache_k, got[0]), ("cache_v", cache_v, got[1])):
        if out.numel() and out.untyped_storage().data_ptr() != cache.untyped_storage().data_ptr():
            return (f"the returned {name} prefix is a copy, not a slice of {name}: return "
                    f"{name}[:, :, :length + T] so no memory is copied on each generated token")
    return None


def check_kv_cache_append(fn) -> CheckResult:
    """``fn(cache_k, cache_v, k, v, length)`` writes k, v (B, nh, T, hs) at positions
    length..length+T-1 of the (B, nh, max_len, hs) caches *in place* (preallocated buffers; no
    torch.cat) and returns the filled prefixes as slices of the caches."""
    g = torch.Generator().manual_seed(3)

    def case(B, nh, max_len, hs, length, T, description):
        ck, cv = torch.randn(B, nh, max_len, hs, generator=g), torch.randn(B, nh, max_len, hs, generator=g)
        k, v = torch.randn(B, nh, T, hs, generator=g), torch.randn(B, nh, T, hs, generator=g)
        return Case((ck, cv, k, v, length), description=description)

    cases = [case(1, 2, 8, 4, 0, 3, "empty cache, a 3-token prompt"),
             case(2, 3, 10, 4, 5, 1, "one new token after 5 cached"),
             case(1, 1, 6, 2, 5, 1, "the last free slot")]
    return run_check("kv_cache_append", fn, _ref_kv_append, cases, modifies=(0, 1),
                     extra_check=lambda args, kwargs, got: _views_of_the_cache(args[0], args[1], got),
                     hint="cache_k[:, :, length:length + T] = k (same for v), then return "
                          "cache_k[:, :, :length + T] and cache_v[:, :, :length + T]")


# ----- larger exercise: a whole KV-cached generate, checked against the recompute path -----

def _counting_gpt():
    """A tiny random GPT that counts the positions its forward passes compute (``positions``).

    Its token embedding is drawn with std 0.1 (not GPT-2's 0.02): the logits are then far enough
    apart that a rounding difference between the cached and the recomputed path cannot flip an
    argmax (the smallest top-2 gap is ~0.17), yet flat enough that sampling differs from greedy.
    """
    from ..models.gpt import GPT, GPTConfig

    class CountingGPT(GPT):
        positions = 0

        def hidden_states(self, input_ids=None, **kwargs):
            self.positions += (input_ids if input_ids is not None else kwargs["inputs_embeds"]).size(1)
            return super().hidden_states(input_ids, **kwargs)

    torch.manual_seed(0)
    model = CountingGPT(GPTConfig.tiny(vocab_size=50))
    torch.nn.init.normal_(model.transformer.wte.weight, std=0.1)
    return model.eval()


def check_generate_with_cache(fn) -> CheckResult:
    """``fn(model, idx, max_new_tokens, do_sample=False, temperature=1.0, seed=None)`` → (B, T +
    max_new_tokens) token ids, using a ``KVCache``: the same tokens as ``model.generate(...,
    use_cache=False)`` (greedy, or sampled with ``torch.Generator().manual_seed(seed)``), while the
    model computes only the prompt once and then one position per new token."""
    model = _counting_gpt()
    g = torch.Generator().manual_seed(4)

    def ids(B, T):
        return torch.randint(0, model.config.vocab_size, (B, T), generator=g)

    def reference(model, idx, n, do_sample=False, temperature=1.0, seed=None):
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        tokens = model.generate(idx, n, do_sample=do_sample, temperature=temperature,
                                use_cache=False, generator=gen)
        return {"tokens": tokens, "positions": idx.size(1) + n - 1}

    def learner(model, idx, n, **kwargs):
        before = model.positions
        tokens = fn(model, idx, n, **kwargs)
        return {"tokens": tokens, "positions": model.positions - before}

    def compare_generation(expected, got, **kw):
        msg = compare(expected["tokens"], got["tokens"], path="tokens")
        if msg:
            return msg + " (reference: model.generate(..., use_cache=False))"
        if got["positions"] != expected["positions"]:
            return (f"the tokens are right, but the model computed {got['positions']} positions; "
                    f"with a KV cache it needs {expected['positions']} (the prompt once, then one "
                    f"new token per step)")
        return None

    cases = [
        Case((model, ids(1, 3), 10), description="greedy, one prompt of 3 tokens, 10 new"),
        Case((model, ids(2, 5), 12), description="greedy, a batch of 2 prompts"),
        Case((model, ids(1, 1), 20), dict(do_sample=True, temperature=0.7, seed=0),
             description="sampling at temperature 0.7, seed 0, a 1-token prompt"),
        Case((model, ids(3, 4), 15), dict(do_sample=True, temperature=1.3, seed=1),
             description="sampling at temperature 1.3, seed 1, a batch of 3"),
        Case((model, ids(1, 6), 1), description="one new token: only the prompt pass"),
        Case((model, ids(1, 2), model.config.block_size - 1),
             description="filling the whole context window"),
    ]
    return run_check("generate_with_cache", learner, reference, cases,
                     compare_fn=compare_generation,
                     hint="cache = KVCache(model.config, B); first logits = model(idx, cache)[:, -1]; "
                          "then each step feed only the new token (B, 1): model(new, cache)[:, -1]; "
                          "sample with torch.multinomial(torch.softmax(logits / temperature, -1), 1, "
                          "generator=gen)")
