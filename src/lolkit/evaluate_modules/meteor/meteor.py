"""METEOR of each prediction against its best reference (lolkit's eval metric; nltk, local WordNet)."""

import evaluate

from lolkit.metrics import module_result, per_reference_batch, text_metric_info
from lolkit.rewards.reference import Meteor as MeteorComponent

_DESCRIPTION = """nltk's METEOR (exact, Porter-stem and WordNet-synonym matches) on lower-cased regex word tokens,
the best over a prediction's references — the values `lolkit eval --metrics meteor` reports. WordNet is
read from a local NLTK data directory (scripts/install_wordnet.sh), never downloaded."""
_CITATION = """Banerjee and Lavie. METEOR: An Automatic Metric for MT Evaluation with Improved Correlation with
Human Judgments. ACL workshop, 2005."""
_INPUTS = """predictions: list of texts; references: a list of reference texts per prediction (or one text).
alpha: default 0.9; beta: default 3.0; gamma: default 0.5; lowercase: default True;
aggregate: return the mean instead of the per-prediction list."""


class Meteor(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION, _CITATION, _INPUTS)

    def _compute(self, predictions, references, alpha=0.9, beta=3.0, gamma=0.5, lowercase=True, aggregate=False):
        component = MeteorComponent("meteor", {"type": "meteor", "alpha": alpha, "beta": beta, "gamma": gamma,
                                               "lowercase": lowercase}, "evaluate")
        return module_result({"meteor": component.score(per_reference_batch(predictions, references))}, aggregate)
