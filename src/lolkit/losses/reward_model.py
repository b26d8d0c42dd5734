"""Reward-model training loss: the Bradley–Terry pairwise loss (Ouyang et al. 2022, §3.5; Stiennon et
al. 2020), with the two optional terms of TRL's ``RewardTrainer``: a per-pair margin (Touvron et al. 2023,
Llama 2 §3.2.2) and reward centering (Eisenstein et al. 2023).

Layout as in :mod:`lolkit.losses.preference`: the B pairs of a micro-batch are laid out response-major,
``scores`` [2B] holding the B chosen rows first, then the B rejected rows; losses are per pair, [B].
"""

from __future__ import annotations

import torch.nn.functional as F

from .base import LossInputs, LossOutput, LossParams


def reward_model(inp: LossInputs, p: LossParams) -> LossOutput:
    """Pairwise loss of a scalar reward model r(x, y).

    .. math::

        L = -\\log \\sigma(r(x, y_c) - r(x, y_r) - m) + c \\cdot (r(x, y_c) + r(x, y_r))^2

    m is the pair's margin (``margins``; 0 without one) and c is ``center_rewards_coefficient`` (no term
    when None). The batch mean of L is TRL 1.16's ``RewardTrainer`` loss: its centering term is c times
    the batch mean of (r_c + r_r)², the same mean taken per pair.

    Args:
        inp (LossInputs): ``scores`` [2B] (differentiable; chosen rows, then rejected rows) and, when the
            pairs carry one, ``margins`` [B].
        p (LossParams): uses ``center_rewards_coefficient``.

    Returns:
        LossOutput: ``losses`` [B]; metrics per pair, named as TRL logs them: ``accuracy`` (1 where
        r_c > r_r), ``margin`` (r_c − r_r), ``mean_reward`` ((r_c + r_r) / 2), and ``rewards/chosen``,
        ``rewards/rejected``.

    Example (golden, worked by hand)::

        r_c = 2, r_r = 1, no margin:  L = −log σ(1) = log(1 + e^{−1}) = 0.313262
            ∂L/∂r_c = −(1 − σ(1)) = −0.268941,  ∂L/∂r_r = +0.268941
        margin m = 0.5:               L = −log σ(0.5) = 0.474077
        c = 0.01, no margin:          L = 0.313262 + 0.01 · (2 + 1)² = 0.403262
            ∂L/∂r_c = −0.268941 + 2 · 0.01 · 3 = −0.208941,  ∂L/∂r_r = 0.268941 + 0.06 = 0.328941
        r_c = 0, r_r = 1 (wrong order): L = −log σ(−1) = 1.313262, accuracy 0
    """
    if inp.scores is None:
        raise ValueError("reward_model needs LossInputs.scores (the reward model's outputs)")
    r = inp.scores.view(2, -1)  # [2, B]: chosen, rejected
    chosen, rejected = r[0], r[1]
    diff = chosen - rejected
    if inp.margins is not None:
        if inp.margins.shape != diff.shape:
            raise ValueError(f"reward_model: margins have shape {tuple(inp.margins.shape)}, pairs {tuple(diff.shape)}")
        losses = -F.logsigmoid(diff - inp.margins.to(diff.dtype))
    else:
        losses = -F.logsigmoid(diff)
    if p.center_rewards_coefficient is not None:
        losses = losses + p.center_rewards_coefficient * (chosen + rejected) ** 2
    d = diff.detach()
    return LossOutput(losses, {"accuracy": (d > 0).float(), "margin": d,
                               "mean_reward": ((chosen + rejected) / 2).detach(),
                               "rewards/chosen": chosen.detach(), "rewards/rejected": rejected.detach()})
