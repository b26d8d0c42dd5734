"""Wizard of Wikipedia (ParlAI's ``wizard_of_wikipedia.tgz``) → knowledge-grounded response records.

Raw format: ``train.json``, ``valid_random_split.json``, ``valid_topic_split.json``,
``test_random_split.json``, ``test_topic_split.json``; each a JSON list of dialogues::

    {"chosen_topic": "...", "persona": "...", "wizard_eval": 5, "chosen_topic_passage": [...],
     "dialog": [{"speaker": "0_Wizard" | "1_Apprentice", "text": "...",
                 "checked_sentence": {"chosen_Lemon_3": "sentence"} (Wizard turns), "checked_passage": {...},
                 "retrieved_passages": [...], "retrieved_topics": [...]}, ...]}

A-LoL's extraction (``preprocess_wow_and_add_rewards.py``), per dialogue: a Wizard turn with an empty
``checked_sentence`` is skipped (and not added to the history); a Wizard turn whose checked sentence is
``no_passages_used``, or that opens the dialogue, is added to the history but is not an example; every
other Wizard turn is an example with knowledge = the checked sentence. The prompt is
``Knowledge: {knowledge}{sep}{turn 1}{sep}…{turn n}{sep}`` with ``sep`` = DialoGPT's ``<|endoftext|>``;
A-LoL trims the oldest turns until the history fits 400 DialoGPT tokens — here a word budget
(``--max-history-words``, default 300 ≈ 400 tokens) and/or ``--max-history-turns``.

Splits as in A-LoL's ``wow`` task: ``train`` (train.json), ``val`` (valid_topic_split.json = unseen
topics), plus ``val_seen``, ``test_seen``, ``test`` from the other files when present, and
``faithdial_test`` when ``--faithdial-dir`` is given.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import LolkitError, data_error
from ._common import SEP, Prompting, Stats, read_json_file, require_dir, write_splits

WOW_FILES = {"train": "train.json", "val": "valid_topic_split.json", "val_seen": "valid_random_split.json",
             "test_seen": "test_random_split.json", "test": "test_topic_split.json"}


def _dialogues(path: Path) -> list:
    data = read_json_file(path)
    if not isinstance(data, list):
        raise data_error(str(path), None, None, f"expected a JSON list of dialogues, got {type(data).__name__}")
    return data


def wow_examples(path: Path, split: str, stats: Stats, prompting: Prompting) -> list[dict]:
    p = str(path)
    out: list[dict] = []
    for d, dialog in enumerate(_dialogues(path)):
        where = f"[{d}]"
        if not isinstance(dialog, dict) or not isinstance(dialog.get("dialog"), list):
            raise data_error(p, None, f"{where}.dialog", "each dialogue needs a 'dialog' list of turns")
        stats.read[split] += 1
        history: list[str] = []
        for t, turn in enumerate(dialog["dialog"]):
            tw = f"{where}.dialog[{t}]"
            if not isinstance(turn, dict):
                raise data_error(p, None, tw, "expected an object")
            speaker, text = turn.get("speaker"), turn.get("text")
            if not isinstance(speaker, str):
                raise data_error(p, None, f"{tw}.speaker", "missing or not a string")
            if not isinstance(text, str):
                raise data_error(p, None, f"{tw}.text", "missing or not a string")
            if "Apprentice" in speaker:
                history.append(text)
                continue
            if "Wizard" not in speaker:
                raise data_error(p, None, f"{tw}.speaker", f"unknown speaker {speaker!r} (expected *_Wizard or *_Apprentice)")
            checked = turn.get("checked_sentence", {})
            if not isinstance(checked, dict):
                raise data_error(p, None, f"{tw}.checked_sentence", f"expected an object, got {type(checked).__name__}")
            if not checked:
                stats.drop(f"{split}_wizard_without_checked_sentence")
                continue
            knowledge = next(iter(checked.values()))
            if not isinstance(knowledge, str):
                raise data_error(p, None, f"{tw}.checked_sentence", "the checked sentence must be a string")
            if knowledge == "no_passages_used":
                stats.drop(f"{split}_no_passages_used")
            elif not history:
                stats.drop(f"{split}_wizard_opens_dialogue")
            elif not text.strip() or not knowledge.strip():
                stats.drop(f"{split}_empty_text")
            else:
                meta = {"topic": dialog.get("chosen_topic"), "dialog": d, "turn": t, "source": "wow"}
                out.append(prompting.record(f"wow-{split}-{d}-{t}", knowledge, history, text, stats, split, meta))
            history.append(text)
    return out


def wow_splits(wow_dir: Path, stats: Stats, prompting: Prompting, names: tuple[str, ...]) -> dict[str, list[dict]]:
    if not (wow_dir / WOW_FILES["train"]).is_file():
        raise LolkitError(f"{wow_dir / WOW_FILES['train']}: file not found (expected the unpacked "
                          "wizard_of_wikipedia folder)")
    return {name: wow_examples(wow_dir / WOW_FILES[name], name, stats, prompting)
            for name in names if (wow_dir / WOW_FILES[name]).is_file()}


def preprocess_wow(input_dir: str | Path, output_dir: str | Path, faithdial_dir: str | Path | None = None,
                   max_history_words: int | None = 300, max_history_turns: int | None = None,
                   sep: str = SEP) -> dict[str, int]:
    from .faithdial import faithdial_split

    root = require_dir(input_dir)
    prompting = Prompting(sep, max_history_words, max_history_turns)
    stats = Stats("wow", {"input_dir": root, "faithdial_dir": faithdial_dir, "max_history_words": max_history_words,
                          "max_history_turns": max_history_turns, "sep": sep})
    splits = wow_splits(root, stats, prompting, tuple(WOW_FILES))
    if faithdial_dir is not None:
        splits["faithdial_test"] = faithdial_split(require_dir(faithdial_dir), "test", stats, prompting)
    return write_splits(output_dir, splits, stats)
