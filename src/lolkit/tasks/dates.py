"""The built-in ``dates`` task (RL4LMs' synthetic "sentences with dates").

Reward, as in RL4LMs' ``RewardSentencesWithDates``: 1 when the generated text contains a date in the
form YYYY-MM-DD (the regex ``\\d{4}-\\d{2}-\\d{2}``, anywhere in the text), else 0.
"""

from __future__ import annotations

import random
import re

from ._crowd import crowd_records

MAX_REWARD = 1.0
COMPONENTS = ("date",)
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
TEMPLATES = [
    "Write a sentence with a date:",
    "When did it happen?",
    "Tell me about a day:",
    "Write a short note:",
    "Mention a date:",
    "What day was it?",
]
ANNOTATORS = ["dated", "dated", "undated", "lazy"]
EVENTS = ["the meeting", "the concert", "the launch", "the trip", "the game", "the party"]


def score(prompt: str, response: str) -> dict[str, float]:
    return {"date": 1.0 if DATE.search(response) else 0.0}


def split_prompts() -> dict[str, list[str]]:
    return {"train": TEMPLATES[:4], "val": TEMPLATES[4:5], "test": TEMPLATES[5:]}


def _answer(who: str, rng: random.Random) -> str:
    event = rng.choice(EVENTS)
    if who == "dated":
        return f"{event} was on {rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}."
    if who == "undated":
        return f"{event} was on a {rng.choice(['monday', 'friday', 'sunday'])}."
    return "i do not know."


def records(split: str, seed: int = 0, per_prompt: int = 8) -> list[dict]:
    """Records in the data contract: ``train`` holds ``per_prompt`` scored annotator answers per
    prompt; ``val``/``test`` one dated reference each."""
    return crowd_records("dates", split, seed, split_prompts()[split], ANNOTATORS, "dated", _answer, score, per_prompt)


def corpus() -> list[str]:
    rng = random.Random("dates-corpus")
    return TEMPLATES + [_answer(w, rng) for w in ANNOTATORS * 10]
