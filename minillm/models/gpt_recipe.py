"""Where the chapter-8 GPT's recipe used to live; kept so that older imports keep working.

The recipe is :func:`minillm.recipes.train_gpt_shakespeare` and the leaderboard scorer
:func:`minillm.leaderboard.score_gpt_shakespeare`; new code should import them from there.
"""

from __future__ import annotations

from ..leaderboard import score_gpt_shakespeare
from ..recipes import train_gpt_shakespeare
from ..vocab import CharVocab
from .gpt import GPT

RECIPE_NAME = "ch08-gpt-shakespeare"

__all__ = ["RECIPE_NAME", "load_gpt_shakespeare", "score_gpt_shakespeare", "train_gpt_shakespeare"]


def load_gpt_shakespeare() -> tuple[GPT, CharVocab]:
    """The shipped chapter-8 GPT (eval mode) and its character vocabulary."""
    from ..hub import load_pretrained

    model = load_pretrained(RECIPE_NAME)
    return model, CharVocab(model.checkpoint_metadata["vocab"])
