"""ROUGE-1/2/L of each prediction against its best reference (lolkit's eval metric; rouge-score)."""

import evaluate

from lolkit.metrics import module_result, per_reference_batch, text_metric_info
from lolkit.rewards.reference import Rouge as RougeComponent

_DESCRIPTION = """ROUGE-N / ROUGE-L F-measure (or precision / recall) of each prediction, the best over its
references, computed with Google's rouge-score package (Porter stemmer on by default) — the values
`lolkit eval` reports as rouge1, rouge2 and rougeL."""
_CITATION = """Lin, Chin-Yew. ROUGE: A Package for Automatic Evaluation of Summaries. ACL workshop, 2004."""
_INPUTS = """predictions: list of texts; references: a list of reference texts per prediction (or one text).
rouge_types: default ("rouge1", "rouge2", "rougeL"); measure: "f", "p" or "r"; use_stemmer: default True;
aggregate: return means instead of per-prediction lists."""


class Rouge(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _CITATION, _INPUTS)

    def _compute(self, predictions, references, rouge_types=("rouge1", "rouge2", "rougeL"), measure="f",
                 use_stemmer=True, aggregate=False):
        batch = per_reference_batch(predictions, references)
        out = {}
        for variant in rouge_types:
            component = RougeComponent(variant, {"type": "rouge", "variant": variant, "measure": measure,
                                                 "stemmer": use_stemmer}, "evaluate")
            out[variant] = component.score(batch)
        return module_result(out, aggregate)
