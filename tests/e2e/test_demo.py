"""The built-in demo end to end (the command `make demo` runs)."""

import csv

import pytest

from ..conftest import read_jsonl


@pytest.mark.slow
def test_demo_writes_results(tmp_path, cli, tiny_model):
    out = tmp_path / "demo"
    res = cli("demo", "--output-dir", out, "--quiet")
    assert res.code == 0, res
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {"algo", "reward_mean"} <= set(rows[0])
    by_algo = {r["algo"]: float(r["reward_mean"]) for r in rows}
    # behaviour cloning learns the confused annotator's wrong colour: 0.2 (object) + 0.2 (form)
    assert by_algo["nll"] == pytest.approx(0.4, abs=0.05)
    assert (out / "results.md").exists() and (out / "reward.png").exists()
    gens = read_jsonl(out / "runs" / "nll-seed0" / "eval" / "generations.jsonl")
    assert len(gens) == 32
    # a second run reuses the finished work and gives the same table
    again = cli("demo", "--output-dir", out, "--quiet")
    assert again.code == 0 and list(csv.DictReader((out / "results.csv").open())) == rows
