"""``lolkit preprocess``: raw data → records in the data contract.

* ``builtin``: writes a built-in task's train / val / test splits;
* ``jsonl``: validates any contract or TRL-format dataset (any format the loader reads: JSON lines,
  Parquet, CSV, a ``save_to_disk`` folder, a cached Hub dataset …) and writes it back with the contract's
  field names (``completion`` → ``response``, ids filled in);
* ``pairs``: scored samples (``generate`` + ``reward`` output) → preference pairs or rankings;
* ``split``: one dataset → disjoint parts by prompt (every record of a prompt lands in the same part).

Outputs are JSON lines, or Parquet / an Arrow folder when ``--output`` names one
(:func:`lolkit.data.loader.write_records`). The corpus recipes (``hh``, ``reddit``, ``wow``, ``faithdial``,
``faithdial_wow``, ``comet``, ``tldr``, ``imdb``, ``ultrafeedback``) live in :mod:`lolkit.data.recipes`,
one module each; ``data_recipes/`` documents them.
"""

from __future__ import annotations

from pathlib import Path

from .data.loader import write_records
from .data.schema import load_records, require_rewards
from .errors import LolkitError
from .io import write_jsonl


def preprocess_builtin(task: str, output_dir: str, seed: int = 0) -> dict[str, int]:
    from .tasks import get_task

    t = get_task(task)
    counts = {}
    for split in ("train", "val", "test"):
        counts[split] = write_jsonl(Path(output_dir) / f"{split}.jsonl", t.records(split, seed))
    return counts


def preprocess_jsonl(input_path: str, output_path: str, label_reward: bool = False) -> dict[str, int | str]:
    records = load_records(input_path, label_reward=label_reward)
    n = write_records(output_path, (r.to_json() for r in records))
    return {"records": n, "kind": records[0].kind}


def preprocess_pairs(input_path: str, output_path: str, kind: str = "preference", mode: str = "best_worst",
                     margin: float = 0.0, top_k: int | None = None, keep_ties: bool = False) -> dict:
    """Scored response records → preference pairs (``mode``: best_worst | all, ``margin``) or rankings
    (``top_k``); returns counts, with what was dropped and why."""
    from .data.pairs import MODES, PairStats, preference_pairs, rankings

    if kind not in ("preference", "ranking"):
        raise LolkitError(f"--kind {kind!r}: expected preference or ranking")
    mode = mode.replace("-", "_")
    if mode not in MODES:
        raise LolkitError(f"--mode {mode!r}: expected best-worst or all")
    if not margin >= 0:
        raise LolkitError(f"--margin must be >= 0, got {margin}")
    if keep_ties and margin > 0:
        raise LolkitError("--keep-ties keeps pairs with equal rewards, which a --margin above 0 drops: give one of them")
    if top_k is not None and (kind != "ranking" or top_k < 2):
        raise LolkitError("--top-k is the length of a ranking: at least 2, with --kind ranking")
    if kind == "ranking" and (mode != "best_worst" or margin):
        raise LolkitError("--mode and --margin make pairs; a ranking keeps every answer (use --top-k)")
    records = load_records(input_path)
    if records[0].kind != "response":
        raise LolkitError(f"{input_path}: holds {records[0].kind} records; preprocess pairs reads scored response "
                          "records (several per prompt, as lolkit generate + lolkit reward write them)")
    require_rewards(records, input_path, "preprocess pairs")
    stats = PairStats()
    if kind == "preference":
        rows = preference_pairs(records, mode, margin, keep_ties, stats)
    else:
        rows = rankings(records, top_k, keep_ties, stats)
    if not rows:
        raise LolkitError(f"{input_path}: no {kind} records to write ({_dropped(stats.dropped) or 'no scored answers'}); "
                          "sample several answers per prompt (lolkit generate --num-samples N) and score them")
    n = write_records(output_path, rows)
    return {"records": n, "kind": kind, **stats.to_json()}


def _dropped(counts: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(counts.items()))


def parse_parts(text: str) -> list[tuple[str, float]]:
    """``"train=0.8,val=0.1,test=0.1"`` (shares) or ``"rm=600,test=200,policy=rest"`` (prompt counts;
    ``rest`` takes what is left) → [(name, size)]; a share is < 1, a count >= 1, ``rest`` is -1."""
    import re

    parts: list[tuple[str, float]] = []
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name, _, size = item.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not size:
            raise LolkitError(f"--parts {item!r}: expected NAME=SIZE (a share below 1, a number of prompts, or rest)")
        if size == "rest":
            parts.append((name, -1.0))
            continue
        try:
            value = float(size)
        except ValueError:
            raise LolkitError(f"--parts {item!r}: {size!r} is not a number") from None
        if not value > 0 or (value >= 1 and value != int(value)):
            raise LolkitError(f"--parts {item!r}: a size is a share in (0, 1) or a whole number of prompts")
        parts.append((name, value))
    names = [n for n, _ in parts]
    if len(parts) < 2 or len(set(names)) != len(names):
        raise LolkitError(f"--parts {text!r}: give at least two parts with distinct names")
    if sum(1 for _, v in parts if v == -1) > 1:
        raise LolkitError(f"--parts {text!r}: only one part can be 'rest'")
    return parts


def preprocess_split(input_path: str, output_dir: str, parts: str, seed: int = 0) -> dict[str, int]:
    """Split a dataset into disjoint parts by prompt (every record sharing a prompt's text goes to the same
    part, so no test prompt was seen in training), in a seeded random order; writes ``<part>.jsonl`` and
    ``stats.json`` (prompts and records per part) into ``output_dir``."""
    import random

    from .data.recipes._common import Stats, write_splits
    from .data.schema import prompt_text

    sizes = parse_parts(parts)
    records = load_records(input_path)
    by_prompt: dict[str, list] = {}
    for rec in records:
        by_prompt.setdefault(prompt_text(rec.prompt), []).append(rec)
    prompts = list(by_prompt)
    random.Random(f"lolkit-split-{seed}").shuffle(prompts)
    n = len(prompts)
    counts = {name: (round(v * n) if v < 1 else int(v)) for name, v in sizes if v != -1}
    rest = [name for name, v in sizes if v == -1]
    if rest:
        counts[rest[0]] = n - sum(counts.values())
    elif all(v < 1 for _, v in sizes):  # shares: the last part takes the rounding remainder
        counts[sizes[-1][0]] = n - sum(c for name, c in counts.items() if name != sizes[-1][0])
    if min(counts.values()) < 1 or sum(counts.values()) > n:
        raise LolkitError(f"{input_path}: {n} distinct prompts cannot make the parts {parts!r} "
                          f"({', '.join(f'{k} {v}' for k, v in counts.items())})")
    stats = Stats("split", {"input": input_path, "parts": parts, "seed": seed})
    stats.read["records"] = len(records)
    splits: dict[str, list[dict]] = {}
    start = 0
    for name, _ in sizes:
        chosen = prompts[start : start + counts[name]]
        start += counts[name]
        splits[name] = [r.to_json() for p in chosen for r in by_prompt[p]]
        stats.changed[f"{name}_prompts"] = len(chosen)
    if start < n:
        stats.drop("prompts_in_no_part", n - start)
    return write_splits(output_dir, splits, stats)
