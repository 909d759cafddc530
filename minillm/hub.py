"""Chapter hand-off: ask for an earlier chapter's trained model by name, get it without retraining.

``load_pretrained(name)`` looks in three places, in order:

1. a checkpoint shipped inside the package (``minillm/checkpoints/<name>/``, small models only);
2. the local cache (``$MINILLM_CACHE/checkpoints/<name>/``, default ``~/.cache/minillm``), filled
   the first time a recipe is trained;
3. the recorded recipe (``minillm.recipes``): the model is trained with exactly the chapter's
   settings and seed, saved to the cache, and returned.

All three work offline. A cached checkpoint from an older version of a recipe is retrained.
Maintainers refresh shipped checkpoints with ``python -m minillm.hub ship NAME``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint_config, save_checkpoint
from .recipes import RECIPES, Recipe
from .settings import cache_dir
from .validation import check_bool, check_str

SHIPPED_DIR = Path(__file__).parent / "checkpoints"


def _recipe(name: str) -> Recipe:
    check_str("name", name)
    if name not in RECIPES:
        raise KeyError(f"no recipe named {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def _trainer(recipe: Recipe) -> Callable[..., tuple[nn.Module, dict]]:
    return recipe.trainer


def shipped_path(name: str) -> Path:
    """Where the package ships the checkpoint of recipe ``name`` (it may not exist)."""
    return SHIPPED_DIR / name


def cached_path(name: str) -> Path:
    """Where the local cache keeps the checkpoint of recipe ``name`` once trained."""
    return cache_dir() / "checkpoints" / name


def _is_current(path: Path, recipe: Recipe) -> bool:
    try:
        meta = read_checkpoint_config(path).get("metadata", {})
    except (FileNotFoundError, CheckpointError):
        return False
    return meta.get("recipe") == recipe.name and meta.get("recipe_version") == recipe.version


def train_recipe(name: str, *, progress: bool = True) -> tuple[nn.Module, dict]:
    """Train the recipe ``name`` from scratch; returns (model, metadata) without saving."""
    recipe = _recipe(name)
    model, metadata = _trainer(recipe)(progress=progress)
    metadata = {**metadata, "recipe": recipe.name, "recipe_version": recipe.version,
                "recipe_description": recipe.description}
    return model, metadata


def load_pretrained(name: str, *, retrain: bool = False, progress: bool = True) -> nn.Module:
    """The trained model of the recipe ``name`` (shipped, cached, or trained now and cached).

    The returned model carries ``model.checkpoint_metadata`` (recipe, history, metrics, vocab...).
    ``retrain=True`` ignores shipped and cached copies and trains again (then caches).
    """
    recipe = _recipe(name)
    check_bool("retrain", retrain)
    if not retrain:
        for path in (shipped_path(name), cached_path(name)):
            if _is_current(path, recipe):
                model = load_checkpoint(path)
                model.checkpoint_source = str(path)
                return model.eval()
    model, metadata = train_recipe(name, progress=progress)
    path = save_checkpoint(model, cached_path(name), metadata=metadata)
    model.checkpoint_metadata = metadata
    model.checkpoint_source = str(path)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the recipes and where each model would come from")
    ship = sub.add_parser("ship", help="train a recipe and write it into minillm/checkpoints/")
    ship.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, recipe in sorted(RECIPES.items()):
            where = ("shipped" if _is_current(shipped_path(name), recipe)
                     else "cached" if _is_current(cached_path(name), recipe) else "trains on first use")
            print(f"{name:28s} {where:20s} {recipe.description}")
    else:
        for name in args.names:
            model, metadata = train_recipe(name)
            print(f"{name}: saved to {save_checkpoint(model, shipped_path(name), metadata=metadata)}")


if __name__ == "__main__":
    main()
