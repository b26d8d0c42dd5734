"""Goldens of the feedback losses (worked by hand in their docstrings) and SELM(α = 0) == DPO."""

import math

import pytest
import torch

from lolkit.logprobs import token_entropy, token_kl
from lolkit.losses import FeedbackInputs, FeedbackParams, LossInputs, LossParams, conditional_nll, dpo, selm


def one_token(logits, action, ref_logits=None):
    lg = torch.tensor([[logits]], dtype=torch.float32, requires_grad=True)
    tl = torch.log_softmax(lg, -1)[..., action]
    kl = None if ref_logits is None else token_kl(torch.tensor([[ref_logits]], dtype=torch.float32), lg)
    return lg, FeedbackInputs(tl.sum(-1), tl, torch.ones(1, 1), entropy=token_entropy(lg), kl=kl)


def test_conditional_nll_golden():
    _, inp = one_token([0.0, math.log(3)], 1, [0.0, 0.0])
    out = conditional_nll(inp, FeedbackParams(eta=0.06, kl_coef=0.05))
    assert out.metrics["nll"].item() == pytest.approx(-math.log(0.75), abs=1e-6)  # 0.287682
    assert out.metrics["entropy"].item() == pytest.approx(0.562335, abs=1e-6)
    assert out.metrics["kl"].item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)  # 0.143841
    assert out.losses.item() == pytest.approx(0.261134, abs=1e-6)


def test_kl_over_the_reference_vocabulary_only():
    """A control token (V = 3 for the policy, 2 for the reference): p_θ = (⅛, ⅜, ½) over all three."""
    _, inp = one_token([0.0, math.log(3), math.log(4)], 1, [0.0, 0.0])
    out = conditional_nll(inp, FeedbackParams(eta=0.0, kl_coef=1.0))
    assert out.metrics["kl"].item() == pytest.approx(0.5 * math.log(16 / 3), abs=1e-6)  # 0.836988
    assert out.losses.item() == pytest.approx(-math.log(3 / 8) + 0.5 * math.log(16 / 3), abs=1e-6)


def test_no_kl_needs_no_reference_and_masked_tokens_are_ignored():
    logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0))
    actions = torch.tensor([[1, 2, 3], [4, 5, 0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    tl = torch.log_softmax(logits, -1).gather(-1, actions[..., None]).squeeze(-1) * mask
    inp = FeedbackInputs(tl.sum(-1), tl, mask, entropy=token_entropy(logits))
    out = conditional_nll(inp, FeedbackParams(eta=0.0, kl_coef=0.0))
    assert torch.allclose(out.losses, -tl.sum(-1)) and "kl" not in out.metrics
    # per-token values in float64, written from the formula
    lp = torch.log_softmax(logits.double(), -1)
    ent = -(lp.exp() * lp).sum(-1)
    assert torch.allclose(token_entropy(logits).double(), ent, atol=1e-6)
    assert torch.allclose(token_kl(logits, logits), torch.zeros(2, 3), atol=1e-6)
    with pytest.raises(ValueError, match="FeedbackInputs.kl"):
        conditional_nll(inp, FeedbackParams(kl_coef=0.05))


def test_entropy_bonus_gradient_raises_entropy():
    """−η·H in the loss: a gradient step on the entropy term alone moves towards the uniform distribution."""
    lg, inp = one_token([0.0, 2.0], 1)
    out = conditional_nll(inp, FeedbackParams(eta=1.0, kl_coef=0.0))
    (out.losses.sum() - out.metrics["nll"].sum()).backward()  # the −η·H part only (nll is detached)
    assert lg.grad[0, 0, 1] > 0 > lg.grad[0, 0, 0]  # descending lowers the larger logit


def test_selm_golden():
    inp = LossInputs(torch.tensor([-10.0, -14.0, -5.0]), torch.zeros(3, 1), torch.ones(3, 1),
                     torch.tensor([-11.0, -12.0, -6.0]))
    out = selm(inp, FeedbackParams(beta=0.1, alpha=0.5, group_size=3))
    assert out.losses.item() == pytest.approx(0.554355 + 0.05, abs=1e-6)
    assert out.metrics["optimism"].item() == pytest.approx(0.1, abs=1e-6)


def test_selm_with_alpha_zero_is_dpo_exactly():
    g = torch.Generator().manual_seed(3)
    B, T = 4, 5
    token = torch.randn(3 * B, T, generator=g, dtype=torch.float64).requires_grad_(True)
    mask = (torch.rand(3 * B, T, generator=g) > 0.2).double()
    ref = torch.randn(3 * B, generator=g, dtype=torch.float64) * 3

    def inputs(rows):  # a fresh graph per loss
        tm = token * mask
        return LossInputs(tm.sum(-1)[:rows], tm[:rows], mask[:rows], ref[:rows])

    params = FeedbackParams(beta=0.01, alpha=0.0, group_size=3)
    a = selm(inputs(3 * B), params)
    b = dpo(inputs(2 * B), LossParams(beta=0.01))
    assert torch.equal(a.losses, b.losses)
    ga, = torch.autograd.grad(a.losses.sum(), token)
    gb, = torch.autograd.grad(b.losses.sum(), token)
    assert torch.equal(ga, gb) and torch.all(ga[2 * B :] == 0)
    for k in b.metrics:
        assert torch.equal(a.metrics[k], b.metrics[k])
    # α > 0 moves only the y_ref rows' gradient, by α·β per token
    c = selm(inputs(3 * B), FeedbackParams(beta=0.01, alpha=1e-3, group_size=3))
    gc, = torch.autograd.grad(c.losses.sum(), token)
    assert torch.equal(gc[: 2 * B], ga[: 2 * B])
    assert torch.allclose(gc[2 * B :], 1e-3 * 0.01 * mask[2 * B :])
