"""Preference pairs and rankings from scored samples: several scored responses per prompt (what
``lolkit generate`` + ``lolkit reward`` write) → the records ``--algo dpo`` and ``--algo pro`` train on.

Responses are grouped by prompt (its text). In a group an answer that appears twice counts once (its
first reward). Then

* ``best_worst``: one pair per prompt, its highest- against its lowest-rewarded answer;
* ``all``: every pair of answers, the higher-rewarded one chosen;
* rankings: the group's answers sorted by reward, best first (the ``top_k`` best when given).

A pair whose rewards differ by ``margin`` or less is dropped (with the default margin 0: ties); in a
ranking, an answer whose reward equals a better-ranked one's is dropped — unless ``keep_ties``. What is
dropped is counted in a :class:`PairStats`, never silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations

from .schema import Record, prompt_text

MODES = ("best_worst", "all")


@dataclass
class PairStats:
    prompts: int = 0  # prompts with at least one scored answer
    answers: int = 0  # scored answers read
    dropped: Counter = field(default_factory=Counter)  # reason -> how many answers, pairs or prompts

    def to_json(self) -> dict:
        return {"prompts": self.prompts, "answers": self.answers, "dropped": dict(sorted(self.dropped.items()))}


@dataclass
class _Group:
    first: Record  # the group's first record: its prompt, id and meta
    answers: list[tuple[str, float, str]]  # (text, reward, id of the record it came from)


def _groups(records: list[Record], stats: PairStats) -> list[_Group]:
    groups: dict[str, _Group] = {}
    seen: dict[str, set[str]] = {}
    for rec in records:
        for text, reward in zip(rec.responses, rec.rewards, strict=True):
            if reward is None:
                stats.dropped["answers_without_reward"] += 1
                continue
            stats.answers += 1
            key = prompt_text(rec.prompt)
            g = groups.setdefault(key, _Group(rec, []))
            if text in seen.setdefault(key, set()):
                stats.dropped["duplicate_answers"] += 1
                continue
            seen[key].add(text)
            g.answers.append((text, reward, rec.id))
    stats.prompts = len(groups)
    return list(groups.values())


def _group_id(g: _Group) -> str:
    """The id of the prompt a group answers: ``lolkit generate`` keeps it as ``meta.source_id``."""
    return str(g.first.meta.get("source_id", g.first.id))


def preference_pairs(records: list[Record], mode: str = "all", margin: float = 0.0, keep_ties: bool = False,
                     stats: PairStats | None = None) -> list[dict]:
    """Preference records (with ``chosen_reward`` / ``rejected_reward``) from scored response records."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}")
    stats = stats if stats is not None else PairStats()
    out: list[dict] = []
    for g in _groups(records, stats):
        if len(g.answers) < 2:
            stats.dropped["prompts_with_one_answer"] += 1
            continue
        ranked = sorted(g.answers, key=lambda a: -a[1])  # stable: equal rewards keep their input order
        candidates = [(ranked[0], ranked[-1])] if mode == "best_worst" else list(combinations(ranked, 2))
        k = 0
        for (c, rc, cid), (r, rr, rid) in candidates:
            gap = rc - rr
            if gap == 0 and not keep_ties:
                stats.dropped["tied_pairs"] += 1
                continue
            if 0 < gap <= margin:
                stats.dropped["pairs_within_margin"] += 1
                continue
            out.append({"id": f"{_group_id(g)}-pair-{k}", "prompt": g.first.prompt, "chosen": c, "rejected": r,
                        "chosen_reward": rc, "rejected_reward": rr, "meta": {"source_ids": [cid, rid]}})
            k += 1
    return out


def rankings(records: list[Record], size: int | None = None, keep_ties: bool = False,
             stats: PairStats | None = None) -> list[dict]:
    """One ranking record per prompt: its distinct answers by reward, best first (the ``size`` best when
    given; a prompt with fewer is dropped, so every ranking has the same length, as PRO needs)."""
    stats = stats if stats is not None else PairStats()
    out: list[dict] = []
    for g in _groups(records, stats):
        ranked = sorted(g.answers, key=lambda a: -a[1])
        if not keep_ties:
            kept = [a for i, a in enumerate(ranked) if i == 0 or a[1] != ranked[i - 1][1]]
            stats.dropped["tied_answers"] += len(ranked) - len(kept)
            ranked = kept
        if size is not None:
            if len(ranked) < size:
                stats.dropped["prompts_with_fewer_than_top_k"] += 1
                continue
            ranked = ranked[:size]
        if len(ranked) < 2:
            stats.dropped["prompts_with_one_answer"] += 1
            continue
        out.append({"id": f"{_group_id(g)}-rank", "prompt": g.first.prompt, "responses": [a for a, _, _ in ranked],
                    "rewards": [r for _, r, _ in ranked], "meta": {"source_ids": [i for _, _, i in ranked]}})
    return out
