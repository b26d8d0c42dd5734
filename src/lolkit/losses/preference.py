"""Preference and ranking losses (spec §2): DPO and its variants, PRO.

Batch layout: a unit (pair or ranking) holds k responses to one prompt; the B units of a micro-batch
are laid out response-major, row ``j * B + b`` being response ``j`` of unit ``b`` (for DPO: the B
chosen rows, then the B rejected rows). Losses are per unit, shape [B].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import LossInputs, LossOutput, LossParams


def _split(x: torch.Tensor, k: int) -> torch.Tensor:
    """[k·B] → [k, B]."""
    return x.view(k, -1)


def dpo(inp: LossInputs, p: LossParams) -> LossOutput:
    """Direct Preference Optimization (Rafailov et al. 2023).

    Δ = [log p_θ(y_w|x) − log p_ref(y_w|x)] − [log p_θ(y_l|x) − log p_ref(y_l|x)]

    * ``sigmoid`` (default): L = −(1−ε) log σ(βΔ) − ε log σ(−βΔ)   (ε = label smoothing, cDPO; 0 by default)
    * ``ipo``: each log-ratio divided by its response length first, then L = (Δ̄ − 1/(2β))²
    * ``reference_free``: the reference terms are 0.

    Shapes: policy_logps [2B] (chosen rows then rejected rows), ref_logps [2B], mask [2B, T].
    Metrics per pair, named as TRL logs them: rewards/chosen = β(log p_θ − log p_ref)(y_w), rewards/rejected,
    rewards/margins, rewards/accuracies.

    Golden (sigmoid, β = 0.1): policy (−10, −14), reference (−11, −12) → Δ = (1) − (−2) = 3,
    L = −log σ(0.3) = 0.554355; rewards/chosen 0.1, rewards/rejected −0.2, margin 0.3, accuracy 1.
    """
    pol = _split(inp.policy_logps, 2)
    if p.reference_free:
        ref = torch.zeros_like(pol)
    else:
        if inp.ref_logps is None:
            raise ValueError("dpo needs LossInputs.ref_logps unless reference_free is set")
        ref = _split(inp.ref_logps.to(pol.dtype), 2)
    logratio = pol - ref  # [2, B]
    if p.dpo_loss == "ipo":
        lengths = _split(inp.mask.sum(-1).to(pol.dtype), 2).clamp(min=1)
        delta = (logratio[0] / lengths[0]) - (logratio[1] / lengths[1])
        losses = (delta - 1.0 / (2.0 * p.beta)) ** 2
    elif p.dpo_loss == "sigmoid":
        delta = logratio[0] - logratio[1]
        eps = p.label_smoothing
        losses = -(1.0 - eps) * F.logsigmoid(p.beta * delta) - eps * F.logsigmoid(-p.beta * delta)
    else:
        raise ValueError(f"unknown DPO loss {p.dpo_loss!r} (sigmoid, ipo)")
    chosen = (p.beta * logratio[0]).detach()
    rejected = (p.beta * logratio[1]).detach()
    return LossOutput(losses, {"rewards/chosen": chosen, "rewards/rejected": rejected,
                               "rewards/margins": chosen - rejected, "rewards/accuracies": (chosen > rejected).float()})


def pro(inp: LossInputs, p: LossParams) -> LossOutput:
    """Preference Ranking Optimization (Song et al. 2023), spec §2.

    The k candidates of a unit arrive sorted by reward, r¹ ≥ … ≥ rᵏ (stable: ties keep input order).
    s_i = log p_θ(yⁱ|x) / |yⁱ| (length-normalised, no reference model). For each rank j = 1..k−1,
    with w_j^i = r^j − r^i for i > j and w_j^j = max_{i>j}(r^j − r^i):

        L_j = log Σ_{i≥j} exp(w_j^i · s_i) − w_j^j · s_j        (−log softmax over {j..k} at j)
        L   = Σ_j L_j + sft_weight · (k−1)² · ℓ_θ(x, y¹)

    Shapes: policy_logps [k·B] (response-major), rewards [k·B], mask [k·B, T]; losses [B].
    If all rewards of a unit are equal every weight is 0: the ranking term is the constant
    Σ_j log(k−j+1) with no gradient; the metric ``ties`` (1 for such a unit) lets the loop say so.

    Golden (k = 2, sft_weight = 0): r = (1, 0), s = (−1, −2) → w = 1 for both terms,
    L = log(e^{−1} + e^{−2}) + 1 = 0.313262.
    """
    k = p.group_size
    logp = _split(inp.policy_logps, k)  # [k, B]
    lengths = _split(inp.mask.sum(-1).to(logp.dtype), k).clamp(min=1)
    s = logp / lengths
    r = _split(inp.rewards.to(logp.dtype), k)
    total = torch.zeros(s.shape[1], dtype=s.dtype, device=s.device)
    for j in range(k - 1):
        w = r[j : j + 1] - r[j:]  # [k−j, B]: w_j^i for i ≥ j (row 0 is i = j, zero for now)
        w_top = w[1:].max(dim=0).values
        w = torch.cat([w_top[None], w[1:]], dim=0)
        total = total + torch.logsumexp(w * s[j:], dim=0) - w_top * s[j]
    ties = (r == r[:1]).all(dim=0).to(s.dtype)
    sft = -logp[0]
    losses = total + p.sft_weight * (k - 1) ** 2 * sft
    return LossOutput(losses, {"rank_loss": total.detach(), "nll": sft.detach(),
                               "reward_gap": (r[0] - r[-1]).detach(), "ties": ties})
