"""Statistics of `lolkit aggregate` on hand-made per-example files: estimates, intervals over prompts and
seeds, paired differences, permutation p-values (exact and within Monte-Carlo error), Holm."""

import csv
import json
import math

import numpy as np
import pytest

from lolkit import stats
from lolkit.aggregate import aggregate
from lolkit.evaluate import summarise


def make_eval(root, name, algo, seed, rewards, *, test="test.jsonl", train="train.jsonl", lengths=None, nll=None,
              run_dir=None):
    """An eval directory as `lolkit eval` writes it: generations.jsonl (one row per response; ``rewards``
    maps a prompt id to its samples' rewards, None for an unscored run) and summary.json from the real
    `summarise`."""
    out = root / name / "eval"
    out.mkdir(parents=True)
    rows = []
    for k, (pid, samples) in enumerate(rewards.items()):
        for s, r in enumerate(samples):
            n = (lengths or {}).get(pid, 4)
            m = {"nll": nll[pid], "ppl_tokens": n} if nll else {}
            rows.append({"id": pid, "prompt": f"prompt {pid}", "sample": s, "response": f"answer {k} {s}",
                         "reward": r, "rewards": {"x": r} if r is not None else {}, "num_tokens": n,
                         "finished": True, "metrics": m})
    (out / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = summarise(rows)
    summary["run"] = {"algo": algo, "seed": seed, "data": train, "model": "tiny", "test_data": test,
                      "checkpoint": "final", "run_dir": str(run_dir) if run_dir else None}
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def _by_algo(rows):
    return {r["label"]: r for r in rows}


def test_known_paired_difference_and_exact_p_value(tmp_path):
    # 8 prompts; B scores exactly 0.1 above A on every prompt. Paired difference 0.1 with a zero-width
    # interval (every resample sees the same difference); the sign-flip test is exact over 2^8 patterns
    # and only the all-positive one reaches 0.1: p = 2 × 1/256.
    a = {f"p{i}": [0.1 * i] for i in range(8)}
    make_eval(tmp_path, "nll-0", "nll", 0, a)
    make_eval(tmp_path, "a_lol-0", "a_lol", 0, {k: [v[0] + 0.1] for k, v in a.items()})
    rows = _by_algo(aggregate([str(tmp_path)], str(tmp_path / "out"), warn=lambda m: None))
    r = rows["a_lol"]
    assert r["reward_mean"] == pytest.approx(0.45) and rows["nll"]["reward_mean"] == pytest.approx(0.35)
    assert r["reward_mean_diff"] == pytest.approx(0.1)
    assert r["reward_mean_diff_low"] == pytest.approx(0.1) and r["reward_mean_diff_high"] == pytest.approx(0.1)
    assert r["reward_mean_p"] == pytest.approx(2 / 256) and r["reward_mean_paired_prompts"] == 8
    # Holm over the table's tests: reward and reward-free length (identical: p = 1) → 2 × 2/256, and 1
    assert r["reward_mean_p_holm"] == pytest.approx(4 / 256) and r["length_mean_p_holm"] == 1.0
    assert rows["nll"]["baseline"] == r["baseline"] == "nll" and "reward_mean_diff" not in rows["nll"]
    # one seed: the interval comes from the prompts and is not zero-width
    assert r["reward_mean_ci_low"] < 0.45 < r["reward_mean_ci_high"]


def _exact_sign_flip(d):
    """Two-sided p of the paired sign-flip test over all 2^n patterns (float64, by enumeration)."""
    n, obs = len(d), np.mean(d)
    ge = le = 0
    for start in range(0, 2**n, 2**16):
        codes = np.arange(start, min(2**n, start + 2**16))[:, None]
        means = (1 - 2 * ((codes >> np.arange(n)) & 1)) @ d / n
        ge += int(np.sum(means >= obs - 1e-12))
        le += int(np.sum(means <= obs + 1e-12))
    return min(1.0, 2 * min(ge, le) / 2**n)


def test_p_value_within_monte_carlo_error(tmp_path):
    # 20 prompts: 2^20 sign patterns, more than the 9,999 random ones drawn, so the p-value is a
    # Monte-Carlo estimate of the exact one computed here by enumeration
    d = np.array([0.3, -0.1, 0.25, 0.05, -0.2, 0.4, 0.1, -0.05, 0.15, 0.2,
                  -0.3, 0.35, 0.05, 0.1, -0.15, 0.2, 0.25, -0.1, 0.3, 0.05])
    a = {f"p{i}": [0.5 + 0.01 * i] for i in range(20)}
    make_eval(tmp_path, "nll-0", "nll", 0, a)
    make_eval(tmp_path, "wbc-0", "wbc", 0, {k: [v[0] + float(x)] for (k, v), x in zip(a.items(), d, strict=True)})
    r = _by_algo(aggregate([str(tmp_path)], str(tmp_path / "out"), warn=lambda m: None))["wbc"]
    exact = _exact_sign_flip(d)
    assert exact == pytest.approx(0.0551, abs=1e-4)  # near 0.05, where Monte-Carlo error matters
    se = math.sqrt(exact * (1 - exact) / stats.PERMUTATIONS)
    assert abs(r["reward_mean_p"] - exact) < 4 * se + 2 / stats.PERMUTATIONS
    assert r["reward_mean_diff"] == pytest.approx(float(np.mean(d)))


def test_sign_flip_test_agrees_with_scipy():
    from scipy.stats import permutation_test

    def mean_diff(x, y, axis):
        return np.mean(x - y, axis=axis)

    rng = np.random.default_rng(0)
    for n in (9, 13, 40):  # exact (2^9, 2^13 ≤ 9999) and Monte Carlo
        x, y = rng.normal(0.2, 1, n), rng.normal(0, 1, n)
        ref = permutation_test((x, y), mean_diff, permutation_type="samples", vectorized=True,
                               n_resamples=stats.PERMUTATIONS, rng=1).pvalue
        ours = stats.sign_flip_test(x - y)
        tol = 0 if 2**n <= stats.PERMUTATIONS else 4 * math.sqrt(ref * (1 - ref) / stats.PERMUTATIONS) + 1e-3
        assert abs(ours - ref) <= tol + 1e-12, (n, ours, ref)
    assert stats.sign_flip_test(np.zeros(30)) == 1.0  # no difference at all: p = 1


def test_one_seed_interval_is_scipys_percentile_bootstrap():
    from scipy.stats import bootstrap

    x = np.random.default_rng(1).normal(0.4, 0.3, 200)
    t = stats.table([{i: (v, 1.0) for i, v in enumerate(x)}])
    lo, hi = stats.interval(t)
    ref = bootstrap((x,), np.mean, n_resamples=20000, method="percentile", rng=2).confidence_interval
    se = x.std() / math.sqrt(len(x))  # the quantiles' Monte-Carlo error is a small fraction of this
    assert lo == pytest.approx(ref.low, abs=0.1 * se) and hi == pytest.approx(ref.high, abs=0.1 * se)
    assert lo < x.mean() < hi


def test_seed_level_of_the_bootstrap():
    # identical seeds: the seed draw changes nothing, the interval is the one-seed interval exactly
    vals = {f"p{i}": (float(v), 1.0) for i, v in enumerate(np.linspace(0, 1, 30))}
    assert stats.interval(stats.table([vals, vals, vals])) == stats.interval(stats.table([vals]))
    # constant prompts, two seeds at 0 and 1: resampled means 0, ½, 1 with probabilities ¼, ½, ¼
    t = stats.table([{k: (0.0, 1.0) for k in vals}, {k: (1.0, 1.0) for k in vals}])
    assert t.estimate() == 0.5 and stats.interval(t) == (0.0, 1.0)
    # perplexity: a ratio of sums, exp(Σ NLL / Σ tokens)
    t = stats.table([{"a": (2.0, 1.0), "b": (6.0, 3.0)}], np.exp)
    assert t.estimate() == pytest.approx(math.exp(8 / 4))


def test_holm_goldens():
    # sorted 0.01, 0.03, 0.04, 0.5 → ×4, ×3, ×2, ×1 = 0.04, 0.09, 0.08 → 0.09 (monotone), 0.5
    assert stats.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert stats.holm([0.6, 0.9]) == [1.0, 1.0] and stats.holm([]) == []
    assert [stats.stars(p) for p in (0.0005, 0.005, 0.04, 0.2, None)] == ["***", "**", "*", "", ""]


def test_seeds_prompts_ppl_and_unscored_runs(tmp_path):
    # nll: 2 seeds × 3 prompts × 2 samples; dpo: 1 seed evaluated without a reward (still a row)
    p = ["a", "b", "c"]
    make_eval(tmp_path, "nll-0", "nll", 0, {"a": [0.0, 0.2], "b": [0.4, 0.4], "c": [1.0, 0.8]},
              nll={"a": 2.0, "b": 4.0, "c": 6.0})
    make_eval(tmp_path, "nll-1", "nll", 1, {"a": [0.2, 0.2], "b": [0.6, 0.6], "c": [0.6, 1.0]},
              nll={"a": 2.0, "b": 4.0, "c": 6.0})
    make_eval(tmp_path, "dpo-0", "dpo", 0, {k: [None, None] for k in p}, train="train_pairs.jsonl",
              nll={"a": 2.0, "b": 2.0, "c": 2.0})
    warnings = []
    rows = _by_algo(aggregate([str(tmp_path)], str(tmp_path / "out"), warn=warnings.append))
    assert warnings == []
    nll, dpo = rows["nll"], rows["dpo"]
    # seed means 0.4667 and 0.5333 → 0.5; population std over seeds 0.0333
    assert nll["reward_mean"] == pytest.approx(0.5) and nll["reward_mean_std"] == pytest.approx(1 / 30)
    assert nll["reward_mean_ci_low"] < 0.5 < nll["reward_mean_ci_high"]
    # PPL: every response has 4 tokens; Σ NLL / Σ tokens = (2+2+4+4+6+6) / 24 = 1 → e; dpo: 2 / 4 → e^0.5
    assert nll["ppl"] == pytest.approx(math.e) and dpo["ppl"] == pytest.approx(math.exp(0.5))
    assert dpo["ppl_diff"] == pytest.approx(math.exp(0.5) - math.e) and "reward_mean" not in dpo
    # the pairs file does not split the table: one block (the test data), dpo compared with nll
    assert dpo["data"] == nll["data"] and dpo["baseline"] == "nll"
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| test.jsonl | dpo | tiny | 1 | – |" in md


def test_runs_sharing_no_prompts_are_refused_for_pairing(tmp_path):
    make_eval(tmp_path, "nll-0", "nll", 0, {"a": [0.1], "b": [0.3]})
    make_eval(tmp_path, "wbc-0", "wbc", 0, {"c": [0.5], "d": [0.7]})
    warnings = []
    rows = _by_algo(aggregate([str(tmp_path)], str(tmp_path / "out"), warn=warnings.append))
    assert warnings == ["wbc and the baseline nll share no test prompts (test.jsonl): refused for pairing"]
    assert "reward_mean_diff" not in rows["wbc"] and rows["wbc"]["reward_mean"] == pytest.approx(0.6)


def test_tables_for_a_paper(tmp_path):
    a = {f"p{i}": [0.05 * i] for i in range(12)}
    make_eval(tmp_path, "nll-0", "nll", 0, a)
    make_eval(tmp_path, "a_lol-0", "a_lol", 0, {k: [v[0] + 0.2] for k, v in a.items()})
    make_eval(tmp_path, "wbc-0", "wbc", 0, {k: [v[0] - 0.01] for k, v in a.items()})
    rows = aggregate([str(tmp_path)], str(tmp_path / "out"), columns=["reward_mean"], warn=lambda m: None)
    out = tmp_path / "out"
    tex = (out / "results.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert " & seeds & reward $\\uparrow$ & $\\Delta$ reward \\\\" in tex
    lo, hi = _by_algo(rows)["a_lol"]["reward_mean_ci_low"], _by_algo(rows)["a_lol"]["reward_mean_ci_high"]
    # a_lol: best (bold), significant after Holm (p = 2/4096 × 2 tests), Δ = +0.2 with a zero-width interval
    assert f"a\\_lol & 1 & \\textbf{{0.475}} $\\pm$ {(hi - lo) / 2:.3f}$^{{***}}$ & +0.200 [+0.200, +0.200]$^{{***}}$ \\\\" \
        in tex
    assert "nll & 1 & 0.275 $\\pm$" in tex and "& baseline \\\\" in tex
    md = (out / "results.md").read_text()
    assert f"| test.jsonl | a_lol | tiny | 1 | **0.475** ± {(hi - lo) / 2:.3f}\\*\\*\\* | +0.200 [+0.200, +0.200]\\*\\*\\* |" in md
    table = list(csv.DictReader((out / "results.csv").open()))
    assert [r["label"] for r in table] == ["nll", "wbc", "a_lol"]  # the algorithm table's order
    assert float(table[2]["reward_mean_diff"]) == pytest.approx(0.2) and float(table[2]["reward_mean_p"]) < 0.001
    assert (out / "reward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "reward.pdf").read_bytes()[:5] == b"%PDF-" and b"<svg" in (out / "reward.svg").read_bytes()[:2000]
    assert not (out / "curves.png").exists()  # no training runs behind these evaluations: no curves
