"""Losses of learning from feedback (spec §3 "Quark and ALT", "SELM").

* :func:`conditional_nll` — Quark / ALT: per token NLL − η·entropy [+ β·KL(π_ref ‖ π_θ)], the
  policy conditioned on the feedback. Token-level: ``losses`` [B] are the per-example *sums* over
  response tokens; the loop divides by the number of response tokens of the whole (accumulated)
  batch, which is the originals' reduction (mean over all response tokens of the batch).
* :func:`selm` — DPO + α·β·[log p_θ(y_ref|x) − log p_ref(y_ref|x)] (Zhang et al. 2024); α = 0 is
  exactly :func:`lolkit.losses.dpo`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LossInputs, LossOutput, LossParams
from .preference import dpo


@dataclass
class FeedbackInputs(LossInputs):
    """:class:`LossInputs` plus the per-token statistics of the whole distribution that the loss needs
    (computed over the response rows in chunks by the loop: :func:`lolkit.logprobs.row_statistics`).

    entropy  [B, T]  H(π_θ(·|s_t)) over the policy's vocabulary (differentiable)
    kl       [B, T]  KL(π_ref ‖ π_θ) over the reference vocabulary (differentiable; None without a KL
                     term) — the policy's extra control tokens (Quark) have no reference probability
    """

    entropy: torch.Tensor | None = None
    kl: torch.Tensor | None = None


@dataclass(frozen=True)
class FeedbackParams(LossParams):
    """eta: entropy bonus η; kl_coef: β of KL(π_ref ‖ π_θ) (0: no KL); alpha: SELM's α (β is ``beta``)."""

    eta: float = 0.06
    kl_coef: float = 0.05
    alpha: float = 1e-3


def conditional_nll(inp: FeedbackInputs, p: FeedbackParams) -> LossOutput:
    """Quark / ALT: per response token ℓ_t = −log π_θ(y_t|c, x, y_<t) − η·H_t + β·KL_t.

    Shapes: token_logps [B, T], mask [B, T], entropy [B, T], kl [B, T] (only when ``kl_coef`` > 0; from
    :func:`lolkit.logprobs.token_entropy` and :func:`~lolkit.logprobs.token_kl` of the policy's logits
    and the reference's). ``losses`` [B] = Σ_t m_t ℓ_t (divide by the batch's token count to reduce).
    Metrics (per-example token sums, same reduction): nll, entropy, kl.

    Golden (one token, V = 2, η = 0.06, β = 0.05): logits (0, ln 3) → p = (¼, ¾), y = 1:
    NLL = −ln ¾ = 0.287682; H = −(¼ ln ¼ + ¾ ln ¾) = 0.562335; reference logits (0, 0) → p_ref = (½, ½),
    KL = ½ ln(½/¼) + ½ ln(½/¾) = ½ ln(4/3) = 0.143841;
    ℓ = 0.287682 − 0.06·0.562335 + 0.05·0.143841 = 0.261134.
    With a control token, logits (0, ln 3, ln 4) → p = (⅛, ⅜, ½), the same reference:
    KL = ½ ln 4 + ½ ln(4/3) = ½ ln(16/3) = 0.836988 (the sum stops at V_ref = 2).
    """
    m = inp.mask.to(inp.token_logps.dtype)
    nll = -inp.token_logps * m
    ent = inp.entropy * m
    per_token = nll - p.eta * ent
    metrics = {"nll": nll.sum(-1).detach(), "entropy": ent.sum(-1).detach()}
    if p.kl_coef:
        if inp.kl is None:
            raise ValueError("conditional_nll with kl_coef > 0 needs FeedbackInputs.kl")
        kl = inp.kl * m
        per_token = per_token + p.kl_coef * kl
        metrics["kl"] = kl.sum(-1).detach()
    return LossOutput(per_token.sum(-1), metrics)


def selm(inp: LossInputs, p: FeedbackParams) -> LossOutput:
    """SELM (Zhang et al. 2024): L = DPO(y_w, y_l) + α·β·[log p_θ(y_ref|x) − log p_ref(y_ref|x)].

    Layout (response-major, as :mod:`lolkit.losses.preference`): policy_logps / ref_logps [3B] are
    the B chosen rows, then the B rejected rows, then the B y_ref rows (the model's greedy answers);
    mask [3B, T]. The DPO part is :func:`lolkit.losses.dpo` on the first 2B rows, so α = 0 gives
    DPO's losses exactly.

    Golden (β = 0.1, α = 0.5): chosen/rejected as DPO's golden — policy (−10, −14), reference
    (−11, −12) → 0.554355; y_ref: policy −5, reference −6 → α·β·(−5 + 6) = 0.05; L = 0.604355.
    """
    if inp.ref_logps is None:
        raise ValueError("selm needs LossInputs.ref_logps (the previous iteration's model)")
    n = inp.policy_logps.shape[0] // 3
    pair = LossInputs(inp.policy_logps[: 2 * n], inp.token_logps[: 2 * n], inp.mask[: 2 * n],
                      inp.ref_logps[: 2 * n])
    out = dpo(pair, p)
    optimism = (inp.policy_logps[2 * n :] - inp.ref_logps[2 * n :].to(inp.policy_logps.dtype))
    losses = out.losses + p.alpha * p.beta * optimism if p.alpha else out.losses
    return LossOutput(losses, {**out.metrics, "optimism": (p.beta * optimism).detach()})
