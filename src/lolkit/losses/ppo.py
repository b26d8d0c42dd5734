"""PPO's losses for language (spec §3; RL4LMs / stable-baselines3): the clipped policy surrogate and the
value loss, per token.

Shapes: B sequences, T response positions (right-padded), ``mask[b, t] = 1`` on real response tokens.
``losses`` are [B, T] (zero on padding); the loop sums them and divides by the number of tokens of the
minibatch, so accumulating micro-batches is exact.
"""

from __future__ import annotations

import torch

from .base import LossOutput


def policy_loss(logps: torch.Tensor, logps_old: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip: float) -> LossOutput:
    """Clipped surrogate, per token: −min(ρ A, clip(ρ, 1−ε, 1+ε) A) with ρ = exp(log π_θ − log π_old).

    Golden (ε = 0.2): ρ = 1.5, A = +1 → −min(1.5, 1.2) = −1.2 (clipped);
    ρ = 1.5, A = −1 → −min(−1.5, −1.2) = 1.5 (not clipped: the pessimistic side);
    ρ = 0.5, A = +1 → −min(0.5, 0.8) = −0.5; ρ = 0.5, A = −1 → −min(−0.5, −0.8) = 0.8 (clipped)."""
    ratio = torch.exp(logps - logps_old)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    losses = -torch.minimum(unclipped, clipped) * mask
    with torch.no_grad():  # stable-baselines3's definitions: mean(|ρ − 1| > ε) and mean((ρ − 1) − log ρ)
        log_ratio = logps - logps_old
        clip_frac = ((ratio - 1.0).abs() > clip).float() * mask
        approx_kl = (torch.expm1(log_ratio) - log_ratio) * mask
    return LossOutput(losses, {"clip_frac": clip_frac, "approx_kl": approx_kl, "ratio": ratio.detach() * mask})


def value_loss(values: torch.Tensor, values_old: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None = None) -> LossOutput:
    """Per-token squared error (V − R_t)², RL4LMs' (stable-baselines3's) value loss exactly: with ``clip``
    the prediction itself is clipped around the rollout's value, V_c = V_old + clip(V − V_old, −c, c), and
    the loss is (V_c − R)² — no max with the unclipped error (lm-human-preferences' form) and no ½ (the
    coefficient c_v = 0.5 multiplies it, as in RL4LMs).

    Golden: V = 1.0, V_old = 0.0, R = 0.5 → 0.25; with clip 0.2: V_c = 0.2 → (0.2 − 0.5)² = 0.09;
    V = 0.6, V_old = 0.0, R = 1.0, clip 0.2 → V_c = 0.2 → 0.64."""
    if clip is not None:
        values = values_old + torch.clamp(values - values_old, -clip, clip)
    return LossOutput((values - returns) ** 2 * mask, {})
