"""Reference-based metrics, offline: ROUGE (rouge-score), BLEU and chrF (sacrebleu, sentence level),
METEOR (nltk with a local WordNet). All are scaled to [0, 1]; with several references a response
gets its best score (ROUGE, METEOR) or the libraries' multi-reference score (BLEU, chrF)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from ..errors import LolkitError
from .base import Batch, Component, register


def _need(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise LolkitError(f"this reward needs the '{package}' package: pip install '{package}' "
                          "(or pip install 'lolkit[metrics]')") from None


@register
class Rouge(Component):
    TYPE = "rouge"
    OPTIONS = {"variant": "rougeL", "measure": "f", "stemmer": True}
    DOC = "ROUGE-1/2/L/Lsum F (or precision/recall) against the best reference (rouge-score)."

    def setup(self) -> None:
        self.opt_choice("measure", ("f", "p", "r"))
        if not re.fullmatch(r"rouge([1-9]|L|Lsum)", str(self.opts["variant"])):
            raise LolkitError(f"{self.source}: component '{self.name}': variant must be rouge1..rouge9, rougeL "
                              f"or rougeLsum, got {self.opts['variant']!r}")
        self._scorer = None

    @property
    def value_range(self):
        return (0.0, 1.0)

    def score(self, batch: Batch) -> list[float]:
        if self._scorer is None:
            rs = _need("rouge_score.rouge_scorer", "rouge-score")
            self._scorer = rs.RougeScorer([self.opts["variant"]], use_stemmer=bool(self.opts["stemmer"]))
        attr = {"f": "fmeasure", "p": "precision", "r": "recall"}[self.opts["measure"]]
        out = []
        for i, resp in enumerate(batch.responses):
            refs = self.need_reference(batch, i)
            out.append(max(getattr(self._scorer.score(ref, resp)[self.opts["variant"]], attr) for ref in refs))
        return out


@register
class Bleu(Component):
    TYPE = "bleu"
    OPTIONS = {"smooth_method": "exp", "tokenize": "13a", "lowercase": False}
    DOC = "sacrebleu sentence BLEU / 100."

    @property
    def value_range(self):
        return (0.0, 1.0)

    def score(self, batch: Batch) -> list[float]:
        sb = _need("sacrebleu", "sacrebleu")
        out = []
        for i, resp in enumerate(batch.responses):
            refs = self.need_reference(batch, i)
            s = sb.sentence_bleu(resp, refs, smooth_method=self.opts["smooth_method"], tokenize=self.opts["tokenize"],
                                 lowercase=bool(self.opts["lowercase"]))
            out.append(s.score / 100.0)
        return out


@register
class Chrf(Component):
    TYPE = "chrf"
    OPTIONS = {"char_order": 6, "word_order": 0, "beta": 2}
    DOC = "sacrebleu sentence chrF / 100 (word_order: 2 gives chrF++)."

    @property
    def value_range(self):
        return (0.0, 1.0)

    def score(self, batch: Batch) -> list[float]:
        from sacrebleu.metrics import CHRF

        _need("sacrebleu", "sacrebleu")
        metric = CHRF(char_order=int(self.opts["char_order"]), word_order=int(self.opts["word_order"]),
                      beta=int(self.opts["beta"]))
        out = []
        for i, resp in enumerate(batch.responses):
            refs = self.need_reference(batch, i)
            out.append(metric.sentence_score(resp, refs).score / 100.0)
        return out


_WORDS = re.compile(r"\w+|[^\w\s]")


def nltk_data_dirs() -> list[str]:
    """Where lolkit looks for WordNet: $LOLKIT_NLTK_DATA, then <venv>/nltk_data (written by
    scripts/install_wordnet.sh), then NLTK's own search path ($NLTK_DATA, ~/nltk_data, /usr/share/...)."""
    dirs = []
    if os.environ.get("LOLKIT_NLTK_DATA"):
        dirs.append(os.environ["LOLKIT_NLTK_DATA"])
    dirs.append(str(Path(sys.prefix) / "nltk_data"))
    return dirs


WORDNET_HINT = ("METEOR needs the WordNet 3.0 data for NLTK and none was found; install it offline with "
                "`sh scripts/install_wordnet.sh .venv/nltk_data` (Debian packages wordnet-base + "
                "wordnet-sense-index; `make install` runs it), or point LOLKIT_NLTK_DATA / NLTK_DATA at an "
                "NLTK data directory holding corpora/wordnet")


def load_wordnet():
    """WordNet from a local NLTK data directory; never NLTK's network downloader."""
    nltk = _need("nltk", "nltk")
    for d in reversed(nltk_data_dirs()):
        if d not in nltk.data.path:
            nltk.data.path.insert(0, d)
    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        raise LolkitError(WORDNET_HINT) from None
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
    except (LookupError, OSError) as e:
        raise LolkitError(f"{WORDNET_HINT} (the data found is incomplete: {str(e).strip().splitlines()[0]})") from None
    return wordnet


@register
class Meteor(Component):
    TYPE = "meteor"
    OPTIONS = {"alpha": 0.9, "beta": 3.0, "gamma": 0.5, "lowercase": True}
    DOC = ("nltk METEOR (exact, Porter-stem and WordNet-synonym matches) on regex word tokens "
           "(\\w+ or one punctuation mark), best over references.")

    def setup(self) -> None:
        self._wn = None

    @property
    def value_range(self):
        return (0.0, 1.0)

    def tokens(self, text: str) -> list[str]:
        return _WORDS.findall(text.lower() if self.opts["lowercase"] else text)

    def score(self, batch: Batch) -> list[float]:
        if self._wn is None:
            self._wn = load_wordnet()
        from nltk.translate.meteor_score import meteor_score

        out = []
        for i, resp in enumerate(batch.responses):
            refs = self.need_reference(batch, i)
            hyp = self.tokens(resp)
            out.append(max(float(meteor_score([self.tokens(ref)], hyp, wordnet=self._wn, alpha=self.opts["alpha"],
                                              beta=self.opts["beta"], gamma=self.opts["gamma"])) for ref in refs))
        return out
