"""The inputs every loss receives and the output every loss returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossInputs:
    """One micro-batch, shapes B = examples, T = shifted sequence length.

    policy_logps      [B]     Σ_t m_t log π_θ(y_t|·), differentiable
    token_logps       [B, T]  log π_θ(y_t|·) on response tokens, 0 elsewhere, differentiable
    mask              [B, T]  1.0 on response tokens
    ref_logps         [B]     Σ_t m_t log π_ref(y_t|·), precomputed (None when not needed)
    ref_token_logps   [B, T]  per-token reference log-probs (None when not needed)
    rewards           [B]     scalar reward R(x, y)
    advantages        [B]     A(x, y) = R − V(x)
    scores            [B]     a reward model's output r(x, y) per row, differentiable (instead of log-probs)
    margins           [U]     per-pair margins m, one per unit (TRL's `margin` column; None when the data has none)
    """

    policy_logps: torch.Tensor | None = None
    token_logps: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ref_logps: torch.Tensor | None = None
    ref_token_logps: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    margins: torch.Tensor | None = None


@dataclass(frozen=True)
class LossParams:
    """Hyper-parameters of the losses (each loss reads the ones it needs).

    clip     ε of the importance-ratio clamp [1−ε, 1+ε]; None = no clip (never 0: ε = 0 clamps to 1)
    kl_beta  β of a_lol_kl's term β(ℓ_ref − ℓ_θ)
    gold_u   lower bound u of r_gold's per-token weight max(π_θ(y_t|·), u)
    beta, dpo_loss, label_smoothing, reference_free   DPO (spec §2)
    sft_weight, group_size                             PRO (spec §2)
    center_rewards_coefficient                         reward model: c of c·(r_c + r_r)² (None: no term)
    """

    clip: float | None = 0.9
    kl_beta: float = 0.1
    gold_u: float = 0.1
    beta: float = 0.1  # DPO's β
    dpo_loss: str = "sigmoid"  # sigmoid | ipo
    label_smoothing: float = 0.0  # cDPO's ε
    reference_free: bool = False
    sft_weight: float = 0.05  # PRO's weight of the NLL of the best response
    group_size: int = 1  # responses per unit: 2 for DPO pairs, k for PRO rankings
    center_rewards_coefficient: float | None = None  # reward model (TRL's RewardConfig of the same name)


@dataclass
class LossOutput:
    """``losses``: per-example losses [B] (the training loop reduces them, see
    :func:`lolkit.train.reduce_losses`); ``metrics``: detached per-example values [B] to average."""

    losses: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
