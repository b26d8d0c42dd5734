"""Tests of the offline, reward-based loss family (spec §1, Baheti et al., "Leftover-Lunch", ICLR 2024).

Three kinds of test:

* golden: a hand-built batch whose expected losses, metrics and gradients are literal numbers worked out
  by hand (the arithmetic is written next to each number);
* parity: an independent float64 reference written from the spec (plain Python loops, ``math.exp``; the
  stop-gradient factors are Python floats, hence constants) against lolkit's float32 losses, values and
  gradients, on random batches whose importance ratios fall far outside [0.1, 1.9];
* edge cases: clip=None vs clip=0, A ≤ 0, r_gold's floor u, padding garbage, extreme ratios, dtypes, errors.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from lolkit.losses import offline
from lolkit.losses.base import LossInputs, LossOutput, LossParams

ALGOS = ["nll", "wbc", "r_gold", "r_lol", "a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl"]
TOKEN_LEVEL = {"r_gold", "a_lol_seq"}  # differentiate through token_logps, not policy_logps

# The metric keys each loss reports (kept consistent across the family).
METRIC_KEYS = {
    "nll": {"nll"},
    "wbc": {"nll", "reward", "weight"},
    "r_gold": {"nll", "reward", "token_weight"},
    "r_lol": {"nll", "reward", "log_ratio", "ratio", "ratio_clipped", "weight"},
    "a_lol": {"nll", "advantage", "log_ratio", "ratio", "ratio_clipped", "weight"},
    "a_lol_ref_free": {"nll", "advantage", "weight"},
    "a_lol_seq": {"nll", "advantage", "log_ratio", "ratio", "ratio_clipped", "token_weight"},
    "a_lol_kl": {"nll", "advantage", "log_ratio", "kl_term", "weight"},
}

# Inputs each loss requires (besides policy_logps, token_logps, mask).
REQUIRED = {
    "wbc": ["rewards"],
    "r_gold": ["rewards"],
    "r_lol": ["rewards", "ref_logps"],
    "a_lol": ["advantages", "ref_logps"],
    "a_lol_ref_free": ["advantages"],
    "a_lol_seq": ["advantages", "ref_token_logps"],
    "a_lol_kl": ["advantages", "ref_logps"],
}

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _run(algo: str, inp: LossInputs, p: LossParams | None = None) -> LossOutput:
    return getattr(offline, algo)(inp, p if p is not None else LossParams())


def _t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


# ============================================================================================ golden batch
#
# B = 3 examples, T = 4 positions; log π_θ and log π_ref per response token (· = off the response).
#
#   ex   mask        token log π_θ            ℓ_θ     ref token log π             ℓ_ref   R     A
#   0    [1,1,1,0]   [−0.2, −2.6, −0.2, ·]    3.0     [−0.4, −0.1, −2.0, ·]       2.5     0.5   0.4
#   1    [1,1,0,0]   [−3.0, −0.25, ·, ·]      3.25    [−5.0, −1.25, ·, ·]         6.25    2.0   0.2
#   2    [1,1,1,1]   [−1, −1, −1, −1]         4.0     [−0.25, −0.25, −0.25, −0.25] 1.0    1.0   −0.5
#
# Off the response token_logps is 0 (as LossInputs documents) and ref_token_logps holds garbage (−30).
# Sequence ratios ρ = exp(ℓ_ref − ℓ_θ):
#   ρ0 = e^{2.5−3}    = e^{−0.5} = 0.6065307  (inside [0.1, 1.9])
#   ρ1 = e^{6.25−3.25} = e^{3}    = 20.085537  → clip 1.9
#   ρ2 = e^{1−4}      = e^{−3}   = 0.0497871  → clip 0.1
# Default params: ε = 0.9 ([0.1, 1.9]), β = 0.1, u = 0.1.


def golden_batch() -> tuple[LossInputs, torch.Tensor]:
    tl = torch.tensor([[-0.2, -2.6, -0.2, 0.0],
                       [-3.0, -0.25, 0.0, 0.0],
                       [-1.0, -1.0, -1.0, -1.0]], requires_grad=True)
    mask = _t([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    ref_tl = _t([[-0.4, -0.1, -2.0, -30.0],
                 [-5.0, -1.25, -30.0, -30.0],
                 [-0.25, -0.25, -0.25, -0.25]])
    inp = LossInputs(policy_logps=(tl * mask).sum(-1), token_logps=tl, mask=mask,
                     ref_logps=_t([-2.5, -6.25, -1.0]), ref_token_logps=ref_tl,
                     rewards=_t([0.5, 2.0, 1.0]), advantages=_t([0.4, 0.2, -0.5]))
    return inp, tl


# Expected per-example losses, worked by hand.
GOLDEN_LOSS = {
    # ℓ_θ = [0.2+2.6+0.2, 3+0.25, 4·1]
    "nll": [3.0, 3.25, 4.0],
    # R·ℓ_θ = [0.5·3, 2·3.25, 1·4]
    "wbc": [1.5, 6.5, 4.0],
    # R·Σ_t max(π_t, 0.1)·(−log π_t):
    #  ex0: π = [e^{−0.2}, e^{−2.6}, e^{−0.2}] = [0.8187308, 0.0742736→0.1, 0.8187308]
    #       0.5·(0.8187308·0.2 + 0.1·2.6 + 0.8187308·0.2) = 0.5·(0.1637462 + 0.26 + 0.1637462) = 0.2937462
    #  ex1: π = [e^{−3}, e^{−0.25}] = [0.0497871→0.1, 0.7788008]
    #       2·(0.1·3 + 0.7788008·0.25) = 2·(0.3 + 0.1947002) = 0.9894004
    #  ex2: π = e^{−1} = 0.3678794 each; 1·(4·0.3678794·1) = 1.4715178
    "r_gold": [0.2937462, 0.9894004, 1.4715178],
    # R·clip(ρ)·ℓ_θ = [0.5·0.6065307·3, 2·1.9·3.25, 1·0.1·4]
    "r_lol": [0.9097960, 12.35, 0.4],
    # A⁺·clip(ρ)·ℓ_θ, A⁺ = [0.4, 0.2, 0] → [0.4·0.6065307·3, 0.2·1.9·3.25, 0]
    "a_lol": [0.7278368, 1.235, 0.0],
    # A⁺·ℓ_θ = [0.4·3, 0.2·3.25, 0]
    "a_lol_ref_free": [1.2, 0.65, 0.0],
    # A⁺·Σ_t clip(r_t)·(−log π_t), r_t = exp(log π_θ,t − log π_ref,t):
    #  ex0: r = [e^{0.2}, e^{−2.5}, e^{1.8}] = [1.2214028, 0.0820850→0.1, 6.0496475→1.9]
    #       0.4·(1.2214028·0.2 + 0.1·2.6 + 1.9·0.2) = 0.4·(0.2442806 + 0.26 + 0.38) = 0.4·0.8842806 = 0.3537122
    #  ex1: r = [e^{2}, e^{1}] = [7.389, 2.718] → [1.9, 1.9];  0.2·1.9·(3 + 0.25) = 1.235
    #  ex2: A⁺ = 0 → 0
    "a_lol_seq": [0.3537122, 1.235, 0.0],
    # A⁺·ℓ_θ + 0.1·(ℓ_ref − ℓ_θ) = [1.2 + 0.1·(2.5−3), 0.65 + 0.1·(6.25−3.25), 0 + 0.1·(1−4)]
    "a_lol_kl": [1.15, 0.95, -0.3],
}

# Expected ∂(Σ_b L_b)/∂token_logps (through policy_logps = Σ_t m_t·token_logps for sequence losses):
# −(multiplier of ℓ_θ) on each response token, 0 off the response.
_M = [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def _per_example(w: list[float]) -> list[list[float]]:
    return [[-w[b] * m for m in _M[b]] for b in range(3)]


GOLDEN_GRAD = {
    "nll": _per_example([1.0, 1.0, 1.0]),
    "wbc": _per_example([0.5, 2.0, 1.0]),  # R
    # −R·max(π_t, u):  ex0 0.5·[0.8187308, 0.1, 0.8187308]; ex1 2·[0.1, 0.7788008]; ex2 1·0.3678794
    "r_gold": [[-0.4093654, -0.05, -0.4093654, 0.0],
               [-0.2, -1.5576016, 0.0, 0.0],
               [-0.3678794] * 4],
    "r_lol": _per_example([0.5 * 0.6065307, 2.0 * 1.9, 1.0 * 0.1]),  # R·clip(ρ) = [0.3032653, 3.8, 0.1]
    "a_lol": _per_example([0.4 * 0.6065307, 0.2 * 1.9, 0.0]),  # A⁺·clip(ρ) = [0.2426123, 0.38, 0]
    "a_lol_ref_free": _per_example([0.4, 0.2, 0.0]),
    # −A⁺·clip(r_t): ex0 0.4·[1.2214028, 0.1, 1.9] = [0.4885611, 0.04, 0.76]; ex1 0.2·1.9 = 0.38
    "a_lol_seq": [[-0.4885611, -0.04, -0.76, 0.0],
                  [-0.38, -0.38, 0.0, 0.0],
                  [0.0] * 4],
    "a_lol_kl": _per_example([0.4 - 0.1, 0.2 - 0.1, 0.0 - 0.1]),  # A⁺ − β = [0.3, 0.1, −0.1]
}


@pytest.mark.parametrize("algo", ALGOS)
def test_golden_losses(algo):
    inp, _ = golden_batch()
    out = _run(algo, inp)
    assert out.losses.shape == (3,)  # per example, not reduced
    assert_close(out.losses.detach(), _t(GOLDEN_LOSS[algo]), **TOL)


@pytest.mark.parametrize("algo", ALGOS)
def test_golden_gradients(algo):
    inp, tl = golden_batch()
    _run(algo, inp).losses.sum().backward()
    assert_close(tl.grad, _t(GOLDEN_GRAD[algo]), **TOL)


@pytest.mark.parametrize("algo", ALGOS)
def test_metric_keys_shapes_and_detached(algo):
    inp, _ = golden_batch()
    out = _run(algo, inp)
    assert set(out.metrics) == METRIC_KEYS[algo]
    for k, v in out.metrics.items():
        assert v.shape == (3,), k
        assert not v.requires_grad, k
        assert v.dtype == torch.float32, k
    assert_close(out.metrics["nll"], _t([3.0, 3.25, 4.0]), **TOL)


def test_golden_metrics_sequence_ratio():
    inp, _ = golden_batch()
    # ρ = [e^{−0.5}, e^{3}, e^{−3}] = [0.6065307, 20.085537, 0.0497871]; clamped on ex1 and ex2
    for algo in ("r_lol", "a_lol"):
        m = _run(algo, inp).metrics
        assert_close(m["log_ratio"], _t([-0.5, 3.0, -3.0]), **TOL)
        assert_close(m["ratio"], _t([0.6065307, 20.085537, 0.0497871]), **TOL)
        assert_close(m["ratio_clipped"], _t([0.0, 1.0, 1.0]))
    # weight: R·clip(ρ) = [0.5·0.6065307, 2·1.9, 1·0.1]; A⁺·clip(ρ) = [0.4·0.6065307, 0.2·1.9, 0]
    assert_close(_run("r_lol", inp).metrics["weight"], _t([0.3032653, 3.8, 0.1]), **TOL)
    assert_close(_run("a_lol", inp).metrics["weight"], _t([0.2426123, 0.38, 0.0]), **TOL)
    assert_close(_run("a_lol", inp).metrics["advantage"], _t([0.4, 0.2, -0.5]))  # raw A, not A⁺
    assert_close(_run("wbc", inp).metrics["weight"], _t([0.5, 2.0, 1.0]))
    assert_close(_run("r_lol", inp).metrics["reward"], _t([0.5, 2.0, 1.0]))
    assert_close(_run("a_lol_ref_free", inp).metrics["weight"], _t([0.4, 0.2, 0.0]))


def test_golden_metrics_token_level():
    inp, _ = golden_batch()
    m = _run("a_lol_seq", inp).metrics
    # r_t: ex0 [1.2214028, 0.0820850, 6.0496475] mean 7.3531353/3 = 2.4510451;
    #      ex1 [7.3890561, 2.7182818] mean 5.0536690; ex2 e^{−0.75} = 0.4723666 (all 4)
    assert_close(m["ratio"], _t([2.4510451, 5.0536690, 0.4723666]), **TOL)
    # clamped tokens: ex0 2 of 3, ex1 2 of 2, ex2 0 of 4
    assert_close(m["ratio_clipped"], _t([2 / 3, 1.0, 0.0]), **TOL)
    # mean clip(r_t): ex0 (1.2214028 + 0.1 + 1.9)/3 = 1.0738009; ex1 1.9; ex2 0.4723666
    assert_close(m["token_weight"], _t([1.0738009, 1.9, 0.4723666]), **TOL)
    # Σ_t log r_t = [0.2 − 2.5 + 1.8, 2 + 1, 4·(−0.75)] = [−0.5, 3, −3] (= the sequence log-ratio)
    assert_close(m["log_ratio"], _t([-0.5, 3.0, -3.0]), **TOL)
    # r_gold: mean max(π_t, 0.1): ex0 (0.8187308·2 + 0.1)/3 = 0.5791539; ex1 (0.1 + 0.7788008)/2 = 0.4394004
    g = _run("r_gold", inp).metrics
    assert_close(g["token_weight"], _t([0.5791539, 0.4394004, 0.3678794]), **TOL)


def test_golden_metrics_kl():
    inp, _ = golden_batch()
    m = _run("a_lol_kl", inp).metrics
    assert_close(m["log_ratio"], _t([-0.5, 3.0, -3.0]), **TOL)  # ℓ_ref − ℓ_θ
    assert_close(m["kl_term"], _t([-0.05, 0.3, -0.3]), **TOL)  # 0.1·(ℓ_ref − ℓ_θ)
    assert_close(m["weight"], _t([0.3, 0.1, -0.1]), **TOL)  # A⁺ − β


def test_docstring_goldens():
    """The small examples in the functions' docstrings."""
    def one(lp, ref=None, r=None, a=None, tl=None, ref_tl=None):
        tl_t = _t([tl if tl is not None else [lp]])
        return LossInputs(policy_logps=_t([lp]), token_logps=tl_t, mask=torch.ones_like(tl_t),
                          ref_logps=None if ref is None else _t([ref]),
                          ref_token_logps=None if ref_tl is None else _t([ref_tl]),
                          rewards=None if r is None else _t([r]), advantages=None if a is None else _t([a]))

    p = LossParams()
    assert offline.wbc(one(-3.0, r=0.5), p).losses.item() == pytest.approx(1.5, abs=1e-6)
    gold = one(math.log(0.5) + math.log(0.05), r=2.0, tl=[math.log(0.5), math.log(0.05)])
    assert offline.r_gold(gold, p).losses.item() == pytest.approx(1.292294, abs=1e-5)
    assert offline.r_lol(one(-2.0, ref=-5.0, r=0.5), p).losses.item() == pytest.approx(1.9, abs=1e-5)
    assert offline.a_lol(one(-2.5, ref=-3.0, a=0.4), p).losses.item() == pytest.approx(1.648721, abs=1e-5)
    assert offline.a_lol(one(-2.5, ref=-3.0, a=-0.3), p).losses.item() == 0.0
    assert offline.a_lol_ref_free(one(-3.0, a=0.4), p).losses.item() == pytest.approx(1.2, abs=1e-6)
    seq = one(-4.0, a=0.5, tl=[-1.0, -3.0], ref_tl=[-1.5, -0.5])
    assert offline.a_lol_seq(seq, p).losses.item() == pytest.approx(0.974361, abs=1e-5)
    assert offline.a_lol_kl(one(-3.0, ref=-2.5, a=0.4), p).losses.item() == pytest.approx(1.15, abs=1e-6)
    assert offline.a_lol_kl(one(-3.0, ref=-2.5, a=-1.0), p).losses.item() == pytest.approx(-0.05, abs=1e-6)


# ============================================================================================ parity
#
# An independent float64 reference written from spec §1. lp [B] and tl [B, T] are float64 tensors that
# carry gradients; every stop-gradient factor (ρ, r_t, max(π, u), A⁺, R) is a Python float, i.e. a constant.


def _clip_f(r: float, eps: float | None) -> float:
    return r if eps is None else min(max(r, 1.0 - eps), 1.0 + eps)


def reference(algo: str, lp: torch.Tensor, tl: torch.Tensor, mask: list[list[float]], ref_lp: list[float],
              ref_tl: list[list[float]], R: list[float], A: list[float], p: LossParams):
    """Returns (losses [B] float64 tensor, metrics {key: list of floats})."""
    B, T = len(mask), len(mask[0])
    losses, met = [], {k: [] for k in ("nll", "ratio", "weight", "token_weight", "kl_term", "log_ratio")}
    for b in range(B):
        ell = -lp[b]  # ℓ_θ, differentiable
        ell_v = -lp[b].item()  # sg(ℓ_θ)
        a_pos = max(A[b], 0.0)
        rho = math.exp((-ref_lp[b]) - ell_v)  # ρ = exp(ℓ_ref − sg(ℓ_θ))
        met["nll"].append(ell_v)
        met["log_ratio"].append((-ref_lp[b]) - ell_v)
        if algo == "nll":
            loss = ell
        elif algo == "wbc":
            loss = R[b] * ell
            met["weight"].append(R[b])
        elif algo == "r_gold":
            loss = torch.zeros((), dtype=torch.float64)
            ws = []
            for t in range(T):
                if mask[b][t]:
                    w = max(math.exp(tl[b, t].item()), p.gold_u)
                    ws.append(w)
                    loss = loss + mask[b][t] * w * (-tl[b, t])
            loss = R[b] * loss
            met["token_weight"].append(sum(ws) / max(len(ws), 1))
        elif algo == "r_lol":
            loss = R[b] * _clip_f(rho, p.clip) * ell
            met["ratio"].append(rho)
            met["weight"].append(R[b] * _clip_f(rho, p.clip))
        elif algo == "a_lol":
            loss = a_pos * _clip_f(rho, p.clip) * ell
            met["ratio"].append(rho)
            met["weight"].append(a_pos * _clip_f(rho, p.clip))
        elif algo == "a_lol_ref_free":
            loss = a_pos * ell
            met["weight"].append(a_pos)
        elif algo == "a_lol_seq":
            loss = torch.zeros((), dtype=torch.float64)
            rs, crs = [], []
            for t in range(T):
                if mask[b][t]:
                    r_t = math.exp(tl[b, t].item() - ref_tl[b][t])
                    rs.append(r_t)
                    crs.append(_clip_f(r_t, p.clip))
                    loss = loss + mask[b][t] * crs[-1] * (-tl[b, t])
            loss = a_pos * loss
            met["ratio"].append(sum(rs) / max(len(rs), 1))
            met["token_weight"].append(sum(crs) / max(len(crs), 1))
            met["log_ratio"][-1] = sum(tl[b, t].item() - ref_tl[b][t] for t in range(T) if mask[b][t])
        elif algo == "a_lol_kl":
            loss = a_pos * ell + p.kl_beta * ((-ref_lp[b]) - ell)
            met["kl_term"].append(p.kl_beta * ((-ref_lp[b]) - ell_v))
            met["weight"].append(a_pos - p.kl_beta)
        else:
            raise AssertionError(algo)
        losses.append(loss)
    return torch.stack(losses), {k: v for k, v in met.items() if len(v) == B}


def random_batch(seed: int, B: int = 6, T: int = 7):
    """float32 inputs: lengths 1..T, log π_θ in (−4, 0], ref log-probs = log π_θ + N(0, 1.5²) per token
    (so sequence ratios spread over roughly e^{±8}), garbage (−1e4) off the response in ref_token_logps,
    R ∈ [0, 2), A ~ N(0, 1) with both signs present."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    tl = -4.0 * torch.rand(B, T, generator=g) * mask
    ref_tl = tl + 1.5 * torch.randn(B, T, generator=g)
    ref_lp = (ref_tl * mask).sum(-1)
    ref_tl = torch.where(mask > 0, ref_tl, torch.full_like(ref_tl, -1e4))
    R = 2.0 * torch.rand(B, generator=g)
    A = torch.randn(B, generator=g)
    A[0], A[1] = A[0].abs() + 0.1, -A[1].abs() - 0.1
    return tl, mask, ref_lp, ref_tl, R, A


PARAMS = [
    LossParams(),  # ε = 0.9, β = 0.1, u = 0.1
    LossParams(clip=0.2, kl_beta=0.5, gold_u=0.0),
    LossParams(clip=None, kl_beta=0.0, gold_u=0.5),
    LossParams(clip=0.0, kl_beta=1.0, gold_u=1.0),
]


def _grads(losses: torch.Tensor, coef: torch.Tensor, wrt: list[torch.Tensor]) -> list[torch.Tensor]:
    gs = torch.autograd.grad((losses * coef).sum(), wrt, allow_unused=True)
    return [torch.zeros_like(w) if g is None else g for g, w in zip(gs, wrt, strict=True)]


@pytest.mark.parametrize("chained", [True, False], ids=["lp_from_tokens", "independent_leaves"])
@pytest.mark.parametrize("pi", range(len(PARAMS)))
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("algo", ALGOS)
def test_parity_with_float64_reference(algo, seed, pi, chained):
    p = PARAMS[pi]
    tl0, mask, ref_lp, ref_tl, R, A = random_batch(seed)
    coef = torch.rand(len(R), generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64) + 0.5

    # lolkit, float32
    tl32 = tl0.clone().requires_grad_(True)
    if chained:  # realistic: policy_logps = Σ_t m_t token_logps, gradients reach token_logps through both
        lp32 = (tl32 * mask).sum(-1)
    else:  # two leaves, to see which input each loss differentiates
        lp32 = (tl0 * mask).sum(-1).requires_grad_(True)
    out = _run(algo, LossInputs(lp32, tl32, mask, ref_lp, ref_tl, R, A), p)
    assert out.losses.dtype == torch.float32
    g32 = _grads(out.losses.double(), coef, [tl32] if chained else [tl32, lp32])

    # reference, float64
    tl64 = tl0.double().requires_grad_(True)
    lp64 = (tl64 * mask.double()).sum(-1) if chained else (tl0 * mask).sum(-1).double().requires_grad_(True)
    ref_losses, ref_met = reference(algo, lp64, tl64, mask.tolist(), ref_lp.double().tolist(),
                                    ref_tl.double().tolist(), R.double().tolist(), A.double().tolist(), p)
    g64 = _grads(ref_losses, coef, [tl64] if chained else [tl64, lp64])

    assert_close(out.losses.detach().double(), ref_losses.detach(), **TOL)
    for a, b in zip(g32, g64, strict=True):
        assert_close(a.double(), b, **TOL)
    for k, v in ref_met.items():
        if k in out.metrics:
            assert_close(out.metrics[k].double(), torch.tensor(v, dtype=torch.float64), **TOL, msg=k)
    assert METRIC_KEYS[algo] - {"advantage", "reward", "ratio_clipped"} <= set(ref_met)


def test_parity_batches_exercise_clipping():
    """Sanity of the parity inputs themselves: sequence and token ratios well outside [0.1, 1.9]."""
    seq_lo = seq_hi = tok_lo = tok_hi = 0
    for seed in (0, 1, 2):
        tl, mask, ref_lp, ref_tl, _, A = random_batch(seed)
        rho = ((tl * mask).sum(-1) - ref_lp).exp()
        seq_lo += int((rho < 0.1).sum())
        seq_hi += int((rho > 1.9).sum())
        r_t = (tl - ref_tl).exp()[mask > 0]
        tok_lo += int((r_t < 0.1).sum())
        tok_hi += int((r_t > 1.9).sum())
        assert (A > 0).any() and (A < 0).any()
    assert min(seq_lo, seq_hi, tok_lo, tok_hi) >= 2, (seq_lo, seq_hi, tok_lo, tok_hi)


# ============================================================================================ edge cases


def test_clip_none_means_no_clamp():
    inp, _ = golden_batch()
    p = LossParams(clip=None)
    # R·ρ·ℓ_θ = [0.5·0.6065307·3, 2·20.085537·3.25, 1·0.0497871·4] = [0.9097960, 130.555990, 0.1991483]
    out = offline.r_lol(inp, p)
    assert_close(out.losses.detach(), _t([0.9097960, 130.555990, 0.1991483]), rtol=1e-6, atol=1e-5)
    assert_close(out.metrics["ratio_clipped"], _t([0.0, 0.0, 0.0]))
    # A⁺·ρ·ℓ_θ = [0.4·0.6065307·3, 0.2·20.085537·3.25, 0]
    assert_close(offline.a_lol(inp, p).losses.detach(), _t([0.7278368, 13.055599, 0.0]), rtol=1e-6, atol=1e-5)
    # a_lol_seq unclamped: ex0 0.4·(1.2214028·0.2 + 0.0820850·2.6 + 6.0496475·0.2)
    #                        = 0.4·(0.2442806 + 0.2134210 + 1.2099295) = 0.4·1.6676311 = 0.6670524
    #                      ex1 0.2·(7.3890561·3 + 2.7182818·0.25) = 0.2·(22.1671683 + 0.6795705) = 4.5693478
    assert_close(offline.a_lol_seq(inp, p).losses.detach(), _t([0.6670524, 4.5693478, 0.0]), **TOL)
    assert_close(offline.a_lol_seq(inp, p).metrics["ratio_clipped"], _t([0.0, 0.0, 0.0]))


def test_clip_zero_clamps_to_exactly_one():
    inp, _ = golden_batch()
    p = LossParams(clip=0.0)
    assert_close(offline.r_lol(inp, p).losses, offline.wbc(inp, p).losses)  # R·1·ℓ_θ
    assert_close(offline.a_lol(inp, p).losses, offline.a_lol_ref_free(inp, p).losses)  # A⁺·1·ℓ_θ
    assert_close(offline.a_lol_seq(inp, p).losses, offline.a_lol_ref_free(inp, p).losses, **TOL)
    assert_close(offline.r_lol(inp, p).metrics["weight"], _t([0.5, 2.0, 1.0]))
    assert_close(offline.r_lol(inp, p).metrics["ratio_clipped"], _t([1.0, 1.0, 1.0]))  # no ρ equals 1
    assert_close(offline.a_lol_seq(inp, p).metrics["token_weight"], _t([1.0, 1.0, 1.0]))
    # a ratio of exactly 1 is not counted as clamped
    one = LossInputs(_t([-2.0]), _t([[-2.0]]), _t([[1.0]]), ref_logps=_t([-2.0]), rewards=_t([1.0]))
    assert offline.r_lol(one, p).metrics["ratio_clipped"].item() == 0.0


def test_clip_none_differs_from_clip_zero():
    inp, _ = golden_batch()
    a = offline.r_lol(inp, LossParams(clip=None)).losses
    b = offline.r_lol(inp, LossParams(clip=0.0)).losses
    assert not torch.allclose(a, b)


def test_negative_clip_is_an_error():
    inp, _ = golden_batch()
    for algo in ("r_lol", "a_lol", "a_lol_seq"):
        with pytest.raises(ValueError, match="clip"):
            _run(algo, inp, LossParams(clip=-0.1))


@pytest.mark.parametrize("algo", ["a_lol", "a_lol_ref_free", "a_lol_seq"])
def test_nonpositive_advantage_gives_zero_loss_and_gradient(algo):
    inp, tl = golden_batch()
    inp.advantages = _t([0.0, -0.2, -3.0])
    out = _run(algo, inp)
    assert_close(out.losses.detach(), _t([0.0, 0.0, 0.0]))
    out.losses.sum().backward()
    assert_close(tl.grad, torch.zeros_like(tl))


def test_a_lol_kl_keeps_beta_term_when_advantage_nonpositive():
    inp, tl = golden_batch()
    inp.advantages = _t([0.0, -0.2, -3.0])
    out = offline.a_lol_kl(inp, LossParams(kl_beta=0.1))
    # β·(ℓ_ref − ℓ_θ) = 0.1·[2.5−3, 6.25−3.25, 1−4] = [−0.05, 0.3, −0.3]
    assert_close(out.losses.detach(), _t([-0.05, 0.3, -0.3]), **TOL)
    assert_close(out.metrics["kl_term"], _t([-0.05, 0.3, -0.3]), **TOL)
    out.losses.sum().backward()
    # ∂[β(ℓ_ref + log p_θ)]/∂token_logps = +β on response tokens
    assert_close(tl.grad, 0.1 * _t(_M), **TOL)
    # β = 0 turns it into a_lol_ref_free
    inp2, _ = golden_batch()
    assert_close(offline.a_lol_kl(inp2, LossParams(kl_beta=0.0)).losses,
                 offline.a_lol_ref_free(inp2, LossParams()).losses)


def test_r_gold_u_zero_is_expected_token_nll():
    inp, _ = golden_batch()
    out = offline.r_gold(inp, LossParams(gold_u=0.0))
    # R·Σ_t π_t·(−log π_t):
    #   ex0 0.5·(2·0.8187308·0.2 + 0.0742736·2.6) = 0.5·(0.3274923 + 0.1931113) = 0.2603018
    #   ex1 2·(0.0497871·3 + 0.7788008·0.25) = 2·(0.1493612 + 0.1947002) = 0.6881229
    #   ex2 1·4·0.3678794 = 1.4715178
    assert_close(out.losses.detach(), _t([0.2603018, 0.6881229, 1.4715178]), **TOL)
    tl, m = inp.token_logps.detach(), inp.mask
    assert_close(out.losses.detach(), inp.rewards * (m * tl.exp() * -tl).sum(-1), **TOL)


def test_r_gold_u_one_is_wbc():
    inp, _ = golden_batch()  # every π_t ≤ 1, so max(π_t, 1) = 1
    assert_close(offline.r_gold(inp, LossParams(gold_u=1.0)).losses, offline.wbc(inp, LossParams()).losses, **TOL)


def test_padding_garbage_is_ignored():
    """Off the response, ref_token_logps may hold anything (±inf, nan), token_logps too: no effect, no nan."""
    clean, _ = golden_batch()
    p = LossParams(clip=None)
    for bad in (float("inf"), float("-inf"), float("nan"), 1e30):
        inp, tl = golden_batch()
        inp.ref_token_logps = torch.where(inp.mask > 0, inp.ref_token_logps, torch.full_like(tl, bad))
        tok = torch.where(inp.mask > 0, tl.detach(), torch.full_like(tl, bad))
        tok.requires_grad_(True)
        inp.token_logps = tok
        inp.policy_logps = clean.policy_logps.detach()
        for algo in ("a_lol_seq", "r_gold"):
            out = _run(algo, inp, p)
            assert_close(out.losses.detach(), _run(algo, clean, p).losses.detach(), **TOL)
            for k, v in out.metrics.items():
                assert torch.isfinite(v).all(), (algo, bad, k)
            (g,) = torch.autograd.grad(out.losses.sum(), tok)
            assert torch.isfinite(g).all() and (g[inp.mask == 0] == 0).all()


def test_extreme_ratios_do_not_break_clipped_losses():
    """log ρ = ±500 overflows float32's exp; with a clip the weight is still exactly 1 ± ε."""
    def batch():
        tl = _t([[-1.0, -1.0], [-1.0, -1.0]]).requires_grad_(True)
        mask = torch.ones(2, 2)
        inp = LossInputs(policy_logps=(tl * mask).sum(-1), token_logps=tl, mask=mask,
                         ref_logps=_t([-502.0, 498.0]),  # log ρ = −2 + 502 = 500, −2 − 498 = −500
                         ref_token_logps=_t([[-251.0, -251.0], [249.0, 249.0]]),
                         rewards=_t([1.0, 1.0]), advantages=_t([1.0, 1.0]))
        return inp, tl

    for algo in ("r_lol", "a_lol"):
        inp, tl = batch()
        out = _run(algo, inp)
        assert_close(out.losses.detach(), _t([1.9 * 2, 0.1 * 2]), **TOL)  # clip(ρ)·ℓ_θ
        assert_close(out.metrics["log_ratio"], _t([500.0, -500.0]))
        assert_close(out.metrics["weight"], _t([1.9, 0.1]), **TOL)
        assert_close(out.metrics["ratio_clipped"], _t([1.0, 1.0]))
        (g,) = torch.autograd.grad(out.losses.sum(), tl)
        assert_close(g, _t([[-1.9, -1.9], [-0.1, -0.1]]), **TOL)
    out = offline.a_lol_seq(inp, LossParams())
    assert_close(out.losses.detach(), _t([1.9 * 2, 0.1 * 2]), **TOL)  # per token r_t = e^{±250}
    # a_lol_kl has no ratio: always finite
    assert torch.isfinite(offline.a_lol_kl(inp, LossParams()).losses).all()


def test_dtypes():
    inp, _ = golden_batch()
    # float64 inputs → float64 losses and metrics, same values
    inp64 = LossInputs(*(None if x is None else x.detach().double() for x in
                         (inp.policy_logps, inp.token_logps, inp.mask, inp.ref_logps, inp.ref_token_logps,
                          inp.rewards, inp.advantages)))
    # float32 policy with float64 reference / rewards / advantages → float32 losses
    mixed, _ = golden_batch()
    mixed.ref_logps, mixed.ref_token_logps = inp.ref_logps.double(), inp.ref_token_logps.double()
    mixed.rewards, mixed.advantages = inp.rewards.double(), inp.advantages.double()
    for algo in ALGOS:
        out64 = _run(algo, inp64)
        assert out64.losses.dtype == torch.float64
        assert all(v.dtype == torch.float64 for v in out64.metrics.values())
        assert_close(out64.losses, _t(GOLDEN_LOSS[algo]).double(), **TOL)
        outm = _run(algo, mixed)
        assert outm.losses.dtype == torch.float32, algo
        assert all(v.dtype == torch.float32 for v in outm.metrics.values()), algo
        assert_close(outm.losses.detach(), _t(GOLDEN_LOSS[algo]), **TOL)


@pytest.mark.parametrize("algo", ALGOS)
def test_losses_are_per_example(algo):
    """The loss of a batch is the concatenation of the losses of its examples (no cross-example reduction)."""
    inp, _ = golden_batch()
    full = _run(algo, inp).losses.detach()
    for b in range(3):
        one = LossInputs(*(None if x is None else x.detach()[b:b + 1] for x in
                           (inp.policy_logps, inp.token_logps, inp.mask, inp.ref_logps, inp.ref_token_logps,
                            inp.rewards, inp.advantages)))
        assert_close(_run(algo, one).losses, full[b:b + 1])


def test_empty_response():
    """An example with no response tokens: token-level losses are 0, metrics finite."""
    tl = torch.zeros(2, 3, requires_grad=True)
    mask = _t([[1, 1, 0], [0, 0, 0]])
    inp = LossInputs((tl * mask).sum(-1), tl, mask, ref_logps=_t([-1.0, 0.0]),
                     ref_token_logps=_t([[-0.5, -0.5, 0.0], [0.0, 0.0, 0.0]]),
                     rewards=_t([1.0, 1.0]), advantages=_t([1.0, 1.0]))
    for algo in ALGOS:
        out = _run(algo, inp)
        assert out.losses[1].item() == pytest.approx(0.0, abs=1e-7), algo
        for k, v in out.metrics.items():
            assert torch.isfinite(v).all(), (algo, k)


@pytest.mark.parametrize("algo", sorted(REQUIRED))
def test_missing_inputs_are_errors(algo):
    for field in REQUIRED[algo]:
        inp, _ = golden_batch()
        setattr(inp, field, None)
        with pytest.raises(ValueError, match=field):
            _run(algo, inp)


@pytest.mark.parametrize("algo", sorted(REQUIRED))
def test_shape_mismatch_is_an_error(algo):
    """A [B, 1] column would broadcast against [B] into [B, B]: refuse it."""
    for field in REQUIRED[algo]:
        inp, _ = golden_batch()
        setattr(inp, field, getattr(inp, field)[:, None] if field != "ref_token_logps"
                else getattr(inp, field)[:, :2])
        with pytest.raises(ValueError, match=field):
            _run(algo, inp)


@pytest.mark.parametrize("algo", ALGOS)
def test_stop_gradient_inputs_get_no_gradient(algo):
    """ρ, r_t, R, A and the reference are constants: gradients reach only the policy's log-probs."""
    inp, _ = golden_batch()
    consts = {}
    for f in ("ref_logps", "ref_token_logps", "rewards", "advantages"):
        consts[f] = getattr(inp, f).clone().requires_grad_(True)
        setattr(inp, f, consts[f])
    out = _run(algo, inp)
    grads = torch.autograd.grad(out.losses.sum(), list(consts.values()), allow_unused=True)
    for f, g in zip(consts, grads, strict=True):
        assert g is None or (g == 0).all(), (algo, f)
