"""The built-in demo end to end (the command `make demo` runs)."""

import csv

import pytest

from lolkit.demo import DEMO_ALGOS

from ..conftest import read_jsonl


@pytest.mark.slow
def test_demo_writes_results_and_a_lol_beats_nll(tmp_path, cli, tiny_model):
    out = tmp_path / "demo"
    res = cli("demo", "--output-dir", out, "--quiet")
    assert res.code == 0, res
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {"algo", "reward_mean"} <= set(rows[0])
    by_algo = {r["algo"]: float(r["reward_mean"]) for r in rows}
    assert list(by_algo) == list(DEMO_ALGOS)
    # behaviour cloning learns the confused annotator's wrong colour: 0.2 (object) + 0.2 (form)
    assert by_algo["nll"] == pytest.approx(0.4, abs=0.05)
    assert by_algo["a_lol"] >= by_algo["nll"] + 0.15
    assert by_algo["wbc"] > by_algo["nll"]
    for f in ("results.md", "results.tex", "reward.png", "curves.png"):
        assert (out / f).exists(), f
    assert len(read_jsonl(out / "runs" / "nll-seed0" / "eval" / "generations.jsonl")) == 32
    # a second run reuses the finished work and gives the same table
    again = cli("demo", "--output-dir", out, "--quiet")
    assert again.code == 0 and list(csv.DictReader((out / "results.csv").open())) == rows
    # same seed in a fresh directory: the same numbers
    fresh = tmp_path / "fresh"
    assert cli("demo", "--output-dir", fresh, "--algos", "nll,a_lol", "--quiet").code == 0
    rows2 = {r["algo"]: r for r in csv.DictReader((fresh / "results.csv").open())}
    # (p-values aside: Holm's correction and the number of sign patterns depend on the table's other tests)
    def same(r):
        return {k: v for k, v in r.items() if k != "data" and not k.endswith(("_p", "_p_holm"))}

    for r in rows:
        if r["algo"] in rows2:
            assert same(r) == same(rows2[r["algo"]])
