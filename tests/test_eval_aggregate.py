import json

import pytest

from lolkit.aggregate import aggregate
from lolkit.evaluate import summarise
from lolkit.metrics import distinct_n


def test_distinct_n_goldens():
    texts = ["a b a", "a b c"]
    # unigrams: a b a a b c → 3 unique / 6; bigrams: ab ba ab bc → 3 unique / 4; trigrams: aba abc → 2/2
    assert distinct_n(texts, 1) == pytest.approx(0.5)
    assert distinct_n(texts, 2) == pytest.approx(0.75)
    assert distinct_n(texts, 3) == pytest.approx(1.0)
    assert distinct_n(["a"], 2) == 0.0


def test_summary_goldens():
    rows = [{"prompt": "p", "response": "a b", "reward": 1.0, "rewards": {"x": 1.0}, "num_tokens": 2, "finished": True},
            {"prompt": "q", "response": "a c", "reward": 0.0, "rewards": {"x": 0.0}, "num_tokens": 4, "finished": False}]
    s = summarise(rows)
    assert s["reward_mean"] == 0.5 and s["reward_std"] == 0.5 and s["reward/x"] == 0.5
    assert s["length_mean"] == 3 and s["finished_fraction"] == 0.5 and s["distinct_1"] == 0.75


def _summary(path, algo, seed, reward):
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({
        "reward_mean": reward, "length_mean": 5.0, "distinct_1": 0.5, "distinct_2": 0.6, "distinct_3": 0.7,
        "run": {"algo": algo, "seed": seed, "data": "d.jsonl", "model": "tiny"}}))


def test_aggregate_groups_seeds(tmp_path):
    # summaries without their generations.jsonl: means ± std over seeds, no intervals or tests, a warning each
    for seed, r in enumerate([0.2, 0.4, 0.6]):
        _summary(tmp_path / f"nll-{seed}" / "eval", "nll", seed, r)
    _summary(tmp_path / "wbc-0" / "eval", "wbc", 0, 0.9)
    warnings = []
    rows = aggregate([str(tmp_path)], str(tmp_path / "out"), warn=warnings.append)
    assert len(warnings) == 4 and all("no generations.jsonl" in w for w in warnings)
    nll = next(r for r in rows if r["algo"] == "nll")
    assert nll["seeds"] == 3 and nll["reward_mean"] == pytest.approx(0.4) and nll["seed_list"] == "0;1;2"
    assert nll["reward_mean_std"] == pytest.approx((0.08 / 3) ** 0.5)  # population std of .2 .4 .6
    assert "reward_mean_ci_low" not in nll and "reward_mean_diff" not in rows[1]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| d.jsonl | nll | tiny | 3 | 0.400 ± 0.163 |" in md and "| d.jsonl | wbc | tiny | 1 | **0.900** |" in md
    csv = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert csv[0].startswith("data,train_data,algo,model,checkpoint,label,seeds,seed_list,baseline,reward_mean")
    assert len(csv) == 3
    assert "\\begin{tabular}" in (tmp_path / "out" / "results.tex").read_text()
    assert (tmp_path / "out" / "reward.png").stat().st_size > 1000
