"""PPO's losses (lolkit.losses.ppo): the hand-worked goldens of their docstrings (spec §3)."""

import torch

from lolkit.losses.ppo import policy_loss, value_loss


def t(*values):
    return torch.tensor(values[0] if len(values) == 1 else values, dtype=torch.float64)


def test_clipped_policy_loss_goldens():
    # ε = 0.2, ρ = exp(logp − old):
    # ρ = 1.5, A = +1 → −min(1.5, 1.2) = −1.2 (clipped)   ρ = 1.5, A = −1 → −min(−1.5, −1.2) = 1.5
    # ρ = 0.5, A = +1 → −min(0.5, 0.8) = −0.5             ρ = 0.5, A = −1 → −min(−0.5, −0.8) = 0.8 (clipped)
    logp = torch.log(t([1.5, 1.5, 0.5, 0.5]))
    out = policy_loss(logp, torch.zeros(4, dtype=torch.float64), t([1, -1, 1, -1]), torch.ones(4, dtype=torch.float64), 0.2)
    torch.testing.assert_close(out.losses, t([-1.2, 1.5, -0.5, 0.8]))
    # stable-baselines3's logged statistics: clip_frac = |ρ − 1| > ε (every token here: |±0.5| > 0.2), and
    # approx_kl = (ρ − 1) − log ρ: ρ = 1.5 → 0.5 − 0.405465 = 0.094535; ρ = 0.5 → −0.5 + 0.693147 = 0.193147
    torch.testing.assert_close(out.metrics["clip_frac"], t([1, 1, 1, 1]))
    torch.testing.assert_close(out.metrics["approx_kl"], t([0.094535, 0.094535, 0.193147, 0.193147]), atol=1e-6, rtol=0)
    near = policy_loss(torch.log(t([1.1, 0.9, 1.0])), torch.zeros(3, dtype=torch.float64), t([1, 1, 1]),
                       torch.ones(3, dtype=torch.float64), 0.2)
    torch.testing.assert_close(near.metrics["clip_frac"], t([0, 0, 0]))


def test_policy_loss_gradient_vanishes_when_clipped_and_masks_padding():
    logp = torch.log(t([1.5, 1.0, 1.0])).requires_grad_()
    out = policy_loss(logp, torch.zeros(3, dtype=torch.float64), t([1, 2, 9]), t([1, 1, 0]), 0.2)
    out.losses.sum().backward()
    # clipped token: no gradient; ρ = 1 token: d(−ρA)/dlogp = −ρA = −2; padded token: 0
    torch.testing.assert_close(logp.grad, t([0, -2, 0]))


def test_value_loss_goldens():
    one = torch.ones(1, dtype=torch.float64)
    # unclipped: (1.0 − 0.5)² = 0.25
    torch.testing.assert_close(value_loss(t([1.0]), t([0.0]), t([0.5]), one).losses, t([0.25]))
    # RL4LMs / stable-baselines3: the prediction is clipped and the loss is its squared error, no max:
    # clip 0.2: V_c = 0 + clip(1.0, ±0.2) = 0.2 → (0.2 − 0.5)² = 0.09 (lm-human-preferences' max would say 0.25)
    torch.testing.assert_close(value_loss(t([1.0]), t([0.0]), t([0.5]), one, clip=0.2).losses, t([0.09]))
    # V = 0.6, V_old = 0, R = 1, clip 0.2: V_c = 0.2 → (0.2 − 1)² = 0.64
    torch.testing.assert_close(value_loss(t([0.6]), t([0.0]), t([1.0]), one, clip=0.2).losses, t([0.64]))
    # inside the clip range nothing changes: V = 0.1 → (0.1 − 1)² = 0.81
    torch.testing.assert_close(value_loss(t([0.1]), t([0.0]), t([1.0]), one, clip=0.2).losses, t([0.81]))
