"""Preference and ranking records built from scored response records (several per prompt)."""

from __future__ import annotations

from itertools import combinations

from .schema import Record
from .tokenize import prompt_text


def _by_prompt(records: list[Record]) -> list[tuple[Record, list[tuple[str, float]]]]:
    groups: dict[str, tuple[Record, dict[str, float]]] = {}
    for rec in records:
        for text, reward in zip(rec.responses, rec.rewards, strict=True):
            if reward is None:
                continue
            first, seen = groups.setdefault(prompt_text(rec.prompt), (rec, {}))
            seen.setdefault(text, reward)  # identical answers count once
    return [(rec, list(seen.items())) for rec, seen in groups.values()]


def preference_pairs(records: list[Record], mode: str = "all") -> list[dict]:
    """``best_worst``: one (highest, lowest) pair per prompt; ``all``: every pair of distinct answers
    with different rewards, the higher-rewarded one chosen."""
    out = []
    for rec, answers in _by_prompt(records):
        ranked = sorted(answers, key=lambda a: -a[1])
        pairs = [(ranked[0], ranked[-1])] if mode == "best_worst" else list(combinations(ranked, 2))
        for (c, rc), (r, rr) in pairs:
            if rc > rr:
                out.append({"id": f"pair-{len(out)}", "prompt": rec.prompt, "chosen": c, "rejected": r,
                            "chosen_reward": rc, "rejected_reward": rr})
    return out


def rankings(records: list[Record], size: int | None = None) -> list[dict]:
    """One ranking record per prompt with its distinct answers (the ``size`` best when given)."""
    out = []
    for rec, answers in _by_prompt(records):
        ranked = sorted(answers, key=lambda a: -a[1])[:size]
        if len(ranked) >= 2:
            out.append({"id": f"rank-{len(out)}", "prompt": rec.prompt, "responses": [a for a, _ in ranked],
                        "rewards": [r for _, r in ranked]})
    return out
