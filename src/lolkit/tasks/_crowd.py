"""Offline records from a crowd of simulated annotators, shared by the synthetic tasks."""

from __future__ import annotations

import random
from collections.abc import Callable


def crowd_records(task: str, split: str, seed: int, prompts: list[str], annotators: list[str], reference: str,
                  answer: Callable[[str, random.Random], str], score: Callable[[str, str], dict[str, float]],
                  per_prompt: int = 8) -> list[dict]:
    """``train``: ``per_prompt`` scored answers per prompt, one round of ``annotators`` after another;
    ``val``/``test``: one answer per prompt from the ``reference`` annotator. Seeded by (task, split, seed)."""
    rng = random.Random(f"{task}-{split}-{seed}")
    rows = []
    for k, prompt in enumerate(prompts):
        crowd = [annotators[i % len(annotators)] for i in range(per_prompt)] if split == "train" else [reference]
        for n, who in enumerate(crowd):
            response = answer(who, rng)
            comps = score(prompt, response)
            rows.append({"id": f"{split}-{k}-{n}", "prompt": prompt, "response": response,
                         "reward": round(sum(comps.values()), 6), "rewards": comps,
                         "meta": {"task": task, "annotator": who}})
    return rows
