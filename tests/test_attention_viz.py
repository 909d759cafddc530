"""minillm.attention_viz: the attention heatmap and the ipywidgets explorer (chapters 7 and 9)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch

from minillm.attention_viz import attention_explorer, display_tokens, plot_attention


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_plot_attention_draws_the_weights_with_token_ticks():
    w = torch.softmax(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)), -1)
    tokens = ["[CLS]", "a", " ", "[SEP]"]
    ax = plot_attention(w, tokens, title="layer 0, head 1")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["[CLS]", "a", "␣", "[SEP]"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["[CLS]", "a", "␣", "[SEP]"]
    assert list(ax.get_xticks()) == [0, 1, 2, 3]
    assert ax.get_title() == "layer 0, head 1"
    image = ax.get_images()[0]
    assert torch.allclose(torch.as_tensor(image.get_array()), w)
    assert image.get_clim() == (0, 1)


def test_plot_attention_draws_on_a_given_axes_and_labels_cross_attention():
    _, ax = plt.subplots()
    out = plot_attention(torch.full((2, 3), 1 / 3), "ab", ax=ax, key_tokens=["x", "y", "z"])
    assert out is ax
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y", "z"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]


@pytest.mark.parametrize("weights, tokens, error", [
    (torch.ones(2, 2, 2), ["a", "b"], ValueError),  # not one head's matrix
    (torch.ones(2, 2), ["a"], ValueError),  # a row without a label
    (torch.ones(2, 2), [], ValueError),
    (object(), ["a"], TypeError),
])
def test_plot_attention_rejects_bad_input(weights, tokens, error):
    with pytest.raises(error, match="weights|tokens"):
        plot_attention(weights, tokens)


def test_display_tokens_makes_spaces_visible():
    assert display_tokens(["a", " ", "##b"]) == ["a", "␣", "##b"]


def _maps(n_layers=2, n_heads=3):
    def get_maps(sentence):
        tokens = list(sentence)
        T = len(tokens)
        return tokens, [torch.softmax(torch.randn(1, n_heads, T, T), -1) for _ in range(n_layers)]
    return get_maps


def test_explorer_builds_with_sliders_sized_from_the_model():
    widgets = pytest.importorskip("ipywidgets")
    explorer = attention_explorer(_maps(2, 3), ["hello", "hi there"])
    assert isinstance(explorer, widgets.interactive)
    sentence, layer, head = explorer.children[:3]
    assert list(sentence.options) == ["hello", "hi there"] and sentence.value == "hello"
    assert (layer.min, layer.max) == (0, 1)
    assert (head.min, head.max) == (0, 2)
    head.value = 2  # redraws without error
    sentence.value = "hi there"


def test_explorer_rejects_bad_input():
    with pytest.raises(TypeError, match="get_maps"):
        attention_explorer("not a function", ["a"])
    with pytest.raises(ValueError, match="sentences"):
        attention_explorer(_maps(), [])
    with pytest.raises(ValueError, match=r"maps\[0\]"):
        attention_explorer(lambda s: (list(s), [torch.ones(2, 3, 3)]), ["ab"])
