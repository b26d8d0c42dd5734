"""IMDB sentiment continuation (RL4LMs' task), from the Stanford tarball or the Hub's Parquet copy.

Raw formats:

* ``aclImdb/{train,test}/{pos,neg}/{id}_{rating}.txt``, one review per file (UTF-8; reviews keep their
  ``<br />`` tags unless ``--strip-html``); ``unsup/`` is ignored;
* the Hugging Face ``plain_text`` layout (``stanfordnlp/imdb``: ``plain_text/{train,test,unsupervised}-….parquet``
  with ``text`` and ``label`` — 0 negative, 1 positive), as downloaded or from the local Hugging Face
  cache; ``unsupervised`` is ignored, and there is no star rating.

RL4LMs' ``IMDB`` pool: the train reviews are shuffled and split 80 / 20 into ``train`` / ``val``; the
test reviews are shuffled and the first 5,000 kept as ``test``; the prompt is the first half of the
review's space-separated words. Here the response is the other half (the reference continuation) and
``meta`` keeps the label, the star rating (tarball only) and the full review. Reviews with fewer than
two words are dropped. No reward: score continuations with a sentiment component of ``lolkit reward``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from ...errors import LolkitError, data_error
from ..loader import open_splits
from ._common import Stats, require_dir, write_splits

HUB_LABELS = {0: "neg", 1: "pos"}

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


def _hub_reviews(input_path: str, sentiment: str, stats: Stats, strip_html: bool) -> dict[str, list[dict]]:
    """The Hub's ``plain_text`` rows, as :func:`_reviews` returns the tarball's (without a rating)."""
    out: dict[str, list[dict]] = {}
    for part, src in open_splits(input_path).items():
        if part not in ("train", "test"):
            continue
        reviews = out.setdefault(part, [])
        for p, n, obj in src.rows():
            text, label = obj.get("text"), obj.get("label")
            if not isinstance(text, str):
                raise data_error(p, n, "text", f"expected a string, got {type(text).__name__}")
            if label not in HUB_LABELS or isinstance(label, bool):
                raise data_error(p, n, "label", f"expected 0 (negative) or 1 (positive), got {label!r}")
            stats.read[part] += 1
            if sentiment not in ("all", HUB_LABELS[label]):
                continue
            if strip_html:
                text = _BR.sub(" ", text)
            reviews.append({"text": text.strip(), "label": HUB_LABELS[label], "file": f"{Path(p).name}:{n}",
                            "id": f"{part}-{int(n)}"})
    if "train" not in out:
        raise LolkitError(f"{input_path}: no train split (expected aclImdb/ or the Hub's plain_text/ Parquet files)")
    return out


def _record(review: dict, split: str, stats: Stats, prompt_fraction: float) -> dict | None:
    words = review["text"].split(" ")
    cut = int(len(words) * prompt_fraction)
    prompt, rest = " ".join(words[:cut]), " ".join(words[cut:])
    if not prompt.strip() or not rest.strip():
        stats.drop(f"{split}_too_short")
        return None
    meta = {"label": review["label"], "rating": review.get("rating"), "reference": review["text"], "source": review["file"]}
    return {"id": review["id"], "prompt": prompt, "response": rest.strip(),
            "meta": {k: v for k, v in meta.items() if v is not None}}


def preprocess_imdb(input_dir: str | Path, output_dir: str | Path, val_fraction: float = 0.2, test_size: int = 5000,
                    prompt_fraction: float = 0.5, sentiment: str = "all", strip_html: bool = False,
                    seed: int = 0) -> dict[str, int]:
    if sentiment not in ("all", "pos", "neg"):
        raise LolkitError(f"--sentiment {sentiment!r}: expected all, pos or neg")
    if not 0 <= val_fraction < 1 or not 0 < prompt_fraction < 1:
        raise LolkitError("--val-fraction must be in [0, 1) and --prompt-fraction in (0, 1)")
    root = Path(input_dir)
    if (root / "aclImdb").is_dir():
        root = root / "aclImdb"
    tarball = (root / "train" / "pos").is_dir() or (root / "train" / "neg").is_dir()
    stats = Stats("imdb", {"input_dir": root, "layout": "aclImdb" if tarball else "hub", "val_fraction": val_fraction,
                           "test_size": test_size, "prompt_fraction": prompt_fraction, "sentiment": sentiment,
                           "strip_html": strip_html, "seed": seed})
    if tarball:
        root = require_dir(root)
        train = _reviews(root, "train", sentiment, stats, strip_html)
        test = _reviews(root, "test", sentiment, stats, strip_html) if (root / "test").is_dir() else []
        has_test = (root / "test").is_dir()
    else:
        hub = _hub_reviews(str(input_dir), sentiment, stats, strip_html)
        train, test, has_test = hub["train"], hub.get("test", []), "test" in hub
    rng = random.Random(seed)
    rng.shuffle(train)
    rng.shuffle(test)
    n_train = int(len(train) * (1 - val_fraction))
    stats.drop("test_beyond_test_size", max(0, len(test) - test_size))
    parts = {"train": train[:n_train], "val": train[n_train:], "test": test[:test_size]}
    splits = {name: [r for r in (_record(x, name, stats, prompt_fraction) for x in rows) if r is not None]
              for name, rows in parts.items()}
    if not has_test:
        del splits["test"]
    return write_splits(output_dir, splits, stats)
