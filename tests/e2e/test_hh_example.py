"""examples/hh_alol/run.sh in miniature (MINI=1: tiny models, 20 real HH-RLHF rows, a few steps): every stage of
the real-data example runs from the raw file, the table holds every policy and the untouched model, and a
second run skips every finished stage (the script is resumable)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HH = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"


@pytest.mark.slow
@pytest.mark.skipif(not HH.is_file(), reason="the shared HH-RLHF file is not here")
def test_hh_example_miniature_runs_every_stage_and_resumes(tmp_path):
    exe = Path(sys.executable)
    env = {**os.environ, "MINI": "1", "HH": str(HH), "LOLKIT": str(exe.with_name("lolkit")), "PYTHON": str(exe)}
    out = tmp_path / "hh"
    run = subprocess.run(["bash", str(REPO / "examples" / "hh_alol" / "run.sh"), str(out)], env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    stages = [line.split("\t")[0] for line in (out / "times.tsv").read_text().splitlines()]
    algos = ["nll", "wbc", "a_lol", "a_lol_seq", "pro", "dpo"]
    assert stages == ["data", "reward_model", "score", *[f"train_{a}" for a in algos],
                      *[f"eval_{a}" for a in ("nll", "wbc", "a_lol", "a_lol_seq", "dpo", "pro")], "eval_base"]
    rows = {r["algo"]: r for r in csv.DictReader((out / "results" / "results.csv").open())}
    assert set(rows) == {*algos, "base"}
    assert all(0 < float(r["reward_mean"]) < 1 for r in rows.values())  # sigmoid of the reward model's score
    rm_metrics = (out / "runs" / "rm" / "metrics.jsonl").read_text().splitlines()
    assert '"val_accuracy"' in rm_metrics[-1]
    again = subprocess.run(["bash", str(REPO / "examples" / "hh_alol" / "run.sh"), str(out)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(": done") == len(stages)  # every stage skipped: nothing trained or scored again
    assert len((out / "times.tsv").read_text().splitlines()) == len(stages)
