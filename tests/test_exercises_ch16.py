"""Chapter 16's exercise checks (minillm.checks.ch16): each fails on the usual mistakes and says which
one it is, passes correct answers written differently from the reference, agrees with the package
(minillm.weight_only, minillm.speculative, minillm.distill) and leaves the global random state alone."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minillm.checks import ch16


def _all_reduce(kind):
    """The gradient all-reduce as a learner might write it, with one mistake."""
    def all_reduce_mean(grads_per_rank):
        W, P = len(grads_per_rank), len(grads_per_rank[0])
        if kind == "sum":
            return [sum(ps) for ps in zip(*grads_per_rank)]
        if kind == "divide by P":
            return [sum(ps) / P for ps in zip(*grads_per_rank)]
        if kind == "rank 0":
            return list(grads_per_rank[0])
        if kind == "rank 0 / W":
            return [g / W for g in grads_per_rank[0]]
        if kind == "over parameters":
            return [torch.stack(rank).mean(0) for rank in grads_per_rank]
        if kind == "over parameters sum":
            return [sum(rank) / len(rank) for rank in grads_per_rank]
        if kind == "in place":
            out = grads_per_rank[0]
            for rank in grads_per_rank[1:]:
                for o, g in zip(out, rank):
                    o += g
            return [o / W for o in out]
        if kind == "stacked":
            return torch.stack([torch.stack(ps).mean(0) for ps in zip(*grads_per_rank)])
        if kind == "float32":
            return [(sum(ps) / W).float() for ps in zip(*grads_per_rank)]
        if kind == "not a list":
            return None
        return [sum(ps) / W for ps in zip(*grads_per_rank)]
    return all_reduce_mean


def _quantize(kind):
    """int8 per-channel quantization as a learner might write it, with one mistake."""
    def quantize_int8(w):
        if kind == "per tensor":
            s = w.abs().max() / 127
            return torch.round(w / s).clamp(-127, 127).to(torch.int8), s.expand(w.size(0))
        if kind == "per tensor scalar":
            s = w.abs().max() / 127
            return torch.round(w / s).clamp(-127, 127).to(torch.int8), s
        if kind == "per column":
            s = w.abs().amax(dim=0) / 127
            return torch.round(w / s.clamp(min=1e-12)).clamp(-127, 127).to(torch.int8), s
        mag = w.amax(dim=1) if kind == "signed max" else w.abs().amax(dim=1)
        levels = {"255": 255, "128": 128, "128 no clamp": 128}.get(kind, 127)
        s = mag / levels
        safe = torch.where(s > 0, s, torch.ones_like(s))
        if kind == "nan zero row":  # NaN codes (0 / 0), kept as floats
            return torch.round(w / s[:, None]).clamp(-127, 127), s
        if kind == "inverse":
            s = torch.where(s > 0, 1 / s, torch.zeros_like(s))
            return torch.round(w * s[:, None]).clamp(-127, 127).to(torch.int8), s
        x = w / safe[:, None]
        if kind == "floor":
            r = torch.floor(x)
        elif kind == "trunc":
            return x.to(torch.int8), s
        else:
            r = torch.round(x)
        if kind != "128 no clamp":
            r = r.clamp(-127, 127)
        if kind == "int32":
            return r.to(torch.int32), s
        if kind == "float codes":
            return r, s
        if kind == "keepdim":
            return r.to(torch.int8), s[:, None]
        if kind == "zero row scale 1":
            return r.to(torch.int8), safe
        if kind == "one tensor":
            return r.to(torch.int8)
        return r.to(torch.int8), s
    return quantize_int8


def _dequantize(kind):
    def dequantize_int8(q, scales):
        if kind == "divide":
            return q.float() / scales[:, None]
        if kind == "no unsqueeze":
            return q.float() * scales
        if kind == "per column":
            return q.float() * scales[None, :]
        if kind == "over 127":
            return q.float() * scales[:, None] / 127
        if kind == "int8":
            return (q.float() * scales[:, None]).to(torch.int8)
        return q.float() * scales[:, None]
    return dequantize_int8


def _accept(kind):
    """The greedy acceptance rule as a learner might write it, with one mistake."""
    def greedy_accept(proposed, picks):
        k = len(proposed)
        if kind == "all matches":
            a = int((proposed == picks[:-1]).sum())
            return picks[:a + 1]
        if kind == "shifted":
            a = 0
            while a < k and proposed[a] == picks[a + 1]:
                a += 1
            return picks[:a + 1]
        a = 0
        while a < k and proposed[a] == picks[a]:
            a += 1
        if kind == "no bonus":
            return picks[:a]
        if kind == "draft token":
            return proposed[:a + 1] if a < k else torch.cat([proposed, picks[k:]])
        if kind == "list":
            return picks[:a + 1].tolist()
        if kind == "float":
            return picks[:a + 1].float()
        return picks[:a + 1]
    return greedy_accept


def _kd(kind):
    """The distillation loss as a learner might write it, with one mistake."""
    def kd_loss(student_logits, teacher_logits, temperature):
        T = temperature
        ts = 1.0 if kind == "teacher only" else T
        tt = 1.0 if kind == "student only" else T
        log_q = F.log_softmax(student_logits / ts, dim=-1)
        log_p = F.log_softmax(teacher_logits / tt, dim=-1)
        factor = {"no T2": 1.0, "T": T}.get(kind, T * T)
        if kind == "reversed":
            return F.kl_div(log_p, log_q, log_target=True, reduction="batchmean") * factor
        if kind == "mean":
            with warnings.catch_warnings():  # torch warns that 'mean' is not the KL's definition
                warnings.simplefilter("ignore", UserWarning)
                return F.kl_div(log_q, log_p, log_target=True, reduction="mean") * factor
        if kind == "no log_target":
            return F.kl_div(log_q, log_p, reduction="batchmean") * factor
        if kind == "probs input":
            return F.kl_div(log_q.exp(), log_p, log_target=True, reduction="batchmean") * factor
        if kind == "naive log":
            p, q = F.softmax(teacher_logits / T, -1), F.softmax(student_logits / T, -1)
            return (p * (p.log() - q.log())).sum(-1).mean() * factor
        per_position = (log_p.exp() * (log_p - log_q)).sum(-1) * factor
        if kind == "per position":
            return per_position
        if kind == "item":
            return per_position.mean().item()
        return per_position.mean()
    return kd_loss


CH16_MISTAKES = [
    ("check_all_reduce_mean", _all_reduce("sum"), "summed over the ranks but not divided by the world size"),
    ("check_all_reduce_mean", _all_reduce("divide by P"), "divided by the number of parameters"),
    ("check_all_reduce_mean", _all_reduce("rank 0"), "only rank 0's gradients came back"),
    ("check_all_reduce_mean", _all_reduce("rank 0 / W"), "only rank 0's gradients were used"),
    ("check_all_reduce_mean", _all_reduce("over parameters"), "the mean ran over the parameters of each rank"),
    ("check_all_reduce_mean", _all_reduce("over parameters sum"), "the mean ran over the parameters of each rank"),
    ("check_all_reduce_mean", _all_reduce("in place"), "modified its input `grads_per_rank` in place"),
    ("check_all_reduce_mean", _all_reduce("stacked"), "got one tensor of shape"),
    ("check_all_reduce_mean", _all_reduce("float32"), "expected dtype float64 like the gradients, got float32"),
    ("check_all_reduce_mean", _all_reduce("not a list"), "expected a list of 3 tensors, one per parameter, got NoneType"),
    ("check_quantize_int8", _quantize("per tensor"), "one scale for the whole tensor (per-tensor)"),
    ("check_quantize_int8", _quantize("per tensor scalar"), "one scale for the whole tensor (per-tensor)"),
    ("check_quantize_int8", _quantize("per column"), "the scales are per input channel (column"),
    ("check_quantize_int8", _quantize("255"), "the scale divides by 255"),
    ("check_quantize_int8", _quantize("128"), "the scale divides by 128"),
    ("check_quantize_int8", _quantize("128 no clamp"), "q is not clamped to [−127, 127]"),
    ("check_quantize_int8", _quantize("floor"), "q is rounded down (floor)"),
    ("check_quantize_int8", _quantize("trunc"), "q is truncated toward zero"),
    ("check_quantize_int8", _quantize("signed max"), "the scale uses the largest weight, not the largest |weight|"),
    ("check_quantize_int8", _quantize("int32"), "their dtype is int32: store them as int8"),
    ("check_quantize_int8", _quantize("float codes"), "their dtype is float32: store them as int8"),
    ("check_quantize_int8", _quantize("nan zero row"), "an all-zero row has scale 0 and 0 / 0 = NaN"),
    ("check_quantize_int8", _quantize("zero row scale 1"), "an all-zero row's scale should stay 0"),
    ("check_quantize_int8", _quantize("inverse"), "the inverse of the scale"),
    ("check_quantize_int8", _quantize("keepdim"), "amax(dim=1) without keepdim"),
    ("check_quantize_int8", _quantize("one tensor"), "expected a pair (q, scales), got a Tensor"),
    ("check_dequantize_int8", _dequantize("divide"), "the codes were divided by the scale"),
    ("check_dequantize_int8", _dequantize("no unsqueeze"), "scales[:, None] multiplies each row by its own scale"),
    ("check_dequantize_int8", _dequantize("per column"), "the scales were applied per column"),
    ("check_dequantize_int8", _dequantize("over 127"), "divided by 127 again"),
    ("check_dequantize_int8", _dequantize("int8"), "expected float32 weights, got dtype int8"),
    ("check_greedy_accept", _accept("all matches"), "every matching guess was counted, not only the leading run"),
    ("check_greedy_accept", _accept("no bonus"), "the target's own token is missing"),
    ("check_greedy_accept", _accept("draft token"), "the draft's token was kept at the first mismatch"),
    ("check_greedy_accept", _accept("shifted"), "compared with picks[1:] (off by one)"),
    ("check_greedy_accept", _accept("list"), "expected a tensor of token ids, got a list"),
    ("check_greedy_accept", _accept("float"), "expected integer ids (torch.long), got dtype float32"),
    ("check_kd_loss", _kd("no T2"), "the T² factor is missing"),
    ("check_kd_loss", _kd("T"), "multiplied by T, not T²"),
    ("check_kd_loss", _kd("reversed"), "the KL runs the wrong way, KL(student ‖ teacher)"),
    ("check_kd_loss", _kd("student only"), "the temperature divides only the student's logits"),
    ("check_kd_loss", _kd("teacher only"), "the temperature divides only the teacher's logits"),
    ("check_kd_loss", _kd("mean"), "averaged over all N·V elements ('mean')"),
    ("check_kd_loss", _kd("probs input"), "F.kl_div got the student's probabilities as its input"),
    ("check_kd_loss", _kd("no log_target"), "needs log_target=True"),
    ("check_kd_loss", _kd("naive log"), "use F.log_softmax"),
    ("check_kd_loss", _kd("per position"), "one loss per position: take the mean over the positions"),
    ("check_kd_loss", _kd("item"), "not .item()"),
]


@pytest.mark.parametrize("check,fn,phrase", CH16_MISTAKES,
                         ids=[f"16-{c}-{k}" for k, (c, _, _) in enumerate(CH16_MISTAKES)])
def test_ch16_check_names_the_mistake(check, fn, phrase, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch16, check)(fn)
    assert not result.passed, f"{check} passes a wrong function (expected it to say {phrase!r})"
    assert phrase in result.report(), result.report()


def _all_reduce_loop(grads_per_rank):
    out = []
    for p in range(len(grads_per_rank[0])):
        total = torch.zeros_like(grads_per_rank[0][p])
        for rank in grads_per_rank:
            total = total + rank[p]
        out.append(total / len(grads_per_rank))
    return out


def _all_reduce_stack_mean(grads_per_rank):
    return tuple(torch.stack(ps).mean(0) for ps in zip(*grads_per_rank))


def _quantize_reciprocal(w):
    """w · (127 / max) instead of w / (max / 127): may round differently at exact ties only."""
    m = w.abs().amax(dim=1, keepdim=True)
    q = torch.round(w * torch.where(m > 0, 127 / m, torch.zeros_like(m))).clamp(-127, 127).to(torch.int8)
    return q, m.squeeze(1) / 127


def _quantize_eps(w):
    s = w.abs().amax(dim=1).clamp(min=1e-12) / 127
    return torch.round(w / s[:, None]).clamp(-127, 127).to(torch.int8), s


def _quantize_rowwise(w):
    qs, ss = [], []
    for row in w:
        s = row.abs().max() / 127
        qs.append(torch.zeros_like(row, dtype=torch.int8) if s == 0 else torch.round(row / s).clamp(-127, 127)
                  .to(torch.int8))
        ss.append(s)
    return torch.stack(qs), torch.stack(ss)


def _dequantize_unsqueeze(q, scales):
    return q.to(torch.float32) * scales.unsqueeze(1)


def _dequantize_diag(q, scales):
    return torch.diag(scales.float()) @ q.float()


def _accept_cumprod(proposed, picks):
    a = int((proposed == picks[:-1]).int().cumprod(0).sum())
    return picks[:a + 1]


def _accept_argmin(proposed, picks):
    """The index of the first mismatch, k if none, via a sentinel."""
    wrong = torch.cat([proposed != picks[:-1], torch.tensor([True])])
    a = int(wrong.int().argmax())
    return torch.cat([proposed[:a], picks[a:a + 1]])


def _kd_kl_div(student_logits, teacher_logits, temperature):
    T = temperature
    return F.kl_div(F.log_softmax(student_logits / T, -1), F.softmax(teacher_logits / T, -1),
                    reduction="batchmean") * T ** 2


def _kd_cross_entropy(student_logits, teacher_logits, temperature):
    """KL = cross-entropy with soft targets minus the teacher's entropy."""
    T = temperature
    p = F.softmax(teacher_logits / T, -1)
    ce = F.cross_entropy(student_logits / T, p)
    entropy = -(p * F.log_softmax(teacher_logits / T, -1)).sum(-1).mean()
    return (ce - entropy) * T * T


@pytest.mark.parametrize("check,fn", [
    ("check_all_reduce_mean", _all_reduce("ok")),
    ("check_all_reduce_mean", _all_reduce_loop),
    ("check_all_reduce_mean", _all_reduce_stack_mean),
    ("check_quantize_int8", _quantize("ok")),
    ("check_quantize_int8", _quantize_reciprocal),
    ("check_quantize_int8", _quantize_eps),
    ("check_quantize_int8", _quantize_rowwise),
    ("check_dequantize_int8", _dequantize("ok")),
    ("check_dequantize_int8", _dequantize_unsqueeze),
    ("check_dequantize_int8", _dequantize_diag),
    ("check_greedy_accept", _accept("ok")),
    ("check_greedy_accept", _accept_cumprod),
    ("check_greedy_accept", _accept_argmin),
    ("check_kd_loss", _kd("ok")),
    ("check_kd_loss", _kd_kl_div),
    ("check_kd_loss", _kd_cross_entropy),
], ids=["all-reduce", "all-reduce-loop", "all-reduce-stack-mean-tuple", "int8", "int8-reciprocal", "int8-eps-clamp",
        "int8-row-loop", "dequant", "dequant-unsqueeze", "dequant-diag-matmul", "accept", "accept-cumprod",
        "accept-argmax-sentinel", "kd", "kd-kl-div-probs-target", "kd-soft-cross-entropy"])
def test_ch16_other_correct_answers_pass(check, fn, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch16, check)(fn)
    assert result.passed, result.report()


def test_ch16_the_checks_own_versions_equal_the_package():
    """The written-out versions the checks diagnose with, unchanged, equal the package
    (minillm.weight_only, minillm.speculative, minillm.distill) and DDP's all-reduce: a mistake is
    named only when it really is that mistake."""
    from minillm.distill import kd_loss
    from minillm.speculative import greedy_accept
    from minillm.weight_only import dequantize_int8, quantize_int8

    g = torch.Generator().manual_seed(0)
    grads = [[torch.randn(3, 2, generator=g), torch.randn(4, generator=g)] for _ in range(3)]
    for got in (ch16._all_reduce_variant(grads), ch16._ref_all_reduce_mean(grads)):
        for p in range(2):
            torch.testing.assert_close(got[p], sum(rank[p] for rank in grads) / 3)

    w = torch.randn(5, 7, generator=g) * torch.tensor([0.1, 1.0, 0.0, 3.0, 0.01])[:, None]
    q_pkg, s_pkg = quantize_int8(w)
    q, s = ch16._quantize_variant(w)
    assert q.dtype == torch.int8 and torch.equal(q, q_pkg) and torch.equal(s, s_pkg)
    torch.testing.assert_close(ch16._ref_dequantize_int8(q_pkg, s_pkg), dequantize_int8(q_pkg, s_pkg))

    for proposed, picks in [([5, 9, 2, 7], [5, 9, 4, 7, 3]), ([1, 2], [1, 2, 3]), ([4], [3, 4])]:
        proposed, picks = torch.tensor(proposed), torch.tensor(picks)
        a = ch16._leading(proposed, picks[:-1])
        assert torch.equal(picks[:a + 1], greedy_accept(proposed, picks))

    s, t = torch.randn(4, 9, generator=g) * 3, torch.randn(4, 9, generator=g) * 3
    for T in (0.5, 1.0, 2.0, 4.0):
        torch.testing.assert_close(ch16._kd_variant(s, t, T), kd_loss(s, t, T), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ch16._ref_kd_loss(s, t, T), kd_loss(s, t, T))
        want = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                        reduction="batchmean") * T ** 2
        torch.testing.assert_close(kd_loss(s, t, T), want, atol=1e-6, rtol=1e-5)


def test_ch16_the_mean_of_the_ranks_gradients_is_the_full_batch_gradient():
    """What exercise 1 shows: two copies of a model on the two halves of a batch, their gradients
    averaged by the check's reference, equal one model's gradient on the whole batch."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    replicas = [copy.deepcopy(model) for _ in range(2)]
    per_rank = []
    for replica, half in zip(replicas, (slice(0, 4), slice(4, 8))):
        F.mse_loss(replica(x[half]), y[half]).backward()
        per_rank.append([p.grad for p in replica.parameters()])
    F.mse_loss(model(x), y).backward()
    for got, p in zip(ch16._ref_all_reduce_mean(per_rank), model.parameters()):
        torch.testing.assert_close(got, p.grad)


def test_ch16_checks_leave_the_global_random_state_alone(monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert ch16.check_all_reduce_mean(_all_reduce("ok")).passed
    assert ch16.check_quantize_int8(_quantize("ok")).passed
    assert ch16.check_dequantize_int8(_dequantize("ok")).passed
    assert ch16.check_greedy_accept(_accept("ok")).passed
    assert ch16.check_kd_loss(_kd("ok")).passed
    assert torch.equal(torch.get_rng_state(), state)
