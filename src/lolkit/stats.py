"""Statistics of a results table: per-prompt scores of evaluated runs → estimates, intervals, paired tests.

The unit of resampling is the test prompt, and, with several seeds, the seed (docs/evaluation.md,
"Statistics"). For one metric of one run, every prompt contributes a numerator and a denominator:
the sum of the metric over the prompt's scored responses and their number (for perplexity: Σ NLL
and Σ tokens). A run's value is ``f(Σ num / Σ den)`` — the mean over responses that summary.json
reports (``f`` = exp for perplexity, identity otherwise).

* **estimate** of a group (one algorithm, several seeds): the mean over seeds of the runs' values.
* **interval**: a two-level percentile bootstrap. Each of ``B`` resamples draws the prompts with
  replacement — one draw shared by every seed, since the seeds answered the same prompts — and, with
  several seeds, draws the seeds with replacement; its statistic is the mean over the drawn seeds of
  ``f(Σ num / Σ den)`` over the drawn prompts. The 2.5 % and 97.5 % quantiles of the ``B`` statistics
  bound the 95 % interval. With one seed this is the ordinary percentile bootstrap over prompts, the
  one ``scipy.stats.bootstrap(method="percentile")`` computes (tests/test_stats.py checks that they
  agree); scipy has no two-level resampling, hence the few lines below.
* **paired difference** of a group against the baseline, on the prompts both have: the difference
  of the estimates, and its interval from the same bootstrap with the prompt draw shared by both
  groups and the seeds of each group drawn separately.
* **p-value**: a paired permutation (sign-flip) test over prompts. Per prompt, the seed-averaged mean
  of the group and of the baseline swap labels with probability ½; the statistic is the mean over
  prompts of the difference; two-sided, as ``scipy.stats.permutation_test(permutation_type="samples")``
  defines it (exact when 2^prompts ≤ the number of patterns; aggregate sizes that number to the table's
  tests). It is written as one matrix product
  because scipy's takes about a second per test at 2,000 prompts and a table holds dozens of tests;
  tests/test_stats.py pins it against scipy. The test is conditional on the trained seeds: it asks
  whether the difference exceeds what the choice of test prompts would produce.
* **Holm**'s step-down correction over all the tests of a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 4000  # bootstrap resamples of an interval
PERMUTATIONS = 9999  # random sign patterns of a permutation test
LEVEL = 0.95
_CHUNK = 500  # resamples drawn at a time (memory: chunk × prompts counts)


@dataclass
class Table:
    """One metric of one group: ``num`` and ``den`` are [seeds, prompts] over ``keys`` (a prompt a seed
    did not answer, or whose responses lack the metric, has den 0); ``f`` maps a mean to the metric."""

    keys: list
    num: np.ndarray
    den: np.ndarray
    f: Callable[[np.ndarray], np.ndarray] = np.asarray

    @property
    def seeds(self) -> int:
        return self.num.shape[0]

    def values(self) -> np.ndarray:
        """Each seed's value over all its prompts."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.f(self.num.sum(1) / self.den.sum(1))

    def estimate(self) -> float:
        return float(np.mean(self.values()))

    def restrict(self, keys: Sequence) -> Table:
        index = {k: i for i, k in enumerate(self.keys)}
        cols = [index[k] for k in keys]
        return Table(list(keys), self.num[:, cols], self.den[:, cols], self.f)

    def prompt_means(self) -> np.ndarray:
        """[prompts]: per prompt, the mean over the seeds that have it of the prompt's mean value
        (for perplexity: of its NLL per token, the scale the test compares on)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            per_seed = np.where(self.den > 0, self.num / np.where(self.den > 0, self.den, 1), np.nan)
        return np.nanmean(per_seed, axis=0)


def table(per_seed: Sequence[dict], f: Callable = np.asarray) -> Table:
    """A :class:`Table` from one ``{prompt key: (num, den)}`` per seed; the keys of every seed, in
    first-seen order."""
    keys = list(dict.fromkeys(k for d in per_seed for k in d))
    index = {k: i for i, k in enumerate(keys)}
    num = np.zeros((len(per_seed), len(keys)))
    den = np.zeros((len(per_seed), len(keys)))
    for s, d in enumerate(per_seed):
        for k, (n, m) in d.items():
            num[s, index[k]], den[s, index[k]] = n, m
    return Table(keys, num, den, f)


def _prompt_draws(n_prompts: int, resamples: int, seed: int):
    """Chunks of [chunk, prompts] counts: how often each prompt is drawn in each resample (drawing n of
    n with replacement). Seeded per chunk, so the draws depend only on (prompts, seed)."""
    for c, start in enumerate(range(0, resamples, _CHUNK)):
        b = min(_CHUNK, resamples - start)
        rng = np.random.default_rng([seed, n_prompts, c])
        idx = rng.integers(0, n_prompts, (b, n_prompts))
        yield np.bincount((idx + np.arange(b)[:, None] * n_prompts).ravel(),
                          minlength=b * n_prompts).reshape(b, n_prompts), rng


def _resampled(t: Table, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[chunk]: the group's statistic under each resample's prompt counts, with the seeds redrawn."""
    with np.errstate(invalid="ignore", divide="ignore"):
        vals = t.f((counts @ t.num.T) / (counts @ t.den.T))  # [chunk, seeds]
    if t.seeds == 1:
        return vals[:, 0]
    pick = rng.integers(0, t.seeds, (len(counts), t.seeds))
    return np.take_along_axis(vals, pick, 1).mean(1)


def _quantiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.nanquantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def interval(t: Table, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """The two-level percentile-bootstrap interval of ``t.estimate()``."""
    stats = np.concatenate([_resampled(t, counts, rng) for counts, rng in _prompt_draws(len(t.keys), resamples, seed)])
    return _quantiles(stats, level)


@dataclass
class Paired:
    diff: float  # estimate(A) − estimate(B) on the shared prompts
    low: float
    high: float
    p: float  # two-sided permutation p-value (before correction)
    prompts: int  # prompts both groups have


def shared_keys(a: Table, b: Table) -> list:
    """Prompts with a value in some seed of ``a`` and some seed of ``b``, in ``a``'s order."""
    has_b = {k for k, d in zip(b.keys, b.den.sum(0), strict=True) if d > 0}
    return [k for k, d in zip(a.keys, a.den.sum(0), strict=True) if d > 0 and k in has_b]


def paired(a: Table, b: Table, resamples: int = RESAMPLES, permutations: int = PERMUTATIONS, seed: int = 0,
           level: float = LEVEL) -> Paired | None:
    """``a`` against ``b`` on their shared prompts; None when they share none."""
    keys = shared_keys(a, b)
    if not keys:
        return None
    a, b = a.restrict(keys), b.restrict(keys)
    stats = []
    for counts, rng in _prompt_draws(len(keys), resamples, seed):
        stats.append(_resampled(a, counts, rng) - _resampled(b, counts, rng))
    lo, hi = _quantiles(np.concatenate(stats), level)
    ma, mb = a.prompt_means(), b.prompt_means()
    d = ma - mb
    d[np.abs(d) <= 1e-12 * (np.abs(ma) + np.abs(mb))] = 0.0  # equal scores up to rounding are ties, not wins
    p = sign_flip_test(d, permutations, seed)
    return Paired(a.estimate() - b.estimate(), lo, hi, p, len(keys))


def sign_flip_test(d: np.ndarray, permutations: int = PERMUTATIONS, seed: int = 0) -> float:
    """Two-sided p-value of the paired permutation test of mean(d) = 0, as scipy.stats.permutation_test
    computes it for paired samples: exact over all 2^n sign patterns when there are at most
    ``permutations`` of them, else ``permutations`` random patterns with the observed one counted in
    ((k + 1) / (N + 1)); p = min(1, 2 · min(p≤, p≥))."""
    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return 1.0
    observed = d.mean()
    exact = n < 63 and 2**n <= permutations
    if exact:
        signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
        stats = signs @ d / n
        adjust, total = 0, len(stats)
    else:
        rng = np.random.default_rng([seed, n, 1])
        total_d, stats = d.sum(), []
        for s in range(0, permutations, _CHUNK * 4):  # a sign is 1 − 2·bit: Σ sign·d = Σ d − 2 Σ bit·d
            b = min(_CHUNK * 4, permutations - s)
            bits = np.unpackbits(rng.integers(0, 256, (b, (n + 7) // 8), dtype=np.uint8), axis=1, count=n)
            stats.append((total_d - 2 * (bits @ d)) / n)
        stats = np.concatenate(stats)
        adjust, total = 1, permutations
    gamma = abs(np.finfo(float).eps * 100 * observed)  # ties up to rounding count as ties (scipy's tolerance)
    greater = (np.sum(stats >= observed - gamma) + adjust) / (total + adjust)
    less = (np.sum(stats <= observed + gamma) + adjust) / (total + adjust)
    return float(min(1.0, 2 * min(greater, less)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): the k-th smallest of m is multiplied
    by (m − k + 1), then made non-decreasing along the sorted order and capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def stars(p: float | None) -> str:
    """Significance marker of an (adjusted) p-value: * < 0.05, ** < 0.01, *** < 0.001."""
    if p is None or not math.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
