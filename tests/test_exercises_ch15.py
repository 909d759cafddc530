"""Chapter 15's exercise checks (minillm.checks.ch15): each fails on the usual mistakes and says which
one it is, passes correct answers written differently from the reference, agrees with the package
(minillm.sft, minillm.preference, minillm.rl) and leaves the global random state alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minillm.checks import ch15


def _labels(kind):
    """SFT's labels as a learner might build them, with one mistake."""
    def response_only_labels(messages, encode):
        ids, labels = [], []
        fill = 0 if kind == "zero" else -100
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        for i, m in enumerate(messages):
            reply = m["role"] == "assistant" and (kind != "last only" or i == last)
            newline = "" if kind == "no newline" else "\n"
            pieces = [(encode(f"<|im_start|>{m['role']}{newline}"), reply and kind == "prefix"),
                      (encode(m["content"]), reply),
                      (encode("<|im_end|>\n"), (reply and kind != "no end") or kind == "all ends")]
            for piece, learn in pieces:
                if kind == "inverted":
                    learn = not learn
                ids += piece
                if kind == "nested":
                    labels.append(piece if learn else [fill] * len(piece))
                else:
                    labels += piece if (learn or kind == "prompt") else [fill] * len(piece)
        if kind == "shift":
            labels = labels[1:] + [-100]
        if kind == "drop first":
            labels = labels[1:]
        if kind == "float":
            return torch.tensor(ids), torch.tensor(labels, dtype=torch.float)
        if kind == "float list":
            return ids, [float(x) for x in labels]
        return ids, labels
    return response_only_labels


def _bt(kind):
    """The Bradley–Terry loss as a learner might write it, with one mistake."""
    def bradley_terry_loss(chosen_rewards, rejected_rewards):
        c, r = chosen_rewards, rejected_rewards
        d = c - r
        if kind == "swapped":
            return -F.logsigmoid(r - c).mean()
        if kind == "no minus":
            return F.logsigmoid(d).mean()
        if kind == "naive":
            return -torch.log(torch.sigmoid(d)).mean()
        if kind == "naive softplus":
            return torch.log(1 + torch.exp(-d)).mean()
        if kind == "sum":
            return -F.logsigmoid(d).sum()
        if kind == "hinge":
            return F.margin_ranking_loss(c, r, torch.ones_like(c), margin=1.0)
        if kind == "per pair":
            return -F.logsigmoid(d)
        if kind == "item":
            return (-F.logsigmoid(d).mean()).item()
        if kind == "float32":
            return -F.logsigmoid(d.float()).mean()
        if kind == "pointwise":
            return -(F.logsigmoid(c) + F.logsigmoid(-r)).mean()
        if kind == "probability":
            return (1 - torch.sigmoid(d)).mean()
        return -F.logsigmoid(d).mean()
    return bradley_terry_loss


def _dpo(kind):
    """DPO's per-pair loss as a learner might write it, with one mistake."""
    def dpo_loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
        pc, pr, rc, rr = policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps
        if kind == "swapped":
            pc, pr, rc, rr = pr, pc, rr, rc
        if kind == "ref minus policy":
            h = (rc - pc) - (rr - pr)
        elif kind == "no reference":
            h = pc - pr
        elif kind == "reference added":
            h = (pc - pr) + (rc - rr)
        elif kind == "rejected added":
            h = (pc - rc) + (pr - rr)
        else:
            h = (pc - rc) - (pr - rr)
        if kind == "no beta":
            losses = -F.logsigmoid(h)
        elif kind == "beta outside":
            losses = -beta * F.logsigmoid(h)
        elif kind == "naive":
            losses = -torch.log(torch.sigmoid(beta * h))
        elif kind == "no minus":
            losses = F.logsigmoid(beta * h)
        else:
            losses = -F.logsigmoid(beta * h)
        if kind == "mean":
            return losses.mean()
        if kind == "tuple":
            return losses, beta * (pc - rc).detach(), beta * (pr - rr).detach()
        return losses.float() if kind == "float32" else losses
    return dpo_loss


def _gae(kind):
    """GAE as a learner might write it, with one mistake."""
    def gae(rewards, values, mask, gamma, lam):
        B, T = rewards.shape
        m = torch.ones_like(rewards) if kind in ("no mask", "masked after") else mask.to(rewards.dtype)
        adv = torch.zeros_like(rewards)
        next_adv = torch.zeros(B, dtype=rewards.dtype)
        next_value = torch.zeros(B, dtype=rewards.dtype)
        coef = {"no lambda": gamma, "no gamma": lam}.get(kind, gamma * lam)
        order = range(T) if kind == "forward" else reversed(range(T))
        for t in order:
            if kind == "forward":
                next_value = values[:, t + 1] * m[:, t + 1] if t + 1 < T else torch.zeros(B, dtype=rewards.dtype)
            bootstrap = 0 if kind == "no bootstrap" else gamma * next_value
            if kind == "plus":
                delta = rewards[:, t] + bootstrap + values[:, t]
            elif kind == "swapped values":
                delta = rewards[:, t] + gamma * values[:, t] - next_value
            else:
                delta = rewards[:, t] + bootstrap - values[:, t]
            a = (delta + coef * next_adv) * m[:, t]
            adv[:, t] = a
            next_adv = a
            if kind != "forward":
                next_value = values[:, t] if kind == "leak" else values[:, t] * m[:, t]
        if kind == "masked after":
            m = mask.to(rewards.dtype)
            adv = adv * m
        if kind == "returns = advantages":
            return adv, adv
        if kind in ("returns unmasked", "no mask"):
            return adv, adv + values
        if kind == "one tensor":
            return adv
        if kind == "float32":
            return adv.float(), (adv + values * m).float()
        return adv, adv + values * m
    return gae


def _grpo(kind):
    """GRPO's advantages as a learner might write them, with one mistake."""
    def grpo_advantages(rewards, group_size):
        G = group_size
        if kind == "batch":
            grouped = rewards.view(1, -1)
        elif kind == "stride":
            grouped = rewards.view(G, -1)
        else:
            grouped = rewards.view(-1, G)
        if kind == "stride":
            mean, std = grouped.mean(0, keepdim=True), grouped.std(0, keepdim=True)
        else:
            mean = grouped.mean(1, keepdim=True)
            std = grouped.std(1, keepdim=True, unbiased=kind != "biased")
        eps = {"no eps": 0.0, "eps 1e-8": 1e-8}.get(kind, 1e-4)
        adv = grouped - mean if kind == "no scale" else (grouped - mean) / (std + eps)
        if kind == "2-D":
            return adv
        adv = adv.reshape(-1)
        return adv.float() if kind == "float32" else adv
    return grpo_advantages


CH15_MISTAKES = [
    ("check_response_only_labels", _labels("prompt"), "the prompt is learned too"),
    ("check_response_only_labels", _labels("no end"), "the assistant's end marker"),
    ("check_response_only_labels", _labels("no end"), "it is how the model learns to stop"),
    ("check_response_only_labels", _labels("prefix"), "the assistant's turn prefix"),
    ("check_response_only_labels", _labels("zero"), "the prompt's labels are 0, a real token id"),
    ("check_response_only_labels", _labels("inverted"), "the response is masked instead of the prompt"),
    ("check_response_only_labels", _labels("last only"), "only the last assistant turn is learned"),
    ("check_response_only_labels", _labels("all ends"), "the end markers of the system and user turns"),
    ("check_response_only_labels", _labels("shift"), "the labels are shifted by one"),
    ("check_response_only_labels", _labels("drop first"), "don't shift them"),
    ("check_response_only_labels", _labels("float"), "labels: expected integer ids (torch.long)"),
    ("check_response_only_labels", _labels("no newline"), "each turn is encode('<|im_start|>' + role"),
    ("check_response_only_labels", _labels("nested"), "a list of lists?"),
    ("check_response_only_labels", _labels("float list"), "expected a list of int token ids, found float -100.0"),
    ("check_bradley_terry_loss", _bt("swapped"), "chosen and rejected are swapped"),
    ("check_bradley_terry_loss", _bt("no minus"), "the minus sign is missing"),
    ("check_bradley_terry_loss", _bt("naive"), "use F.logsigmoid(d)"),
    ("check_bradley_terry_loss", _bt("naive softplus"), "−log(σ(d)) overflows"),
    ("check_bradley_terry_loss", _bt("sum"), "the losses of the pairs were added up"),
    ("check_bradley_terry_loss", _bt("hinge"), "hinge (margin ranking) loss"),
    ("check_bradley_terry_loss", _bt("per pair"), "take the .mean() over the pairs"),
    ("check_bradley_terry_loss", _bt("item"), "not .item()"),
    ("check_bradley_terry_loss", _bt("float32"), "expected dtype float64 like the rewards, got float32"),
    ("check_bradley_terry_loss", _bt("pointwise"), "each reward was scored on its own"),
    ("check_bradley_terry_loss", _bt("probability"), "the negative log-likelihood of the preference"),
    ("check_dpo_loss", _dpo("no beta"), "β is missing"),
    ("check_dpo_loss", _dpo("beta outside"), "β is applied outside the log-sigmoid"),
    ("check_dpo_loss", _dpo("ref minus policy"), "the sign of h is flipped"),
    ("check_dpo_loss", _dpo("swapped"), "chosen and rejected were swapped"),
    ("check_dpo_loss", _dpo("no reference"), "the reference model is missing"),
    ("check_dpo_loss", _dpo("reference added"), "the reference's margin was added"),
    ("check_dpo_loss", _dpo("rejected added"), "the rejected answer's log-ratio was added"),
    ("check_dpo_loss", _dpo("naive"), "use -F.logsigmoid(beta * h)"),
    ("check_dpo_loss", _dpo("no minus"), "the minus sign is missing"),
    ("check_dpo_loss", _dpo("mean"), "got their mean: return one loss per pair"),
    ("check_dpo_loss", _dpo("tuple"), "return only the losses"),
    ("check_dpo_loss", _dpo("float32"), "expected dtype float64 like the log-probabilities, got float32"),
    ("check_gae", _gae("no bootstrap"), "the bootstrap from the next value is missing"),
    ("check_gae", _gae("forward"), "the recursion ran forwards"),
    ("check_gae", _gae("no lambda"), "λ is missing from the recursion"),
    ("check_gae", _gae("no gamma"), "γ is missing from the recursion"),
    ("check_gae", _gae("no mask"), "the recursion does not restart at the end of a response"),
    ("check_gae", _gae("masked after"), "the recursion does not restart at the end of a response"),
    ("check_gae", _gae("leak"), "bootstrapped from the value of a padding position"),
    ("check_gae", _gae("returns = advantages"), "returns = advantages: the returns are the value model's targets"),
    ("check_gae", _gae("returns unmasked"), "the returns past the end are not 0"),
    ("check_gae", _gae("plus"), "δ adds the current value"),
    ("check_gae", _gae("swapped values"), "V_t and V_{t+1} are swapped in δ"),
    ("check_gae", _gae("one tensor"), "expected a pair (advantages, returns)"),
    ("check_gae", _gae("float32"), "advantages: expected dtype float64 like rewards, got float32"),
    ("check_grpo_advantages", _grpo("batch"), "taken over the whole batch"),
    ("check_grpo_advantages", _grpo("stride"), "the groups were taken by stride"),
    ("check_grpo_advantages", _grpo("biased"), "the std is the biased one"),
    ("check_grpo_advantages", _grpo("no eps"), "the std is not offset by eps = 1e-4"),
    ("check_grpo_advantages", _grpo("eps 1e-8"), "the std is not offset by eps = 1e-4"),
    ("check_grpo_advantages", _grpo("no scale"), "not divided by the group's std"),
    ("check_grpo_advantages", _grpo("2-D"), "flatten the groups back with .reshape(-1)"),
    ("check_grpo_advantages", _grpo("float32"), "expected dtype float64 like rewards, got float32"),
]


@pytest.mark.parametrize("check,fn,phrase", CH15_MISTAKES,
                         ids=[f"15-{c}-{k}" for k, (c, _, _) in enumerate(CH15_MISTAKES)])
def test_ch15_check_names_the_mistake(check, fn, phrase, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch15, check)(fn)
    assert not result.passed, f"{check} passes a wrong function (expected it to say {phrase!r})"
    assert phrase in result.report(), result.report()


def test_ch15_a_group_without_eps_is_named_where_it_gives_nan(monkeypatch, capsys):
    """The no-eps mistake fails the uniform-group case with NaN, and that case's line says why."""
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    report = ch15.check_grpo_advantages(_grpo("no eps")).report()
    assert "all right and one all wrong" in report and "0/0 = NaN" in report, report


def _labels_by_offsets(messages, encode):
    """Render the whole conversation, then find each piece's tokens by encoding the text before it."""
    text, learned = "", []  # learned: (start, end) character spans
    for m in messages:
        text += f"<|im_start|>{m['role']}\n"
        start = len(text)
        text += m["content"] + "<|im_end|>\n"
        if m["role"] == "assistant":
            learned.append((start, len(text)))
    ids = encode(text)
    labels = [-100] * len(ids)
    for start, end in learned:
        a, b = len(encode(text[:start])), len(encode(text[:end]))
        labels[a:b] = ids[a:b]
    return ids, labels


def _labels_tensor(messages, encode):
    """Tensors: a bool mask of the learned tokens, then torch.where."""
    ids, learn = [], []
    for m in messages:
        for text, is_reply in ((f"<|im_start|>{m['role']}\n", False), (m["content"], m["role"] == "assistant"),
                               ("<|im_end|>\n", m["role"] == "assistant")):
            piece = encode(text)
            ids += piece
            learn += [is_reply] * len(piece)
    ids = torch.tensor(ids)
    return ids, torch.where(torch.tensor(learn), ids, torch.full_like(ids, -100))


def _labels_numpy(messages, encode):
    """NumPy arrays of int64 ids, then lists of NumPy integers."""
    import numpy as np

    ids, labels = _labels_tensor(messages, encode)
    return list(np.asarray(ids)), list(np.asarray(labels))


def _bt_softplus(chosen_rewards, rejected_rewards):
    return F.softplus(rejected_rewards - chosen_rewards).mean()


def _bt_cross_entropy(chosen_rewards, rejected_rewards):
    """Two-way softmax over (chosen, rejected), the chosen one is the right class."""
    logits = torch.stack([chosen_rewards, rejected_rewards], dim=1)  # (B, 2)
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long))


def _bt_loop(chosen_rewards, rejected_rewards):
    total = sum(-F.logsigmoid(c - r) for c, r in zip(chosen_rewards, rejected_rewards))
    return total / len(chosen_rewards)


def _dpo_trl(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    """TRL's arrangement: the policy's margin minus the reference's margin."""
    pi_logratios = policy_chosen_logps - policy_rejected_logps
    ref_logratios = reference_chosen_logps - reference_rejected_logps
    return -F.logsigmoid(beta * (pi_logratios - ref_logratios))


def _dpo_bce(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    chosen = beta * (policy_chosen_logps - reference_chosen_logps)
    rejected = beta * (policy_rejected_logps - reference_rejected_logps)
    return F.binary_cross_entropy_with_logits(chosen - rejected, torch.ones_like(chosen), reduction="none")


def _dpo_softplus(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):
    h = policy_chosen_logps + reference_rejected_logps - reference_chosen_logps - policy_rejected_logps
    return F.softplus(-beta * h)


def _gae_double_sum(rewards, values, mask, gamma, lam):
    """The definition: A_t = Σ_k (γλ)^k δ_{t+k} over the real tokens of each row, one row at a time."""
    adv = torch.zeros_like(rewards)
    for b in range(rewards.size(0)):
        n = int(mask[b].sum())
        v = values[b, :n].tolist() + [0.0]
        delta = [rewards[b, t].item() + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(n):
            adv[b, t] = sum((gamma * lam) ** k * delta[t + k] for k in range(n - t))
    return adv, adv + values * mask


def _gae_matrix(rewards, values, mask, gamma, lam):
    """Vectorised: the δs (zero past the end) times an upper-triangular matrix of (γλ)^(s−t)."""
    m = mask.to(rewards.dtype)
    T = rewards.size(1)
    next_values = torch.cat([values[:, 1:] * m[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    delta = (rewards + gamma * next_values - values) * m
    gap = torch.arange(T)[:, None] - torch.arange(T)[None, :]  # s − t
    W = torch.where(gap >= 0, torch.tensor(gamma * lam, dtype=rewards.dtype) ** gap.clamp(min=0).to(rewards.dtype),
                    torch.zeros((), dtype=rewards.dtype))
    adv = delta @ W
    return adv, (adv + values) * m


def _grpo_loop(rewards, group_size):
    out = torch.empty_like(rewards)
    for start in range(0, len(rewards), group_size):
        group = rewards[start:start + group_size]
        out[start:start + group_size] = (group - group.mean()) / (group.std() + 1e-4)
    return out


def _grpo_manual_std(rewards, group_size):
    means = rewards.unflatten(0, (-1, group_size)).mean(1).repeat_interleave(group_size)
    centred = rewards - means
    var = (centred ** 2).unflatten(0, (-1, group_size)).sum(1) / (group_size - 1)
    return centred / (var.sqrt().repeat_interleave(group_size) + 1e-4)


@pytest.mark.parametrize("check,fn", [
    ("check_response_only_labels", _labels("ok")),
    ("check_response_only_labels", _labels_by_offsets),
    ("check_response_only_labels", _labels_tensor),
    ("check_response_only_labels", _labels_numpy),
    ("check_bradley_terry_loss", _bt("ok")),
    ("check_bradley_terry_loss", _bt_softplus),
    ("check_bradley_terry_loss", _bt_cross_entropy),
    ("check_bradley_terry_loss", _bt_loop),
    ("check_dpo_loss", _dpo("ok")),
    ("check_dpo_loss", _dpo_trl),
    ("check_dpo_loss", _dpo_bce),
    ("check_dpo_loss", _dpo_softplus),
    ("check_gae", _gae("ok")),
    ("check_gae", _gae_double_sum),
    ("check_gae", _gae_matrix),
    ("check_grpo_advantages", _grpo("ok")),
    ("check_grpo_advantages", _grpo_loop),
    ("check_grpo_advantages", _grpo_manual_std),
], ids=["labels", "labels-offsets", "labels-tensor-where", "labels-numpy-ints", "bt", "bt-softplus", "bt-two-way-softmax", "bt-loop",
        "dpo", "dpo-trl-margins", "dpo-bce-with-logits", "dpo-softplus", "gae", "gae-double-sum", "gae-matrix",
        "grpo", "grpo-loop", "grpo-manual-std"])
def test_ch15_other_correct_answers_pass(check, fn, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch15, check)(fn)
    assert result.passed, result.report()


def test_ch15_the_checks_own_versions_equal_the_package():
    """The written-out versions the checks diagnose with, unchanged, equal the package (minillm.sft,
    minillm.preference, minillm.rl): a mistake is named only when it really is that mistake."""
    from minillm.preference import bradley_terry_loss, dpo_loss
    from minillm.rl import gae, grpo_advantages
    from minillm.sft import CHATML, build_example

    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"},
                    {"role": "assistant", "content": "4"}, {"role": "user", "content": "又一个？"},
                    {"role": "assistant", "content": "5"}]
    ex = build_example(conversation, ch15._toy_encode)
    assert ex.input_ids == ch15._toy_encode(CHATML.render(conversation))
    assert ex.labels == ch15._labels_variant(conversation, ch15._toy_encode).tolist()
    ids, labels = ch15._ref_response_only_labels(conversation, ch15._toy_encode)
    assert ids.tolist() == ex.input_ids and labels.tolist() == ex.labels
    assert ch15._toy_encode("<|im_start|>é<|im_end|>") == [ch15.IM_START, 0xC3, 0xA9, ch15.IM_END]

    g = torch.Generator().manual_seed(0)
    c, r = torch.randn(5, generator=g) * 3, torch.randn(5, generator=g) * 3
    torch.testing.assert_close(ch15._bt_variant(c, r), bradley_terry_loss(c, r))
    torch.testing.assert_close(ch15._ref_bradley_terry_loss(c, r), bradley_terry_loss(c, r))

    logps = [-torch.rand(4, generator=g) * 50 for _ in range(4)]
    for beta in (0.1, 0.5, 1.0):
        torch.testing.assert_close(ch15._dpo_variant(*logps, beta), dpo_loss(*logps, beta)[0])
        torch.testing.assert_close(ch15._ref_dpo_loss(*logps, beta), dpo_loss(*logps, beta)[0])

    B, T = 3, 6
    rewards, values = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)
    mask = (torch.arange(T)[None] < torch.tensor([6, 4, 1])[:, None]).float()
    for gamma, lam in ((1.0, 0.95), (0.9, 0.0), (0.99, 1.0)):
        want = gae(rewards, values, mask, gamma=gamma, lam=lam)
        for got in (ch15._gae_variant(rewards, values, mask, gamma, lam),
                    ch15._ref_gae(rewards, values, mask, gamma, lam)):
            torch.testing.assert_close(got[0], want[0])
            torch.testing.assert_close(got[1], want[1])

    rewards = torch.randn(12, generator=g)
    for G in (2, 3, 4, 6):
        torch.testing.assert_close(ch15._grpo_variant(rewards, G), grpo_advantages(rewards, G))
        torch.testing.assert_close(ch15._ref_grpo_advantages(rewards, G), grpo_advantages(rewards, G))


def test_ch15_checks_leave_the_global_random_state_alone(monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert ch15.check_response_only_labels(_labels("ok")).passed
    assert ch15.check_bradley_terry_loss(_bt("ok")).passed
    assert ch15.check_dpo_loss(_dpo("ok")).passed
    assert ch15.check_gae(_gae("ok")).passed
    assert ch15.check_grpo_advantages(_grpo("ok")).passed
    assert torch.equal(torch.get_rng_state(), state)
