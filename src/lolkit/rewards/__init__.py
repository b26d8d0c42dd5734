"""Rewards: named scorers of (prompt, response) pairs returning components and their sum."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import LolkitError


@dataclass(frozen=True)
class Reward:
    """A reward with named components; the scalar reward is their sum, at most ``max_value``."""

    name: str
    components: tuple[str, ...]
    max_value: float
    component_fn: Callable[[str, str], dict[str, float]]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[tuple[float, dict[str, float]]]:
        out = []
        for p, r in zip(prompts, responses, strict=True):
            comps = self.component_fn(p, r)
            out.append((round(sum(comps.values()), 6), comps))
        return out


def _task_reward(name: str) -> Reward:
    from ..tasks import get_task

    task = get_task(name)
    return Reward(name, tuple(task.COMPONENTS), float(task.MAX_REWARD), task.score)


def available() -> list[str]:
    from ..tasks import TASKS

    return sorted(TASKS)


def get_reward(name: str) -> Reward:
    """Look a reward up by name (the built-in tasks' rewards: ``colours``)."""
    if name in available():
        return _task_reward(name)
    raise LolkitError(f"unknown reward {name!r} (available: {', '.join(available())})")
