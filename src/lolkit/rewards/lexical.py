"""Lexical rewards: TF-IDF informativeness, distinct-n, length. Pure Python, no model.

TF-IDF follows A-LoL's informativeness reward (Baheti et al. 2023, ``get_batch_tfidf_reward`` in
abaheti95/LoL-RL, which uses scikit-learn's CountVectorizer + TfidfTransformer with defaults):

* terms: lower-cased tokens of two or more word characters (regex ``\\b\\w\\w+\\b``); terms never
  seen in the fitting corpus are ignored;
* ``idf(t) = ln((1 + N) / (1 + df(t))) + 1`` over the N fitting documents (smoothed idf);
* the response's vector ``tf(t) · idf(t)`` is L2-normalised and the reward is the mean of its
  non-zero entries (0 when no known term occurs);
* length penalty (on by default, as in A-LoL): with ``k`` distinct known terms, ``k < 5`` multiplies
  the reward by ``k / 10`` — without it a one-word answer scores 1.0.

The fitted state (N and document frequencies) is stored as JSON, never pickled.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

from ..errors import LolkitError
from ..io import file_sha256
from .base import Batch, Component, register

TERM = re.compile(r"(?u)\b\w\w+\b")
STATE_FORMAT = "lolkit-tfidf/1"


def terms(text: str) -> list[str]:
    return TERM.findall(text.lower())


class TfidfState:
    """Document frequencies of a corpus; ``idf`` as scikit-learn's smoothed idf."""

    def __init__(self, num_docs: int, df: dict[str, int]):
        self.num_docs = num_docs
        self.df = df
        self.idf = {t: math.log((1 + num_docs) / (1 + d)) + 1.0 for t, d in df.items()}

    @classmethod
    def fit(cls, docs: list[str]) -> TfidfState:
        df: Counter[str] = Counter()
        for d in docs:
            df.update(set(terms(d)))
        return cls(len(docs), dict(sorted(df.items())))

    def to_json(self) -> dict:
        return {"format": STATE_FORMAT, "num_docs": self.num_docs, "df": self.df}

    @classmethod
    def from_json(cls, obj: dict, where: str) -> TfidfState:
        if not isinstance(obj, dict) or obj.get("format") != STATE_FORMAT:
            raise LolkitError(f"{where}: not a lolkit TF-IDF state (expected \"format\": \"{STATE_FORMAT}\")")
        df = obj.get("df")
        n = obj.get("num_docs")
        if not isinstance(n, int) or not isinstance(df, dict) or not all(isinstance(v, int) for v in df.values()):
            raise LolkitError(f"{where}: TF-IDF state needs an integer 'num_docs' and a 'df' of term -> integer")
        return cls(n, df)

    def score(self, text: str, length_penalty: bool = True) -> float:
        counts = Counter(t for t in terms(text) if t in self.idf)
        if not counts:
            return 0.0
        weights = [c * self.idf[t] for t, c in counts.items()]
        norm = math.sqrt(sum(w * w for w in weights))
        value = sum(w / norm for w in weights) / len(weights)
        if length_penalty and len(weights) < 5:
            value *= len(weights) / 10.0
        return value


def corpus_texts(path: str) -> list[str]:
    """Responses of a records file (every candidate response), or the lines of a text file."""
    p = Path(path)
    if not p.is_file():
        raise LolkitError(f"{p}: TF-IDF corpus file not found")
    if p.suffix in (".jsonl", ".json"):
        from ..data.schema import load_records

        return [r for rec in load_records(p) for r in rec.responses]
    return [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


@register
class Tfidf(Component):
    TYPE = "tfidf"
    OPTIONS = {"corpus": None, "state": None, "save_state": None, "length_penalty": True}
    DOC = "A-LoL informativeness: mean L2-normalised TF-IDF weight of the response's terms."

    def setup(self) -> None:
        if self.opts["corpus"] and self.opts["state"]:
            raise LolkitError(f"{self.source}: component '{self.name}': give 'corpus' or 'state', not both")
        self.state: TfidfState | None = None
        self.fitted_on_input = False

    @property
    def value_range(self):
        return (0.0, 1.0)

    def fingerprint(self) -> dict:
        fp = super().fingerprint()
        for key in ("corpus", "state"):
            if self.opts[key] and Path(self.opts[key]).is_file():
                fp[f"{key}_sha256"] = file_sha256(Path(self.opts[key]))
        fp.pop("save_state", None)
        return fp

    def _load(self) -> None:
        if self.state is not None:
            return
        if self.opts["state"]:
            p = Path(self.opts["state"])
            if not p.is_file():
                raise self.error(f"{p}: TF-IDF state file not found")
            try:
                obj = json.loads(p.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise LolkitError(f"{p}: invalid JSON ({e.msg})") from None
            self.state = TfidfState.from_json(obj, str(p))
        elif self.opts["corpus"]:
            self.state = TfidfState.fit(corpus_texts(self.opts["corpus"]))
            self._save()

    def _save(self) -> None:
        if self.opts["save_state"] and self.state is not None:
            from ..io import write_json

            target = Path(self.opts["save_state"])
            if target.exists() or target.is_symlink():  # replace only a state file lolkit wrote
                try:
                    own = not target.is_symlink() and json.loads(target.read_text(encoding="utf-8")).get(
                        "format") == STATE_FORMAT
                except (OSError, ValueError, UnicodeDecodeError, AttributeError):
                    own = False
                if not own:
                    raise LolkitError(f"{self.source}: component '{self.name}': save_state {target} exists and is "
                                      "not a lolkit TF-IDF state file; lolkit does not overwrite files it did not "
                                      "write: choose another path")
            write_json(target, self.state.to_json())

    def prepare(self, batch: Batch) -> None:
        """Without ``corpus`` or ``state``, fit on the responses being scored (A-LoL fits on the
        training responses)."""
        if not self.opts["corpus"] and not self.opts["state"]:
            self.state = TfidfState.fit(batch.responses)
            self.fitted_on_input = True
            self._save()

    def score(self, batch: Batch) -> list[float]:
        self._load()
        if self.state is None:
            raise self.error("no fitted state: set 'corpus' (a records/text file to fit on) or 'state' "
                             "(a saved JSON state); `lolkit reward` fits on its input file when neither is set")
        return [self.state.score(r, bool(self.opts["length_penalty"])) for r in batch.responses]


@register
class Distinct(Component):
    TYPE = "distinct"
    OPTIONS = {"n": 2, "lowercase": False}
    DOC = "Distinct-n of one response: unique n-grams / n-grams (whitespace tokens); 0 without n-grams."

    def setup(self) -> None:
        self.n = self.opt_number("n", integer=True, minimum=1)

    @property
    def value_range(self):
        return (0.0, 1.0)

    def score(self, batch: Batch) -> list[float]:
        out = []
        for r in batch.responses:
            words = (r.lower() if self.opts["lowercase"] else r).split()
            grams = [tuple(words[i : i + self.n]) for i in range(len(words) - self.n + 1)]
            out.append(len(set(grams)) / len(grams) if grams else 0.0)
        return out


@register
class Length(Component):
    TYPE = "length"
    OPTIONS = {"unit": "words", "tokenizer": None, "max_length": None, "target": None}
    DOC = ("Response length in words (whitespace) or tokenizer tokens; raw, or in [0, 1] with max_length "
           "(min(n, L) / L) or target (max(0, 1 - |n - T| / T)).")

    def setup(self) -> None:
        self.opt_choice("unit", ("words", "tokens"))
        if self.opts["unit"] == "tokens" and not self.opts["tokenizer"]:
            raise LolkitError(f"{self.source}: component '{self.name}': unit: tokens needs 'tokenizer' "
                              "(a model directory or short name)")
        self.max_length = self.opt_number("max_length", minimum=1)
        self.target = self.opt_number("target", minimum=1)
        if self.max_length and self.target:
            raise LolkitError(f"{self.source}: component '{self.name}': give max_length or target, not both")
        self._tok = None

    @property
    def value_range(self):
        return (0.0, 1.0) if (self.max_length or self.target) else None

    def count(self, text: str) -> int:
        if self.opts["unit"] == "words":
            return len(text.split())
        if self._tok is None:
            from ..models import load_tokenizer, resolve_model

            self._tok = load_tokenizer(resolve_model(self.opts["tokenizer"]))
        return len(self._tok(text, add_special_tokens=False)["input_ids"])

    def score(self, batch: Batch) -> list[float]:
        out = []
        for r in batch.responses:
            n = self.count(r)
            if self.max_length:
                out.append(min(n, self.max_length) / self.max_length)
            elif self.target:
                out.append(max(0.0, 1.0 - abs(n - self.target) / self.target))
            else:
                out.append(float(n))
        return out
