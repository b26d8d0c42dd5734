"""Reddit upvoted / downvoted comments (Kaggle "Reddit comment score prediction"), as used by A-LoL.

Raw format: ``comments_positive.csv`` and ``comments_negative.csv`` with the header
``id,parent_id,subreddit_id,link_id,text,score,ups,author,controversiality,parent_link_id,parent_text,
parent_score,parent_ups,parent_author,parent_controversiality``. The recipe needs ``id``, ``text``,
``score``, ``parent_text`` and ``parent_score``.

A-LoL's rule (``preprocess_reddit_comment_scores_and_add_rewards.py``), per file: drop rows whose
``text`` or ``parent_text`` is missing (pandas' NaN: an empty cell or one of pandas' NA strings);
sample 102,000 rows with a fixed seed; squash whitespace; drop rows where the parent or the comment has
more than 100 words; replace URLs by ``<URL>``; the first 1,000 kept rows are test, the next 1,000
val, the rest train. Test and val join both files; train stays per file (``pos_train`` /
``neg_train``). Records: prompt = parent comment, response = comment; no reward (score it with
``lolkit reward``'s Reddit preset). The original's extra DialoGPT 300-token filter needs the tokenizer
and is not applied; pandas' sampler is not reproduced bit for bit (a seeded ``random.Random`` is).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from ...errors import LolkitError, data_error
from ._common import Stats, iter_csv, n_words, parse_number, require_file, squash_spaces, write_splits

FILES = {"pos": "comments_positive.csv", "neg": "comments_negative.csv"}
COLUMNS = ("id", "text", "score", "parent_text", "parent_score")
# The strings pandas.read_csv reads as NaN by default (so a comment that is just "NA" counts as missing).
NA_STRINGS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                        "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
# http(s) URLs, the shape A-LoL's url_regex matches: scheme, optional www., a dotted host, then a path.
URL_RE = re.compile(r"https?://(?:www\.)?[-a-zA-Z0-9@:%._+~#=]{1,256}\.[a-zA-Z0-9()]{1,6}\b[-a-zA-Z0-9@:;%_\\+.~#?&/=]*")
URL_TOKEN = "<URL>"


def _is_na(cell: str) -> bool:
    return cell in NA_STRINGS or not cell.strip()


def mask_urls(text: str, token: str = URL_TOKEN) -> str:
    return URL_RE.sub(token, text)


def _process(path: Path, polarity: str, stats: Stats, sample_size: int, max_words: int, seed: int) -> list[dict]:
    p = str(path)
    # Pass 1: check every row, and note which have both texts.
    usable: list[int] = []
    for line, row in iter_csv(path, COLUMNS):
        stats.read[polarity] += 1
        if _is_na(row["text"]) or _is_na(row["parent_text"]):
            stats.drop(f"{polarity}_missing_text")
            continue
        if _is_na(row["id"]):
            raise data_error(p, line, "id", "empty id")
        parse_number(p, line, "score", row["score"])
        if not _is_na(row["parent_score"]):
            parse_number(p, line, "parent_score", row["parent_score"])
        usable.append(line)
    rng = random.Random(seed)
    picked = rng.sample(usable, min(sample_size, len(usable)))
    stats.drop(f"{polarity}_not_sampled", len(usable) - len(picked))
    order = {line: i for i, line in enumerate(picked)}
    # Pass 2: read the sampled rows, in sampled order.
    rows: list[tuple[int, dict] | None] = [None] * len(picked)
    for line, row in iter_csv(path, COLUMNS):
        if line in order:
            rows[order[line]] = (line, row)
    out: list[dict] = []
    seen: set[str] = set()
    for item in rows:
        assert item is not None
        line, row = item
        parent, text = squash_spaces(row["parent_text"]), squash_spaces(row["text"])
        if n_words(parent) > max_words or n_words(text) > max_words:
            stats.drop(f"{polarity}_over_{max_words}_words")
            continue
        rid = f"{polarity}-{row['id'].strip()}"
        if rid in seen:
            stats.drop(f"{polarity}_duplicate_id")
            continue
        seen.add(rid)
        meta = {"polarity": polarity, "score": parse_number(p, line, "score", row["score"]),
                "source": f"{path.name}:{line}"}
        if not _is_na(row["parent_score"]):
            meta["parent_score"] = parse_number(p, line, "parent_score", row["parent_score"])
        for k in ("subreddit_id", "link_id", "parent_id"):
            if row.get(k):
                meta[k] = row[k]
        prompt, response = mask_urls(parent), mask_urls(text)
        if prompt != parent or response != text:
            stats.changed[f"{polarity}_urls_masked"] += 1
        out.append({"id": rid, "prompt": prompt, "response": response, "meta": meta})
    return out


def preprocess_reddit(input_dir: str | Path | None, output_dir: str | Path, positive: str | Path | None = None,
                      negative: str | Path | None = None, sample_size: int = 102_000, test_size: int = 1000,
                      val_size: int = 1000, max_words: int = 100, seed: int = 901) -> dict[str, int]:
    """The two Kaggle CSVs → ``test`` / ``val`` / ``pos_train`` / ``neg_train`` (+ ``stats.json``)."""
    if min(sample_size, test_size, val_size, max_words) < 0:
        raise LolkitError("--sample-size, --test-size, --val-size and --max-words must be >= 0")
    files = {}
    for pol, given in (("pos", positive), ("neg", negative)):
        if given is None:
            if input_dir is None:
                raise LolkitError("give the Kaggle folder, or both --positive and --negative")
            given = Path(input_dir) / FILES[pol]
        files[pol] = require_file(given)
    stats = Stats("reddit", {"positive": files["pos"], "negative": files["neg"], "sample_size": sample_size,
                             "test_size": test_size, "val_size": val_size, "max_words": max_words, "seed": seed})
    kept = {pol: _process(path, pol, stats, sample_size, max_words, seed) for pol, path in files.items()}
    a, b = test_size, test_size + val_size
    splits = {"test": kept["pos"][:a] + kept["neg"][:a], "val": kept["pos"][a:b] + kept["neg"][a:b],
              "pos_train": kept["pos"][b:], "neg_train": kept["neg"][b:]}
    return write_splits(output_dir, splits, stats)
