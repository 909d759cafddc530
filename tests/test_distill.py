"""Knowledge distillation (minillm.distill): the losses against torch's own KL divergence, top-k
soft targets against the full distribution, the teacher's top-k, and the student built from the
teacher."""

import pytest
import torch
import torch.nn.functional as F

from minillm.distill import (distillation_loss, kd_loss, pca_embedding, sparse_kd_loss,
                             student_from_teacher, teacher_topk)
from minillm.models.llama import LlamaConfig, LlamaForCausalLM
from minillm.speculative import speculative_generate
from minillm.students import pack


def _logits(*shape, seed=0, scale=3.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("T", [1.0, 2.0, 4.5])
def test_kd_loss_is_torch_kl_div_batchmean_times_t_squared(T):
    s, t = _logits(6, 50, seed=0), _logits(6, 50, seed=1)
    expected = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                        reduction="batchmean") * T * T
    torch.testing.assert_close(kd_loss(s, t, T), expected, rtol=1e-6, atol=1e-6)
    # (B, T, V) is the same as its positions flattened
    torch.testing.assert_close(kd_loss(s.view(2, 3, 50), t.view(2, 3, 50), T), expected,
                               rtol=1e-6, atol=1e-6)


def test_kd_loss_is_zero_for_the_teacher_itself_and_positive_otherwise():
    t = _logits(4, 30)
    assert float(kd_loss(t, t, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(_logits(4, 30, seed=5), t, 2.0)) > 0.01


def test_sparse_kd_with_every_token_equals_the_dense_loss():
    s, t = _logits(2, 5, 40, seed=2), _logits(2, 5, 40, seed=3)
    values, indices = t.topk(40, dim=-1)
    torch.testing.assert_close(sparse_kd_loss(s, values, indices, 2.0), kd_loss(s, t, 2.0),
                               rtol=1e-5, atol=1e-6)
    # log-probabilities instead of logits: a constant shift per position changes nothing
    logp = F.log_softmax(t, -1).topk(40, dim=-1)
    torch.testing.assert_close(sparse_kd_loss(s, logp.values, logp.indices, 2.0), kd_loss(s, t, 2.0),
                               rtol=1e-5, atol=1e-6)


def test_sparse_kd_with_a_peaked_teacher_is_close_to_the_dense_loss():
    s = _logits(3, 200, seed=4)
    t = _logits(3, 200, seed=5, scale=8.0)  # nearly all mass on a few tokens
    values, indices = t.topk(32, dim=-1)
    dense, sparse = kd_loss(s, t, 1.0), sparse_kd_loss(s, values, indices, 1.0)
    assert abs(float(sparse) - float(dense)) < 0.05 * float(dense)


def test_the_mask_averages_over_the_kept_positions_only():
    s, t = _logits(1, 4, 20, seed=6), _logits(1, 4, 20, seed=7)
    mask = torch.tensor([[True, False, True, False]])
    expected = kd_loss(s[:, [0, 2]], t[:, [0, 2]], 2.0)
    torch.testing.assert_close(kd_loss(s, t, 2.0, mask=mask), expected)


def test_distillation_loss_mixes_soft_and_hard_parts():
    s, t = _logits(2, 6, 25, seed=8), _logits(2, 6, 25, seed=9)
    labels = torch.randint(0, 25, (2, 6), generator=torch.Generator().manual_seed(0))
    labels[0, :2] = -100
    ce = F.cross_entropy(s.flatten(0, 1), labels.flatten(), ignore_index=-100)
    soft = kd_loss(s, t, 2.0, mask=labels != -100)
    plain = distillation_loss(s, labels, alpha=0.0)  # no teacher needed
    torch.testing.assert_close(plain.total, ce)
    mixed = distillation_loss(s, labels, teacher_logits=t, alpha=0.3)
    torch.testing.assert_close(mixed.total, 0.3 * soft + 0.7 * ce)
    torch.testing.assert_close(mixed.soft, soft)
    top = t.topk(25, dim=-1)
    sparse = distillation_loss(s, labels, teacher_topk=(top.values, top.indices), alpha=0.3)
    torch.testing.assert_close(sparse.total, mixed.total, rtol=1e-5, atol=1e-6)


def test_distillation_loss_gives_gradients_to_the_student_only():
    s = _logits(1, 3, 10, seed=10).requires_grad_()
    t = _logits(1, 3, 10, seed=11).requires_grad_()
    labels = torch.tensor([[1, 2, 3]])
    distillation_loss(s, labels, teacher_logits=t.detach(), alpha=0.5).total.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_bad_arguments_get_clear_errors():
    s, t = _logits(1, 3, 10), _logits(1, 3, 10, seed=1)
    labels = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="no teacher_logits or teacher_topk"):
        distillation_loss(s, labels, alpha=0.5)
    with pytest.raises(ValueError, match="not both"):
        distillation_loss(s, labels, teacher_logits=t, teacher_topk=t.topk(3, -1), alpha=0.5)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        distillation_loss(s, labels, teacher_logits=t, alpha=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_loss(s, t, 0.0)
    with pytest.raises(ValueError, match="teacher_logits"):
        kd_loss(s, t[..., :9], 2.0)


def _tiny(seed, **overrides):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig.tiny(**overrides)).eval()


def test_teacher_topk_is_the_top_of_its_log_softmax_in_any_batch_size():
    teacher = _tiny(0)
    ids = torch.randint(0, 256, (5, 7), generator=torch.Generator().manual_seed(1))
    values, indices = teacher_topk(teacher, ids, k=4, batch_size=2)
    assert values.shape == indices.shape == (5, 7, 4) and indices.dtype == torch.int32
    with torch.no_grad():
        full = F.log_softmax(teacher(ids).float(), -1).topk(4, dim=-1)
    torch.testing.assert_close(values, full.values, rtol=1e-5, atol=1e-5)
    assert torch.equal(indices.long(), full.indices)
    again, _ = teacher_topk(teacher, ids, k=4, batch_size=5)
    torch.testing.assert_close(again, values, rtol=1e-5, atol=1e-5)


def test_pca_embedding_keeps_more_variance_than_a_random_projection():
    g = torch.Generator().manual_seed(0)
    # rows living mostly in 3 directions of a 16-dimensional space
    E = torch.randn(500, 3, generator=g) @ torch.randn(3, 16, generator=g) + 0.01 * torch.randn(500, 16, generator=g)
    P = pca_embedding(E, 3, std=1.0)
    assert P.shape == (500, 3)
    assert float(P.std()) == pytest.approx(1.0, rel=1e-4)
    # distances between rows are preserved up to the common scale: PCA kept the structure
    d_orig = torch.cdist(E[:50], E[:50])
    d_pca = torch.cdist(P[:50], P[:50])
    corr = torch.corrcoef(torch.stack([d_orig.flatten(), d_pca.flatten()]))[0, 1]
    rand = E @ torch.randn(16, 3, generator=g)
    corr_rand = torch.corrcoef(torch.stack([d_orig.flatten(), torch.cdist(rand[:50], rand[:50]).flatten()]))[0, 1]
    assert corr > 0.99 and corr > corr_rand
    with pytest.raises(ValueError, match="width"):
        pca_embedding(E, 17)


def test_student_from_teacher_shares_the_vocabulary_and_drafts_for_it():
    teacher = _tiny(0, eos_token_id=None)
    student = student_from_teacher(teacher, hidden_size=32, num_layers=1, num_heads=2,
                                   intermediate_size=64, max_position_embeddings=64)
    assert student.config.vocab_size == teacher.config.vocab_size
    assert student.lm_head.weight is student.model.embed_tokens.weight  # tied
    torch.testing.assert_close(student.model.embed_tokens.weight,
                               pca_embedding(teacher.model.embed_tokens.weight.detach(), 32))
    again = student_from_teacher(teacher, hidden_size=32, num_layers=1, num_heads=2,
                                 intermediate_size=64, max_position_embeddings=64)
    for a, b in zip(student.parameters(), again.parameters()):
        assert torch.equal(a, b)  # seeded
    prompt = torch.tensor([[5, 9, 2, 7]])
    tokens, stats = speculative_generate(teacher, student.eval(), prompt, 12)
    assert torch.equal(tokens, teacher.generate(prompt, 12))
    assert stats["proposed"] > 0
    with pytest.raises(TypeError, match="LlamaForCausalLM"):
        student_from_teacher(torch.nn.Linear(2, 2))


def test_pack_joins_sequences_with_the_separator_into_whole_rows():
    rows = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9]], block_size=3, separator=0)
    # stream 1 2 3 0 4 5 0 6 7 8 9 0 -> rows of 4, the tail that does not fill a row is dropped
    assert rows.tolist() == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]
