"""Reddit TL;DR summarisation (OpenAI "Learning to summarize from human feedback").

Two published formats, both JSON lines:

* human comparisons (``comparisons/batch*.json``)::

      {"info": {"id": "t3_...", "post": "...", "title": "...", "subreddit": "..."},
       "summaries": [{"text": " ...", "policy": "...", "note": ...}, {...}], "choice": 0 | 1,
       "split": "train" | "valid1" | "valid2", "worker": "...", "batch": "...", "extra": {...}}

  → preference records (chosen = ``summaries[choice]``). Splits as in PRO's preprocessing:
  ``train`` ← train, ``val`` ← valid1, ``test`` ← valid2; ``--val-size N`` keeps a seeded sample of N
  valid1 comparisons as ``val`` and moves the rest into ``train`` (PRO used 1000). CNN/DM comparisons
  (``info.article``, no ``post``) are dropped, as PRO does.
* the filtered TL;DR SFT data (``tldr_3_filtered/{train,valid,test}.jsonl``):
  ``{"id", "subreddit", "title", "post", "summary"}`` → response records ``sft_train`` / ``sft_val`` /
  ``sft_test``.

Prompt (OpenAI / PRO): ``SUBREDDIT: r/{subreddit}\\nTITLE: {title}\\nPOST: {post}\\nTL;DR:``; a summary
is the stripped text with one leading space, as PRO writes it.
"""

from __future__ import annotations

import random
from pathlib import Path

from ...errors import LolkitError, data_error
from ._common import Stats, get_list, get_str, iter_json_lines, require_dir, write_splits

SPLITS = {"train": "train", "valid1": "val", "valid2": "test", "valid": "val", "test": "test"}
SFT_FILES = {"sft_train": "train.jsonl", "sft_val": "valid.jsonl", "sft_test": "test.jsonl"}


def tldr_prompt(subreddit: str, title: str, post: str) -> str:
    return f"SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:".strip()


def _comparison_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.json")) + sorted(path.glob("*.jsonl"))
        if not files:
            raise LolkitError(f"{path}: no *.json comparison files")
        return files
    if not path.is_file():
        raise LolkitError(f"{path}: file not found")
    return [path]


def _comparisons(paths: list[Path], stats: Stats) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for path in paths:
        p = str(path)
        for line, obj in iter_json_lines(path):
            stats.read["comparisons"] += 1
            info = obj.get("info")
            if not isinstance(info, dict):
                raise data_error(p, line, "info", "missing or not an object")
            summaries = get_list(p, line, obj, "summaries")
            if len(summaries) != 2 or not all(isinstance(s, dict) for s in summaries):
                raise data_error(p, line, "summaries", "expected two summary objects")
            texts = [get_str(p, line, s, "text", f"summaries[{i}].") for i, s in enumerate(summaries)]
            choice = obj.get("choice")
            if choice not in (0, 1) or isinstance(choice, bool):
                raise data_error(p, line, "choice", f"expected 0 or 1, got {choice!r}")
            split = get_str(p, line, obj, "split")
            if split not in SPLITS:
                raise data_error(p, line, "split", f"unknown split {split!r} (expected train, valid1 or valid2)")
            if "post" not in info:
                stats.drop("comparison_without_post_cnndm")
                continue
            post = get_str(p, line, info, "post", "info.")
            title = get_str(p, line, info, "title", "info.")
            subreddit = get_str(p, line, info, "subreddit", "info.")
            chosen, rejected = texts[choice].strip(), texts[1 - choice].strip()
            if not chosen or not rejected or not post.strip():
                stats.drop("comparison_empty_text")
                continue
            if chosen == rejected:
                stats.drop("comparison_identical_summaries")
                continue
            meta = {"post_id": info.get("id"), "split": split, "source": f"{path.name}:{line}",
                    "policies": [s.get("policy") for s in summaries]}
            if isinstance(obj.get("extra"), dict) and "confidence" in obj["extra"]:
                meta["confidence"] = obj["extra"]["confidence"]
            out[SPLITS[split]].append({"id": f"{path.stem}-{line}", "prompt": tldr_prompt(subreddit, title, post),
                                       "chosen": " " + chosen, "rejected": " " + rejected, "meta": meta})
    return out


def _sft(root: Path, stats: Stats) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for split, name in SFT_FILES.items():
        path = root / name
        if not path.is_file():
            continue
        p, rows, seen = str(path), [], set()
        for line, obj in iter_json_lines(path):
            stats.read[split] += 1
            post = get_str(p, line, obj, "post")
            title = get_str(p, line, obj, "title")
            subreddit = get_str(p, line, obj, "subreddit")
            summary = get_str(p, line, obj, "summary").strip()
            if not summary or not post.strip():
                stats.drop(f"{split}_empty_text")
                continue
            rid = str(obj.get("id") or f"{split}-{line}")
            if rid in seen:
                stats.drop(f"{split}_duplicate_id")
                continue
            seen.add(rid)
            rows.append({"id": rid, "prompt": tldr_prompt(subreddit, title, post), "response": " " + summary,
                         "meta": {"source": f"{name}:{line}"}})
        out[split] = rows
    if not out:
        raise LolkitError(f"{root}: none of {', '.join(SFT_FILES.values())} found")
    return out


def preprocess_tldr(output_dir: str | Path, comparisons: list[str | Path] | None = None,
                    sft_dir: str | Path | None = None, val_size: int | None = None, seed: int = 42) -> dict[str, int]:
    if not comparisons and sft_dir is None:
        raise LolkitError("give --comparisons (a comparisons folder or file) and/or --sft-dir (tldr_3_filtered)")
    stats = Stats("tldr", {"comparisons": [str(c) for c in comparisons or []], "sft_dir": sft_dir,
                           "val_size": val_size, "seed": seed})
    splits: dict[str, list[dict]] = {}
    if comparisons:
        files = [f for c in comparisons for f in _comparison_files(Path(c))]
        splits.update(_comparisons(files, stats))
        if val_size is not None and len(splits["val"]) > val_size:
            keep = set(random.Random(seed).sample(range(len(splits["val"])), val_size))
            moved = [r for i, r in enumerate(splits["val"]) if i not in keep]
            splits["val"] = [r for i, r in enumerate(splits["val"]) if i in keep]
            splits["train"] += moved
            stats.changed["val_moved_to_train"] += len(moved)
    if sft_dir is not None:
        splits.update(_sft(require_dir(sft_dir), stats))
    return write_splits(output_dir, splits, stats)
