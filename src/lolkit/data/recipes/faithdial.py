"""FaithDial (McGill-NLP) → knowledge-grounded response records, as in A-LoL's ``faithdial`` task.

Raw format (the FaithDial repository's data format, the same files the Hugging Face dataset is built
from): ``train.json``, ``valid.json``, ``test.json`` (also ``valid_random_split.json``, ...), each a JSON
list of dialogues ``{"utterances": [{"history": [...], "speaker": "Wizard", "knowledge": "...",
"original_response": "..." | null, "response": "...", "BEGIN": [...], "VRM": [...]}, ...]}``. The
flattened rows of the Hugging Face export (one utterance per JSON object or JSON line, with
``history`` / ``knowledge`` / ``response``) are read too.

Every Wizard utterance with a non-empty response and knowledge is an example; prompt = knowledge +
trimmed history exactly as for ``wow``; ``meta`` keeps ``knowledge``, ``reference`` (the response),
``original_response``, ``BEGIN`` and ``VRM``. Splits: ``train``, ``val``, ``test``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import LolkitError, data_error
from ...io import iter_jsonl
from ._common import SEP, Prompting, Stats, read_json_file, require_dir, write_splits

FILES = {"train": ("train.json", "train.jsonl"), "val": ("valid.json", "validation.json", "valid.jsonl",
                                                          "validation.jsonl"),
         "test": ("test.json", "test.jsonl")}


def _utterances(path: Path) -> list[tuple[int | None, str, dict]]:
    """``(line, location, utterance)`` for every utterance of a nested or flattened file."""
    if path.suffix == ".jsonl":
        return [(line, "", obj) for line, obj in iter_jsonl(path, allow_empty=True)]
    try:
        data = read_json_file(path)
    except LolkitError:
        first = next((x for x in path.read_bytes().splitlines() if x.strip()), b"")
        try:
            is_lines = isinstance(json.loads(first), dict)
        except ValueError:
            is_lines = False
        if not is_lines:
            raise
        return [(line, "", obj) for line, obj in iter_jsonl(path, allow_empty=True)]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise data_error(str(path), None, None, f"expected a JSON list of dialogues, got {type(data).__name__}")
    out: list[tuple[int | None, str, dict]] = []
    for d, item in enumerate(data):
        if isinstance(item, dict) and "utterances" in item:
            utts = item["utterances"]
            if not isinstance(utts, list):
                raise data_error(str(path), None, f"[{d}].utterances", "expected a list")
            out += [(None, f"[{d}].utterances[{u}].", utt) for u, utt in enumerate(utts)]
        else:
            out.append((None, f"[{d}].", item))
    return out


def faithdial_split(root: Path, split: str, stats: Stats, prompting: Prompting, tag: str = "faithdial") -> list[dict]:
    names = FILES[split]
    path = next((root / n for n in names if (root / n).is_file()), None)
    if path is None:
        raise LolkitError(f"{root / names[0]}: file not found (expected FaithDial's {', '.join(names[:2])})")
    p = str(path)
    out: list[dict] = []
    for i, (line, where, utt) in enumerate(_utterances(path)):
        if not isinstance(utt, dict):
            raise data_error(p, line, where.rstrip(".") or None, "expected an utterance object")
        stats.read[f"{tag}_{split}"] += 1
        speaker = utt.get("speaker", "Wizard")
        if isinstance(speaker, str) and "wizard" not in speaker.lower():
            stats.drop(f"{tag}_{split}_not_wizard")
            continue
        for key in ("knowledge", "response"):
            if not isinstance(utt.get(key), str):
                raise data_error(p, line, f"{where}{key}", "missing or not a string")
        history = utt.get("history")
        if not isinstance(history, list) or not all(isinstance(h, str) for h in history):
            raise data_error(p, line, f"{where}history", "expected a list of strings")
        if not utt["response"].strip() or not utt["knowledge"].strip():
            stats.drop(f"{tag}_{split}_empty_text")
            continue
        if not history:
            stats.drop(f"{tag}_{split}_no_history")
            continue
        meta = {"source": tag, "index": i}
        for key in ("original_response", "BEGIN", "VRM"):
            if utt.get(key) not in (None, "", []):
                meta[key] = utt[key]
        rid = f"{tag}-{split}-{i}"
        out.append(prompting.record(rid, utt["knowledge"], history, utt["response"], stats, f"{tag}_{split}", meta))
    return out


def preprocess_faithdial(input_dir: str | Path, output_dir: str | Path, max_history_words: int | None = 300,
                         max_history_turns: int | None = None, sep: str = SEP) -> dict[str, int]:
    root = require_dir(input_dir)
    prompting = Prompting(sep, max_history_words, max_history_turns)
    stats = Stats("faithdial", {"input_dir": root, "max_history_words": max_history_words,
                                "max_history_turns": max_history_turns, "sep": sep})
    splits = {s: faithdial_split(root, s, stats, prompting) for s in ("train", "val", "test")}
    return write_splits(output_dir, splits, stats)

