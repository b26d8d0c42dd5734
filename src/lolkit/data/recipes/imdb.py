"""IMDB sentiment continuation (RL4LMs' task) from the Stanford ``aclImdb_v1.tar.gz`` folders.

Raw format: ``aclImdb/{train,test}/{pos,neg}/{id}_{rating}.txt``, one review per file (UTF-8; reviews
keep their ``<br />`` tags unless ``--strip-html``). ``unsup/`` is ignored.

RL4LMs' ``IMDB`` pool: the train reviews are shuffled and split 80 / 20 into ``train`` / ``val``; the
test reviews are shuffled and the first 5,000 kept as ``test``; the prompt is the first half of the
review's space-separated words. Here the response is the other half (the reference continuation) and
``meta`` keeps the label, the star rating and the full review. Reviews with fewer than two words are
dropped. No reward: score continuations with a sentiment component of ``lolkit reward``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from ...errors import LolkitError
from ._common import Stats, require_dir, write_splits

NAME = re.compile(r"^(\d+)_(\d+)\.txt$")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def _reviews(root: Path, part: str, sentiment: str, stats: Stats, strip_html: bool) -> list[dict]:
    out = []
    for label in ("pos", "neg"):
        folder = root / part / label
        if not folder.is_dir():
            raise LolkitError(f"{folder}: folder not found (expected the aclImdb layout {part}/pos, {part}/neg)")
        if sentiment not in ("all", label):
            continue
        for f in sorted(folder.iterdir(), key=lambda x: x.name):
            if f.name.startswith("."):
                continue
            m = NAME.match(f.name)
            if not m:
                raise LolkitError(f"{f}: file name must be <id>_<rating>.txt")
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise LolkitError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            stats.read[part] += 1
            if strip_html:
                text = _BR.sub(" ", text)
            out.append({"text": text.strip(), "label": label, "rating": int(m.group(2)), "file": f"{part}/{label}/{f.name}",
                        "id": f"{part}-{label}-{m.group(1)}"})
    return out


def _record(review: dict, split: str, stats: Stats, prompt_fraction: float) -> dict | None:
    words = review["text"].split(" ")
    cut = int(len(words) * prompt_fraction)
    prompt, rest = " ".join(words[:cut]), " ".join(words[cut:])
    if not prompt.strip() or not rest.strip():
        stats.drop(f"{split}_too_short")
        return None
    return {"id": review["id"], "prompt": prompt, "response": rest.strip(),
            "meta": {"label": review["label"], "rating": review["rating"], "reference": review["text"],
                     "source": review["file"]}}


def preprocess_imdb(input_dir: str | Path, output_dir: str | Path, val_fraction: float = 0.2, test_size: int = 5000,
                    prompt_fraction: float = 0.5, sentiment: str = "all", strip_html: bool = False,
                    seed: int = 0) -> dict[str, int]:
    if sentiment not in ("all", "pos", "neg"):
        raise LolkitError(f"--sentiment {sentiment!r}: expected all, pos or neg")
    if not 0 <= val_fraction < 1 or not 0 < prompt_fraction < 1:
        raise LolkitError("--val-fraction must be in [0, 1) and --prompt-fraction in (0, 1)")
    root = require_dir(input_dir)
    if (root / "aclImdb").is_dir():
        root = root / "aclImdb"
    stats = Stats("imdb", {"input_dir": root, "val_fraction": val_fraction, "test_size": test_size,
                           "prompt_fraction": prompt_fraction, "sentiment": sentiment, "strip_html": strip_html,
                           "seed": seed})
    train = _reviews(root, "train", sentiment, stats, strip_html)
    test = _reviews(root, "test", sentiment, stats, strip_html) if (root / "test").is_dir() else []
    rng = random.Random(seed)
    rng.shuffle(train)
    rng.shuffle(test)
    n_train = int(len(train) * (1 - val_fraction))
    stats.drop("test_beyond_test_size", max(0, len(test) - test_size))
    parts = {"train": train[:n_train], "val": train[n_train:], "test": test[:test_size]}
    splits = {name: [r for r in (_record(x, name, stats, prompt_fraction) for x in rows) if r is not None]
              for name, rows in parts.items()}
    if not (root / "test").is_dir():
        del splits["test"]
    return write_splits(output_dir, splits, stats)
