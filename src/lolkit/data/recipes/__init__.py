"""Corpus recipes: each turns a raw corpus, in its published format, into records of the data contract.

One module per recipe; each exposes one function taking input paths, an output directory and options,
that writes ``<split>.jsonl`` files plus ``stats.json`` atomically and returns the row count per split.
:data:`RECIPES` is the registry the ``lolkit preprocess`` commands are built from (name → function,
one-line help); the documentation of each lives in ``data_recipes/<name>.md``.

Imports of the recipe modules happen on first use, so listing the registry stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str
    target: str  # "module:function", relative to this package (or to lolkit for "..")
    help: str

    def load(self) -> Callable[..., Any]:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module, __name__), func)


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("hh", ".hh:preprocess_hh", "Anthropic HH as distributed by PRO / A-LoL (prefix, suffix, reward)."),
    Recipe("reddit", ".reddit:preprocess_reddit", "Kaggle Reddit upvoted / downvoted comment CSVs (A-LoL)."),
    Recipe("wow", ".wow:preprocess_wow", "Wizard of Wikipedia JSON: knowledge-grounded responses."),
    Recipe("faithdial", ".faithdial:preprocess_faithdial", "FaithDial JSON: faithful knowledge-grounded responses."),
    Recipe("faithdial_wow", ".faithdial_wow:preprocess_faithdial_wow", "WoW + FaithDial train, FaithDial test (A-LoL)."),
    Recipe("comet", ".comet:preprocess_comet", "ATOMIC-10X JSONL and ATOMIC-2020 TSV for COMET (A-LoL)."),
    Recipe("tldr", ".tldr:preprocess_tldr", "OpenAI TL;DR comparisons (preferences) and filtered SFT data."),
    Recipe("imdb", ".imdb:preprocess_imdb", "aclImdb folders: review-continuation prompts (RL4LMs)."),
    Recipe("ultrafeedback", ".ultrafeedback:preprocess_ultrafeedback", "UltraFeedback binarized JSONL: preferences."),
    Recipe("jsonl", "...preprocess:preprocess_jsonl", "Any contract or TRL-format JSONL, normalised."),
)}


def get_recipe(name: str) -> Callable[..., Any]:
    from ...errors import LolkitError

    if name not in RECIPES:
        raise LolkitError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    return RECIPES[name].load()
