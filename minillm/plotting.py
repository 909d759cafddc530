"""Small plotting helpers; matplotlib is imported only when a plot is drawn."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .train import History


def _moving_average(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_history(history: "History", ax=None, title: str | None = None, smooth: int = 10):
    """Train loss (faint raw, solid moving average) and validation loss versus optimizer step."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    if history.train_loss:
        ax.plot(history.step, history.train_loss, color="C0", alpha=0.25, lw=1)
        ax.plot(history.step, _moving_average(history.train_loss, max(1, smooth)), color="C0",
                label="train")
    if history.val_loss:
        ax.plot(history.eval_step, history.val_loss, "o-", color="C1", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax
