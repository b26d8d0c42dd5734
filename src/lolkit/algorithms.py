"""The one table of training algorithms: name → loss function and what its batches need.

Adding an algorithm is one loss function plus one row here; the training loop reads the row and
never branches on the algorithm's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import LolkitError


@dataclass(frozen=True)
class Algorithm:
    name: str
    loss: Callable  # (LossInputs, LossParams) -> LossOutput
    records: tuple[str, ...]  # record kinds it trains on
    needs_reward: bool  # every response must carry a reward
    nonnegative_reward: bool  # the loss multiplies by R, so R >= 0 is required
    needs_reference: bool  # reference log-probs from the cached reference pass
    needs_advantage: bool  # advantages from the value estimate
    summary: str


def _table() -> dict[str, Algorithm]:
    from . import losses

    rows = [
        Algorithm("nll", losses.nll, ("response", "preference", "ranking"), False, False, False, False,
                  "negative log-likelihood of the responses (behaviour cloning)"),
    ]
    return {a.name: a for a in rows}


def get_algorithm(name: str) -> Algorithm:
    table = _table()
    if name not in table:
        raise LolkitError(f"unknown algorithm {name!r} (available: {', '.join(table)})")
    return table[name]


def names() -> list[str]:
    return list(_table())
