"""``lolkit preprocess``: raw data → records in the data contract (JSONL).

* ``builtin``: writes a built-in task's train / val / test splits;
* ``jsonl``: validates any contract or TRL-format file (standard or conversational) and writes it
  back with the contract's field names (``completion`` → ``response``, ids filled in).

The corpus recipes (``hh``, ``reddit``, ``wow``, ``faithdial``, ``faithdial_wow``, ``comet``, ``tldr``,
``imdb``, ``ultrafeedback``) live in :mod:`lolkit.data.recipes`, one module each; ``data_recipes/``
documents them.
"""

from __future__ import annotations

from pathlib import Path

from .data.schema import load_records
from .io import write_jsonl


def preprocess_builtin(task: str, output_dir: str, seed: int = 0) -> dict[str, int]:
    from .tasks import get_task

    t = get_task(task)
    counts = {}
    for split in ("train", "val", "test"):
        counts[split] = write_jsonl(Path(output_dir) / f"{split}.jsonl", t.records(split, seed))
    return counts


def preprocess_jsonl(input_path: str, output_path: str) -> dict[str, int | str]:
    records = load_records(input_path)
    n = write_jsonl(output_path, (r.to_json() for r in records))
    return {"records": n, "kind": records[0].kind}
