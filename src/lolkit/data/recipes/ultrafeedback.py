"""UltraFeedback binarized (HuggingFaceH4/ultrafeedback_binarized) → preference records.

Raw format: the Hub layout as downloaded (``data/train_prefs-00000-of-00001.parquet``,
``data/test_prefs-….parquet``, and the ``*_sft`` / ``*_gen`` splits, which are skipped), the dataset in the
local Hugging Face cache (``HuggingFaceH4/ultrafeedback_binarized``), or any file of its rows — Parquet,
or JSON lines as ``to_json`` exports them. One row::

    {"prompt": "...", "prompt_id": "...",
     "chosen": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "rejected": [{"role": "user", ...}, {"role": "assistant", ...}],
     "messages": [...], "score_chosen": 8.5, "score_rejected": 5.0}

The prompt is the conversation before the last message of ``chosen`` (a message list, rendered by the
model's chat template; ``--plain`` uses the ``prompt`` string); chosen / rejected are the assistant's
last messages; ``score_chosen`` / ``score_rejected`` become ``chosen_reward`` / ``rejected_reward``.
Dropped: ties (equal scores; ``--keep-ties`` keeps them), identical or empty responses. Each split keeps
its name, ``train_prefs`` → ``train`` and ``test_prefs`` → ``test``; a file is the split its name says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import LolkitError, data_error
from ..loader import open_splits
from ._common import Stats, get_list, get_number, get_str, write_splits

SPLIT_NAMES = {"train_prefs": "train", "test_prefs": "test", "train": "train", "test": "test"}
ROLES = ("system", "user", "assistant", "tool")


def _messages(p: str, line: int, name: str, value: list) -> list[dict[str, str]]:
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise data_error(p, line, f"{name}[{i}]", "a message needs a 'role' (system/user/assistant/tool) "
                             "and a string 'content'")
        out.append({"role": m["role"], "content": m["content"]})
    if not out or out[-1]["role"] != "assistant":
        raise data_error(p, line, name, "the last message must be the assistant's response")
    return out


def _split(rows, plain: bool, keep_ties: bool, stats: Stats, name: str) -> list[dict]:
    out: list[dict] = []
    seen: set[str] = set()
    for p, line, obj in rows:
        stats.read[name] += 1
        chosen = _messages(p, line, "chosen", get_list(p, line, obj, "chosen"))
        rejected = _messages(p, line, "rejected", get_list(p, line, obj, "rejected"))
        sc, sr = get_number(p, line, obj, "score_chosen"), get_number(p, line, obj, "score_rejected")
        prompt: Any
        if plain:
            prompt = get_str(p, line, obj, "prompt")
        else:
            prompt = chosen[:-1] or [{"role": "user", "content": get_str(p, line, obj, "prompt")}]
        a, b = chosen[-1]["content"].strip(), rejected[-1]["content"].strip()
        if not a or not b or (isinstance(prompt, str) and not prompt.strip()):
            stats.drop(f"{name}_empty_text")
            continue
        if a == b:
            stats.drop(f"{name}_identical_responses")
            continue
        if sc == sr and not keep_ties:
            stats.drop(f"{name}_tie")
            continue
        if not plain and not any(m["content"].strip() for m in prompt):
            stats.drop(f"{name}_empty_text")
            continue
        rid = str(obj.get("prompt_id") or f"{name}-{int(line)}")
        if rid in seen:
            rid = f"{rid}-{int(line)}"
        seen.add(rid)
        out.append({"id": rid, "prompt": prompt, "chosen": a, "rejected": b, "chosen_reward": sc,
                    "rejected_reward": sr, "meta": {"source": f"{Path(p).name}:{line}"}})
    return out


def preprocess_ultrafeedback(inputs: list[str | Path], output_dir: str | Path, plain: bool = False,
                             keep_ties: bool = False) -> dict[str, int]:
    if not inputs:
        raise LolkitError("give at least one input: the Hub folder, a cached dataset id, or train_prefs / test_prefs files")
    stats = Stats("ultrafeedback", {"inputs": [str(i) for i in inputs], "plain": plain, "keep_ties": keep_ties})
    splits: dict[str, list[dict]] = {}
    for given in inputs:
        found = open_splits(given, allow_empty=True)
        for split, src in found.items():
            if len(found) > 1 and not split.endswith("_prefs"):
                stats.options.setdefault("skipped_splits", []).append(split)  # *_sft / *_gen hold no pairs
                continue
            name = SPLIT_NAMES.get(split, split)
            if name in splits:
                raise LolkitError(f"{src.label}: a second input for split {name!r}")
            splits[name] = _split(src.rows(), plain, keep_ties, stats, name)
    return write_splits(output_dir, splits, stats)
