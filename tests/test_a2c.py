"""The A2C loss (lolkit.losses.a2c): hand-worked goldens, stable-baselines3's mean form, and its gradient
against the policy-gradient estimator worked out by hand for a softmax-linear policy in float64."""

import math

import pytest
import torch

from lolkit.losses import a2c


def test_a2c_golden_losses_metrics_and_gradients():
    logps = torch.tensor([[math.log(0.5), math.log(0.25)]], requires_grad=True)
    values = torch.tensor([[0.5, 0.0]], requires_grad=True)
    adv, ret = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 1.0]])
    ent = torch.tensor([[0.7, 1.0]])
    out = a2c(logps, values, adv, ret, torch.ones(1, 2), ent, vf_coef=0.5, ent_coef=0.01)
    torch.testing.assert_close(out.losses, torch.tensor([[1.504294, -0.896294]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.metrics["policy_loss"], torch.tensor([[1.386294, -1.386294]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.metrics["value_loss"], torch.tensor([[0.25, 1.0]]))
    torch.testing.assert_close(out.metrics["entropy"], ent)
    out.losses.sum().backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[-2.0, 1.0]]))
    torch.testing.assert_close(values.grad, torch.tensor([[-0.5, -1.0]]))


def test_a2c_padding_is_zero_and_without_entropy_minus_log_pi_stands_in():
    logps = torch.tensor([[-0.5, -2.0, -7.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = a2c(logps, torch.zeros(1, 3), torch.ones(1, 3), torch.zeros(1, 3), mask, vf_coef=0.0, ent_coef=0.1)
    # policy −1·log π = [0.5, 2]; entropy estimate −log π = [0.5, 2]; loss = policy − 0.1 · entropy = 0.9 · policy
    torch.testing.assert_close(out.losses, torch.tensor([[0.45, 1.8, 0.0]]))
    assert out.metrics["entropy"][0, 2] == 0


def test_a2c_token_mean_is_stable_baselines3_loss():
    """Σ losses / tokens == SB3's policy_loss + ent_coef · entropy_loss + vf_coef · value_loss, where its
    means run over every token of the rollout."""
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    logps, values, adv, ret, ent = (torch.randn(3, 4, generator=g) for _ in range(5))
    out = a2c(logps, values, adv, ret, mask, ent, vf_coef=0.5, ent_coef=0.02)
    m = mask.bool()
    sb3 = (-(adv[m] * logps[m]).mean() + 0.02 * (-ent[m].mean()) + 0.5 * torch.nn.functional.mse_loss(ret[m], values[m]))
    assert (out.losses.sum() / mask.sum()).item() == pytest.approx(sb3.item(), rel=1e-6)


def test_a2c_gradient_is_the_policy_gradient_of_a_softmax_linear_policy_in_float64():
    """Reference from the paper: ∇θ J ≈ (1/N) Σ_n A_n ∇θ log π(a_n|s_n), and for logits z = θᵀφ(s),
    ∇θ log π(a|s) = φ(s) (e_a − π(·|s))ᵀ; the value term's gradient (1/N) Σ c_v · 2 (V_n − R_n) φ_v(s_n)."""
    g = torch.Generator().manual_seed(3)
    states, feats, actions = 7, 4, 5
    phi = torch.randn(states, feats, generator=g, dtype=torch.float64)
    theta = torch.randn(feats, actions, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(feats, generator=g, dtype=torch.float64, requires_grad=True)  # linear critic V = wᵀφ
    a = torch.randint(0, actions, (states,), generator=g)
    adv = torch.randn(states, generator=g, dtype=torch.float64)
    ret = torch.randn(states, generator=g, dtype=torch.float64)
    logits = phi @ theta
    logps = torch.log_softmax(logits, -1).gather(-1, a[:, None]).squeeze(-1)
    out = a2c(logps[None], (phi @ w)[None], adv[None], ret[None], torch.ones(1, states, dtype=torch.float64),
              vf_coef=0.5, ent_coef=0.0)
    (out.losses.sum() / states).backward()
    with torch.no_grad():
        pi = torch.softmax(phi @ theta, -1)
        onehot = torch.nn.functional.one_hot(a, actions).double()
        policy_gradient = (phi.T @ (adv[:, None] * (onehot - pi))) / states  # ascent direction of J
        value_gradient = (phi.T @ (0.5 * 2 * (phi @ w - ret))) / states
    torch.testing.assert_close(-theta.grad, policy_gradient, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(w.grad, value_gradient, atol=1e-12, rtol=1e-10)
