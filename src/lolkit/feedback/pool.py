"""The data pool of Quark / ALT: entries, quantile binning, flushing, balanced rejection sampling.

Pure Python (no torch): every function takes the pool and returns new values, so the pool can be
written to ``iter-K/pool.jsonl`` and kept in every checkpoint (for ``--resume``) without loss.

Bins are numbered from the best: bin 0 holds the highest rewards (scores) or the first — best —
category.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass
class Entry:
    """One (feedback, prompt, response) of the pool."""

    iteration: int  # the iteration that sampled it (1-based)
    prompt_index: int  # index into the run's prompts
    sample: int  # position in its iteration's samples
    response: str  # decoded text (what the reward and the critic saw)
    response_ids: list[int]  # tokens as sampled; ends with EOS when finished, no EOS when truncated
    finished: bool
    reward: float | None  # the task reward (None when a critic / file provides the only signal)
    score: float  # what the quantiles are taken over: the reward, or the provider's score (LMU)
    feedback: str = ""  # free text (LMU) or the category name (LMC); quark / alt_rm: empty
    category: int | None = None  # LMC: index into the categories (0 = best)
    parsed: bool = True  # the provider's answer could be read (critic model); False: fallback used
    bin: int = 0  # quantile (or category) bin, 0 = best; reassigned whenever the pool changes

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> Entry:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


def quantile_bins(scores: Sequence[float], n: int) -> list[int]:
    """Rank-based quantiles, 0 = best: sort by score, highest first (ties keep their order), and cut
    the ranking into ``n`` near-equal parts — bin(rank) = ⌊rank · n / len⌋, as Quark's array_split.

    Golden: scores (0.2, 0.9, 0.5, 0.9), n = 2 → ranking 1, 3, 2, 0 → bins (1, 0, 1, 0)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    bins = [0] * len(scores)
    for rank, i in enumerate(order):
        bins[i] = rank * n // len(scores)
    return bins


def assign_bins(pool: list[Entry], n: int, binning: str, by_category: bool = False) -> None:
    """Set every entry's bin: its category (LMC), or its score quantile over the entries of its prompt
    (``per_prompt``) or over the whole pool (``global``)."""
    if by_category:
        for e in pool:
            e.bin = int(e.category or 0)
        return
    groups: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(pool):
        groups[e.prompt_index if binning == "per_prompt" else 0].append(i)
    for members in groups.values():
        for i, b in zip(members, quantile_bins([pool[i].score for i in members], n), strict=True):
            pool[i].bin = b


def flush(pool: list[Entry], factor: float, per_iteration: int) -> list[Entry]:
    """Keep the newest ⌊factor · per_iteration⌋ entries (at least one iteration's worth); factor 0 keeps all."""
    if factor <= 0:
        return pool
    keep = max(per_iteration, int(factor * per_iteration))
    return pool[-keep:]


def select_balanced(pool: list[Entry], quota: int | None, rng: random.Random) -> list[int]:
    """Rejection sampling to equal quotas: for each prompt, every bin it has entries in contributes
    the same number q = min(smallest bin's size, ``quota``) of entries. Within a bin the entries are
    taken in a random order (``rng``), untruncated responses first. Returns pool indices, grouped by
    prompt and bin.

    Golden: one prompt, bins (0, 0, 0, 1, 1, 2, 2, 2, 2) → q = 2: two entries of each bin; with
    quota 1: one each. A bin of three whose one truncated entry would be drawn first gives the two
    finished entries.
    """
    by_prompt: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, e in enumerate(pool):
        by_prompt[e.prompt_index][e.bin].append(i)
    out: list[int] = []
    for p in sorted(by_prompt):
        bins = by_prompt[p]
        q = min(len(v) for v in bins.values())
        if quota is not None:
            q = min(q, quota)
        for b in sorted(bins):
            members = list(bins[b])
            rng.shuffle(members)
            members.sort(key=lambda i: not pool[i].finished)  # stable: finished first, random within
            out += members[:q]
    return out


def bin_counts(pool: list[Entry], chosen: Sequence[int], n_bins: int) -> dict[str, list[int]]:
    """Per-bin counts of the whole pool and of a selection (for metrics and the balance check)."""
    total, picked = [0] * n_bins, [0] * n_bins
    for e in pool:
        total[e.bin] += 1
    for i in chosen:
        picked[pool[i].bin] += 1
    return {"pool_bins": total, "train_bins": picked}
