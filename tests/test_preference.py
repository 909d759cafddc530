"""minillm.preference: the reward model + Bradley–Terry loss and the DPO loss against TRL's trainers
on the same weights and batches (our GPT loaded from the same Hugging Face GPT-2), each loss against
its float64 definition, sequence log-probabilities against a loop, and bad input."""

from __future__ import annotations

import math
import tempfile

import pytest
import torch

from minillm.models.gpt import GPT, GPTConfig
from minillm.preference import (RewardModel, bradley_terry_loss, check_same_vocabulary, dpo_loss,
                                pairwise_accuracy, sequence_log_probs)
from minillm.sft import IGNORE_INDEX

PAIRS = {"prompt": ["is it good?", "say hi", "what is two and two?"],
         "chosen": [" yes, very", " hello there", " four"],
         "rejected": [" no way", " bye", " five or so, maybe"]}


def char_tokenizer():
    """A character-level Hugging Face tokenizer, built offline (id 0 = pad, 1 = end of text)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    vocab = {c: i for i, c in enumerate(["<pad>", "<eos>", *"abcdefghijklmnopqrstuvwxyz ?!.,"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")


def hf_config(**kw):
    from transformers import GPT2Config
    return GPT2Config(vocab_size=33, n_positions=64, n_embd=32, n_layer=2, n_head=4, pad_token_id=0,
                      eos_token_id=1, bos_token_id=1, **kw)


def test_dpo_loss_equals_trls_dpo_trainer_on_the_same_model_and_batch():
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import GPT2LMHeadModel
    from trl import DPOConfig, DPOTrainer
    torch.manual_seed(0)
    policy, reference = GPT2LMHeadModel(hf_config()), GPT2LMHeadModel(hf_config())
    # bf16=False: TRL defaults to bf16 autocast where supported, and its reference would run in bf16
    args = DPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=3, beta=0.3,
                     report_to=[], use_cpu=True, max_length=64, bf16=False)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args,
                         train_dataset=Dataset.from_dict(PAIRS), processing_class=char_tokenizer())
    batch = next(iter(trainer.get_train_dataloader()))
    policy.eval()
    with torch.no_grad():
        want = trainer.compute_loss(policy, batch)
        # ours: our GPT on the same weights, labels = the completion tokens, TRL's batch order
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, IGNORE_INDEX)
        logps = [sequence_log_probs(GPT.from_hf(m)(batch["input_ids"], attention_mask=batch["attention_mask"]),
                                    labels) for m in (policy, reference)]
        pc, pr = logps[0].chunk(2)
        rc, rr = logps[1].chunk(2)
        losses, chosen_r, rejected_r = dpo_loss(pc, pr, rc, rr, beta=0.3)
    torch.testing.assert_close(losses.mean(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chosen_r, 0.3 * (pc - rc))


def test_reward_model_and_bradley_terry_loss_equal_trls_reward_trainer():
    pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel
    from trl import RewardConfig, RewardTrainer
    torch.manual_seed(1)
    hf = GPT2ForSequenceClassification(hf_config(num_labels=1)).eval()
    data = {"chosen": [p + c for p, c in zip(PAIRS["prompt"], PAIRS["chosen"])],
            "rejected": [p + r for p, r in zip(PAIRS["prompt"], PAIRS["rejected"])]}
    args = RewardConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=3, report_to=[],
                        use_cpu=True, max_length=64, bf16=False)
    trainer = RewardTrainer(model=hf, args=args, train_dataset=Dataset.from_dict(data),
                            processing_class=char_tokenizer())
    batch = next(iter(trainer.get_train_dataloader()))
    lm = GPT2LMHeadModel(hf_config())
    lm.transformer.load_state_dict(hf.transformer.state_dict())
    ours = RewardModel(GPT.from_hf(lm), 32).eval()
    with torch.no_grad():
        ours.score.weight.copy_(hf.score.weight)
        want = trainer.compute_loss(hf, batch)
        rewards = ours(batch["input_ids"], batch["attention_mask"])
        torch.testing.assert_close(rewards, hf(**batch).logits.squeeze(-1), rtol=1e-5, atol=1e-6)
        chosen, rejected = rewards.chunk(2)
        torch.testing.assert_close(bradley_terry_loss(chosen, rejected), want, rtol=1e-5, atol=1e-6)


def test_losses_equal_their_float64_definitions():
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(16, generator=g) * 20 - 40 for _ in range(4))
    for beta, eps in ((0.1, 0.0), (0.5, 0.2)):
        losses, cr, rj = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=eps)
        for i in range(16):
            h = (pc[i].double() - rc[i]) - (pr[i].double() - rr[i])
            sig = lambda z: 1 / (1 + math.exp(-z))
            want = -(1 - eps) * math.log(sig(beta * h)) - eps * math.log(sig(-beta * h))
            assert losses[i].item() == pytest.approx(want, rel=1e-5, abs=1e-6)
    c, r = torch.randn(8, generator=g), torch.randn(8, generator=g)
    want = sum(-math.log(1 / (1 + math.exp(-(a - b - 0.5)))) for a, b in zip(c.tolist(), r.tolist())) / 8
    assert bradley_terry_loss(c, r, margin=0.5).item() == pytest.approx(want, rel=1e-6)
    assert pairwise_accuracy(torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.0, 3.0, 0.0])) == pytest.approx(0.5)


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected():
    pc, pr = torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    losses, _, _ = dpo_loss(pc, pr, torch.zeros(4), torch.zeros(4), beta=0.1)
    losses.sum().backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # descent raises log π(y_c), lowers log π(y_r)
    torch.testing.assert_close(pc.grad, torch.full((4,), -0.05))  # −β·σ(0)


def test_sequence_log_probs_sum_the_response_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    labels = torch.randint(0, 11, (2, 7))
    labels[:, :3] = IGNORE_INDEX
    labels[1, 6] = IGNORE_INDEX
    got = sequence_log_probs(logits, labels)
    logp = logits.double().log_softmax(-1)
    for b in range(2):
        want = sum(logp[b, t - 1, labels[b, t]].item() for t in range(1, 7) if labels[b, t] != IGNORE_INDEX)
        assert got[b].item() == pytest.approx(want, rel=1e-6)
    n = (labels[:, 1:] != IGNORE_INDEX).sum(1)
    torch.testing.assert_close(sequence_log_probs(logits, labels, average=True), got / n)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="pair up"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="policy_rejected_logps must have shape"):
        dpo_loss(torch.zeros(3), torch.zeros(2), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(3), beta=0.0)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 3] = 1
    with pytest.raises(ValueError, match=r"rows \[1\] have no response token"):
        sequence_log_probs(torch.randn(2, 5, 8), labels)
    policy = GPT(GPTConfig.tiny())
    with pytest.raises(ValueError, match="vocab_size=80 but the policy has 65"):
        check_same_vocabulary(policy, GPT(GPTConfig.tiny(vocab_size=80)))
    check_same_vocabulary(policy, GPT(GPTConfig.tiny()))
    with pytest.raises(TypeError, match="hidden_states"):
        RewardModel(torch.nn.Linear(2, 2), 2)
