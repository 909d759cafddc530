"""minillm.prompting: verbalizer scores, contextual calibration and PET's pieces, each against its
definition written out (loops over rows and words, probabilities instead of logs), on a real masked LM
forward (our BERT = transformers' BertForMaskedLM), and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minillm.prompting import (calibrate, cloze_logits, distillation_loss, ensemble_targets, pet_loss,
                               verbalizer_log_probs)

VERBALIZER = [[5, 9], [2]]  # class 0: two label words, class 1: one


def logits(B=4, V=12, seed=0):
    return torch.randn(B, V, generator=torch.Generator().manual_seed(seed)) * 3


def test_verbalizer_log_probs_is_the_log_of_summed_word_probabilities():
    x = logits()
    got = verbalizer_log_probs(x, VERBALIZER)
    p = x.double().softmax(-1)  # the whole vocabulary
    for b in range(x.size(0)):
        for c, words in enumerate(VERBALIZER):
            assert got[b, c].item() == pytest.approx(math.log(sum(p[b, w].item() for w in words)), abs=1e-5)
    assert (got.exp().sum(-1) < 1).all()  # the rest of the mass is on other words


def test_single_token_classes_and_bare_ints():
    x = logits()
    assert torch.equal(verbalizer_log_probs(x, [3, 7]), verbalizer_log_probs(x, [[3], [7]]))
    torch.testing.assert_close(verbalizer_log_probs(x, [[3], [7]]), x.log_softmax(-1)[:, [3, 7]])


def test_calibration_divides_by_the_content_free_probabilities():
    lp = verbalizer_log_probs(logits(), [[1], [2], [3]])
    cf = verbalizer_log_probs(logits(1, seed=7), [[1], [2], [3]])[0]
    got = calibrate(lp, cf).exp()
    p, p_cf = lp.exp() / lp.exp().sum(-1, keepdim=True), cf.exp() / cf.exp().sum()
    expected = (p / p_cf) / (p / p_cf).sum(-1, keepdim=True)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    # a prompt that leans towards class 0 for *every* input: the lean is removed
    lean = torch.tensor([[0.9, 0.1], [0.7, 0.3]]).log()
    assert calibrate(lean, torch.tensor([0.8, 0.2]).log()).argmax(-1).tolist() == [0, 1]
    # several content-free inputs are averaged in probability space
    many = torch.tensor([[0.9, 0.1], [0.7, 0.3]]).log()
    torch.testing.assert_close(calibrate(lean, many), calibrate(lean, torch.tensor([0.8, 0.2]).log()))


def test_cloze_logits_read_the_label_words_at_each_rows_position():
    x = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(1))
    pos = torch.tensor([4, 0, 2])
    got = cloze_logits(x, pos, VERBALIZER)
    for b in range(3):
        row = x[b, pos[b]]
        assert got[b, 0].item() == pytest.approx(torch.logsumexp(row[[5, 9]], 0).item(), abs=1e-6)
        assert got[b, 1].item() == pytest.approx(row[2].item(), abs=1e-6)
    labels = torch.tensor([0, 1, 1])
    expected = -sum(got[b].log_softmax(-1)[labels[b]] for b in range(3)) / 3  # softmax over label words only
    torch.testing.assert_close(pet_loss(got, labels), expected)


def test_pet_on_a_masked_lm_equals_transformers():
    transformers = pytest.importorskip("transformers")
    from minillm.models.bert import BertForMaskedLM

    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=32)).eval()
    ours = BertForMaskedLM.from_hf(hf).eval()
    ids = torch.randint(5, 40, (2, 9), generator=torch.Generator().manual_seed(2))
    pos = torch.tensor([6, 3])
    ids[torch.arange(2), pos] = 4  # the [MASK] of the pattern
    with torch.no_grad():
        got = cloze_logits(ours(ids).logits, pos, [[10], [20, 21]])
        ref = hf(input_ids=ids).logits[torch.arange(2), pos]
    torch.testing.assert_close(got[:, 0], ref[:, 10], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[:, 1], torch.logsumexp(ref[:, [20, 21]], -1), atol=1e-5, rtol=1e-5)


def test_ensemble_targets_weighted_average_then_soften():
    a, b = logits(3, 2, seed=1), logits(3, 2, seed=2)
    got = ensemble_targets([a, b], weights=[0.75, 0.25], temperature=2.0)
    torch.testing.assert_close(got, ((0.75 * a + 0.25 * b) / 2.0).softmax(-1))
    torch.testing.assert_close(ensemble_targets([a, b]), ((a + b) / 2 / 2.0).softmax(-1))
    torch.testing.assert_close(got.sum(-1), torch.ones(3))


def test_distillation_loss_has_the_gradient_of_the_kl_divergence():
    q = ensemble_targets([logits(4, 3, seed=3)])
    s = logits(4, 3, seed=4).requires_grad_()
    loss = distillation_loss(s, q)
    kl = F.kl_div(s.log_softmax(-1), q, reduction="batchmean")
    entropy = -(q * q.log()).sum(-1).mean()
    torch.testing.assert_close(loss, kl + entropy)
    g, = torch.autograd.grad(loss, s)
    torch.testing.assert_close(g, (s.softmax(-1) - q).detach() / 4)
    # one-hot targets: plain cross-entropy
    y = torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(distillation_loss(s, F.one_hot(y, 3).float()), F.cross_entropy(s, y))


@pytest.mark.parametrize("call, error, match", [
    (lambda: verbalizer_log_probs(logits(), [[1]]), ValueError, "at least 2 classes"),
    (lambda: verbalizer_log_probs(logits(), [[1], []]), ValueError, r"verbalizer\[1\].*non-empty"),
    (lambda: verbalizer_log_probs(logits(), [[1], [12]]), ValueError, r"\[0, 12\).*\[12\]"),
    (lambda: verbalizer_log_probs(logits()[0], [[1], [2]]), ValueError, "logits must have 2 dimensions"),
    (lambda: calibrate(logits(4, 3), torch.zeros(2)), ValueError, "content_free"),
    (lambda: cloze_logits(torch.zeros(2, 5, 12), torch.tensor([1, 5]), [[1], [2]]), ValueError, r"\[0, 5\)"),
    (lambda: cloze_logits(torch.zeros(2, 5, 12), torch.tensor([1]), [[1], [2]]), ValueError, "positions"),
    (lambda: pet_loss(torch.zeros(3, 2), torch.tensor([0, 1])), ValueError, "labels"),
    (lambda: ensemble_targets([]), ValueError, "non-empty list"),
    (lambda: ensemble_targets([logits(), logits()], weights=[1.0]), ValueError, "2 non-negative"),
    (lambda: ensemble_targets([logits(3, 2), logits(4, 2)]), ValueError, r"class_logits\[1\]"),
    (lambda: ensemble_targets([logits()], temperature=0), ValueError, "temperature must be > 0"),
    (lambda: distillation_loss(logits(2, 3), torch.ones(2, 3)), ValueError, "probabilities"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
