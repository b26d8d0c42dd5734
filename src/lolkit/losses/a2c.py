"""A2C for language, per token (Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement
Learning", in the synchronous form of stable-baselines3 that RL4LMs adapts to the token-level MDP).

One update per rollout: the whole rollout is one batch, with no importance ratio and no clipping (the
data comes from the very policy being updated). Per response token t (mask m_t):

    policy   −A_t · log π_θ(a_t | s_t)       A_t fixed (the rollout's GAE advantages)
    value    (V_θ(s_t) − R_t)²               R_t the rollout's returns; no ½ (c_v multiplies it)
    entropy  H(π_θ(· | s_t))                 a bonus: −c_ent · H

    loss_t = policy_t + c_v · value_t − c_ent · H_t

The loop sums ``losses`` over the rollout's tokens and divides by their number, which is
stable-baselines3's ``policy_loss + ent_coef · entropy_loss + vf_coef · value_loss`` with its means
taken over every token of the rollout. The per-token KL penalty and the adaptive controller are the
same as PPO's: they enter through the rewards the advantages are computed from, not here.
"""

from __future__ import annotations

import torch

from .base import LossOutput


def a2c(logps: torch.Tensor, values: torch.Tensor, advantages: torch.Tensor, returns: torch.Tensor,
        mask: torch.Tensor, entropy: torch.Tensor | None = None, *, vf_coef: float = 0.5,
        ent_coef: float = 0.0) -> LossOutput:
    """Per-token A2C losses [B, T] (zero on padding); metrics ``policy_loss``, ``value_loss`` and
    ``entropy`` per token.

    logps [B, T] log π_θ(a_t|s_t), differentiable; values [B, T] V_θ(s_t), differentiable;
    advantages, returns [B, T] from the rollout (treated as constants); mask [B, T];
    entropy [B, T] H(π_θ(·|s_t)) — when None, −log π_θ(a_t|s_t) stands in for it (its one-sample
    estimate, as stable-baselines3 does for distributions without a closed-form entropy).

    Golden (c_v = 0.5, c_ent = 0.01): log π = [ln ½, ln ¼], A = [2, −1], V = [0.5, 0], R = [1, 1],
    H = [0.7, 1.0] → policy = [−2·ln ½, −(−1)·ln ¼] = [1.386294, −1.386294], value = [0.25, 1.0],
    loss = [1.386294 + 0.125 − 0.007, −1.386294 + 0.5 − 0.01] = [1.504294, −0.896294];
    ∂loss/∂log π = −A = [−2, 1], ∂loss/∂V = c_v · 2(V − R) = [−0.5, −1]."""
    mask = mask.to(logps.dtype)
    policy = -advantages.detach() * logps * mask
    value = (values - returns.detach()) ** 2 * mask
    ent = (entropy if entropy is not None else -logps) * mask
    losses = policy + vf_coef * value - ent_coef * ent
    return LossOutput(losses, {"policy_loss": policy.detach(), "value_loss": value.detach(), "entropy": ent.detach()})
