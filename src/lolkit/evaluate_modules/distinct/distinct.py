"""Distinct-n of a set of texts (lolkit's eval metric): unique n-grams / all n-grams."""

import evaluate

from lolkit.metrics import distinct_n, text_metric_info

_DESCRIPTION = """Distinct-n (Li et al. 2016) over all predictions together: the number of unique whitespace-token
n-grams divided by the number of n-grams (0 when there are none) — `lolkit eval`'s distinct_1/2/3."""
_CITATION = """Li et al. A Diversity-Promoting Objective Function for Neural Conversation Models. NAACL 2016."""
_INPUTS = """predictions: list of texts; orders: the n of each value, default (1, 2, 3)."""


class Distinct(evaluate.Measurement):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _CITATION, _INPUTS, references=False)

    def _compute(self, predictions, orders=(1, 2, 3)):
        return {f"distinct_{n}": distinct_n(list(predictions), n) for n in orders}
