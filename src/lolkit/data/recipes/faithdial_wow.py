"""A-LoL's ``faithdial_wow`` task: WoW and FaithDial training data together, FaithDial's test set.

``train`` = WoW train + FaithDial train, shuffled with ``--seed`` (A-LoL: ``random.shuffle`` after
seeding 901); ``val`` = WoW ``valid_topic_split`` + FaithDial valid; ``test`` = FaithDial test. Records
as in the ``wow`` and ``faithdial`` recipes (``meta.source`` tells which corpus a record came from).
"""

from __future__ import annotations

import random
from pathlib import Path

from ._common import SEP, Prompting, Stats, require_dir, write_splits
from .faithdial import faithdial_split
from .wow import wow_splits


def preprocess_faithdial_wow(wow_dir: str | Path, faithdial_dir: str | Path, output_dir: str | Path,
                             max_history_words: int | None = 300, max_history_turns: int | None = None,
                             sep: str = SEP, seed: int = 901) -> dict[str, int]:
    wroot, froot = require_dir(wow_dir, "WoW directory"), require_dir(faithdial_dir, "FaithDial directory")
    prompting = Prompting(sep, max_history_words, max_history_turns)
    stats = Stats("faithdial_wow", {"wow_dir": wroot, "faithdial_dir": froot, "max_history_words": max_history_words,
                                    "max_history_turns": max_history_turns, "sep": sep, "seed": seed})
    wow = wow_splits(wroot, stats, prompting, ("train", "val"))
    fd = {s: faithdial_split(froot, s, stats, prompting) for s in ("train", "val", "test")}
    train = wow["train"] + fd["train"]
    random.Random(seed).shuffle(train)
    splits = {"train": train, "val": wow.get("val", []) + fd["val"], "test": fd["test"]}
    return write_splits(output_dir, splits, stats)
