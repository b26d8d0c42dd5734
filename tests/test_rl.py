"""lolkit.rl, the bookkeeping of on-policy RL: hand-worked goldens and loop-vs-vectorised parity (spec §3)."""


import pytest
import torch

from lolkit.rl import (
    AdaptiveKLController,
    RunningMoments,
    gae,
    gae_loop,
    kl_penalty_rewards,
    normalise_rewards,
    whiten,
)


def t(*values):
    return torch.tensor(values[0] if len(values) == 1 else values, dtype=torch.float64)


def test_gae_hand_worked_golden():
    # γ = 1, λ = 0.5; r = [0, 0, 1], V = [0.5, 0.5, 0.5]
    # δ = [0 + 0.5 − 0.5, 0 + 0.5 − 0.5, 1 + 0 − 0.5] = [0, 0, 0.5]
    # A_2 = 0.5, A_1 = 0 + 0.5·0.5 = 0.25, A_0 = 0 + 0.5·0.25 = 0.125; returns = A + V
    r, v, m = t([[0, 0, 1]]), t([[0.5, 0.5, 0.5]]), t([[1, 1, 1]])
    for fn in (gae, gae_loop):
        adv, ret = fn(r, v, m, 1.0, 0.5)
        torch.testing.assert_close(adv, t([[0.125, 0.25, 0.5]]))
        torch.testing.assert_close(ret, t([[0.625, 0.75, 1.0]]))


def test_gae_with_padding_golden():
    # Row of length 2 padded to 3; γ = 0.9, λ = 1: δ_1 = 2 − 1 = 1, δ_0 = 0 + 0.9·1 − 0 = 0.9,
    # A_1 = 1, A_0 = 0.9 + 0.9·1 = 1.8; the padded position stays 0 (its value 7 is ignored).
    for fn in (gae, gae_loop):
        adv, ret = fn(t([[0, 2, 5]]), t([[0, 1, 7]]), t([[1, 1, 0]]), 0.9, 1.0)
        torch.testing.assert_close(adv, t([[1.8, 1.0, 0.0]]))
        torch.testing.assert_close(ret, t([[1.8, 2.0, 0.0]]))


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.9), (1.0, 1.0), (0.5, 0.0)])
def test_gae_vectorised_equals_loop(gamma, lam):
    g = torch.Generator().manual_seed(0)
    B, T = 6, 9
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.tensor([9, 1, 5, 3, 8, 2])
    mask = (torch.arange(T)[None] < lengths[:, None]).double()
    a1, r1 = gae_loop(rewards * mask, values * mask, mask, gamma, lam)
    a2, r2 = gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(a1, a2)
    torch.testing.assert_close(r1, r2)


def test_whiten_golden_and_padding():
    # x = [1, 2, 3] (+ a padded 100): mean 2, unbiased std √((1 + 0 + 1)/(3 − 1)) = 1 → [−1, 0, 1]
    # (RL4LMs / stable-baselines3: advantages.std(), Bessel-corrected; the population std gave ±1.22474)
    out = whiten(t([1, 2, 3, 100]), t([1, 1, 1, 0]))
    s = 1 + 1e-8
    torch.testing.assert_close(out, t([-1 / s, 0, 1 / s, 0]))
    x = torch.randn(4, 7, dtype=torch.float64) * 5 + 3
    big = whiten(x, torch.ones(4, 7, dtype=torch.float64))
    torch.testing.assert_close(big, (x - x.mean()) / (x.std() + 1e-8))  # exactly torch's (SB3's) expression
    assert whiten(t([5.0]), t([1.0])).item() == 0.0  # one entry: no division by n − 1 = 0


def test_kl_controller_goldens():
    # target 0.5, factor 0.1: e = clip((KL − 0.5)/0.5, −0.2, 0.2); β ← β(1 + 0.1 e)
    assert AdaptiveKLController(0.1, 0.5).update(1.0) == pytest.approx(0.102)  # e = 0.2 (clipped from 1.0)
    assert AdaptiveKLController(0.1, 0.5).update(0.45) == pytest.approx(0.099)  # e = −0.1
    assert AdaptiveKLController(0.1, 0.5).update(0.0) == pytest.approx(0.098)  # e = −0.2 (clipped from −1)
    assert AdaptiveKLController(0.1, None).update(5.0) == 0.1  # no target: fixed β
    c = AdaptiveKLController(0.1, 0.5)
    c.update(1.0)
    assert c.update(1.0) == pytest.approx(0.1 * 1.02 * 1.02)  # compounds once per rollout


def test_token_rewards_golden():
    # β = 0.1; log-ratio [1, −2, 0.5] → −0.1·[1, −2, 0.5] = [−0.1, 0.2, −0.05]; R = 3 lands on the last real token
    old, ref = t([[1.0, 0.0, 0.5, 9.0]]), t([[0.0, 2.0, 0.0, 0.0]])
    r = kl_penalty_rewards(old, ref, t(3.0).reshape(1), t([[1, 1, 1, 0]]), 0.1)
    torch.testing.assert_close(r, t([[-0.1, 0.2, 2.95, 0.0]]))


def test_reward_normalisation():
    s = t(1.0, 2.0, 3.0)
    torch.testing.assert_close(normalise_rewards(s, "none", 2.0, None), t(2.0, 4.0, 6.0))
    torch.testing.assert_close(normalise_rewards(s, "none", 2.0, 5.0), t(2.0, 4.0, 5.0))
    b = normalise_rewards(s, "batch", 1.0, None)
    torch.testing.assert_close(b, t(-1.0, 0.0, 1.0))  # unbiased std 1, as the advantages' whitening
    m = RunningMoments()
    normalise_rewards(t(1.0, 3.0), "running", 1.0, None, m)
    normalise_rewards(t(5.0, 7.0), "running", 1.0, None, m)
    assert (m.mean, m.count) == (4.0, 4.0) and m.var == pytest.approx(5.0)  # population var of 1, 3, 5, 7
