"""``lolkit preprocess``: raw data → records in the data contract.

* ``builtin``: writes a built-in task's train / val / test splits;
* ``jsonl``: validates any contract or TRL-format dataset (any format the loader reads: JSON lines,
  Parquet, CSV, a ``save_to_disk`` folder, a cached Hub dataset …) and writes it back with the contract's
  field names (``completion`` → ``response``, ids filled in);
* ``pairs``: scored samples (``generate`` + ``reward`` output) → preference pairs or rankings.

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
