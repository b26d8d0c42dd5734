"""Sentence chrF of each prediction against its references, / 100 (lolkit's eval metric; sacrebleu)."""

import evaluate

from lolkit.metrics import module_result, per_reference_batch, text_metric_info
from lolkit.rewards.reference import Chrf as ChrfComponent

_DESCRIPTION = """sacrebleu's sentence-level chrF (character n-grams up to 6, β = 2; word_order = 2 gives chrF++)
of each prediction against all its references, divided by 100 — the values `lolkit eval` reports as chrf."""
_CITATION = """Popović. chrF: character n-gram F-score for automatic MT evaluation. WMT 2015."""
_INPUTS = """predictions: list of texts; references: a list of reference texts per prediction (or one text).
char_order: default 6; word_order: default 0; beta: default 2;
aggregate: return the mean instead of the per-prediction list."""


class Chrf(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _CITATION, _INPUTS)

    def _compute(self, predictions, references, char_order=6, word_order=0, beta=2, aggregate=False):
        component = ChrfComponent("chrf", {"type": "chrf", "char_order": char_order, "word_order": word_order,
                                           "beta": beta}, "evaluate")
        return module_result({"chrf": component.score(per_reference_batch(predictions, references))}, aggregate)
