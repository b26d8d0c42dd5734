"""COMET on ATOMIC-10X (Symbolic Knowledge Distillation) with the ATOMIC-2020 test set, as in A-LoL.

Raw formats:

* ``ATOMIC10X.jsonl`` (SKD release, ``symbolic-knowledge-distillation.tar.gz``), one object a line:
  ``{"head": "PersonX decides to see a therapist", "relation": "xEffect", "tail": "feels better",
  "split": "train" | "val" | "test", "rec_0.5": true, ..., "rec_0.9": true, "p_valid_model": 0.993}``;
  ``p_valid_model`` is the SKD critic's probability that the triple is valid.
* ATOMIC-2020 ``test.tsv``: ``head<TAB>relation<TAB>tail``, no header.

Prompt (SKD / A-LoL): ``<head> {head} </head> <relation> {relation} </relation> [GEN] ``; response =
tail; reward = ``p_valid_model`` (ATOMIC-10X only). ATOMIC-2020 rows are kept for the seven SKD
relations (xAttr, xEffect, xIntent, xNeed, xReact, xWant, HinderedBy). A-LoL scores every test tail
with the critic and keeps the best tail per (head, relation); without the critic this recipe keeps
one record per (head, relation) with the first tail as response and all tails in
``meta.references`` (``--no-group-test`` keeps every row).

Splits: ``train``, ``val``, ``test_atomic10x`` (ATOMIC-10X's own split field) and ``test`` (ATOMIC-2020).
"""

from __future__ import annotations

import csv
from pathlib import Path

from ...errors import LolkitError, data_error
from ...io import iter_jsonl
from ._common import Stats, get_number, get_str, require_file, write_splits

RELATIONS = ("xAttr", "xEffect", "xIntent", "xNeed", "xReact", "xWant", "HinderedBy")
SPLITS = {"train": "train", "val": "val", "test": "test_atomic10x"}


def prompt_for(head: str, relation: str) -> str:
    return f"<head> {head.strip()} </head> <relation> {relation} </relation> [GEN] "


def _atomic10x(path: Path, stats: Stats, min_p_valid: float | None) -> dict[str, list[dict]]:
    p = str(path)
    out: dict[str, list[dict]] = {name: [] for name in SPLITS.values()}
    for line, obj in iter_jsonl(path, allow_empty=True):
        stats.read["atomic10x"] += 1
        head = get_str(p, line, obj, "head")
        relation = get_str(p, line, obj, "relation")
        tail = get_str(p, line, obj, "tail")
        split = get_str(p, line, obj, "split")
        if split not in SPLITS:
            raise data_error(p, line, "split", f"unknown split {split!r} (expected train, val or test)")
        score = get_number(p, line, obj, "p_valid_model")
        if relation not in RELATIONS:
            stats.drop("atomic10x_other_relation")
            continue
        if not head.strip() or not tail.strip():
            stats.drop("atomic10x_empty_head_or_tail")
            continue
        if min_p_valid is not None and score < min_p_valid:
            stats.drop("atomic10x_below_min_p_valid")
            continue
        meta = {"head": head, "relation": relation, "source": f"{path.name}:{line}"}
        meta.update({k: v for k, v in obj.items() if k.startswith("rec_")})
        out[SPLITS[split]].append({"id": f"atomic10x-{line}", "prompt": prompt_for(head, relation),
                                   "response": tail.strip(), "reward": score,
                                   "rewards": {"p_valid_model": score}, "meta": meta})
    return out


def _atomic2020(path: Path, stats: Stats, group: bool) -> list[dict]:
    p = str(path)
    rows: list[tuple[int, str, str, str]] = []
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh, delimiter="\t")
            start = 1
            for row in reader:
                line, start = start, reader.line_num + 1
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != 3:
                    raise data_error(p, line, None, f"expected 3 tab-separated fields (head, relation, tail), got {len(row)}")
                rows.append((line, *row))
    except UnicodeDecodeError as e:
        raise LolkitError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    groups: dict[tuple[str, str], list[tuple[int, str]]] = {}
    out: list[dict] = []
    for line, head, relation, tail in rows:
        stats.read["atomic2020"] += 1
        if relation not in RELATIONS:
            stats.drop("atomic2020_other_relation")
            continue
        if not head.strip() or not tail.strip():
            stats.drop("atomic2020_empty_head_or_tail")
            continue
        if group:
            groups.setdefault((head, relation), []).append((line, tail.strip()))
        else:
            out.append({"id": f"atomic2020-{line}", "prompt": prompt_for(head, relation), "response": tail.strip(),
                        "meta": {"head": head, "relation": relation, "source": f"{path.name}:{line}"}})
    for (head, relation), tails in groups.items():
        stats.changed["atomic2020_rows_merged_into_group"] += len(tails) - 1
        line = tails[0][0]
        out.append({"id": f"atomic2020-{line}", "prompt": prompt_for(head, relation), "response": tails[0][1],
                    "meta": {"head": head, "relation": relation, "references": [t for _, t in tails],
                             "source": f"{path.name}:{line}"}})
    return out


def preprocess_comet(atomic10x: str | Path | None, output_dir: str | Path, atomic2020: str | Path | None = None,
                     group_test: bool = True, min_p_valid: float | None = None) -> dict[str, int]:
    if atomic10x is None and atomic2020 is None:
        raise LolkitError("give --atomic10x (ATOMIC10X.jsonl) and/or --atomic2020 (test.tsv)")
    stats = Stats("comet", {"atomic10x": atomic10x, "atomic2020": atomic2020, "group_test": group_test,
                            "min_p_valid": min_p_valid})
    splits: dict[str, list[dict]] = {}
    if atomic10x is not None:
        splits.update(_atomic10x(require_file(atomic10x), stats, min_p_valid))
    if atomic2020 is not None:
        splits["test"] = _atomic2020(require_file(atomic2020), stats, group_test)
    return write_splits(output_dir, splits, stats)
