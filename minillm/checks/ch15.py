"""Checks for chapter 15's exercises (alignment): the labels of supervised fine-tuning (only the
assistant's reply is learned), the Bradley–Terry loss of a reward model, DPO's loss of each
preference pair, generalised advantage estimation for PPO, and GRPO's group-normalised advantages.

Each check compares the learner's function with the package (``minillm.sft.build_example``,
``minillm.preference.bradley_terry_loss`` and ``dpo_loss``, ``minillm.rl.gae`` and
``grpo_advantages``, which follow Hugging Face TRL) and, where the answer is wrong, recomputes the
usual mistakes on the same inputs (labels shifted by one, the prompt learned, the end marker
forgotten, 0 for -100, chosen and rejected swapped, −log σ that overflows, β outside the log-sigmoid,
the reference model forgotten, a forward recursion, λ or the bootstrap value missing, the mask that
does not restart the recursion, a batch-wide or biased standard deviation, groups taken by stride...)
to say which one it is.

The checks draw their inputs from their own seeded generators and build no module, so a learner's
seeded notebook draws the same numbers before and after a check.

Shape letters: B batch (pairs, responses or prompts), T response tokens, G group size (responses per
prompt).
"""

from __future__ import annotations

import numbers
import re
from typing import Any

import torch
import torch.nn.functional as F

from . import Case, CheckResult, compare, run_check
from .ch10 import _integer_result, _Recorder
from .ch11 import _diagnose, _dtype_name, _Variants
from .ch14 import _non_finite

IGNORE_INDEX = -100
IM_START, IM_END = 256, 257  # the toy tokenizer's special tokens


def _toy_encode(text: str) -> list[int]:
    """A byte-level tokenizer: one id per UTF-8 byte (0–255), and the ChatML markers ``<|im_start|>``
    and ``<|im_end|>`` as the special tokens 256 and 257 (one token each, as in SmolLM2's vocabulary)."""
    ids: list[int] = []
    for part in re.split(r"(<\|im_start\|>|<\|im_end\|>)", text):
        if part == "<|im_start|>":
            ids.append(IM_START)
        elif part == "<|im_end|>":
            ids.append(IM_END)
        else:
            ids.extend(part.encode("utf-8"))
    return ids


def _scalar_message(expected: torch.Tensor, got: Any, what: str) -> str | None:
    """A sentence if ``got`` is not a 0-dim tensor like ``expected`` (a loss)."""
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        return (f"expected a tensor, got the Python number {got!r}: return the tensor (the loss must carry the "
                f"gradient back to the model), not .item()")
    if isinstance(got, torch.Tensor) and got.dim() == 1 and got.numel() > 1:
        return (f"expected a single number (a 0-dim tensor), {what}; got shape {tuple(got.shape)}, one loss per "
                f"pair: take the .mean() over the pairs")
    if isinstance(got, torch.Tensor) and got.dim() > 0 and got.numel() == 1:
        return (f"expected a 0-dim tensor (shape ()), {what}; got shape {tuple(got.shape)}: reduce with .mean() "
                f"over the pairs, without keepdim")
    if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype != expected.dtype:
        return f"expected dtype {_dtype_name(expected.dtype)} like the rewards, got {_dtype_name(got.dtype)}"
    return None


def _compare_or_diagnose(expected: torch.Tensor, got: Any, path: str, variants) -> str | None:
    """None when ``got`` equals ``expected`` (1e-5); else the difference, led by the known mistake
    (from ``variants()``, built only on failure) that reproduces ``got``, if one does."""
    msg = compare(expected, got, atol=1e-5, rtol=1e-5, path=path)
    if msg is None:
        return None
    why = _diagnose(got, variants(), 1e-5)
    return f"{why} ({msg})" if why else msg


def _not_a_pair(got: Any, names: str) -> str | None:
    """A sentence if ``got`` (a learner's result, lists turned into tuples) is not a 2-tuple."""
    if isinstance(got, tuple) and len(got) == 2:
        return None
    what = f"a {type(got).__name__}" + (f" of length {len(got)}" if isinstance(got, tuple) else "")
    return f"expected a pair ({names}), got {what}"


# ----------------------------------------------------------------------------- 1. SFT labels

def _ref_response_only_labels(messages: list[dict], encode) -> tuple[torch.Tensor, torch.Tensor]:
    """``minillm.sft.build_example`` with the ChatML template: (input_ids (T,), labels (T,))."""
    from ..sft import build_example

    ex = build_example(messages, encode)
    return torch.tensor(ex.input_ids), torch.tensor(ex.labels)


def _labels_variant(messages, encode, *, learn_prompt=False, end=True, prefix=False, fill=IGNORE_INDEX,
                    invert=False, last_only=False, all_ends=False, shift=None) -> torch.Tensor:
    """The labels written out (each turn: prefix, content, end marker), with one thing changed."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    ids: list[int] = []
    labels: list[int] = []
    for i, m in enumerate(messages):
        reply = m["role"] == "assistant" and (i == last or not last_only)
        pieces = [(f"<|im_start|>{m['role']}\n", reply and prefix), (m["content"], reply),
                  ("<|im_end|>\n", (reply and end) or all_ends)]
        for text, learn in pieces:
            piece = list(encode(text))
            learn = (not learn) if invert else learn
            ids += piece
            labels += piece if (learn or learn_prompt) else [fill] * len(piece)
    if shift == "left":  # labels[t] = the label of token t + 1
        labels = labels[1:] + [fill]
    elif shift == "right":
        labels = [fill] + labels[:-1]
    elif shift == "ids":  # labels[t] = input_ids[t + 1] where t is learned
        labels = [ids[t + 1] if t + 1 < len(ids) and lab != fill else fill for t, lab in enumerate(labels)]
    return torch.tensor(labels)


def _labels_variants(messages, encode) -> _Variants:
    v = lambda **kw: lambda: _labels_variant(messages, encode, **kw)  # noqa: E731
    shifted = ("the labels are shifted by one: labels[t] must be input_ids[t] (or -100) at the same position — "
               "the loss shifts them itself (the logits at t are scored against labels[t + 1])")
    zero = ("the prompt's labels are 0, a real token id: the loss would train the model to predict token 0 there — "
            "use -100, the index cross-entropy ignores")
    return [
        ("the prompt is learned too (labels = input_ids everywhere): every token of the system and user turns and "
         "of the turn prefixes gets -100 — the model learns to answer, not to write the user's questions",
         v(learn_prompt=True)),
        ("the assistant's end marker '<|im_end|>\\n' got -100: learn it with the reply — it is how the model learns "
         "to stop", v(end=False)),
        ("the assistant's turn prefix '<|im_start|>assistant\\n' is learned: it belongs to the prompt (the template "
         "writes it at inference, add_generation_prompt=True) — only the content and its end marker are learned",
         v(prefix=True)),
        ("the assistant's turn prefix is learned and its end marker is not: learn the content and '<|im_end|>\\n', "
         "not '<|im_start|>assistant\\n'", v(prefix=True, end=False)),
        (zero, v(fill=0)),
        (zero, v(fill=0, end=False)),
        ("the response is masked instead of the prompt: the assistant's content and end marker keep their ids, "
         "everything else gets -100", v(invert=True)),
        ("the response is masked instead of the prompt: the assistant's content and end marker keep their ids, "
         "everything else gets -100", v(invert=True, end=False)),
        ("only the last assistant turn is learned: every assistant turn's content and end marker are learned (the "
         "earlier replies are good answers too)", v(last_only=True)),
        ("the end markers of the system and user turns are learned too: they belong to the prompt — only the "
         "assistant's '<|im_end|>\\n' is learned", v(all_ends=True)),
        (shifted, v(shift="left")),
        (shifted, v(shift="right")),
        (shifted, v(shift="ids")),
    ]


def _as_ids(value: Any, what: str) -> tuple[torch.Tensor | None, str | None]:
    """A list of ints or a 1-D integer tensor as a tensor, or a sentence saying why it is not one."""
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list):
        bad = next((x for x in value if not isinstance(x, numbers.Integral) or isinstance(x, bool)), None)
        if bad is not None:
            why = f"{what}: expected a list of int token ids, found {type(bad).__name__} {bad!r}"
            if isinstance(bad, (list, tuple)):
                why += " (a list of lists? add each piece's ids with +=, or ids.extend(piece))"
            return None, why
        return torch.tensor([int(x) for x in value], dtype=torch.long), None
    if isinstance(value, torch.Tensor):
        msg = _integer_result(value, what)
        if msg:
            return None, msg
        if value.dim() != 1:
            return None, f"{what}: expected one token id per position (1-D), got shape {tuple(value.shape)}"
        return value, None
    return None, f"{what}: expected a list of ints (or a 1-D tensor), got {type(value).__name__}"


def check_response_only_labels(fn) -> CheckResult:
    """``fn(messages, encode)`` → ``(input_ids, labels)``, two lists of ints (or 1-D long tensors) of
    the same length: the ChatML conversation tokenized piece by piece (each turn is
    ``encode("<|im_start|>" + role + "\\n")``, ``encode(content)``, ``encode("<|im_end|>\\n")``), with
    labels equal to the token ids on every assistant turn's content and end marker and -100 everywhere
    else — ``minillm.sft.build_example`` (TRL's ``assistant_only_loss``)."""
    user = lambda text: {"role": "user", "content": text}  # noqa: E731
    reply = lambda text: {"role": "assistant", "content": text}  # noqa: E731
    system = lambda text: {"role": "system", "content": text}  # noqa: E731
    cases = [
        Case(([user("Translate to French: cheese"), reply("fromage")], _toy_encode),
             description="one user turn, one reply"),
        Case(([system("Answer with one number."), user("2 + 2?"), reply("4")], _toy_encode),
             description="a system turn first: it is prompt too"),
        Case(([user("Name a colour."), reply("Blue."), user("Another one?"), reply("Green.")], _toy_encode),
             description="two rounds: both replies are learned"),
        Case(([user("把“cheese”翻译成中文。"), reply("奶酪")], _toy_encode),
             description="Chinese: several byte tokens per character"),
        Case(([system("Be brief."), user("List two fruits."), reply("- apple\n- pear"), user("Thanks!"),
               reply("You're welcome.")], _toy_encode),
             description="a reply over two lines, then a second round"),
    ]
    ref = _Recorder(_ref_response_only_labels)

    def cmp(expected, got, **kw):
        got = tuple(got) if isinstance(got, list) else got
        if (why := _not_a_pair(got, "input_ids, labels")):
            return why
        ids, why = _as_ids(got[0], "input_ids")
        if why:
            return why
        labels, why = _as_ids(got[1], "labels")
        if why:
            return why
        exp_ids, exp_labels = expected
        msg = compare(exp_ids, ids, path="input_ids")
        if msg:
            return (f"{msg}: each turn is encode('<|im_start|>' + role + '\\n') + encode(content) + "
                    f"encode('<|im_end|>\\n'), the turns one after the other")
        if labels.numel() == ids.numel() - 1:
            return (f"labels: expected {ids.numel()} labels, one per token of input_ids, got {labels.numel()}: "
                    f"don't shift them — the loss shifts them itself (the logits at t predict labels[t + 1])")
        msg = compare(exp_labels, labels, path="labels")
        if msg is None:
            return None
        why = _diagnose(labels, _labels_variants(*ref.args), 0, 0)
        return f"{why} ({msg})" if why else msg

    return run_check("response_only_labels", fn, ref, cases, compare_fn=cmp,
                     hint="for each turn add three pieces: encode('<|im_start|>' + role + '\\n') (labels -100), "
                          "encode(content) and encode('<|im_end|>\\n') (labels = the ids if the role is "
                          "'assistant', else -100)")


# ----------------------------------------------------------------------------- 2. Bradley–Terry

def _ref_bradley_terry_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    from ..preference import bradley_terry_loss

    return bradley_terry_loss(chosen_rewards, rejected_rewards)


def _bt_variant(chosen, rejected, *, kind="ok"):
    """The Bradley–Terry loss written out, with one thing changed."""
    d = chosen - rejected
    return {
        "ok": lambda: -F.logsigmoid(d).mean(),
        "swapped": lambda: -F.logsigmoid(-d).mean(),
        "no minus": lambda: F.logsigmoid(d).mean(),
        "sum": lambda: -F.logsigmoid(d).sum(),
        "hinge 1": lambda: F.relu(1 - d).mean(),
        "hinge 0": lambda: F.relu(-d).mean(),
        "probability": lambda: (1 - torch.sigmoid(d)).mean(),
        "minus probability": lambda: -torch.sigmoid(d).mean(),
        "pointwise": lambda: -(F.logsigmoid(chosen) + F.logsigmoid(-rejected)).mean(),
        "means first": lambda: -F.logsigmoid(chosen.mean() - rejected.mean()),
    }[kind]()


def _bt_variants(chosen, rejected) -> _Variants:
    v = lambda kind: lambda: _bt_variant(chosen, rejected, kind=kind)  # noqa: E731
    hinge = ("this is a hinge (margin ranking) loss max(0, m − (r_c − r_r)); Bradley–Terry's is −log σ(r_c − r_r): "
             "smooth, and it keeps pushing pairs that are already ordered, less and less")
    prob = ("the loss is −log σ(r_c − r_r), the negative log-likelihood of the preference — not 1 − σ or −σ, the "
            "probability itself")
    return [
        ("chosen and rejected are swapped: the loss is −log σ(r_c − r_r), chosen minus rejected — this version "
         "trains the reward model to prefer the rejected answers", v("swapped")),
        ("the minus sign is missing: log σ(r_c − r_r) is the log-likelihood, which is maximised — the loss to "
         "minimise is −log σ(r_c − r_r)", v("no minus")),
        ("the losses of the pairs were added up: take the mean over the pairs (.mean()), so that the loss does not "
         "grow with the batch size", v("sum")),
        (hinge, v("hinge 1")),
        (hinge, v("hinge 0")),
        (prob, v("probability")),
        (prob, v("minus probability")),
        ("each reward was scored on its own (r_c as 'good', r_r as 'bad'): Bradley–Terry depends only on the "
         "difference r_c − r_r — adding the same number to both rewards changes nothing", v("pointwise")),
        ("the rewards were averaged before the loss: the loss is the mean over the pairs of −log σ(r_c − r_r), "
         "each pair's difference on its own", v("means first")),
    ]


def check_bradley_terry_loss(fn) -> CheckResult:
    """``fn(chosen_rewards, rejected_rewards)`` → a 0-dim tensor: the mean over the pairs (B,) of
    −log σ(r_c − r_r), finite for any difference and in the rewards' dtype —
    ``minillm.preference.bradley_terry_loss`` (TRL's ``RewardTrainer`` loss)."""
    g = torch.Generator().manual_seed(150)
    cases = [
        Case((torch.randn(4, generator=g), torch.randn(4, generator=g)), description="four pairs"),
        Case((torch.tensor([0.3]), torch.tensor([1.2])), description="one pair, the rejected answer scored higher"),
        Case((torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.5, -1.0, 2.0])),
             description="equal rewards: every pair's loss is log 2"),
        Case((torch.randn(6, generator=g).double() * 3, torch.randn(6, generator=g).double() * 3),
             description="float64, six pairs: the loss stays float64"),
        Case((torch.tensor([-100.0, 100.0, 5.0, -20.0]), torch.tensor([100.0, -100.0, 3.0, 10.0])),
             description="r_c − r_r = −200 and +200 in float32: σ(−200) underflows to 0 and −log σ would be inf"),
    ]
    ref = _Recorder(_ref_bradley_terry_loss)

    def cmp(expected, got, **kw):
        msg = _scalar_message(expected, got, "the mean loss over the pairs")
        if msg:
            return msg
        if isinstance(got, torch.Tensor) and got.is_floating_point() and not bool(torch.isfinite(got).all()):
            return (f"got {float(got.reshape(-1)[0])} where a finite loss was expected: −log(σ(d)) overflows for "
                    f"a large negative d = r_c − r_r — σ(−200) underflows to 0 in float32 and log(0) = −inf; use "
                    f"F.logsigmoid(d), which computes log σ(d) without forming σ(d)")
        return _compare_or_diagnose(expected, got, "loss", lambda: _bt_variants(*ref.args))

    return run_check("bradley_terry_loss", fn, ref, cases, compare_fn=cmp,
                     hint="d = chosen_rewards - rejected_rewards; return -F.logsigmoid(d).mean()")


# ----------------------------------------------------------------------------- 3. DPO

def _ref_dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
                  beta):
    from ..preference import dpo_loss

    return dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                    reference_rejected_logps, beta)[0]


def _dpo_variant(pc, pr, rc, rr, beta, *, h="ok", where="inside", sign=-1.0, reduce=None):
    """The DPO loss of each pair written out, with one thing changed."""
    hs = {"ok": (pc - rc) - (pr - rr),
          "flipped": (rc - pc) - (rr - pr),
          "no reference": pc - pr,
          "reference added": (pc - pr) + (rc - rr),
          "rejected ratio added": (pc - rc) + (pr - rr),
          "chosen ratio reversed": (rc - pc) - (pr - rr)}
    x = hs[h]
    if where == "inside":
        losses = sign * F.logsigmoid(beta * x)
    elif where == "outside":
        losses = sign * beta * F.logsigmoid(x)
    else:  # no beta
        losses = sign * F.logsigmoid(x)
    return {None: losses, "mean": losses.mean(), "sum": losses.sum()}[reduce]


def _dpo_variants(pc, pr, rc, rr, beta) -> _Variants:
    v = lambda **kw: lambda: _dpo_variant(pc, pr, rc, rr, beta, **kw)  # noqa: E731
    flipped = ("the sign of h is flipped — chosen and rejected were swapped, or the log-ratios were taken as "
               "log π_ref − log π: h = (log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))")
    return [
        ("β is missing: the loss is −log σ(β·h) — β scales the implicit reward β·log(π/π_ref) (β = 0.1 is common)",
         v(where="none")),
        ("β is applied outside the log-sigmoid, −β·log σ(h): it goes inside, −log σ(β·h) — β sets how sharply the "
         "preference is enforced, not the size of the loss", v(where="outside")),
        (flipped, v(h="flipped")),
        (flipped, v(h="flipped", where="none")),
        ("the reference model is missing: h = log π(y_c) − log π(y_r) alone rewards any gap between the answers; "
         "DPO compares each answer's log-ratio to the reference, (log π(y_c) − log π_ref(y_c)) − (log π(y_r) − "
         "log π_ref(y_r))", v(h="no reference")),
        ("the reference's margin was added: h = (log π(y_c) − log π(y_r)) − (log π_ref(y_c) − log π_ref(y_r)) — "
         "subtract it", v(h="reference added")),
        ("the rejected answer's log-ratio was added: h = chosen log-ratio − rejected log-ratio, "
         "(log π(y_c) − log π_ref(y_c)) − (log π(y_r) − log π_ref(y_r))", v(h="rejected ratio added")),
        ("the chosen answer's log-ratio is reversed: it is log π(y_c) − log π_ref(y_c), policy minus reference",
         v(h="chosen ratio reversed")),
        ("the minus sign is missing: the loss is −log σ(β·h) (log σ is the log-likelihood, to be maximised)",
         v(sign=1.0)),
    ]


def check_dpo_loss(fn) -> CheckResult:
    """``fn(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps,
    beta)`` → the loss of each pair (B,), −log σ(β·h) with h = (log π(y_c) − log π_ref(y_c)) −
    (log π(y_r) − log π_ref(y_r)), finite for any h and in the inputs' dtype — the first output of
    ``minillm.preference.dpo_loss`` (TRL's ``DPOTrainer``, ``loss_type="sigmoid"``)."""
    g = torch.Generator().manual_seed(151)

    def logps(B, scale=1.0, dtype=torch.float32):
        """Summed log-probabilities of the policy and the reference (B,) each, chosen and rejected."""
        ref_c = -torch.rand(B, generator=g) * 60 - 20  # responses of 20–80 tokens' worth of log-probability
        ref_r = -torch.rand(B, generator=g) * 60 - 20
        pol_c = ref_c + torch.randn(B, generator=g) * 2 * scale
        pol_r = ref_r + torch.randn(B, generator=g) * 3 * scale
        return tuple(t.to(dtype) for t in (pol_c, pol_r, ref_c, ref_r))

    same = logps(3)
    cases = [
        Case(logps(4) + (0.1,), description="four pairs, β = 0.1"),
        Case(logps(3) + (0.5,), description="β = 0.5"),
        Case((same[2], same[3], same[2], same[3], 0.1),
             description="the policy still equals the reference (the first step): every loss is log 2"),
        Case(logps(5, dtype=torch.float64) + (0.2,),
             description="float64, five pairs, β = 0.2: the losses stay float64"),
        Case((torch.tensor([-150.0, -30.0]), torch.tensor([-10.0, -40.0]), torch.tensor([-10.0, -35.0]),
              torch.tensor([-10.0, -38.0]), 1.0),
             description="β·h = −140 in float32: σ(−140) underflows to 0 and −log σ would be inf"),
    ]
    ref = _Recorder(_ref_dpo_loss)

    def cmp(expected, got, **kw):
        B = expected.size(0)
        if isinstance(got, (tuple, list)):
            n = len(got)
            first = got[0] if n else None
            if isinstance(first, torch.Tensor) and compare(expected, first, atol=1e-5, rtol=1e-5) is None:
                return (f"expected the losses (B,), got a {type(got).__name__} of {n}: return only the losses (the "
                        f"package's dpo_loss also returns the implicit rewards)")
            return f"expected the losses, a tensor of shape ({B},), got a {type(got).__name__} of {n}"
        if isinstance(got, torch.Tensor) and got.dim() == 0:
            why = _diagnose(got, [("mean", lambda: _dpo_variant(*ref.args, reduce="mean")),
                                  ("sum", lambda: _dpo_variant(*ref.args, reduce="sum"))], 1e-5)
            what = f"their {why}" if why else "a scalar"
            return (f"expected the loss of each pair, shape ({B},), got {what}: return one loss per pair (the "
                    f"trainer takes the mean)")
        if isinstance(got, torch.Tensor) and got.shape == expected.shape and got.dtype != expected.dtype:
            return (f"expected dtype {_dtype_name(expected.dtype)} like the log-probabilities, got "
                    f"{_dtype_name(got.dtype)}")
        msg = _non_finite(expected, got, "losses", "−log(σ(β·h)) overflows for a large negative β·h: σ(−140) "
                          "underflows to 0 in float32 and log(0) = −inf; use -F.logsigmoid(beta * h)")
        if msg:
            return msg
        return _compare_or_diagnose(expected, got, "losses", lambda: _dpo_variants(*ref.args))

    return run_check("dpo_loss", fn, ref, cases, compare_fn=cmp,
                     hint="h = (policy_chosen_logps - reference_chosen_logps) - (policy_rejected_logps - "
                          "reference_rejected_logps); return -F.logsigmoid(beta * h)")


# ----------------------------------------------------------------------------- 4. GAE

def _ref_gae(rewards, values, mask, gamma, lam):
    from ..rl import gae

    return gae(rewards, values, mask, gamma=gamma, lam=lam)


def _gae_variant(rewards, values, mask, gamma, lam, *, bootstrap=True, backward=True, lam_on=True, gamma_on=True,
                 gamma_in_delta=True, mask_mode="restart", returns="masked", delta="ok"):
    """GAE written out (the package's recursion), with one thing changed. ``mask_mode``: "restart"
    (right), "ignored" (no mask anywhere), "masked after" (the recursion runs over the padding, the
    result is masked afterwards), "bootstrap leaks" (V_{t+1} read at a padding position)."""
    B, T = rewards.shape
    m = mask.to(rewards.dtype)
    m_loop = torch.ones_like(m) if mask_mode in ("ignored", "masked after") else m
    m_next = torch.ones_like(m) if mask_mode == "bootstrap leaks" else m_loop
    coef = (gamma if gamma_on else 1.0) * (lam if lam_on else 1.0)
    g_delta = gamma if gamma_in_delta else 1.0
    zero = torch.zeros_like(rewards[:, 0])
    adv = torch.zeros_like(rewards)
    carried = zero  # A_{t+1} going backwards (A_{t-1} going forwards)
    for t in (reversed(range(T)) if backward else range(T)):
        nxt_v = values[:, t + 1] * m_next[:, t + 1] if t + 1 < T and bootstrap else zero  # V_{t+1}
        if delta == "plus":
            d = rewards[:, t] + g_delta * nxt_v + values[:, t]
        elif delta == "swapped":
            d = rewards[:, t] + g_delta * values[:, t] - nxt_v
        else:
            d = rewards[:, t] + g_delta * nxt_v - values[:, t]
        adv[:, t] = carried = (d + coef * carried) * m_loop[:, t]
    if mask_mode == "masked after":
        adv = adv * m
    ret = {"masked": adv + values * (1 if mask_mode == "ignored" else m), "unmasked": adv + values,
           "advantages": adv.clone()}[returns]
    return adv, ret


def _gae_variants(rewards, values, mask, gamma, lam) -> _Variants:
    v = lambda **kw: lambda: _gae_variant(rewards, values, mask, gamma, lam, **kw)  # noqa: E731
    restart = ("the recursion does not restart at the end of a response: past the last real token (mask 0) there "
               "is nothing — the value after the end is 0 and so is A_{t+1}, and the advantages and returns there "
               "are 0; multiply by the mask inside the loop")
    return [
        ("the bootstrap from the next value is missing: δ_t = r_t + γ·V_{t+1} − V_t (V after the last real token "
         "is 0)", v(bootstrap=False)),
        ("the recursion ran forwards: A_t = δ_t + γλ·A_{t+1} depends on the *next* advantage, so loop backwards, "
         "for t in reversed(range(T))", v(backward=False)),
        ("λ is missing from the recursion: A_t = δ_t + γλ·A_{t+1} (with only γ it is the Monte-Carlo advantage, "
         "λ = 1)", v(lam_on=False)),
        ("γ is missing from the recursion: A_t = δ_t + γλ·A_{t+1}, the product of both", v(gamma_on=False)),
        ("γ is missing from δ: δ_t = r_t + γ·V_{t+1} − V_t", v(gamma_in_delta=False)),
        ("δ at the last real token bootstrapped from the value of a padding position: the episode ends there, "
         "so V after the end is 0 — use values[:, t + 1] * mask[:, t + 1]", v(mask_mode="bootstrap leaks")),
        (restart, v(mask_mode="ignored")),
        (restart, v(mask_mode="masked after")),
        ("returns = advantages: the returns are the value model's targets, advantages + values",
         v(returns="advantages")),
        ("the returns past the end are not 0: returns = advantages + values * mask (the padding's values are "
         "garbage)", v(returns="unmasked")),
        ("δ adds the current value: δ_t = r_t + γ·V_{t+1} − V_t (the advantage is how much better than expected, "
         "so V_t is subtracted)", v(delta="plus")),
        ("V_t and V_{t+1} are swapped in δ: δ_t = r_t + γ·V_{t+1} − V_t", v(delta="swapped")),
    ]


def check_gae(fn) -> CheckResult:
    """``fn(rewards, values, mask, gamma, lam)`` → ``(advantages, returns)``, both (B, T) like rewards:
    the backward recursion δ_t = r_t + γ·V_{t+1} − V_t, A_t = δ_t + γλ·A_{t+1}, with V and A after the
    last real token (mask 0) equal to 0 and returns = advantages + values on real tokens, 0 past the
    end — ``minillm.rl.gae`` (TRL's PPO)."""
    g = torch.Generator().manual_seed(152)

    def case(B, T, lengths, gamma, lam, description, *, dtype=torch.float32, mask_dtype=torch.float32,
             rlhf=False):
        mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None])
        values = torch.randn(B, T, generator=g)  # past the end: whatever the value head says
        if rlhf:  # −β·KL at every token, the score at the last real token
            rewards = -0.05 * torch.rand(B, T, generator=g) * mask
            rewards[torch.arange(B), torch.tensor(lengths) - 1] += torch.randn(B, generator=g) * 2
        else:
            rewards = torch.randn(B, T, generator=g) * mask
        return Case((rewards.to(dtype), values.to(dtype), mask.to(mask_dtype), gamma, lam), description=description)

    cases = [
        case(2, 5, [5, 5], 1.0, 0.95, "no padding, γ = 1, λ = 0.95"),
        case(3, 6, [6, 4, 2], 0.99, 0.95, "right padding: rows end after 6, 4 and 2 tokens; the values past the end "
             "are the value head's garbage"),
        case(2, 4, [4, 4], 0.9, 1.0, "λ = 1: the advantage is the discounted reward-to-go minus V_t"),
        case(3, 5, [5, 3, 1], 0.9, 0.0, "λ = 0: the advantage is the one-step TD error δ_t; a bool mask",
             mask_dtype=torch.bool),
        case(2, 7, [7, 5], 1.0, 0.9, "RLHF's rewards (−β·KL at every token, the score at the last one), float64",
             dtype=torch.float64, rlhf=True),
    ]
    ref = _Recorder(_ref_gae)

    def cmp(expected, got, **kw):
        got = tuple(got) if isinstance(got, list) else got
        if (why := _not_a_pair(got, "advantages, returns")):
            return why
        for name, e, t in zip(("advantages", "returns"), expected, got):
            if isinstance(t, torch.Tensor) and t.shape == e.shape and t.dtype != e.dtype:
                return f"{name}: expected dtype {_dtype_name(e.dtype)} like rewards, got {_dtype_name(t.dtype)}"
        msg = compare(expected, tuple(got), atol=1e-5, rtol=1e-5, path="result")
        if msg is None:
            return None
        msg = msg.replace("result[0]", "advantages").replace("result[1]", "returns")
        why = _diagnose(tuple(got), _gae_variants(*ref.args), 1e-5)
        return f"{why} ({msg})" if why else msg

    return run_check("gae", fn, ref, cases, compare_fn=cmp,
                     hint="loop t from T-1 down to 0 with next_value and next_adv (0 at the start): delta = "
                          "rewards[:, t] + gamma * next_value - values[:, t]; adv = (delta + gamma * lam * next_adv) "
                          "* mask[:, t]; next_value = values[:, t] * mask[:, t]; returns = advantages + values * mask")


# ----------------------------------------------------------------------------- 5. GRPO advantages

def _ref_grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    from ..rl import grpo_advantages

    return grpo_advantages(rewards, group_size)


def _grpo_variant(rewards, G, *, groups="consecutive", unbiased=True, eps=1e-4, scale=True, center=True,
                  std_scope="group"):
    """GRPO's advantages written out, with one thing changed."""
    if groups == "batch":
        grouped = rewards.view(1, -1)
    elif groups == "stride":  # rewards.view(G, -1): column j holds responses j, j + B, j + 2B, ...
        grouped = rewards.view(G, -1).T
    elif groups == "size B":
        grouped = rewards.view(G, -1)
    else:
        grouped = rewards.view(-1, G)  # (B, G)
    adv = grouped - grouped.mean(dim=1, keepdim=True) if center else grouped
    if scale:
        c = 1 if unbiased else 0
        std = rewards.std(correction=c) if std_scope == "batch" else grouped.std(dim=1, keepdim=True, correction=c)
        adv = adv / (std + eps)
    if groups == "stride":
        adv = adv.T
    return adv.reshape(-1)


def _grpo_variants(rewards, G) -> _Variants:
    v = lambda **kw: lambda: _grpo_variant(rewards, G, **kw)  # noqa: E731
    eps = ("the std is not offset by eps = 1e-4 (missing, or another value): divide by (std + 1e-4), TRL's — it also "
           "keeps a group whose rewards are all equal (std 0) from giving 0/0 = NaN")
    return [
        ("the mean and std were taken over the whole batch: each prompt's G responses are a group of their own — "
         "rewards.view(-1, G), then the mean and std along dim=1", v(groups="batch")),
        ("the groups were taken by stride (rewards.view(G, -1) puts responses j, j + B, j + 2B, … together): a "
         "group is G *consecutive* responses, rewards.view(-1, G)", v(groups="stride")),
        ("the groups have B responses instead of G: rewards.view(G, -1) is G rows of B — use rewards.view(-1, G), "
         "one row per prompt", v(groups="size B")),
        ("the std is the biased one (unbiased=False, divide by G): GRPO (TRL) uses torch's default, the unbiased "
         "std (divide by G − 1)", v(unbiased=False)),
        (eps, v(eps=0.0)),
        (eps, v(eps=1e-8)),
        (eps, v(eps=1e-6)),
        (eps, v(eps=1e-5)),
        ("the advantages are not divided by the group's std: that is Dr. GRPO's variant (scale=False) — here "
         "divide by (std + 1e-4)", v(scale=False)),
        ("the group mean is not subtracted: an advantage is the reward minus its group's mean, so that better-"
         "than-average answers get a positive advantage", v(center=False)),
        ("the mean is the group's but the std is the whole batch's: both are taken within each group",
         v(std_scope="batch")),
    ]


def check_grpo_advantages(fn) -> CheckResult:
    """``fn(rewards, group_size)`` → (B·G,): each reward minus the mean of its group (G consecutive
    responses to one prompt), divided by the group's unbiased std + 1e-4, in rewards' dtype —
    ``minillm.rl.grpo_advantages`` (TRL's ``GRPOTrainer``)."""
    g = torch.Generator().manual_seed(153)
    cases = [
        Case((torch.randn(8, generator=g), 4), description="2 prompts × 4 responses"),
        Case((torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]), 4),
             description="right (1) or wrong (0) answers; one group all right and one all wrong: their advantages "
                         "are 0"),
        Case((torch.randn(6, generator=g), 2), description="3 prompts × 2 responses"),
        Case((torch.cat([torch.randn(8, generator=g) + 10, torch.randn(8, generator=g) * 3 - 3]).double(), 8),
             description="float64, 2 prompts × 8 responses, one easy prompt (rewards near 10) and one hard"),
        Case((torch.rand(12, generator=g), 3), description="4 prompts × 3 responses, scores in [0, 1]"),
    ]
    ref = _Recorder(_ref_grpo_advantages)

    def cmp(expected, got, **kw):
        rewards, G = ref.args
        if isinstance(got, torch.Tensor):
            if got.dim() == 2 and got.numel() == expected.numel():
                return (f"expected shape (B·G,) = {tuple(expected.shape)} like rewards, got {tuple(got.shape)}: "
                        f"flatten the groups back with .reshape(-1)")
            if got.shape == expected.shape and got.dtype != expected.dtype:
                return f"expected dtype {_dtype_name(expected.dtype)} like rewards, got {_dtype_name(got.dtype)}"
            if got.shape == expected.shape and got.is_floating_point() and bool(got.isnan().any()):
                return (f"got NaN at {int(got.isnan().sum())} positions: a group whose rewards are all equal has "
                        f"std 0, and 0/0 = NaN — divide by (std + 1e-4); such a group's advantages are 0 (it "
                        f"teaches nothing)")
        return _compare_or_diagnose(expected, got, "advantages", lambda: _grpo_variants(rewards, G))

    return run_check("grpo_advantages", fn, ref, cases, compare_fn=cmp,
                     hint="grouped = rewards.view(-1, group_size) is (B, G); (grouped - grouped.mean(dim=1, "
                          "keepdim=True)) / (grouped.std(dim=1, keepdim=True) + 1e-4), then .reshape(-1)")


__all__ = ["check_bradley_terry_loss", "check_dpo_loss", "check_gae", "check_grpo_advantages",
           "check_response_only_labels"]
