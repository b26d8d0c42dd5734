"""Learning from feedback: Quark, ALT-RM / LMU / LMC and SELM (spec §3; docs/feedback.md).

* :mod:`lolkit.feedback.pool`      — the data pool: quantile bins, flushing, balanced rejection sampling
* :mod:`lolkit.feedback.providers` — feedback providers of ALT-LMU / LMC (rule, critic model, file)
* :mod:`lolkit.feedback.driver`    — the loop: sample → feedback → pool → train → iter-K/ + checkpoint
* :mod:`lolkit.losses.feedback`    — the losses: conditional NLL − η·entropy + β·KL, SELM
* :mod:`lolkit.conditions`         — what the policy is conditioned on: one small object per algorithm
"""

