"""Online RL building blocks: hand-worked goldens and loop-vs-vectorised parity (spec §3)."""

import math

import pytest
import torch

from lolkit.logprobs import token_entropy as entropy
from lolkit.losses.ppo import policy_loss, value_loss
from lolkit.online.nlpo import nucleus_mask
from lolkit.rl import (
    AdaptiveKLController,
    RunningMoments,
    gae,
    gae_loop,
    kl_penalty_rewards,
    normalise_rewards,
    whiten,
)
from lolkit.tasks import dates, numbers


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


def test_nucleus_mask_golden_and_masked_entropy():
    logits = torch.log(t([0.5, 0.3, 0.15, 0.05]))
    # cumulative mass before each token: [0, 0.5, 0.8, 0.95] → keep while < 0.9: the first three
    assert nucleus_mask(logits, 0.9).tolist() == [True, True, True, False]
    assert nucleus_mask(logits, 0.1).tolist() == [True, False, False, False]  # the top token always stays
    masked = logits.masked_fill(~nucleus_mask(logits, 0.5), float("-inf"))  # keeps the top token only
    assert entropy(masked).item() == pytest.approx(0.0)
    assert entropy(torch.zeros(4)).item() == pytest.approx(math.log(4))


def test_numbers_reward_matches_rl4lms_definition():
    assert numbers.increasing_reward("1 2 3 4 5 6 7 8 9 10") == 1.0
    assert numbers.increasing_reward("1 2 3") == pytest.approx(3 / 10)  # min_tokens/2 = 10 words at least
    assert numbers.increasing_reward("5 2 7") == pytest.approx(1 / 10)  # the run stops at the first non-increase
    assert numbers.increasing_reward("a 1 b 2 c 3 d 4 e 5 f 6") == pytest.approx(6 / 12)  # words count, numbers run
    assert numbers.increasing_reward("no numbers here") == 0.0
    assert numbers.increasing_reward(" ".join(map(str, range(30)))) == 1.0  # 30 / max(30, 10)
    # "nan" parses as a float: RL4LMs' test `x > last` ends the run there ("x <= last" let NaN continue it,
    # so ten "nan" words scored the maximum, a reward PPO could exploit)
    assert numbers.increasing_reward("1 nan 2", min_tokens=2) == pytest.approx(1 / 3)
    assert numbers.increasing_reward(" ".join(["nan"] * 10)) == pytest.approx(1 / 10)
    assert numbers.increasing_reward("1 2 nan 3 4 5 6 7 8 9") == pytest.approx(2 / 10)
    assert numbers.increasing_reward("1 2 inf 3") == pytest.approx(3 / 10)  # inf is larger than 2, then nothing is


def test_dates_reward_and_registration():
    assert dates.score("", "it was on 2024-01-31.") == {"date": 1.0}
    assert dates.score("", "it was on 2024-1-31.") == {"date": 0.0}
    from lolkit.rewards import get_reward

    assert get_reward("dates").score(["p"], ["x 1999-12-31 y"])[0][0] == 1.0
    assert get_reward("numbers").score(["p"], ["1 2 3"])[0][0] == pytest.approx(0.3)
    rows = numbers.records("train")
    assert rows and all(r["reward"] == numbers.score(r["prompt"], r["response"])["increasing"] for r in rows)
