"""Anthropic HH-RLHF, as Anthropic publishes it and as PRO / A-LoL re-package it.

**The raw release** (``anthropics/hh-rlhf``: ``harmless-base/train.jsonl.gz``, ``…/test.jsonl.gz``, the
same for ``helpful-base``, ``helpful-online``, ``helpful-rejection-sampled``; or ``Anthropic/hh-rlhf`` in the
local Hugging Face cache), one JSON object a line::

    {"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": "\\n\\nHuman: …\\n\\nAssistant: …"}

Each side is a whole transcript; the two share every turn but the last assistant reply, and
``chosen`` is the one the human annotator preferred. The prompt is the shared dialogue, the responses
the two last replies. Rows whose transcripts differ before the last reply (the model wrote a fake
``Human:`` turn into its answer), and rows whose last replies are empty or identical, are dropped and
counted — for ``--kind response`` only the chosen reply matters. The release has no reward scores:
``--kind preference`` (default) or ``response``.

**PRO's re-packaging** (``data.zip``: ``hh_train_len2/train.json``, ``hh_dev/sampled_dev.json``,
``hh_test/{harmless_base,helpful_base,helpful_online,helpful_rejection}.json``), one JSON object a line::

    {"prefix": [["<|prompter|>How do I ...?", "<|assistant|>"], [... same turns ...]],
     "suffix": ["response", "other response"], "reward": [0.53, -1.2], "sft_index": 0,
     "meta": {"path": "...", "line_num": 108, "task": "dialogue"}}

``prefix`` holds one copy of the dialogue per candidate; each turn starts with a role marker and the
last is the bare ``<|assistant|>`` the response continues. ``reward`` are PRO's reward-model logits
(OpenAssistant DeBERTa RM). ``sft_index`` is the response the human annotator chose (``suffix[0]`` in the
published dev / test files): ``--chosen-by human`` (default) makes it the chosen response of a
preference and the response of ``--kind response``; ``--chosen-by reward`` takes the reward model's top
pick instead (they differ on about two rows in five of the test files). ``sft_index`` is kept in ``meta``.

* Cleaning (A-LoL ``data_cleaning.py``): drop a training row when any of its first two responses ends
  with ``:`` (abruptly cut responses). Applied to the train split only, as A-LoL does.
* Chat format (A-LoL): ``SYSTEM + "".join(turns)`` with ``<|prompter|>`` → `` ### Human: `` and
  ``<|assistant|>`` → `` ### Assistant: ``, stripped. Alternatives: the Anthropic ``\\n\\nHuman:``
  format, or a conversational message list for a tokenizer's chat template.
* Rewards (PRO only): A-LoL trains with ``sigmoid(logit)``; ``--reward-transform raw`` keeps PRO's logits.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ...errors import LolkitError, data_error
from ..loader import open_source, open_splits
from ._common import Stats, get_list, get_str, write_splits

SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.\n")

# PRO's markers, and the Anthropic raw ones for files that kept them.
_MARKERS = (("<|prompter|>", "user"), ("<|assistant|>", "assistant"),
            ("\n\nHuman:", "user"), ("\n\nAssistant:", "assistant"), ("Human:", "user"), ("Assistant:", "assistant"))

TRAIN = ("hh_train_len2/train.json",)
VAL = ("hh_dev/sampled_dev.json",)
TEST = ("hh_test/harmless_base.json", "hh_test/helpful_base.json", "hh_test/helpful_online.json",
        "hh_test/helpful_rejection.json")

KINDS = ("ranking", "preference", "response")
FORMATS = ("alol", "hh", "messages")
TRANSFORMS = ("sigmoid", "raw")
CHOSEN_BY = ("human", "reward")
RAW_SPLITS = ("train", "test")  # the raw release's files; red-team-attempts is another format
_TURN = re.compile(r"\n\n(Human|Assistant):")


def _turns(path: str, line: int, prefix: Any) -> list[tuple[str, str]]:
    """The dialogue as (role, text) turns, without the final empty assistant turn."""
    if not isinstance(prefix, list) or not prefix:
        raise data_error(path, line, "prefix", "expected a non-empty list of dialogue turns")
    copies = prefix if all(isinstance(p, list) for p in prefix) else [prefix]
    turns_raw = copies[0]
    name = "prefix[0]" if copies is prefix else "prefix"
    if not turns_raw:
        raise data_error(path, line, name, "empty dialogue")
    turns: list[tuple[str, str]] = []
    for i, t in enumerate(turns_raw):
        if not isinstance(t, str):
            raise data_error(path, line, f"{name}[{i}]", f"expected a string turn, got {type(t).__name__}")
        for marker, role in _MARKERS:
            if t.startswith(marker):
                turns.append((role, t[len(marker):].strip()))
                break
        else:
            raise data_error(path, line, f"{name}[{i}]", "a turn must start with <|prompter|> or <|assistant|> "
                             f"(or Human: / Assistant:), got {t[:30]!r}")
    if turns[-1] != ("assistant", ""):
        raise data_error(path, line, f"{name}[{len(turns) - 1}]", "the last turn must be the empty assistant "
                         "turn the response continues")
    return turns[:-1]


def render(turns: list[tuple[str, str]], fmt: str) -> str | list[dict[str, str]]:
    if fmt == "messages":
        return [{"role": r, "content": t} for r, t in turns]
    if fmt == "hh":
        return "".join(f"\n\n{'Human' if r == 'user' else 'Assistant'}: {t}" for r, t in turns) + "\n\nAssistant:"
    text = "".join(f" ### {'Human' if r == 'user' else 'Assistant'}: {t}" for r, t in turns) + " ### Assistant: "
    return SYSTEM + text.strip()


def last_turns(turns: list[tuple[str, str]], max_turns: int | None, stats: Stats) -> list[tuple[str, str]]:
    """The dialogue cut to its last ``max_turns`` turns, starting at a human turn (counted in stats.json)."""
    if not max_turns or len(turns) <= max_turns:
        return turns
    kept = turns[-max_turns:]
    while len(kept) > 1 and kept[0][0] != "user":
        kept = kept[1:]
    stats.changed["history_trimmed"] += 1
    return kept


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _sft_index(p: str, line: int, obj: dict, n: int, needed: bool) -> int | None:
    """The human annotator's choice, validated; None when absent and not ``needed``."""
    if "sft_index" not in obj and not needed:
        return None
    v = obj.get("sft_index")
    if isinstance(v, bool) or not isinstance(v, int):
        raise data_error(p, line, "sft_index", f"expected the index of the human-chosen response, got {v!r} "
                         "(--chosen-by reward picks by reward score instead)")
    if not 0 <= v < n:
        raise data_error(p, line, "sft_index", f"{v} is out of range for {n} responses")
    return v


def _read_pro(label: str, rows, split: str, stats: Stats, opts: dict, subset: str | None) -> list[dict]:
    kind, fmt, transform, clean, chosen_by = (opts[k] for k in ("kind", "fmt", "transform", "clean", "chosen_by"))
    name = Path(label).name
    out: list[dict] = []
    for p, line, obj in rows:
        stats.read[split] += 1
        turns = _turns(p, line, obj.get("prefix"))
        suffix = get_list(p, line, obj, "suffix")
        reward = get_list(p, line, obj, "reward")
        if not suffix:
            raise data_error(p, line, "suffix", "expected at least one response")
        if len(reward) != len(suffix):
            raise data_error(p, line, "reward", f"has {len(reward)} values for {len(suffix)} responses")
        for i, s in enumerate(suffix):
            if not isinstance(s, str):
                raise data_error(p, line, f"suffix[{i}]", f"expected a string, got {type(s).__name__}")
        scores = []
        for i, r in enumerate(reward):
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r):
                raise data_error(p, line, f"reward[{i}]", f"expected a finite number, got {r!r}")
            scores.append(_sigmoid(float(r)) if transform == "sigmoid" else float(r))
        human = _sft_index(p, line, obj, len(suffix), needed=chosen_by == "human" and kind != "ranking")
        if clean and split == "train" and any(s.endswith(":") for s in suffix[:2]):
            stats.drop("train_response_ends_with_colon")
            continue
        if not turns:
            stats.drop("empty_dialogue")
            continue
        responses = [s.strip() for s in suffix]
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        chosen = human if chosen_by == "human" and kind != "ranking" else best
        rid = f"{subset or split}-{line}"
        meta: dict[str, Any] = {"source": f"{name}:{line}"}
        if subset:
            meta["subset"] = subset
        if human is not None:
            meta["sft_index"] = human
        if isinstance(obj.get("meta"), dict):
            meta["pro_meta"] = obj["meta"]
        prompt = render(last_turns(turns, opts["max_turns"], stats), fmt)
        if kind == "ranking":
            if not all(responses):
                stats.drop("empty_response")
                continue
            out.append({"id": rid, "prompt": prompt, "responses": responses, "rewards": scores, "meta": meta})
        elif kind == "response":
            if not responses[chosen]:  # only the chosen reply is trained on: an empty other one is no reason to drop
                stats.drop("empty_response")
                continue
            out.append({"id": rid, "prompt": prompt, "response": responses[chosen], "reward": scores[chosen],
                        "meta": meta})
        else:
            others = [i for i in range(len(scores)) if i != chosen]
            if not others:
                stats.drop("single_response")
                continue
            worst = min(others, key=lambda i: (scores[i], i))
            if not responses[chosen] or not responses[worst]:
                stats.drop("empty_response")
                continue
            if responses[chosen] == responses[worst]:
                stats.drop("identical_responses")
                continue
            if chosen_by == "reward" and scores[chosen] == scores[worst]:
                stats.drop("no_preference_tie_or_single")
                continue
            out.append({"id": rid, "prompt": prompt, "chosen": responses[chosen], "rejected": responses[worst],
                        "chosen_reward": scores[chosen], "rejected_reward": scores[worst], "meta": meta})
    return out


def transcript_turns(p: str, line: int, field: str, text: str) -> list[tuple[str, str]]:
    """An Anthropic transcript (``\\n\\nHuman: … \\n\\nAssistant: …``) as (role, text) turns."""
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise data_error(p, line, field, "expected a transcript of '\\n\\nHuman:' / '\\n\\nAssistant:' turns, "
                         f"got {text[:40]!r}")
    return [("user" if parts[i] == "Human" else "assistant", parts[i + 1].strip()) for i in range(1, len(parts), 2)]


def _read_raw(rows, split: str, stats: Stats, opts: dict, subset: str | None) -> list[dict]:
    kind, fmt, clean = opts["kind"], opts["fmt"], opts["clean"]
    out: list[dict] = []
    for p, line, obj in rows:
        stats.read[split] += 1
        chosen_t = transcript_turns(p, line, "chosen", get_str(p, line, obj, "chosen"))
        rejected_t = transcript_turns(p, line, "rejected", get_str(p, line, obj, "rejected"))
        if chosen_t[-1][0] != "assistant" or rejected_t[-1][0] != "assistant":
            stats.drop("last_turn_not_assistant")
            continue
        prompt_turns, chosen = chosen_t[:-1], chosen_t[-1][1]
        rejected = rejected_t[-1][1]
        if not prompt_turns:
            stats.drop("empty_dialogue")
            continue
        if clean and split == "train" and (chosen.endswith(":") or rejected.endswith(":")):
            stats.drop("train_response_ends_with_colon")
            continue
        if not chosen:
            stats.drop("empty_reply")
            continue
        if kind == "preference":
            if rejected_t[:-1] != prompt_turns:
                stats.drop("different_dialogues")
                continue
            if not rejected:
                stats.drop("empty_reply")
                continue
            if chosen == rejected:
                stats.drop("identical_replies")
                continue
        meta: dict[str, Any] = {"source": f"{Path(p).name}:{line}"}
        if subset:
            meta["subset"] = subset
        rid = f"{subset}-{split}-{line}" if subset else f"{split}-{line}"
        prompt = render(last_turns(prompt_turns, opts["max_turns"], stats), fmt)
        if kind == "response":
            out.append({"id": rid, "prompt": prompt, "response": chosen, "meta": meta})
        else:
            out.append({"id": rid, "prompt": prompt, "chosen": chosen, "rejected": rejected, "meta": meta})
    return out


def _is_pro(root: Path) -> bool:
    return root.is_dir() and any((root / rel).is_file() for rel in TRAIN + VAL + TEST)


def _raw_splits(input_path: str, stats: Stats, opts: dict) -> dict[str, list[dict]]:
    """The raw release: one file (its split is its name), a folder of subsets (``harmless-base/…``; the
    train and test files of each), or a dataset the loader reads (a cached ``Anthropic/hh-rlhf``)."""
    splits: dict[str, list[dict]] = {}
    for split, src in open_splits(input_path).items():
        if src.format == "folder":
            if split not in RAW_SPLITS:
                stats.options.setdefault("skipped_files", []).extend(str(f) for f in src.files)
                continue
            for f in src.files:
                subset = f.parent.name if f.parent != Path(input_path) else None
                splits.setdefault(split, []).extend(_read_raw(open_source(f).rows(), split, stats, opts, subset))
        else:
            splits.setdefault(split, []).extend(_read_raw(src.rows(), split, stats, opts, None))
    return splits


def preprocess_hh(input_path: str | Path, output_dir: str | Path, kind: str | None = None, fmt: str = "alol",
                  reward_transform: str = "sigmoid", clean: bool = True, chosen_by: str = "human",
                  max_history_turns: int | None = None) -> dict[str, int]:
    """HH-RLHF → ``<split>.jsonl`` (+ ``stats.json``): PRO's unzipped ``data/`` folder (``train`` / ``val`` /
    ``test``), or the raw release (a ``.jsonl.gz`` file, a folder of them, a cached Hub dataset)."""
    for value, allowed, opt in ((kind, KINDS + (None,), "--kind"), (fmt, FORMATS, "--format"),
                                (reward_transform, TRANSFORMS, "--reward-transform"), (chosen_by, CHOSEN_BY, "--chosen-by")):
        if value not in allowed:
            raise LolkitError(f"{opt} {value!r}: expected one of {', '.join(a for a in allowed if a)}")
    root = Path(input_path)
    pro = _is_pro(root)
    if not pro and root.is_dir() and (root / "hh_train_len2").exists():
        raise LolkitError(f"{root / TRAIN[0]}: file not found (expected PRO's data folder with {TRAIN[0]}, "
                          f"{VAL[0]} and hh_test/)")
    if not pro:
        kind = kind or "preference"
        if kind == "ranking" or chosen_by == "reward":
            raise LolkitError(f"{input_path}: the raw HH-RLHF release has no reward scores, so no --kind ranking "
                              "and no --chosen-by reward (those need PRO's re-packaging)")
    kind = kind or "ranking"
    if max_history_turns is not None and max_history_turns < 1:
        raise LolkitError(f"--max-history-turns must be at least 1, got {max_history_turns}")
    opts = {"kind": kind, "fmt": fmt, "transform": reward_transform, "clean": clean, "chosen_by": chosen_by,
            "max_turns": max_history_turns}
    stats = Stats("hh", {"input": str(input_path), "layout": "pro" if pro else "anthropic", "kind": kind,
                         "format": fmt, "reward_transform": reward_transform if pro else None, "clean": clean,
                         "chosen_by": chosen_by, "max_history_turns": max_history_turns})
    if not pro:
        return write_splits(output_dir, _raw_splits(str(input_path), stats, opts), stats)
    splits: dict[str, list[dict]] = {}
    for split, files in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        for rel in files:
            if (root / rel).is_file():
                src = open_source(root / rel, allow_empty=True)
                subset = Path(rel).stem if split == "test" else None
                splits.setdefault(split, []).extend(_read_pro(src.label, src.rows(), split, stats, opts, subset))
    if "train" not in splits:
        raise LolkitError(f"{root / TRAIN[0]}: file not found (expected PRO's data folder with {TRAIN[0]}, "
                          f"{VAL[0]} and hh_test/)")
    return write_splits(output_dir, splits, stats)
