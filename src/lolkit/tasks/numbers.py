"""The built-in ``numbers`` task (RL4LMs' synthetic "generate increasing numbers").

Reward, as in RL4LMs' ``RewardIncreasingNumbers`` (min_tokens = 20 in its synthetic config): split
the generated text on whitespace into words; take the words that parse as numbers, in order; count
the strictly increasing run that starts at the first number (a number not greater than the last
counted one ends the run); divide by ``max(#words, min_tokens / 2)``. No number at all gives 0.
So "1 2 3 4 5 6 7 8 9 10" scores 1.0, "1 2 3" scores 3 / 10 = 0.3 and "5 2 7" scores 1 / 10.

Offline records (``records``): each training prompt gets answers from simulated annotators — an
increasing run, a random jumble of numbers and a short non-answer — so the task also works with the
offline algorithms and gives a quick warm start for a tiny model.
"""

from __future__ import annotations

import random

from ._crowd import crowd_records

MIN_TOKENS = 20
MAX_REWARD = 1.0
COMPONENTS = ("increasing",)
TEMPLATES = [
    "Numbers:",
    "Count up:",
    "Write numbers in increasing order:",
    "List some numbers:",
    "Increasing numbers:",
    "Give me a sequence of numbers:",
]
ANNOTATORS = ["increasing", "jumble", "jumble", "lazy"]


def is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def increasing_reward(text: str, min_tokens: int = MIN_TOKENS) -> float:
    words = text.split()
    numbers = [float(w) for w in words if is_number(w)]
    if not numbers:
        return 0.0
    run, last = 1, numbers[0]
    for x in numbers[1:]:
        if not x > last:  # RL4LMs' test: a NaN word ("nan" parses as a float) ends the run, as it should
            break
        run, last = run + 1, x
    return run / max(len(words), min_tokens / 2)


def score(prompt: str, response: str) -> dict[str, float]:
    return {"increasing": increasing_reward(response)}


def split_prompts() -> dict[str, list[str]]:
    return {"train": TEMPLATES[:4], "val": TEMPLATES[4:5], "test": TEMPLATES[5:]}


def _answer(who: str, rng: random.Random) -> str:
    n = rng.randint(3, 10)
    if who == "increasing":
        start = rng.randint(0, 20)
        return " ".join(str(start + k * rng.randint(1, 3)) for k in range(n))
    if who == "jumble":
        return " ".join(str(rng.randint(0, 50)) for _ in range(n))
    return "no."


def records(split: str, seed: int = 0, per_prompt: int = 8) -> list[dict]:
    """Records in the data contract: ``train`` holds ``per_prompt`` scored annotator answers per
    prompt (one round of ANNOTATORS after another); ``val``/``test`` one increasing reference each."""
    return crowd_records("numbers", split, seed, split_prompts()[split], ANNOTATORS, "increasing", _answer, score, per_prompt)


def corpus() -> list[str]:
    rng = random.Random("numbers-corpus")
    return TEMPLATES + [" ".join(str(rng.randint(0, 60)) for _ in range(12)) for _ in range(40)]
