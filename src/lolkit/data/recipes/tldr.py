"""Reddit TL;DR summarisation (OpenAI "Learning to summarize from human feedback").

Read in the layouts OpenAI publishes and the Hub copies most users download:

* human comparisons, OpenAI's ``comparisons/batch*.json`` (JSON lines)::

      {"info": {"id": "t3_...", "post": "...", "title": "...", "subreddit": "..."},
       "summaries": [{"text": " ...", "policy": "...", "note": ...}, {...}], "choice": 0 | 1,
       "split": "train" | "valid1" | "valid2", "worker": "...", "batch": "...", "extra": {...}}

  → preference records (chosen = ``summaries[choice]``). Splits as in PRO's preprocessing:
  ``train`` ← train, ``val`` ← valid1, ``test`` ← valid2; ``--val-size N`` keeps a seeded sample of N
  valid1 comparisons as ``val`` and moves the rest into ``train`` (PRO used 1000). CNN/DM comparisons
  (``info.article``, no ``post``) are dropped, as PRO does.
* the same comparisons as CarperAI re-packaged them (``CarperAI/openai_summarize_comparisons``: Parquet
  shards ``data/{train,test,valid1}-….parquet``, or the dataset in the local Hugging Face cache), one row
  ``{"prompt": "SUBREDDIT: r/…\\nTITLE: …\\nPOST: …", "chosen": "TL;DR: …", "rejected": "TL;DR: …"}`` →
  preference records; splits ``train``, ``val`` (valid1), ``test``, other names kept.
* the filtered TL;DR SFT data, OpenAI's ``tldr_3_filtered/{train,valid,test}.jsonl``
  (``{"id", "subreddit", "title", "post", "summary"}``) or CarperAI's ``openai_summarize_tldr``
  (Parquet ``{"prompt": "SUBREDDIT: …\\nTL;DR: ", "label": summary}``) → response records
  ``sft_train`` / ``sft_val`` / ``sft_test``.

Prompt (OpenAI / PRO): ``SUBREDDIT: r/{subreddit}\\nTITLE: {title}\\nPOST: {post}\\nTL;DR:``; a summary
is the stripped text with one leading space, as PRO writes it. CarperAI's prompts are brought to the
same form (``TL;DR:`` appended where it is missing, the ``TL;DR:`` prefix of its summaries removed).
"""

from __future__ import annotations

import random
from pathlib import Path

from ...errors import LolkitError, data_error
from ..loader import Source, open_splits
from ._common import Stats, get_list, get_str, write_splits

SPLITS = {"train": "train", "valid1": "val", "valid2": "test", "valid": "val", "test": "test"}
CARPER_SPLITS = {"train": "train", "valid1": "val", "valid": "val", "validation": "val", "test": "test"}
SFT_SPLITS = {"train": "sft_train", "valid": "sft_val", "validation": "sft_val", "test": "sft_test"}


def tldr_prompt(subreddit: str, title: str, post: str) -> str:
    return f"SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:".strip()


def _tldr_suffix(prompt: str) -> str:
    """A CarperAI prompt in the OpenAI / PRO form: ending in ``TL;DR:`` (theirs ends in ``TL;DR: `` or not at all)."""
    prompt = prompt.strip()
    return prompt if prompt.endswith("TL;DR:") else prompt + "\nTL;DR:"


def _summary(text: str) -> str:
    return text.strip().removeprefix("TL;DR:").strip()


def _usable(post: str, chosen: str, rejected: str, stats: Stats) -> bool:
    """A comparison needs a post and two different, non-empty summaries; what fails is counted."""
    if not chosen or not rejected or not post.strip():
        stats.drop("comparison_empty_text")
        return False
    if chosen == rejected:
        stats.drop("comparison_identical_summaries")
        return False
    return True


def _openai_comparisons(src: Source, out: dict[str, list[dict]], stats: Stats) -> None:
    for p, line, obj in src.rows():
        name = Path(p).name
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
        if not _usable(post, chosen, rejected, stats):
            continue
        meta = {"post_id": info.get("id"), "split": split, "source": f"{name}:{line}",
                "policies": [s.get("policy") for s in summaries]}
        if isinstance(obj.get("extra"), dict) and "confidence" in obj["extra"]:
            meta["confidence"] = obj["extra"]["confidence"]
        out.setdefault(SPLITS[split], []).append({"id": f"{Path(p).stem}-{line}", "prompt": tldr_prompt(subreddit, title, post),
                                                  "chosen": " " + chosen, "rejected": " " + rejected, "meta": meta})


def _carper_comparisons(src: Source, split: str, out: dict[str, list[dict]], stats: Stats) -> None:
    name = CARPER_SPLITS.get(split, split)
    for p, line, obj in src.rows():
        stats.read["comparisons"] += 1
        prompt = get_str(p, line, obj, "prompt")
        chosen = _summary(get_str(p, line, obj, "chosen"))
        rejected = _summary(get_str(p, line, obj, "rejected"))
        if not _usable(prompt, chosen, rejected, stats):
            continue
        out.setdefault(name, []).append({"id": f"{split}-{int(line)}", "prompt": _tldr_suffix(prompt),
                                         "chosen": " " + chosen, "rejected": " " + rejected,
                                         "meta": {"split": split, "source": f"{Path(p).name}:{line}"}})


def _comparisons(inputs: list[str | Path], stats: Stats) -> dict[str, list[dict]]:
    """OpenAI's batch files name each row's split; CarperAI's Parquet names it by file (or cache split)."""
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for given in inputs:
        for split, src in open_splits(given, allow_empty=True).items():
            rows = src.rows()
            first = next(rows, None)
            rows.close()
            if first is None:
                continue
            if "info" in first[2] or "summaries" in first[2]:
                _openai_comparisons(src, out, stats)
            else:
                _carper_comparisons(src, split, out, stats)
    return out


def _sft(sft: str | Path, stats: Stats) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for given, src in open_splits(sft, allow_empty=True).items():
        split = SFT_SPLITS.get(given, f"sft_{given}")
        rows, seen = out.setdefault(split, []), set()
        for p, line, obj in src.rows():
            stats.read[split] += 1
            if "label" in obj and "post" not in obj:  # CarperAI's openai_summarize_tldr
                prompt = _tldr_suffix(get_str(p, line, obj, "prompt"))
                summary = _summary(get_str(p, line, obj, "label"))
                empty = not summary or prompt == "TL;DR:"
            else:
                post = get_str(p, line, obj, "post")
                prompt = tldr_prompt(get_str(p, line, obj, "subreddit"), get_str(p, line, obj, "title"), post)
                summary = get_str(p, line, obj, "summary").strip()
                empty = not summary or not post.strip()
            if empty:
                stats.drop(f"{split}_empty_text")
                continue
            rid = str(obj.get("id") or f"{split}-{int(line)}")
            if rid in seen:
                stats.drop(f"{split}_duplicate_id")
                continue
            seen.add(rid)
            rows.append({"id": rid, "prompt": prompt, "response": " " + summary,
                         "meta": {"source": f"{Path(p).name}:{line}"}})
    return out


def preprocess_tldr(output_dir: str | Path, comparisons: list[str | Path] | None = None,
                    sft_dir: str | Path | None = None, val_size: int | None = None, seed: int = 42) -> dict[str, int]:
    if not comparisons and sft_dir is None:
        raise LolkitError("give --comparisons (OpenAI's comparisons folder or a file, CarperAI's Parquet) and/or "
                          "--sft-dir (tldr_3_filtered or CarperAI's openai_summarize_tldr)")
    stats = Stats("tldr", {"comparisons": [str(c) for c in comparisons or []], "sft_dir": sft_dir,
                           "val_size": val_size, "seed": seed})
    splits: dict[str, list[dict]] = {}
    if comparisons:
        splits.update(_comparisons(list(comparisons), stats))
        if val_size is not None and len(splits["val"]) > val_size:
            keep = set(random.Random(seed).sample(range(len(splits["val"])), val_size))
            moved = [r for i, r in enumerate(splits["val"]) if i not in keep]
            splits["val"] = [r for i, r in enumerate(splits["val"]) if i in keep]
            splits["train"] += moved
            stats.changed["val_moved_to_train"] += len(moved)
    if sft_dir is not None:
        splits.update(_sft(sft_dir, stats))
    return write_splits(output_dir, splits, stats)
