"""TRPO's update (lolkit.trpo): conjugate gradient against a dense solve, the Fisher–vector product
against the dense Hessian, the line search's accept / reject on hand-made cases, and the whole step
against a float64 reference written from the paper (dense Fisher, exact solve) on a tiny policy."""

import math

import pytest
import torch

from lolkit.trpo import (
    categorical_kl,
    conjugate_gradient,
    fisher_vector_product,
    line_search,
    policy_parameters,
    surrogate,
    trpo_step,
)


def _spd(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    return m @ m.T + 0.5 * torch.eye(n, dtype=torch.float64)


def test_conjugate_gradient_solves_a_dense_spd_system_in_n_steps():
    a = _spd(6)
    b = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, max_steps=6, residual_tol=1e-30)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), atol=1e-10, rtol=1e-10)
    # fewer steps: not yet the solution, but closer in the A-norm than x = 0
    x2 = conjugate_gradient(lambda v: a @ v, b, max_steps=2)
    exact = torch.linalg.solve(a, b)
    err = lambda y: float((y - exact) @ a @ (y - exact))  # noqa: E731
    assert 1e-6 < err(x2) < err(torch.zeros(6, dtype=torch.float64))


def test_conjugate_gradient_golden_2x2():
    # A = [[4, 1], [1, 3]], b = [1, 2]: the exact solution [1/11, 7/11] after two steps
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, torch.tensor([1.0, 2.0], dtype=torch.float64), max_steps=2)
    torch.testing.assert_close(x, torch.tensor([1 / 11, 7 / 11], dtype=torch.float64), atol=1e-12, rtol=0)
    # a zero right-hand side stops at once with x = 0 and no product
    calls = []
    assert conjugate_gradient(lambda v: calls.append(v) or v, torch.zeros(2)).abs().sum() == 0 and not calls


def test_categorical_kl_golden_and_surrogate_gradient():
    logits = torch.tensor([[[0.0, 0.0]]])
    old = torch.tensor([[[0.0, math.log(3.0)]]])
    assert categorical_kl(logits, old, torch.ones(1, 1)).item() == pytest.approx(0.143841, abs=1e-6)
    assert categorical_kl(old, old, torch.ones(1, 1)).item() == pytest.approx(0.0, abs=1e-7)
    logps = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    s = surrogate(logps, logps.detach(), torch.tensor([[2.0, -1.0, 5.0]]), mask)
    assert s.item() == pytest.approx(0.5)  # ratio 1: the mean advantage of the two response tokens
    s.backward()
    torch.testing.assert_close(logps.grad, torch.tensor([[1.0, -0.5, 0.0]]))


class _Tiny(torch.nn.Module):
    """A two-layer softmax policy over 4 actions and a value head the KL never sees."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Linear(3, 5)
        self.policy = torch.nn.Linear(5, 4)
        self.value = torch.nn.Linear(5, 1)

    def forward(self, x):
        h = torch.tanh(self.body(x))
        return self.policy(h), self.value(h)


def test_fisher_vector_product_equals_the_dense_hessian_of_the_kl():
    model = _Tiny().double()
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    old = model(x)[0].detach()
    params = [model.body.weight, model.body.bias, model.policy.weight, model.policy.bias]
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])
    sizes = [p.numel() for p in params]

    def kl_of(flat):
        chunks = torch.split(flat, sizes)
        bw, bb, pw, pb = (c.view_as(p) for c, p in zip(chunks, params, strict=True))
        logits = torch.tanh(x @ bw.T + bb) @ pw.T + pb
        return categorical_kl(logits, old, torch.ones(6, dtype=torch.float64))

    hessian = torch.autograd.functional.hessian(kl_of, flat0)
    fvp = fisher_vector_product(categorical_kl(model(x)[0], old, torch.ones(6, dtype=torch.float64)), params, 0.1)
    v = torch.randn(flat0.numel(), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(fvp(v), hessian @ v + 0.1 * v, atol=1e-12, rtol=1e-10)


# --- line search: hand-made cases on one parameter, KL(θ) = θ², surrogate given per case -------------

def _search(objective, target_kl=0.5, max_backtracks=10):
    theta = torch.zeros(1)
    seen = []

    def evaluate():
        t = float(theta[0])
        seen.append(round(t, 6))
        return objective(t), t * t

    res = line_search([theta], torch.ones(1), evaluate, objective(0.0), target_kl, 0.8, max_backtracks)
    return res, float(theta[0]), seen


def test_line_search_accepts_the_full_step_when_it_keeps_the_constraint():
    res, theta, seen = _search(lambda t: t, target_kl=2.0)
    assert res.accepted and res.coefficient == 1.0 and res.tries == 1 and theta == 1.0 and seen == [1.0]
    assert res.kl == 1.0 and res.objective == 1.0


def test_line_search_backtracks_until_the_kl_is_below_its_target():
    # KL at 1, 0.8, 0.64: 1, 0.64, 0.4096 — the third is the first below 0.5
    res, theta, seen = _search(lambda t: t, target_kl=0.5)
    assert res.accepted and res.tries == 3 and seen == [1.0, 0.8, 0.64]
    assert res.coefficient == pytest.approx(0.64) and theta == pytest.approx(0.64)


def test_line_search_rejects_every_step_that_does_not_improve_and_restores_the_parameters():
    res, theta, seen = _search(lambda t: -t, target_kl=10.0)
    assert not res.accepted and res.tries == 10 and len(seen) == 10 and theta == 0.0
    assert res.coefficient == 0.0 and res.kl == 0.0 and res.objective == 0.0


def test_line_search_needs_strict_improvement_and_strict_kl():
    flat, theta, _ = _search(lambda t: 0.0, target_kl=10.0)  # the surrogate does not move: rejected
    assert not flat.accepted and theta == 0.0
    edge, _, seen = _search(lambda t: t, target_kl=1.0, max_backtracks=1)  # KL == target: rejected
    assert not edge.accepted and seen == [1.0]
    nan, theta, _ = _search(lambda t: float("nan"), target_kl=10.0)
    assert not nan.accepted and theta == 0.0


# --- the whole step against a float64 reference from the paper ----------------------------------------

def _reference_step(phi, theta, bias, actions, adv, target_kl, damping, shrink=0.8, tries=10):
    """TRPO on logits z(s) = θᵀφ(s) + b, written from the paper with dense matrices: g = ∇L,
    F = mean_s Jᵀ (diag p − p pᵀ) J (the KL's Hessian at θ_old), x = (F + λI)⁻¹ g exactly,
    β = sqrt(2δ / xᵀ(F + λI)x), then θ_old + 0.8^k β x for the first k with KL < δ and L > L_old."""
    n, f = phi.shape
    a = theta.shape[1]
    u0 = torch.cat([theta.reshape(-1), bias])
    eye = torch.eye(a, dtype=torch.float64)

    def unpack(u):
        return u[: f * a].view(f, a), u[f * a:]

    def probs(u):
        t, b = unpack(u)
        return torch.softmax(phi @ t + b, -1)

    p0 = probs(u0)
    jac = [torch.cat([torch.kron(phi[i][None], eye), eye], 1) for i in range(n)]  # [A, F·A + A]
    onehot = torch.nn.functional.one_hot(actions, a).double()
    g = sum(adv[i] * jac[i].T @ (onehot[i] - p0[i]) for i in range(n)) / n
    fisher = sum(jac[i].T @ (torch.diag(p0[i]) - torch.outer(p0[i], p0[i])) @ jac[i] for i in range(n)) / n
    damped = fisher + damping * torch.eye(u0.numel(), dtype=torch.float64)
    x = torch.linalg.solve(damped, g)
    beta = math.sqrt(2 * target_kl / float(x @ damped @ x))

    def objective(u):
        return float((adv * probs(u)[torch.arange(n), actions] / p0[torch.arange(n), actions]).mean())

    def kl(u):
        p = probs(u)
        return float((p * (p.log() - p0.log())).sum(-1).mean())

    before = objective(u0)
    coef = 1.0
    for k in range(tries):
        u = u0 + coef * beta * x
        if kl(u) < target_kl and objective(u) > before:
            return u, k + 1
        coef *= shrink
    return u0, tries


class _Linear(torch.nn.Module):
    def __init__(self, theta, bias):
        super().__init__()
        self.theta = torch.nn.Parameter(theta.clone())
        self.bias = torch.nn.Parameter(bias.clone())
        self.value = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))  # a critic: never in the step

    def forward(self, phi):
        return phi @ self.theta + self.bias


# (1.0, 3): the full step overshoots the KL and the search accepts its second try
@pytest.mark.parametrize("target_kl, seed", [(0.01, 0), (0.05, 1), (2.0, 2), (1.0, 3)])
def test_trpo_step_equals_a_float64_reference_from_the_paper(target_kl, seed):
    g = torch.Generator().manual_seed(seed)
    n, f, a = 8, 3, 4
    phi = torch.randn(n, f, generator=g, dtype=torch.float64)
    theta = torch.randn(f, a, generator=g, dtype=torch.float64)
    bias = torch.randn(a, generator=g, dtype=torch.float64)
    actions = torch.randint(0, a, (n,), generator=g)
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    ref, ref_tries = _reference_step(phi, theta, bias, actions, adv, target_kl, 0.1)

    model = _Linear(theta, bias)
    old = model(phi).detach()
    old_logps = torch.log_softmax(old, -1)[torch.arange(n), actions]
    mask = torch.ones(n, dtype=torch.float64)

    def objective_and_kl():
        logits = model(phi)
        logps = torch.log_softmax(logits, -1)[torch.arange(n), actions]
        return surrogate(logps, old_logps, adv, mask), categorical_kl(logits.double(), old, mask)

    step = trpo_step(list(model.parameters()), objective_and_kl, target_kl=target_kl, cg_max_steps=f * a + a,
                     cg_residual_tol=0.0)
    if seed == 3:
        assert ref_tries == 2
    ours = torch.cat([model.theta.detach().reshape(-1), model.bias.detach()])
    assert step.parameters == f * a + a  # the critic's parameter had no KL path: left out
    assert torch.equal(model.value.detach(), torch.ones(3, dtype=torch.float64))
    assert step.line_search.tries == ref_tries
    moved = (ours - torch.cat([theta.reshape(-1), bias])).norm()
    assert step.line_search.accepted == bool(moved > 0)
    assert float((ours - ref).norm() / ref.norm()) <= 1e-6
    if step.line_search.accepted:
        assert step.line_search.kl < target_kl and step.line_search.objective > step.objective_before


def test_trpo_step_moves_only_a_lora_adapter_of_a_tiny_lm(tiny_model):
    """Over the trainable parameters only: a LoRA policy's base weights stay as they are; the step keeps the
    full-vocabulary KL to the rollout's policy under its target and raises the surrogate."""
    from lolkit.models import ModelConfig, load_model

    model, tok, _ = load_model(ModelConfig(name=tiny_model, lora=True, lora_r=4), trainable=True)
    with torch.no_grad():  # start the adapter away from zero, so that both of its matrices get gradients
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, len(tok), (4, 10), generator=g)
    actions, mask = ids[:, 1:], torch.ones(4, 9)
    adv = torch.randn(4, 9, generator=g)
    with torch.no_grad():
        old = model(input_ids=ids).logits[:, :-1].float()
    old_logps = torch.log_softmax(old, -1).gather(-1, actions[..., None]).squeeze(-1)

    def objective_and_kl():
        logits = model(input_ids=ids).logits[:, :-1].float()
        logps = torch.log_softmax(logits, -1).gather(-1, actions[..., None]).squeeze(-1)
        return surrogate(logps, old_logps, adv, mask), categorical_kl(logits, old, mask)

    params = policy_parameters(model)
    assert params and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    before = [p.detach().clone() for p in params]
    step = trpo_step(params, objective_and_kl, target_kl=0.01)
    assert step.line_search.accepted and step.line_search.kl < 0.01
    assert step.line_search.objective > step.objective_before
    assert any(not torch.equal(a, p.detach()) for a, p in zip(before, params, strict=True))
    for n, p in model.named_parameters():
        if n in base:
            assert torch.equal(p.detach(), base[n]), n


def test_trpo_step_without_advantage_leaves_the_policy_alone():
    model = _Linear(torch.ones(3, 4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    phi = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    old = model(phi).detach()
    mask = torch.ones(5, dtype=torch.float64)

    def objective_and_kl():
        logits = model(phi)
        logps = torch.log_softmax(logits, -1)[:, 0]
        return surrogate(logps, torch.log_softmax(old, -1)[:, 0], torch.zeros(5, dtype=torch.float64), mask), \
            categorical_kl(logits, old, mask)

    step = trpo_step(list(model.parameters()), objective_and_kl)
    assert step.step_size == 0.0 and not step.line_search.accepted and step.line_search.tries == 0
    assert torch.equal(model.theta.detach(), torch.ones(3, 4, dtype=torch.float64))
