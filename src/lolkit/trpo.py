"""TRPO's policy update (Schulman et al. 2015, "Trust Region Policy Optimization"), in the form of
stable-baselines3-contrib's TRPO that RL4LMs adapts to language: a natural-gradient step found by
conjugate gradient on Fisher–vector products, scaled to the KL trust region, then a backtracking line
search on the surrogate under the KL constraint.

For policy parameters θ (the trainable ones only — with LoRA, the adapter — and never the value
head's: the critic is fitted separately), at the rollout's θ_old:

    L(θ)  = mean_t A_t · π_θ(a_t|s_t) / π_old(a_t|s_t)          the surrogate, maximised
    KL(θ) = mean_t KL(π_θ(·|s_t) ‖ π_old(·|s_t))                 over the whole vocabulary
    g = ∇L(θ_old);  F v = ∇(∇KL(θ_old) · v) + λ v                 (Fisher–vector product by double
                                                                   backward; λ = ``cg_damping``)
    x ≈ F⁻¹ g                                                     conjugate gradient, ``cg_max_steps``
    β = sqrt(2 δ / xᵀ F x)                                        the step that reaches KL ≈ δ
                                                                   (δ = ``target_kl``) to second order
    θ = θ_old + α^k β x,  k = 0, 1, …                             the first k with KL < δ and L > L(θ_old)
                                                                   (α = ``shrink``, at most ``max_backtracks``
                                                                   tries); none: θ stays θ_old

The defaults are stable-baselines3-contrib's (target_kl 0.01, 15 CG steps, damping 0.1, shrinking
0.8, 10 tries). Nothing here runs a rollout or logs; :func:`trpo_step` takes a closure that evaluates
the surrogate and the KL at the parameters' current values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

TARGET_KL = 0.01
CG_MAX_STEPS = 15
CG_DAMPING = 0.1
CG_RESIDUAL_TOL = 1e-10
SHRINK = 0.8
MAX_BACKTRACKS = 10


def policy_parameters(model) -> list[torch.nn.Parameter]:
    """The parameters a TRPO step moves: the trainable ones (a LoRA model's adapter weights)."""
    return [p for p in model.parameters() if p.requires_grad]


def surrogate(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor) -> torch.Tensor:
    """L = mean over response tokens of A_t · exp(log π_θ − log π_old); at θ = θ_old its value is the
    mean advantage and its gradient mean(A_t ∇ log π_θ(a_t|s_t)), the policy gradient."""
    ratio = torch.exp(logps - old_logps.detach())
    return (ratio * advantages.detach() * mask).sum() / mask.sum().clamp_min(1)


def categorical_kl(logits: torch.Tensor, old_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """mean over response tokens of KL(softmax(logits) ‖ softmax(old_logits)), logits [B, T, V] (in
    float32, or float64 when they are).

    Golden: p = softmax([0, 0]) = [½, ½], q = softmax([0, ln 3]) = [¼, ¾] →
    KL = ½ ln(½ / ¼) + ½ ln(½ / ¾) = ½ ln 2 + ½ ln ⅔ = 0.143841."""
    dtype = torch.promote_types(logits.dtype, torch.float32)  # float32 at least (float64 stays float64)
    logp = torch.log_softmax(logits.to(dtype), -1)
    logq = torch.log_softmax(old_logits.detach().to(dtype), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp_min(1)


def flat_grad(output: torch.Tensor, params: Sequence[torch.Tensor], *, create_graph: bool = False,
              retain_graph: bool | None = None) -> torch.Tensor:
    """∂output/∂params as one flat vector (zeros for a parameter ``output`` does not depend on)."""
    grads = torch.autograd.grad(output, list(params), create_graph=create_graph, retain_graph=retain_graph,
                                allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params,
                                                                                               strict=True)])


def fisher_vector_product(kl: torch.Tensor, params: Sequence[torch.Tensor],
                          damping: float = CG_DAMPING) -> Callable[..., torch.Tensor]:
    """v ↦ (∇²KL) v + damping · v at the current parameters. KL's gradient is built once with its
    graph; each product is the gradient of (∇KL · v) — one backward pass, never the dense Hessian. At
    θ = θ_old, where KL and its gradient are 0, ∇²KL is the Fisher information matrix of the policy."""
    return _product(flat_grad(kl, params, create_graph=True), params, damping)


def _product(grad_kl: torch.Tensor, params: Sequence[torch.Tensor], damping: float) -> Callable[..., torch.Tensor]:
    def product(v: torch.Tensor, retain_graph: bool = True) -> torch.Tensor:
        return flat_grad((grad_kl * v.detach()).sum(), params, retain_graph=retain_graph) + damping * v

    return product


def conjugate_gradient(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor,
                       max_steps: int = CG_MAX_STEPS, residual_tol: float = CG_RESIDUAL_TOL) -> torch.Tensor:
    """x ≈ A⁻¹ b for a symmetric positive-definite A given as ``matvec``, by conjugate gradient from
    x = 0; stops after ``max_steps`` products or when ‖r‖² < ``residual_tol``. In exact arithmetic it
    solves an n × n system in n steps."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(max_steps):
        if rr < residual_tol:
            break
        ap = matvec(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_next = r @ r
        p = r + (rr_next / rr) * p
        rr = rr_next
    return x


@dataclass(frozen=True)
class LineSearch:
    accepted: bool
    coefficient: float  # α^k of the accepted step; 0 when none was accepted
    tries: int  # evaluations made
    objective: float  # the surrogate at the final parameters
    kl: float  # the KL at the final parameters (0 when none was accepted: θ = θ_old)


def _assign(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    k = 0
    for p in params:
        p.copy_(flat[k : k + p.numel()].view_as(p))
        k += p.numel()


def line_search(params: Sequence[torch.Tensor], step: torch.Tensor,
                evaluate: Callable[[], tuple[torch.Tensor | float, torch.Tensor | float]], objective_before: float,
                target_kl: float = TARGET_KL, shrink: float = SHRINK,
                max_backtracks: int = MAX_BACKTRACKS) -> LineSearch:
    """Backtracking: try θ_old + α^k · ``step`` for k = 0 … max_backtracks − 1 and keep the first with
    KL < target_kl and surrogate > ``objective_before`` (both strict; a NaN fails both). When no try
    passes, the parameters are restored to θ_old. ``evaluate()`` returns (surrogate, KL) at the
    parameters' current values; it runs under ``torch.no_grad``."""
    params = list(params)
    with torch.no_grad():
        start = torch.cat([p.detach().reshape(-1) for p in params]).clone()
        coef = 1.0
        for k in range(max_backtracks):
            _assign(params, start + coef * step.to(start.dtype))
            objective, kl = (float(v) for v in evaluate())
            if kl < target_kl and objective > objective_before:
                return LineSearch(True, coef, k + 1, objective, kl)
            coef *= shrink
        _assign(params, start)
    return LineSearch(False, 0.0, max_backtracks, objective_before, 0.0)


@dataclass(frozen=True)
class TRPOStep:
    line_search: LineSearch
    objective_before: float
    step_size: float  # β = sqrt(2δ / xᵀFx)
    direction_norm: float  # ‖x‖
    parameters: int  # elements moved


def trpo_step(params: Sequence[torch.Tensor], objective_and_kl: Callable[[], tuple[torch.Tensor, torch.Tensor]], *,
              target_kl: float = TARGET_KL, cg_max_steps: int = CG_MAX_STEPS, cg_damping: float = CG_DAMPING,
              cg_residual_tol: float = CG_RESIDUAL_TOL, shrink: float = SHRINK,
              max_backtracks: int = MAX_BACKTRACKS) -> TRPOStep:
    """One TRPO policy update of ``params`` in place (module docstring). ``objective_and_kl()`` returns
    the surrogate L(θ) and KL(θ ‖ θ_old) at the parameters' current values, differentiable when
    gradients are enabled (:func:`surrogate`, :func:`categorical_kl`); it is called once with gradients
    at θ_old and then once per line-search try without. Parameters the KL does not depend on (no
    gradient path at all) are left out of the step, as stable-baselines3-contrib does.

    The first call runs with scaled-dot-product attention on its math kernel: the Fisher–vector
    product differentiates the KL's gradient again, and the fused (flash / memory-efficient) kernels
    have no second derivative."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.MATH):
        objective, kl = objective_and_kl()
    grads = torch.autograd.grad(kl, list(params), create_graph=True, retain_graph=True, allow_unused=True)
    kept = [(p, gk) for p, gk in zip(params, grads, strict=True) if gk is not None]
    if not kept:
        raise ValueError("the KL depends on none of the parameters given")
    actor = [p for p, _ in kept]
    fvp = _product(torch.cat([gk.reshape(-1) for _, gk in kept]), actor, cg_damping)
    g = flat_grad(objective, actor, retain_graph=True)
    direction = conjugate_gradient(fvp, g, cg_max_steps, cg_residual_tol)
    curvature = float(direction @ fvp(direction, retain_graph=False))
    # a zero surrogate gradient (every advantage 0) gives no direction: nothing to step along
    beta = math.sqrt(2.0 * target_kl / curvature) if curvature > 0 else 0.0
    before = float(objective.detach())
    del grads, kept, fvp
    if beta == 0.0:
        result = LineSearch(False, 0.0, 0, before, 0.0)
    else:
        with torch.no_grad():
            result = line_search(actor, beta * direction.detach(), objective_and_kl, before, target_kl, shrink,
                                 max_backtracks)
    return TRPOStep(result, before, beta, float(direction.norm()), sum(p.numel() for p in actor))
