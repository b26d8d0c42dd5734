"""The offline, reward-based family (Baheti et al., "Leftover-Lunch", ICLR 2024), spec §1.

Every loss is per example (shape [B]; the training loop reduces); ℓ_θ = −log p_θ(y|x) is the summed
sequence NLL, ℓ_θ = −``policy_logps``, and ℓ_ref = −``ref_logps``.

Importance weights are stop-gradient constants: ρ = exp(sg(log p_θ) − log p_ref) is computed as the exp
of a log-difference (never as a quotient of probabilities) and then clamped to [1−ε, 1+ε] when
``LossParams.clip`` is set. ``clip=None`` means no clamp; ``clip=0`` clamps to exactly 1.

Metric keys (detached per-example tensors [B]), shared by every loss that has the quantity:

=================  ==========================================================================
``nll``            ℓ_θ
``reward``         R (wbc, r_gold, r_lol)
``advantage``      A, before the max(·, 0) (the A-LoL variants)
``weight``         the effective scalar multiplier of ℓ_θ (wbc: R; r_lol: R·clip(ρ); a_lol: A⁺·clip(ρ);
                   a_lol_ref_free: A⁺; a_lol_kl: A⁺ − β)
``log_ratio``      log ρ = log p_θ(y|x) − log p_ref(y|x) (finite even when ρ overflows)
``ratio``          ρ before the clamp (a_lol_seq: the mean of r_t over response tokens)
``ratio_clipped``  1.0 where the clamp changed ρ, else 0.0 (a_lol_seq: the fraction of response tokens)
``token_weight``   mean over response tokens of the per-token factor (r_gold: max(π_θ, u);
                   a_lol_seq: clip(r_t)); 0 for an empty response
``kl_term``        β·(ℓ_ref − ℓ_θ) (a_lol_kl)
=================  ==========================================================================
"""

from __future__ import annotations

import torch

from .base import LossInputs, LossOutput, LossParams

# --------------------------------------------------------------------------------------------- helpers


def _need(x: torch.Tensor | None, field: str, algo: str) -> torch.Tensor:
    if x is None:
        raise ValueError(f"{algo} needs LossInputs.{field}, which is None")
    return x


def _vec(inp: LossInputs, field: str, algo: str) -> torch.Tensor:
    """A per-example input [B], checked against ``policy_logps`` (a [B] vs [B, 1] mix-up would
    silently broadcast to [B, B])."""
    x = _need(getattr(inp, field), field, algo)
    if x.shape != inp.policy_logps.shape:
        raise ValueError(f"{algo}: LossInputs.{field} has shape {tuple(x.shape)}, "
                         f"policy_logps has {tuple(inp.policy_logps.shape)}")
    return x


def _tok(inp: LossInputs, field: str, algo: str) -> torch.Tensor:
    """A per-token input [B, T], checked against ``mask``."""
    x = _need(getattr(inp, field), field, algo)
    if x.shape != inp.mask.shape or x.shape[:1] != inp.policy_logps.shape:
        raise ValueError(f"{algo}: LossInputs.{field} has shape {tuple(x.shape)}, mask has "
                         f"{tuple(inp.mask.shape)}, policy_logps has {tuple(inp.policy_logps.shape)}")
    return x


def _nll(inp: LossInputs) -> torch.Tensor:
    if inp.policy_logps.dim() != 1:
        raise ValueError(f"policy_logps must have shape [B], got {tuple(inp.policy_logps.shape)}")
    return -inp.policy_logps


def _clip(ratio: torch.Tensor, clip: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(clamp(ratio, 1−ε, 1+ε), 1.0 where the clamp was active); no clamp when ``clip`` is None."""
    if clip is None:
        return ratio, torch.zeros_like(ratio)
    if clip < 0:
        raise ValueError(f"clip must be >= 0 or None, got {clip}")
    lo, hi = 1.0 - clip, 1.0 + clip
    active = (ratio < lo) | (ratio > hi)
    return ratio.clamp(lo, hi), active.to(ratio.dtype)


def _seq_ratio(inp: LossInputs, algo: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(log ρ, ρ) with ρ = exp(sg(log p_θ) − log p_ref), both detached, in policy_logps' dtype."""
    ref = _vec(inp, "ref_logps", algo)
    with torch.no_grad():
        log_ratio = (inp.policy_logps.detach() - ref).to(inp.policy_logps.dtype)
        return log_ratio, log_ratio.exp()


def _on_response(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` on response tokens, exactly 0 elsewhere (whatever x holds there: padding may be ±inf)."""
    return torch.where(mask > 0, x, torch.zeros_like(x))


def _token_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over response tokens, per example [B]; 0 for an empty response."""
    return (_on_response(x, mask) * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def _pos(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return a.detach().to(like.dtype).clamp(min=0)


# --------------------------------------------------------------------------------------------- losses


def nll(inp: LossInputs, p: LossParams) -> LossOutput:
    """Negative log-likelihood (behaviour cloning): L = ℓ_θ = −Σ_t m_t log π_θ(y_t|·).

    Golden: token log-probs [−1, −2] on a 2-token response → L = 3.
    """
    loss = -inp.policy_logps
    return LossOutput(loss, {"nll": loss.detach()})


def wbc(inp: LossInputs, p: LossParams) -> LossOutput:
    """Weighted behaviour cloning: the sequence NLL scaled by the reward.

    .. math::

        L(x, y) = R(x, y) \\cdot \\ell_\\theta(x, y), \\qquad \\ell_\\theta = -\\sum_t m_t \\log \\pi_\\theta(y_t|\\cdot)

    Args:
        inp (LossInputs): uses ``policy_logps`` [B] (differentiable) and ``rewards`` [B] (R ≥ 0 is
            checked upstream, when the data is read).
        p (LossParams): unused.

    Returns:
        LossOutput: ``losses`` [B], not reduced; ``metrics`` ``nll``, ``reward``, ``weight`` (= R), each [B].

    Reference: Baheti et al., "Leftover-Lunch: Advantage-based Offline Reinforcement Learning for
    Language Models", ICLR 2024 (baseline "wBC"); spec §1.

    Example (golden, worked by hand)::

        ℓ_θ = 3, R = 0.5  →  L = 0.5 · 3 = 1.5
        ∂L/∂policy_logps = −R = −0.5
    """
    algo = "wbc"
    ell = _nll(inp)
    r = _vec(inp, "rewards", algo).detach().to(ell.dtype)
    loss = r * ell
    return LossOutput(loss, {"nll": ell.detach(), "reward": r, "weight": r})


def r_gold(inp: LossInputs, p: LossParams) -> LossOutput:
    """Reward-GOLD: a per-token NLL weighted by the policy's own (stop-gradient, floored)
    token probability, scaled by the reward.

    .. math::

        L(x, y) = R \\cdot \\sum_t m_t \\cdot \\max(\\mathrm{sg}(\\pi_\\theta(y_t|\\cdot)), u)
                  \\cdot (-\\log \\pi_\\theta(y_t|\\cdot)), \\qquad u = \\text{p.gold\\_u}

    Args:
        inp (LossInputs): uses ``token_logps`` [B, T] (differentiable), ``mask`` [B, T] and
            ``rewards`` [B]. ``policy_logps`` [B] only feeds the ``nll`` metric; the gradient flows
            through ``token_logps``.
        p (LossParams): uses ``gold_u`` (the floor u of the per-token weight).

    Returns:
        LossOutput: ``losses`` [B], not reduced; ``metrics`` ``nll``, ``reward``, ``token_weight``
        (mean of max(π_θ, u) over response tokens), each [B].

    Reference: Baheti et al., ICLR 2024 (baseline "R-GOLD", after Pang & He, "Text Generation by
    Learning from Demonstrations", ICLR 2021); spec §1.

    Example (golden, worked by hand)::

        token log π_θ = [ln 0.5, ln 0.05], u = 0.1, R = 2
        weights = [max(0.5, 0.1), max(0.05, 0.1)] = [0.5, 0.1]
        −log π  = [0.693147, 2.995732]
        L = 2 · (0.5 · 0.693147 + 0.1 · 2.995732) = 2 · 0.646147 = 1.292294
        ∂L/∂token_logps = −R · weight = [−1.0, −0.2]
    """
    algo = "r_gold"
    ell = _nll(inp)
    mask = inp.mask
    tl = _on_response(_tok(inp, "token_logps", algo), mask)
    r = _vec(inp, "rewards", algo).detach().to(tl.dtype)
    with torch.no_grad():
        w = tl.detach().exp().clamp(min=p.gold_u)  # max(sg(π_θ(y_t)), u)
    loss = r * (mask * w * -tl).sum(-1)
    return LossOutput(loss, {"nll": ell.detach(), "reward": r, "token_weight": _token_mean(w, mask)})


def r_lol(inp: LossInputs, p: LossParams) -> LossOutput:
    """Reward-LoL: the sequence NLL weighted by the reward and the clipped sequence importance ratio.

    .. math::

        L(x, y) = R \\cdot \\mathrm{clip}(\\rho, 1-\\epsilon, 1+\\epsilon) \\cdot \\ell_\\theta,
        \\qquad \\rho = \\exp(\\ell_{ref} - \\mathrm{sg}(\\ell_\\theta)) = \\pi_\\theta(y|x) / \\pi_{ref}(y|x)

    Args:
        inp (LossInputs): uses ``policy_logps`` [B] (differentiable), ``ref_logps`` [B], ``rewards`` [B].
        p (LossParams): uses ``clip`` (ε; None = no clamp, 0 = clamp to exactly 1).

    Returns:
        LossOutput: ``losses`` [B], not reduced; ``metrics`` ``nll``, ``reward``, ``log_ratio``,
        ``ratio`` (ρ before the clamp), ``ratio_clipped``, ``weight`` (= R·clip(ρ)), each [B].

    Reference: Baheti et al., ICLR 2024, "R-LoL" (the reward-weighted LoL variant); spec §1.

    Example (golden, worked by hand)::

        ℓ_θ = 2, ℓ_ref = 5, R = 0.5, ε = 0.9
        ρ = e^{5 − 2} = e^3 = 20.0855  →  clip(ρ) = 1.9 (ratio_clipped = 1)
        L = 0.5 · 1.9 · 2 = 1.9
        ∂L/∂policy_logps = −R · clip(ρ) = −0.95
    """
    algo = "r_lol"
    ell = _nll(inp)
    r = _vec(inp, "rewards", algo).detach().to(ell.dtype)
    log_ratio, ratio = _seq_ratio(inp, algo)
    cratio, active = _clip(ratio, p.clip)
    w = r * cratio
    loss = w * ell
    return LossOutput(loss, {"nll": ell.detach(), "reward": r, "log_ratio": log_ratio, "ratio": ratio,
                             "ratio_clipped": active, "weight": w})


def a_lol(inp: LossInputs, p: LossParams) -> LossOutput:
    """Advantage-LoL: the sequence NLL weighted by the positive advantage and the clipped sequence
    importance ratio.

    .. math::

        L(x, y) = A^+ \\cdot \\mathrm{clip}(\\rho, 1-\\epsilon, 1+\\epsilon) \\cdot \\ell_\\theta,
        \\qquad A^+ = \\max(A, 0), \\quad \\rho = \\exp(\\ell_{ref} - \\mathrm{sg}(\\ell_\\theta))

    Args:
        inp (LossInputs): uses ``policy_logps`` [B] (differentiable), ``ref_logps`` [B], ``advantages`` [B].
        p (LossParams): uses ``clip`` (ε; None = no clamp, 0 = clamp to exactly 1).

    Returns:
        LossOutput: ``losses`` [B], not reduced (0 where A ≤ 0); ``metrics`` ``nll``, ``advantage``
        (A, before max(·, 0)), ``log_ratio``, ``ratio`` (ρ before the clamp), ``ratio_clipped``,
        ``weight`` (= A⁺·clip(ρ)), each [B].

    Reference: Baheti et al., "Leftover-Lunch: Advantage-based Offline Reinforcement Learning for
    Language Models", ICLR 2024, the A-LoL objective; spec §1.

    Example (golden, worked by hand)::

        ℓ_θ = 2.5, ℓ_ref = 3, A = 0.4, ε = 0.9
        ρ = e^{3 − 2.5} = e^{0.5} = 1.648721  (inside [0.1, 1.9], no clamp)
        L = 0.4 · 1.648721 · 2.5 = 1.648721
        with A = −0.3 instead: A⁺ = 0 → L = 0
    """
    algo = "a_lol"
    ell = _nll(inp)
    a = _vec(inp, "advantages", algo).detach().to(ell.dtype)
    log_ratio, ratio = _seq_ratio(inp, algo)
    cratio, active = _clip(ratio, p.clip)
    w = _pos(a, ell) * cratio
    loss = w * ell
    return LossOutput(loss, {"nll": ell.detach(), "advantage": a, "log_ratio": log_ratio, "ratio": ratio,
                             "ratio_clipped": active, "weight": w})


def a_lol_ref_free(inp: LossInputs, p: LossParams) -> LossOutput:
    """Reference-free A-LoL: the sequence NLL weighted by the positive advantage (ρ ≡ 1).

    .. math::

        L(x, y) = A^+ \\cdot \\ell_\\theta, \\qquad A^+ = \\max(A, 0)

    Args:
        inp (LossInputs): uses ``policy_logps`` [B] (differentiable) and ``advantages`` [B].
        p (LossParams): unused.

    Returns:
        LossOutput: ``losses`` [B], not reduced (0 where A ≤ 0); ``metrics`` ``nll``, ``advantage``
        (A, before max(·, 0)), ``weight`` (= A⁺), each [B].

    Reference: Baheti et al., ICLR 2024, "A-LoL ref-free" variant; spec §1.

    Example (golden, worked by hand)::

        ℓ_θ = 3, A = 0.4  →  L = 0.4 · 3 = 1.2
        ℓ_θ = 3, A = −1   →  L = 0 · 3 = 0
    """
    algo = "a_lol_ref_free"
    ell = _nll(inp)
    a = _vec(inp, "advantages", algo).detach().to(ell.dtype)
    w = _pos(a, ell)
    loss = w * ell
    return LossOutput(loss, {"nll": ell.detach(), "advantage": a, "weight": w})


def a_lol_seq(inp: LossInputs, p: LossParams) -> LossOutput:
    """A-LoL with per-token importance ratios: each token's NLL is weighted by its own clipped
    (stop-gradient) ratio, the sum by the positive advantage.

    .. math::

        L(x, y) = A^+ \\cdot \\sum_t m_t \\cdot \\mathrm{clip}(r_t, 1-\\epsilon, 1+\\epsilon)
                  \\cdot (-\\log \\pi_\\theta(y_t|\\cdot)),
        \\qquad r_t = \\exp(\\mathrm{sg}(\\log \\pi_\\theta(y_t|\\cdot)) - \\log \\pi_{ref}(y_t|\\cdot))

    Args:
        inp (LossInputs): uses ``token_logps`` [B, T] (differentiable), ``ref_token_logps`` [B, T],
            ``mask`` [B, T], ``advantages`` [B]. Values off the response (mask 0) are ignored, even
            non-finite ones. ``policy_logps`` [B] only feeds the ``nll`` metric.
        p (LossParams): uses ``clip`` (ε; None = no clamp, 0 = clamp to exactly 1).

    Returns:
        LossOutput: ``losses`` [B], not reduced (0 where A ≤ 0); ``metrics`` ``nll``, ``advantage``
        (A, before max(·, 0)), ``log_ratio`` (Σ_t m_t log r_t), ``ratio`` (mean of r_t over response
        tokens, before the clamp), ``ratio_clipped`` (fraction of response tokens clamped),
        ``token_weight`` (mean of clip(r_t)), each [B].

    Reference: Baheti et al., ICLR 2024, "A-LoL seq." (per-token importance weight) variant; spec §1.

    Example (golden, worked by hand)::

        token log π_θ = [−1, −3], log π_ref = [−1.5, −0.5], A = 0.5, ε = 0.9
        r = [e^{0.5}, e^{−2.5}] = [1.648721, 0.082085]  →  clip(r) = [1.648721, 0.1]
        L = 0.5 · (1.648721 · 1 + 0.1 · 3) = 0.5 · 1.948721 = 0.974361
        ∂L/∂token_logps = −A⁺ · clip(r) = [−0.824361, −0.05]
    """
    algo = "a_lol_seq"
    ell = _nll(inp)
    mask = inp.mask
    tl = _on_response(_tok(inp, "token_logps", algo), mask)
    ref_tl = _tok(inp, "ref_token_logps", algo)
    a = _vec(inp, "advantages", algo).detach().to(tl.dtype)
    with torch.no_grad():
        log_r = _on_response((tl.detach() - ref_tl).to(tl.dtype), mask)  # 0 off the response: no overflow
        r_t = log_r.exp()
        cr_t, active = _clip(r_t, p.clip)
    loss = _pos(a, tl) * (mask * cr_t * -tl).sum(-1)
    metrics = {"nll": ell.detach(), "advantage": a, "log_ratio": (log_r * mask).sum(-1),
               "ratio": _token_mean(r_t, mask), "ratio_clipped": _token_mean(active, mask),
               "token_weight": _token_mean(cr_t, mask)}
    return LossOutput(loss, metrics)


def a_lol_kl(inp: LossInputs, p: LossParams) -> LossOutput:
    """A-LoL with a sequence-level KL penalty instead of an importance ratio (no clip).

    .. math::

        L(x, y) = A^+ \\cdot \\ell_\\theta + \\beta \\cdot (\\ell_{ref} - \\ell_\\theta),
        \\qquad A^+ = \\max(A, 0), \\quad \\beta = \\text{p.kl\\_beta}

    β(ℓ_ref − ℓ_θ) = β(log p_θ − log p_ref)(y|x) is a one-sample estimate of KL(π_θ ‖ π_ref); it is present
    even when A⁺ = 0 (as in the original), so the effective weight of ℓ_θ is A⁺ − β, which is negative
    (an unlikelihood push) when A⁺ < β.

    Args:
        inp (LossInputs): uses ``policy_logps`` [B] (differentiable), ``ref_logps`` [B], ``advantages`` [B].
        p (LossParams): uses ``kl_beta`` (β).

    Returns:
        LossOutput: ``losses`` [B], not reduced; ``metrics`` ``nll``, ``advantage`` (A, before
        max(·, 0)), ``log_ratio`` (ℓ_ref − ℓ_θ), ``kl_term`` (β·(ℓ_ref − ℓ_θ)), ``weight`` (A⁺ − β), each [B].

    Reference: Baheti et al., ICLR 2024, "A-LoL KL" variant; spec §1.

    Example (golden, worked by hand)::

        ℓ_θ = 3, ℓ_ref = 2.5, A = 0.4, β = 0.1
        L = 0.4 · 3 + 0.1 · (2.5 − 3) = 1.2 − 0.05 = 1.15
        with A = −1 instead: L = 0 + 0.1 · (2.5 − 3) = −0.05
        ∂L/∂policy_logps = −(A⁺ − β) = −0.3  (A = 0.4)
    """
    algo = "a_lol_kl"
    ell = _nll(inp)
    a = _vec(inp, "advantages", algo).detach().to(ell.dtype)
    ref_ell = -_vec(inp, "ref_logps", algo).detach()
    beta = p.kl_beta
    a_pos = _pos(a, ell)
    kl = ((ref_ell - ell) * beta).to(ell.dtype)
    loss = a_pos * ell + kl
    with torch.no_grad():
        log_ratio = (ref_ell - ell.detach()).to(ell.dtype)
    return LossOutput(loss, {"nll": ell.detach(), "advantage": a, "log_ratio": log_ratio,
                             "kl_term": kl.detach(), "weight": a_pos - beta})
