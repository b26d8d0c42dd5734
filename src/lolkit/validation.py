"""Validators the loops share. The run lifecycle (:meth:`lolkit.run.Run.validate`) calls one every
``eval_every`` steps and at the end and keeps the best weights. A validator has ``enabled``, ``metric``,
``better(new, best)`` and ``run(...) → {metric: value, …}``.

* :class:`RewardValidator` — the mean reward of greedy answers to validation prompts (higher is better),
  for the loops that have a reward; the reward is built once by the loop;
* :class:`MeasureValidator` — any measurement of the loop's own (lower is better): CoLA's world-model NLL
  and behaviour-cloning cross-entropy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


class RewardValidator:
    metric = "val_reward"

    def __init__(self, cfg, tokenizer, reward, rendered: list[str], texts: list[str], records: list):
        """``rendered``: the prompts as the model sees them; ``texts``: as the reward reads them; ``records``:
        their records (references and meta for the reward); ``cfg``: a TrainConfig (its ``eval`` section
        sets the generation)."""
        self.cfg, self.tokenizer, self.reward = cfg, tokenizer, reward
        self.rendered, self.texts, self.records = rendered, texts, records

    @property
    def enabled(self) -> bool:
        return self.reward is not None and bool(self.rendered)

    def better(self, a: float, b: float | None) -> bool:
        return b is None or a > b

    def run(self, model) -> dict[str, float]:
        from .evaluate import score_prompts

        rows = score_prompts(model, self.tokenizer, self.rendered, self.texts, self.reward, self.cfg, sample=False,
                             records=self.records)
        return {self.metric: sum(r["reward"] for r in rows) / max(1, len(rows))}


@dataclass
class MeasureValidator:
    """``measure()`` → the values of a validation; ``metric`` is the one that decides (lower is better)."""

    metric: str
    measure: Callable[[], dict[str, float]]
    enabled: bool = True

    def better(self, a: float, b: float | None) -> bool:
        return b is None or a < b

    def run(self) -> dict[str, float]:
        return self.measure()
