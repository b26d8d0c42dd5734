"""The bookkeeping of on-policy RL for language, as pure functions of tensors (spec §3; RL4LMs,
Ziegler et al. 2019): per-token KL-penalised rewards, GAE, whitening, the adaptive KL controller and
reward normalisation. The PPO loop and CoLA's latent RL share them; the losses themselves are in
:mod:`lolkit.losses.ppo`.

Shapes: B sequences, T response positions (right-padded); ``mask[b, t] = 1`` on real response
tokens. Position ``t`` is the state s_t (prompt + the first t response tokens) and the action a_t
(response token t). Nothing here runs a model, calls backward or logs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

WHITEN_EPS = 1e-8


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x − mean) / (std + 1e-8) over the masked entries, with the unbiased (n − 1) std as RL4LMs and
    stable-baselines3 use (``tensor.std()``); zero on padding.

    Golden: x = [1, 2, 3] → mean 2, std √(2/2) = 1 → [−1, 0, 1]."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = ((x - mean) ** 2 * mask).sum() / (n - 1).clamp(min=1)
    out = (x - mean) / (var.sqrt() + WHITEN_EPS)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_penalty_rewards(logps_old: torch.Tensor, logps_ref: torch.Tensor, scores: torch.Tensor,
                       mask: torch.Tensor, kl_beta: float) -> torch.Tensor:
    """Per-token rewards of the token-level MDP [B, T]:
    r_t = −β (log π_old(a_t|s_t) − log π_ref(a_t|s_t)), plus the task reward R at the last token."""
    rewards = -kl_beta * (logps_old - logps_ref) * mask
    last = (mask.sum(1).long() - 1).clamp_min(0)
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows, last] += scores * (mask.sum(1) > 0).to(scores.dtype)
    return rewards


def gae_loop(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """GAE written as the textbook backward recursion (the reference for the vectorised form).

    δ_t = r_t + γ V_{t+1} − V_t (V after the last token is 0),  A_t = δ_t + γλ A_{t+1},
    returns R_t = A_t + V_t. Returns (advantages, returns), both [B, T] and zero on padding."""
    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    for b in range(B):
        n = int(mask[b].sum())
        running = 0.0
        for t in reversed(range(n)):
            next_v = values[b, t + 1] if t + 1 < n else 0.0
            delta = rewards[b, t] + gamma * next_v - values[b, t]
            running = delta + gamma * lam * running
            adv[b, t] = running
    return adv, (adv + values) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """GAE, vectorised: A = δ · Mᵀ with M[t, s] = (γλ)^(s−t) for s ≥ t. Same result as :func:`gae_loop`.

    Golden (γ = 1, λ = 0.5; r = [0, 0, 1], V = [0.5, 0.5, 0.5]):
    δ = [0 + 0.5 − 0.5, 0 + 0.5 − 0.5, 1 + 0 − 0.5] = [0, 0, 0.5];
    A = [0 + 0.5·0 + 0.25·0.5, 0 + 0.5·0.5, 0.5] = [0.125, 0.25, 0.5]; returns = A + V = [0.625, 0.75, 1.0]."""
    rewards, values, mask = rewards * mask, values * mask, mask.to(rewards.dtype)
    next_values = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = (rewards + gamma * next_values - values) * mask
    T = rewards.shape[1]
    idx = torch.arange(T, device=rewards.device)
    power = (idx[None, :] - idx[:, None]).to(rewards.dtype)  # [t, s] = s − t
    discount = torch.where(power >= 0, (gamma * lam) ** power.clamp_min(0), torch.zeros_like(power))
    adv = deltas @ discount.T
    return adv * mask, (adv + values) * mask


@dataclass
class AdaptiveKLController:
    """RL4LMs' adaptive KL coefficient: e = clip((KL̄ − target)/target, −0.2, 0.2), β ← β(1 + factor·e),
    once per rollout. ``target=None`` keeps β fixed.

    Golden (target 0.5, factor 0.1): β = 0.1, KL̄ = 1.0 → e = clip(1.0, ±0.2) = 0.2 → β = 0.1 · 1.02 = 0.102;
    KL̄ = 0.45 → e = −0.1 → β = 0.1 · 0.99 = 0.099; KL̄ = 0 → e = −0.2 → β = 0.098."""

    value: float
    target: float | None = None
    factor: float = 0.1

    def update(self, kl: float) -> float:
        if self.target is not None:
            error = min(max((kl - self.target) / self.target, -0.2), 0.2)
            self.value *= 1.0 + self.factor * error
        return self.value

    def state_dict(self) -> dict:  # a checkpoint part (lolkit.checkpoint)
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


@dataclass
class RunningMoments:
    """Running mean / variance of scalar rewards (Chan et al.'s parallel update), for ``reward_norm: running``."""

    mean: float = 0.0
    var: float = 1.0
    count: float = 0.0

    def update(self, x: torch.Tensor) -> None:
        n = float(x.numel())
        if n == 0:
            return
        bm, bv = float(x.mean()), float(x.var(unbiased=False))
        total = self.count + n
        delta = bm - self.mean
        m2 = self.var * self.count + bv * n + delta**2 * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total

    def state_dict(self) -> dict:  # a checkpoint part (lolkit.checkpoint)
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = state["mean"], state["var"], state["count"]


def normalise_rewards(scores: torch.Tensor, kind: str, scale: float, clip: float | None,
                      moments: RunningMoments | None = None) -> torch.Tensor:
    """R → (optionally) whitened over the rollout (``batch``) or by running moments (``running``),
    then × scale, then clipped to [−clip, clip]."""
    if kind == "batch" and scores.numel() > 1:  # the same whitening as the advantages' (unbiased std)
        scores = whiten(scores, torch.ones_like(scores))
    elif kind == "running":
        assert moments is not None
        moments.update(scores)
        scores = (scores - moments.mean) / (moments.var**0.5 + WHITEN_EPS)
    scores = scores * scale
    if clip is not None:
        scores = scores.clamp(-clip, clip)
    return scores
