"""Extractive coverage and density of each prediction against its knowledge (lolkit's eval metric)."""

import evaluate

from lolkit.metrics import coverage_density, module_result, text_metric_info

_DESCRIPTION = """Grusky et al.'s extractive fragment coverage (Σ|f| / |S|) and density (Σ|f|² / |S|) of each
prediction S against its knowledge passages (fragments never cross passages) — `lolkit eval`'s coverage
and density. None for a prediction without word tokens."""
_CITATION = """Grusky, Naaman and Artzi. Newsroom: A Dataset of 1.3 Million Summaries with Diverse Extractive
Strategies. NAACL 2018."""
_INPUTS = """predictions: list of texts; references: the knowledge of each prediction, a list of passages (or one
text); aggregate: return means (over the predictions that have a value) instead of lists."""


class Extractive(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _CITATION, _INPUTS)

    def _compute(self, predictions, references, aggregate=False):
        pairs = [coverage_density(k if isinstance(k, str) else list(k), p) for p, k in zip(predictions, references, strict=True)]
        return module_result({"coverage": [x[0] if x else None for x in pairs],
                              "density": [x[1] if x else None for x in pairs]}, aggregate)
