"""Helpers shared by the corpus recipes: reading raw files with located errors, and writing splits.

Every recipe reads and checks *all* of its input before it writes anything, so a malformed file stops
the command with one line (file, line or row, field) and leaves the output directory untouched. The
splits and ``stats.json`` are then written into a temporary sibling directory that is renamed onto
``--output-dir`` in one step.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ...errors import LolkitError, data_error
from ...io import atomic_path, dumps
from ..schema import parse_record

# Files a recipe writes; an existing output directory may hold only these (a previous run's output).
_OWN_SUFFIXES = (".jsonl",)
_OWN_NAMES = ("stats.json",)


class Stats:
    """Row counts: what was read, what each filter dropped, what each split holds."""

    def __init__(self, recipe: str, options: dict[str, Any]):
        self.recipe = recipe
        self.options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
        self.read: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.changed: Counter[str] = Counter()  # rows kept but altered (history trimmed, URLs masked, ...)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += n

    def to_json(self, splits: dict[str, list[dict]]) -> dict[str, Any]:
        return {"recipe": self.recipe, "options": self.options, "read": dict(self.read),
                "dropped": dict(sorted(self.dropped.items())),
                "changed": dict(sorted(self.changed.items())), "splits": {k: len(v) for k, v in splits.items()}}


def require_file(path: str | Path, what: str = "input file") -> Path:
    p = Path(path)
    if not p.exists():
        raise LolkitError(f"{p}: {what} not found")
    if not p.is_file():
        raise LolkitError(f"{p}: expected a file, found a directory")
    return p


def require_dir(path: str | Path, what: str = "input directory") -> Path:
    p = Path(path)
    if not p.is_dir():
        raise LolkitError(f"{p}: {what} not found" if not p.exists() else f"{p}: expected a directory")
    return p


def read_json_file(path: Path) -> Any:
    """A whole JSON document; syntax errors name the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LolkitError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise data_error(str(path), e.lineno, None, f"invalid JSON ({e.msg}, column {e.colno})") from None


def iter_csv(path: Path, required: Iterable[str], delimiter: str = ",") -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, row)`` for each CSV record; ``line`` is the file line where the record starts."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        fh = open(path, encoding="utf-8", newline="")
        with fh:
            reader = csv.reader(fh, delimiter=delimiter)
            try:
                header = next(reader)
            except StopIteration:
                raise LolkitError(f"{path}: file is empty (expected a header row)") from None
            missing = [c for c in required if c not in header]
            if missing:
                raise data_error(str(path), 1, missing[0], f"missing column (header has: {', '.join(header)})")
            start = reader.line_num + 1
            for row in reader:
                line, start = start, reader.line_num + 1
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if len(row) != len(header):
                    raise data_error(str(path), line, None, f"has {len(row)} fields, the header has {len(header)}")
                yield line, dict(zip(header, row, strict=True))
    except UnicodeDecodeError as e:
        raise LolkitError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise LolkitError(f"{path}: malformed CSV ({e})") from None


def get_str(path: str, line: int | None, obj: dict, key: str, where: str = "", allow_empty: bool = True) -> str:
    """``obj[key]`` as a string, or a located error."""
    name = f"{where}{key}"
    if key not in obj:
        raise data_error(path, line, name, "missing field")
    v = obj[key]
    if not isinstance(v, str):
        raise data_error(path, line, name, f"expected a string, got {_tname(v)}")
    if not allow_empty and not v.strip():
        raise data_error(path, line, name, "empty string")
    return v


def get_number(path: str, line: int | None, obj: dict, key: str, where: str = "") -> float:
    name = f"{where}{key}"
    if key not in obj:
        raise data_error(path, line, name, "missing field")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise data_error(path, line, name, f"expected a number, got {_tname(v)}")
    v = float(v)
    if not math.isfinite(v):
        raise data_error(path, line, name, f"must be finite, got {v}")
    return v


def parse_number(path: str, line: int, field: str, text: str) -> float:
    """A number written as text (a CSV cell)."""
    try:
        v = float(text)
    except ValueError:
        raise data_error(path, line, field, f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise data_error(path, line, field, f"must be finite, got {text!r}")
    return v


def get_list(path: str, line: int | None, obj: dict, key: str, where: str = "") -> list:
    name = f"{where}{key}"
    if key not in obj:
        raise data_error(path, line, name, "missing field")
    v = obj[key]
    if not isinstance(v, list):
        raise data_error(path, line, name, f"expected a list, got {_tname(v)}")
    return v


def _tname(v: Any) -> str:
    return "null" if v is None else type(v).__name__


_SPACES = re.compile(r"\s+")


def squash_spaces(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def n_words(text: str) -> int:
    return len(text.split())


def trim_history(turns: list[str], max_words: int | None, max_turns: int | None) -> tuple[list[str], bool]:
    """Drop the oldest turns until at most ``max_turns`` remain and they hold at most ``max_words``
    words; the latest turn is always kept. Returns the kept turns and whether any were dropped."""
    kept = list(turns)
    if max_turns is not None and max_turns > 0 and len(kept) > max_turns:
        kept = kept[-max_turns:]
    if max_words is not None:
        while len(kept) > 1 and sum(n_words(t) for t in kept) > max_words:
            kept.pop(0)
    return kept, len(kept) != len(turns)


def write_splits(output_dir: str | Path, splits: dict[str, list[dict]], stats: Stats) -> dict[str, int]:
    """Validate every record against the data contract, then write ``<split>.jsonl`` for each split and
    ``stats.json`` into ``output_dir`` in one atomic rename. An empty split gets no file (``stats.json``
    counts it as 0): an empty JSON-lines file is no dataset, to lolkit or to ``datasets.load_dataset``."""
    out = Path(output_dir)
    if out.exists():
        if not out.is_dir():
            raise LolkitError(f"{out}: --output-dir is a file")
        foreign = [p.name for p in out.iterdir()
                   if not (p.name in _OWN_NAMES or p.name.endswith(_OWN_SUFFIXES) or p.name.startswith("."))]
        if foreign:
            raise LolkitError(f"{out}: --output-dir holds other files ({', '.join(sorted(foreign)[:3])}); "
                              "it is replaced as a whole, so choose a new or empty directory")
    for name, rows in splits.items():
        seen: set[str] = set()
        for i, row in enumerate(rows, start=1):
            rec = parse_record(f"<{stats.recipe} {name} record {i}>", i, row)  # a recipe bug, if it fails
            if rec.id in seen:
                raise AssertionError(f"recipe {stats.recipe}: duplicate id {rec.id!r} in split {name}")
            seen.add(rec.id)
    with atomic_path(out, is_dir=True) as tmp:
        for name, rows in splits.items():
            if not rows:
                continue
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(dumps(row) + "\n")
        (tmp / "stats.json").write_text(dumps(stats.to_json(splits), indent=2) + "\n", encoding="utf-8")
    return {k: len(v) for k, v in splits.items()}


# dialogue recipes (WoW, FaithDial): turns joined by GPT-2's end-of-text token
SEP = "<|endoftext|>"


class Prompting:
    """How a (knowledge, history) pair becomes a prompt."""

    def __init__(self, sep: str = SEP, max_history_words: int | None = 300, max_history_turns: int | None = None):
        self.sep, self.max_words, self.max_turns = sep, max_history_words, max_history_turns

    def record(self, rid: str, knowledge: str, history: list[str], response: str, stats: Stats, split: str,
               meta: dict[str, Any]) -> dict:
        kept, trimmed = trim_history([h.strip() for h in history], self.max_words, self.max_turns)
        if trimmed:
            stats.changed[f"{split}_history_trimmed"] += 1
        prompt = f"Knowledge: {knowledge.strip()}{self.sep}{self.sep.join(kept)}{self.sep}"
        return {"id": rid, "prompt": prompt, "response": response.strip(),
                "meta": {"knowledge": knowledge.strip(), "reference": response.strip(), "history": kept, **meta}}
