"""minillm.finetune (which parameters train, layer-wise rates, classification batches and scores) and
the two training-loop features chapter 12 needs: per-group learning-rate scales and early stopping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minillm.finetune import (classification_batches, classification_eval_batches, count_parameters,
                              head_loss, layer_of, layerwise_lr_groups, predict_labels, score_classifier,
                              set_trainable, training_peak_bytes)
from minillm.models.bert import BertConfig, BertForSequenceClassification
from minillm.train import evaluate, train


def _bert(num_layers: int = 3) -> BertForSequenceClassification:
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=num_layers, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(cfg)


class _Tok:
    """A whitespace tokenizer with the batch_encode interface of minillm's tokenizers."""

    def batch_encode(self, texts, max_length=64):
        ids = [[2 + (hash(w) % 40) for w in t.split()][:max_length] for t in texts]
        T = max(len(i) for i in ids)
        return {"input_ids": torch.tensor([i + [0] * (T - len(i)) for i in ids]),
                "attention_mask": torch.tensor([[1] * len(i) + [0] * (T - len(i)) for i in ids])}


class _Ex:
    def __init__(self, text, label):
        self.text, self.label = text, label


def test_set_trainable_matches_whole_name_parts_and_counts():
    model = _bert()
    total = sum(p.numel() for p in model.parameters())
    names = set_trainable(model, ["classifier", r"bert\.encoder\.layer\.(1|2)"])
    assert names == [n for n, p in model.named_parameters() if p.requires_grad]
    assert {"classifier.weight", "classifier.bias"} <= set(names)
    assert all(n.startswith(("classifier.", "bert.encoder.layer.1.", "bert.encoder.layer.2.")) for n in names)
    assert not any(n.startswith("bert.encoder.layer.0.") for n in names)
    count = count_parameters(model)
    assert count.total == total
    assert count.trainable == sum(p.numel() for n, p in model.named_parameters() if n in names)
    assert str(count).startswith(f"trainable params: {count.trainable:,d} || all params: {total:,d}")
    assert set_trainable(model, []) == [] and count_parameters(model).trainable == 0


def test_set_trainable_does_not_match_a_longer_name_and_names_the_bad_pattern():
    model = _bert()
    with pytest.raises(ValueError, match=r"\['classifie'\] match no parameter.*classifier"):
        set_trainable(model, ["classifie"])  # a prefix of a name part is not a match
    with pytest.raises(ValueError, match="not a valid regular expression"):
        set_trainable(model, ["layer.("])
    with pytest.raises(TypeError, match="patterns must be"):
        set_trainable(model, 3)


def test_tied_weights_count_once():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    assert count_parameters(nn.ModuleList([emb, head])).total == 40


def test_layer_of_reads_the_common_layer_names():
    assert layer_of("bert.encoder.layer.3.attention.self.query.weight") == 3
    assert layer_of("model.layers.11.mlp.up_proj.weight") == 11
    assert layer_of("transformer.h.0.attn.c_attn.weight") == 0
    assert layer_of("bert.embeddings.word_embeddings.weight") is None
    assert layer_of("classifier.weight") is None


def test_layerwise_groups_scale_lower_layers_down():
    model = _bert(num_layers=3)
    groups = layerwise_lr_groups(model, 0.5, weight_decay=0.1)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    assert set(scale) == {n for n, _ in model.named_parameters()}
    assert scale["classifier.weight"] == 1.0 and scale["bert.pooler.dense.weight"] == 1.0
    assert scale["bert.encoder.layer.2.output.dense.weight"] == 1.0
    assert scale["bert.encoder.layer.1.output.dense.weight"] == 0.5
    assert scale["bert.encoder.layer.0.output.dense.weight"] == 0.25
    assert scale["bert.embeddings.word_embeddings.weight"] == 0.125
    for g in groups:
        assert g["weight_decay"] == (0.1 if all(p.dim() >= 2 for p in g["params"]) else 0.0)
    with pytest.raises(ValueError, match="decay"):
        layerwise_lr_groups(model, 0.0)


def test_train_scales_each_groups_learning_rate():
    model = _bert(num_layers=2)
    opt = torch.optim.AdamW(layerwise_lr_groups(model, 0.5), lr=1e-3)
    data = classification_batches(_Tok(), [_Ex(f"w{i} w{i + 1}", i % 2) for i in range(8)], batch_size=4)
    train(model, data, optimizer=opt, steps=3, lr=1e-3, warmup_steps=0, min_lr=1e-3, loss_fn=head_loss,
          eval_every=0, progress=False)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(1e-3 * g["lr_scale"])


def test_early_stopping_restores_the_best_weights():
    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

    def loss_fn(model, target):
        return ((model.w - target) ** 2).mean()

    model = Scalar()
    val = [torch.tensor([0.5])]  # training pulls w to 2; validation is best at 0.5, so it improves, then worsens
    hist = train(model, lambda: torch.tensor([2.0]), val_data=val, loss_fn=loss_fn, steps=200, lr=0.05,
                 warmup_steps=0, eval_every=1, patience=3, grad_clip=None, progress=False)
    assert hist.stopped_early and len(hist.step) < 200
    assert hist.best_step == hist.eval_step[hist.val_loss.index(min(hist.val_loss))]
    assert len(hist.step) == hist.best_step + 1 + 3  # three evaluations without a new best
    assert evaluate(model, val, loss_fn=loss_fn) == pytest.approx(min(hist.val_loss))


def test_early_stopping_needs_validation_data():
    with pytest.raises(ValueError, match="patience=2 .*needs val_data"):
        train(_bert(), lambda: None, patience=2, steps=1, progress=False)
    with pytest.raises(ValueError, match="patience"):
        train(_bert(), lambda: None, patience=0, steps=1, progress=False)


def test_batches_predictions_and_scores():
    examples = [_Ex(f"a{i} b{i % 3}", i % 2) for i in range(10)]
    first = classification_batches(_Tok(), examples, batch_size=4, seed=1)
    again = classification_batches(_Tok(), examples, batch_size=4, seed=1)
    for _ in range(4):  # same seed, same batches, across an epoch boundary
        a, b = first(), again()
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    fixed = classification_eval_batches(_Tok(), examples, batch_size=4)
    assert [len(b["labels"]) for b in fixed] == [4, 4, 2]
    model = _bert()
    model.train()
    pred = predict_labels(model, _Tok(), [e.text for e in examples], batch_size=3)
    assert model.training and len(pred) == 10
    with torch.no_grad():
        logits = torch.cat([model.eval()(**{k: v for k, v in b.items() if k != "labels"}).logits for b in fixed])
    assert pred == logits.argmax(-1).tolist()
    scores = score_classifier(model, _Tok(), examples)
    assert scores["accuracy"] == sum(p == e.label for p, e in zip(pred, examples)) / 10
    with pytest.raises(ValueError, match="batch_size=20 is larger than the 10 examples"):
        classification_batches(_Tok(), examples, batch_size=20)


def test_training_peak_bytes_counts_gradients_and_optimizer_state_of_trainable_parameters_only():
    model = _bert()
    batch = classification_batches(_Tok(), [_Ex(f"w{i} x", i % 2) for i in range(8)], batch_size=8)()
    before = [p.detach().clone() for p in model.parameters()]
    full = training_peak_bytes(model, batch)
    set_trainable(model, ["classifier"])
    head = training_peak_bytes(model, batch)
    n = sum(p.numel() for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the model is not trained
    assert full - head >= 3 * 4 * (n - count_parameters(model).trainable) * 0.9  # grad + 2 AdamW moments
