"""The training pool and how each epoch draws from it (spec §1, "Sampling strategies").

* ``none``          plain shuffled epochs over the pool;
* ``good_priority`` draws with replacement ∝ A⁺ (A-LoL family) or ∝ R (reward-weighted algorithms);
* ``good_random``   uniform over the examples with A > 0;
* ``all_priority``  every response of a multi-response record joins the pool (the caller expands
                     records that way), then draws ∝ A⁺ as ``good_priority``.

Every draw comes from a generator seeded by (seed, epoch) — the original used an unseeded RNG — and
an epoch has as many draws as the pool has examples.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..errors import LolkitError

STRATEGIES = ("none", "good_priority", "good_random", "all_priority")


def build_pool(n: int, advantages: Sequence[float] | None, rewards: Sequence[float] | None, strategy: str,
               drop_nonpositive: bool) -> tuple[list[int], list[float] | None]:
    """(pool indices, sampling weights or None for uniform)."""
    if strategy not in STRATEGIES:
        raise LolkitError(f"unknown sampling strategy {strategy!r} ({', '.join(STRATEGIES)})")
    pool = list(range(n))
    if advantages is not None and (drop_nonpositive or strategy in ("good_random", "all_priority")):
        pool = [i for i in pool if advantages[i] > 0]
    if not pool:  # said in full here: a failed fresh run leaves no run directory (no advantage_stats.json)
        raise LolkitError(f"no training example has a positive advantage A = R - V(x): all {n} are <= 0 (largest "
                          f"{max(advantages):.4g}), so there is nothing to train on; the value estimate is at or above "
                          "every reward: check the rewards, or try --value-source data")
    if strategy in ("good_priority", "all_priority"):
        if advantages is not None:
            weights = [max(advantages[i], 0.0) for i in pool]
        elif rewards is not None:
            weights = [max(rewards[i], 0.0) for i in pool]
        else:
            raise LolkitError(f"--sampling {strategy} needs rewards or advantages")
        if sum(weights) <= 0:
            raise LolkitError(f"--sampling {strategy}: every sampling weight is 0")
        return pool, weights
    return pool, None


def epoch_order(pool: list[int], weights: list[float] | None, rng: random.Random) -> list[int]:
    if weights is None:
        order = list(pool)
        rng.shuffle(order)
        return order
    return rng.choices(pool, weights=weights, k=len(pool))
