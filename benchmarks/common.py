"""Helpers shared by the benchmarks: a synthetic long-ish dataset and interleaved timing."""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

WORDS = ("the a reward model policy answer question colour banana red green blue value token step "
         "language learning offline advantage reference sample data batch gradient loss").split()


def synthetic_records(path: Path, n: int, prompt_words: int, response_words: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(n):
            p = " ".join(rng.choice(WORDS) for _ in range(prompt_words))
            r = " ".join(rng.choice(WORDS) for _ in range(response_words))
            fh.write(json.dumps({"id": i, "prompt": p, "response": r, "reward": round(rng.random(), 3)}) + "\n")
    return path


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternation so drift hits all alike."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}
