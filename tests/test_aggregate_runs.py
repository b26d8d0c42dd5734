"""`lolkit aggregate`: validation checkpoints per group, --metric, and an end-to-end run over the demo."""

import csv
import json

import pytest

from lolkit.aggregate import aggregate, validation_extremes


def _run(root, name, algo, seed, reward, val, key="val_reward", extra=None):
    run = root / name
    (run / "eval").mkdir(parents=True)
    (run / "config.yaml").write_text(f"seed: {seed}\nalgo: {{name: {algo}}}\nmodel: {{name: tiny}}\n"
                                     "data: {train: d.jsonl}\n")
    rows = [{"step": s, "loss": 1.0 / s} for s in range(1, 31)]
    for step, v in val:
        rows[step - 1][key] = v
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 31, "lo')  # torn line
    (run / "eval" / "summary.json").write_text(json.dumps({
        "reward_mean": reward, "length_mean": 4.0, "distinct_1": 0.5, "distinct_2": 0.6, "distinct_3": 0.7,
        "rougeL": reward / 2, **(extra or {}),
        "run": {"algo": algo, "seed": seed, "data": "d.jsonl", "model": "tiny", "run_dir": str(run)}}))
    return run


def test_validation_extremes_and_group_means(tmp_path):
    # seed 0: val 0.2 @10, 0.5 @20, 0.1 @30 → best 0.5 @20, worst 0.1 @30
    # seed 1: val 0.4 @10, 0.4 @20, 0.3 @30 → best 0.4 @10 (ties: earliest), worst 0.3 @30
    r0 = _run(tmp_path, "a0", "a_lol", 0, 0.6, [(10, 0.2), (20, 0.5), (30, 0.1)], extra={"qd": 2.0})
    _run(tmp_path, "a1", "a_lol", 1, 0.8, [(10, 0.4), (20, 0.4), (30, 0.3)])
    assert validation_extremes(r0) == {"val_metric": "val_reward", "val_best": 0.5, "val_best_step": 20,
                                       "val_worst": 0.1, "val_worst_step": 30}
    # without a reward: val_nll, lower is better
    n0 = _run(tmp_path, "n0", "nll", 0, 0.3, [(10, 3.0), (20, 2.0), (30, 2.5)], key="val_nll")
    assert validation_extremes(n0)["val_best"] == 2.0 and validation_extremes(n0)["val_worst_step"] == 10
    rows = aggregate([str(tmp_path)], str(tmp_path / "out"), metric="rougeL", warn=lambda m: None)
    a = next(r for r in rows if r["algo"] == "a_lol")
    assert a["val_best"] == pytest.approx(0.45) and a["val_best_steps"] == "20;10"  # (0.5+0.4)/2, each seed's step
    assert a["val_worst"] == pytest.approx(0.2) and a["val_worst_steps"] == "30;30"  # (0.1+0.3)/2
    assert a["rougeL"] == pytest.approx(0.35) and "rougeL_ci_low" not in a  # summaries alone: no interval
    assert a["qd"] == 2.0 and a["qd_std"] == 0.0  # a metric only one seed has: averaged over that seed
    out = tmp_path / "out"
    md = (out / "results.md").read_text()
    assert "| d.jsonl | a_lol | 2 | val_reward | 0.450 ± 0.050 @ 20, 10 | 0.200 ± 0.100 @ 30, 30 |" in md
    assert "| d.jsonl | nll | 1 | val_nll | 2.000 @ 20 | 3.000 @ 10 |" in md
    table = list(csv.DictReader((out / "results.csv").open()))
    assert {"val_best", "val_worst_steps", "rougeL_std", "qd"} <= set(table[0])
    assert "ROUGE-L $\\uparrow$" in (out / "results.tex").read_text()
    for stem in ("rougeL", "curves", "validation"):
        assert all((out / f"{stem}.{ext}").stat().st_size > 5000 for ext in ("png", "pdf", "svg")), stem
    with pytest.raises(Exception, match="--metric 'bleurt'"):
        aggregate([str(tmp_path)], str(tmp_path / "o2"), metric="bleurt")


@pytest.mark.slow
def test_aggregate_over_the_demo_with_three_seeds(tmp_path, cli):
    demo = tmp_path / "demo"
    res = cli("demo", "--algos", "nll,a_lol", "--seeds", "0,1,2", "--max-steps", "30", "--output-dir", demo, "--quiet")
    assert res.code == 0, res
    out = tmp_path / "agg"
    res = cli("aggregate", demo / "runs", "--output-dir", out)
    assert res.code == 0, res
    table = {r["algo"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert set(table) == {"nll", "a_lol"} and all(r["seeds"] == "3" for r in table.values())
    for r in table.values():
        assert r["val_metric"] == "val_reward" and r["val_runs"] == "3" and len(r["val_best_steps"].split(";")) == 3
        assert float(r["val_best"]) >= float(r["val_worst"])
        assert float(r["reward_mean_ci_low"]) < float(r["reward_mean"]) < float(r["reward_mean_ci_high"])
        for m in ("self_bleu", "ppl", "rougeL", "bleu", "chrf"):
            assert r[m] != "", m
    # a_lol starts from each seed's nll model and is compared with it on the same 3 × test prompts
    a = table["a_lol"]
    assert a["baseline"] == "nll" and 0 <= float(a["reward_mean_p_holm"]) <= 1
    assert float(a["reward_mean_diff_low"]) <= float(a["reward_mean_diff"]) <= float(a["reward_mean_diff_high"])
    md = (out / "results.md").read_text()
    assert "**Validation checkpoints**" in md and md.count("| 3 |") >= 2 and "Δ reward" in md
    assert "\\begin{tabular}" in (out / "results.tex").read_text()
    for stem in ("reward", "curves", "validation"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / f"{stem}.png").stat().st_size > 10000
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"


def test_models_trained_by_lolkit_are_labelled_by_what_trained_them(tmp_path):
    from lolkit.aggregate import model_label

    for seed in (0, 1):
        run = tmp_path / f"nll-seed{seed}"
        (run / "final").mkdir(parents=True)
        (run / "config.yaml").write_text(f"seed: {seed}\nalgo: {{name: nll}}\nmodel: {{name: tiny}}\n")
        (run / "metrics.jsonl").write_text("")
    # each seed's SFT model gets the same label, so SFT → X runs of several seeds form one group
    assert model_label(str(tmp_path / "nll-seed0" / "final")) == model_label(str(tmp_path / "nll-seed1")) == "nll(tiny)"
    assert model_label("tiny") == "tiny" and model_label(str(tmp_path)) == str(tmp_path)  # not a run: unchanged
