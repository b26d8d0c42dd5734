"""The built-in ``colours`` task: name the colour of an object, judged by a programmatic reward.

Why this task: its offline data comes from a crowd of deterministic simulated annotators whose most
common answer is *wrong* (a "confused" annotator names the same wrong colour for each object), so
plain behaviour cloning learns the majority's mistake, while any method that looks at the reward can
do clearly better from the same data. The tiny model learns it in a few hundred CPU steps.

Reward in [0, 1], a sum of three components:

* ``correct``  0.6 when the object's colour is named and no other colour word is,
* ``object``   0.2 when the object itself is mentioned,
* ``form``     0.2 when the answer is one short sentence (at most 8 words) ending in a full stop.

Annotators: each training prompt gets 8 answers in a seeded random order — 2 from an expert
``"a {obj} is {colour}."`` (reward 1.0), 4 from a confused annotator ``"a {obj} is {wrong}."`` with a
fixed wrong colour per object (reward 0.4) and 2 from a lazy one ``"i do not know."`` (reward 0.2).
Greedy behaviour cloning therefore answers the wrong colour (reward 0.4), the data's mean reward is
0.5 and the best answer scores 1.0.
"""

from __future__ import annotations

import random
import re

COLOURS = {
    "red": ["tomato", "cherry", "strawberry", "ruby"],
    "yellow": ["banana", "lemon", "canary", "sunflower"],
    "green": ["frog", "lime", "leaf", "cucumber"],
    "blue": ["sapphire", "blueberry", "cornflower", "bluebird"],
    "white": ["snowball", "swan", "pearl", "cloud"],
    "black": ["crow", "raven", "panther", "tyre"],
    "orange": ["carrot", "pumpkin", "tangerine", "goldfish"],
    "purple": ["plum", "violet", "eggplant", "lavender"],
}
OBJECT_COLOUR = {obj: colour for colour, objs in COLOURS.items() for obj in objs}
OBJECTS = list(OBJECT_COLOUR)
COLOUR_WORDS = list(COLOURS)
# The confused annotator's fixed mistake: each colour is mistaken for the next one in this cycle.
CONFUSION = dict(zip(COLOUR_WORDS, COLOUR_WORDS[1:] + COLOUR_WORDS[:1], strict=True))

TEMPLATES = [
    "What colour is a {obj}?",
    "Tell me the colour of a {obj}.",
    "Which colour does a {obj} have?",
    "Name the colour of a {obj}.",
    "A {obj} is usually which colour?",
]
MAX_REWARD = 1.0
COMPONENTS = ("correct", "object", "form")
ANNOTATORS = ["expert"] * 2 + ["confused"] * 4 + ["lazy"] * 2  # answers per training prompt
_WORD = re.compile(r"[a-z]+")
_OBJECT_IN_PROMPT = re.compile(r"\ba (" + "|".join(OBJECTS) + r")\b", re.IGNORECASE)


def expert(obj: str) -> str:
    return f"a {obj} is {OBJECT_COLOUR[obj]}."


def confused(obj: str) -> str:
    return f"a {obj} is {CONFUSION[OBJECT_COLOUR[obj]]}."


LAZY = "i do not know."


def object_of(prompt: str) -> str | None:
    m = _OBJECT_IN_PROMPT.search(prompt)
    return m.group(1).lower() if m else None


def score(prompt: str, response: str) -> dict[str, float]:
    """Reward components of one answer; their sum is the reward (0 for a prompt not of this task)."""
    obj = object_of(prompt)
    words = _WORD.findall(response.lower())
    named = {w for w in words if w in COLOURS}
    correct = 0.0
    mentions = 0.0
    if obj is not None:
        correct = 0.6 if named == {OBJECT_COLOUR[obj]} else 0.0
        mentions = 0.2 if obj in words else 0.0
    text = response.strip()
    form = 0.2 if text.endswith(".") and text.count(".") == 1 and 0 < len(text.split()) <= 8 else 0.0
    return {"correct": correct, "object": mentions, "form": form}


def split_prompts() -> dict[str, list[dict]]:
    """Each object appears in every split, under different templates: 3 train, 1 val, 1 test."""
    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for i, obj in enumerate(OBJECTS):
        for j in range(len(TEMPLATES)):
            t = (i + j) % len(TEMPLATES)
            split = "test" if j == 0 else "val" if j == 1 else "train"
            out[split].append({"prompt": TEMPLATES[t].format(obj=obj), "object": obj, "template": t})
    return out


def _answer(who: str, obj: str) -> str:
    return {"expert": expert, "confused": confused}[who](obj) if who != "lazy" else LAZY


def records(split: str, seed: int = 0) -> list[dict]:
    """The split's records in the data contract, generated deterministically from ``seed``.

    ``train``: response records scored by the reward, one per simulated annotator (ANNOTATORS) and
    prompt, in a seeded random order. ``val`` / ``test``: one record per prompt whose response is the expert reference.
    """
    rng = random.Random(f"colours-{seed}")
    rows = []
    for k, p in enumerate(split_prompts()[split]):
        obj = p["object"]
        if split == "train":
            crowd = list(ANNOTATORS)
            rng.shuffle(crowd)
            answers = [(_answer(who, obj), who) for who in crowd]
        else:
            answers = [(expert(obj), "reference")]
        for n, (response, who) in enumerate(answers):
            comps = score(p["prompt"], response)
            rows.append({
                "id": f"{split}-{k}-{n}",
                "prompt": p["prompt"],
                "response": response,
                "reward": round(sum(comps.values()), 6),
                "rewards": comps,
                "meta": {"task": "colours", "object": obj, "annotator": who},
            })
    return rows


def corpus() -> list[str]:
    """Text that covers the task's vocabulary, for training the tiny model's tokenizer."""
    texts = [t.format(obj=o) for t in TEMPLATES for o in OBJECTS]
    texts += [expert(o) for o in OBJECTS] + [confused(o) for o in OBJECTS] + [LAZY]
    return texts
