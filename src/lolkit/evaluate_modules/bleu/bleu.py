"""Sentence BLEU of each prediction against its references, / 100 (lolkit's eval metric; sacrebleu)."""

import evaluate

from lolkit.metrics import module_result, per_reference_batch, text_metric_info
from lolkit.rewards.reference import Bleu as BleuComponent

_DESCRIPTION = """sacrebleu's sentence-level BLEU of each prediction against all its references (multi-reference
n-gram counts), divided by 100 — the values `lolkit eval` reports as bleu, and the basis of self_bleu."""
_CITATION = """Papineni et al. BLEU: a Method for Automatic Evaluation of Machine Translation. ACL 2002.
Post. A Call for Clarity in Reporting BLEU Scores. WMT 2018."""
_INPUTS = """predictions: list of texts; references: a list of reference texts per prediction (or one text).
smooth_method: default "exp"; tokenize: default "13a"; lowercase: default False;
aggregate: return the mean instead of the per-prediction list."""


class Bleu(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _CITATION, _INPUTS)

    def _compute(self, predictions, references, smooth_method="exp", tokenize="13a", lowercase=False,
                 aggregate=False):
        component = BleuComponent("bleu", {"type": "bleu", "smooth_method": smooth_method, "tokenize": tokenize,
                                           "lowercase": lowercase}, "evaluate")
        return module_result({"bleu": component.score(per_reference_batch(predictions, references))}, aggregate)
