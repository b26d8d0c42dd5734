"""Anthropic HH-RLHF as distributed by PRO (and used by A-LoL): ``prefix`` / ``suffix`` / ``reward``.

Raw format (PRO's ``data.zip``: ``hh_train_len2/train.json``, ``hh_dev/sampled_dev.json``,
``hh_test/{harmless_base,helpful_base,helpful_online,helpful_rejection}.json``), one JSON object a line::

    {"prefix": [["<|prompter|>How do I ...?", "<|assistant|>"], [... same turns ...]],
     "suffix": ["best response", "worse response"], "reward": [0.53, -1.2], "sft_index": 0,
     "meta": {"path": "...", "line_num": 108, "task": "dialogue"}}

``prefix`` holds one copy of the dialogue per candidate; each turn starts with a role marker and the
last is the bare ``<|assistant|>`` the response continues. ``reward`` are PRO's reward-model logits
(OpenAssistant DeBERTa RM); the training file is sorted best first.

* Cleaning (A-LoL ``data_cleaning.py``): drop a training row when any of its first two responses ends
  with ``:`` (abruptly cut responses). Applied to the train split only, as A-LoL does.
* Chat format (A-LoL): ``SYSTEM + "".join(turns)`` with ``<|prompter|>`` → `` ### Human: `` and
  ``<|assistant|>`` → `` ### Assistant: ``, stripped. Alternatives: the Anthropic ``\\n\\nHuman:``
  format, or a conversational message list for a tokenizer's chat template.
* Rewards: A-LoL trains with ``sigmoid(logit)``; ``--reward-transform raw`` keeps PRO's logits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ...errors import LolkitError, data_error
from ._common import Stats, get_list, iter_json_lines, require_dir, write_splits

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


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _read(path: Path, split: str, stats: Stats, kind: str, fmt: str, transform: str, clean: bool,
          subset: str | None) -> list[dict]:
    p = str(path)
    out: list[dict] = []
    for line, obj in iter_json_lines(path):
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
        if clean and split == "train" and any(s.endswith(":") for s in suffix[:2]):
            stats.drop("train_response_ends_with_colon")
            continue
        responses = [s.strip() for s in suffix]
        if not all(responses):
            stats.drop("empty_response")
            continue
        if not turns:
            stats.drop("empty_dialogue")
            continue
        rid = f"{subset or split}-{line}"
        meta: dict[str, Any] = {"source": f"{path.name}:{line}"}
        if subset:
            meta["subset"] = subset
        if isinstance(obj.get("meta"), dict):
            meta["pro_meta"] = obj["meta"]
        prompt = render(turns, fmt)
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        if kind == "ranking":
            out.append({"id": rid, "prompt": prompt, "responses": responses, "rewards": scores, "meta": meta})
        elif kind == "response":
            out.append({"id": rid, "prompt": prompt, "response": responses[best], "reward": scores[best], "meta": meta})
        else:
            worst = min(range(len(scores)), key=lambda i: (scores[i], i))
            if len(responses) < 2 or scores[best] == scores[worst]:
                stats.drop("no_preference_tie_or_single")
                continue
            out.append({"id": rid, "prompt": prompt, "chosen": responses[best], "rejected": responses[worst],
                        "chosen_reward": scores[best], "rejected_reward": scores[worst], "meta": meta})
    return out


def preprocess_hh(input_dir: str | Path, output_dir: str | Path, kind: str = "ranking", fmt: str = "alol",
                  reward_transform: str = "sigmoid", clean: bool = True) -> dict[str, int]:
    """PRO's unzipped ``data/`` folder → ``train`` / ``val`` / ``test`` JSONL (+ ``stats.json``)."""
    for value, allowed, opt in ((kind, KINDS, "--kind"), (fmt, FORMATS, "--format"),
                                (reward_transform, TRANSFORMS, "--reward-transform")):
        if value not in allowed:
            raise LolkitError(f"{opt} {value!r}: expected one of {', '.join(allowed)}")
    root = require_dir(input_dir)
    stats = Stats("hh", {"input_dir": root, "kind": kind, "format": fmt, "reward_transform": reward_transform,
                         "clean": clean})
    train_file = root / TRAIN[0]
    if not train_file.is_file():
        raise LolkitError(f"{train_file}: file not found (expected PRO's data folder with {TRAIN[0]}, "
                          f"{VAL[0]} and hh_test/)")
    splits = {"train": _read(train_file, "train", stats, kind, fmt, reward_transform, clean, None)}
    if (root / VAL[0]).is_file():
        splits["val"] = _read(root / VAL[0], "val", stats, kind, fmt, reward_transform, clean, None)
    test: list[dict] = []
    for rel in TEST:
        if (root / rel).is_file():
            test += _read(root / rel, "test", stats, kind, fmt, reward_transform, clean, Path(rel).stem)
    if test:
        splits["test"] = test
    return write_splits(output_dir, splits, stats)
