"""Learning from feedback: Quark, ALT-RM / LMU / LMC and SELM (spec §3; docs/feedback.md).

* :mod:`lolkit.feedback.pool`      — the data pool: quantile bins, flushing, balanced rejection sampling
* :mod:`lolkit.feedback.providers` — control tokens, conditions, feedback providers (rule, critic model, file)
* :mod:`lolkit.feedback.driver`    — the loop: sample → feedback → pool → train → iter-K/ + checkpoint
* :mod:`lolkit.losses.feedback`    — the losses: conditional NLL − η·entropy + β·KL, SELM
"""

from __future__ import annotations


def train(cfg, *, resume: bool = False, overwrite: bool = False, quiet: bool = False):
    from .driver import train as _train

    return _train(cfg, resume=resume, overwrite=overwrite, quiet=quiet)
