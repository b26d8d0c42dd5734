"""``lolkit reward`` is resumable and atomic: killed with SIGKILL half-way, a re-run scores only the
missing rows and writes the same bytes as an uninterrupted run; bad input leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[2]
# the helper is named by its file: a subprocess does not have the repository on its import path
CONFIG = f"""\
name: slow
batch_size: 4
components:
  len:
    type: callable
    function: {REPO}/tests/reward_helpers.py:slow_length
    weight: 0.5
  div:
    type: distinct
    n: 1
"""


def make_input(tmp_path: Path, n: int = 40) -> Path:
    words = ["alpha", "beta", "gamma", "delta", "alpha beta", "beta beta gamma"]
    rows = [{"id": f"r{i}", "prompt": f"question {i}?", "response": " ".join(words[: 1 + i % 6]) + f" {i}"}
            for i in range(n)]
    return write_jsonl(tmp_path / "in.jsonl", rows)


def sidecars(out: Path) -> list[Path]:
    return list(out.parent.glob(f".{out.name}.progress-*"))


def test_killed_run_resumes_to_identical_output(tmp_path, cli):
    data = make_input(tmp_path)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text(CONFIG)
    # reference: one uninterrupted run (in-process)
    ref_out = tmp_path / "ref.jsonl"
    res = cli("reward", "--config", cfg, "--input", data, "--output", ref_out, "--quiet")
    assert res.code == 0, res
    assert not sidecars(ref_out)

    out = tmp_path / "out.jsonl"
    log = tmp_path / "calls.log"
    env = {**os.environ, "LOLKIT_TEST_SCORE_DELAY": "0.25", "LOLKIT_TEST_SCORE_LOG": str(log)}
    exe = Path(sys.executable).with_name("lolkit")
    proc = subprocess.Popen([str(exe), "reward", "--config", str(cfg), "--input", str(data), "--output", str(out),
                             "--quiet"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    try:
        while time.time() < deadline:  # wait until 3 of the 10 chunks are saved, then kill hard
            side = sidecars(out)
            if side and len(side[0].read_text().splitlines()) >= 1 + 3:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("the run saved no progress")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()  # nothing under the real name until complete
    [side] = sidecars(out)
    saved_chunks = len(side.read_text().splitlines()) - 1
    assert 3 <= saved_chunks < 10
    with open(side, "a") as fh:  # as if the kill had torn a line in half
        fh.write('{"chunk": 9, "scores": [[[0.1')

    log.write_text("")
    res = subprocess.run([str(exe), "reward", "--config", str(cfg), "--input", str(data), "--output", str(out)],
                         cwd=REPO, env={**env, "LOLKIT_TEST_SCORE_DELAY": "0"}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"({4 * saved_chunks} resumed)" in res.stdout
    rescored = sum(int(x) for x in log.read_text().split())
    assert rescored == 40 - 4 * saved_chunks  # only the missing rows were scored
    assert out.read_bytes() == ref_out.read_bytes()
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(40)]  # no duplicates, none missing
    assert not sidecars(out) and not list(tmp_path.glob(".out.jsonl.tmp-*"))


def test_changed_config_does_not_reuse_progress(tmp_path, cli):
    data = make_input(tmp_path, 8)
    cfg = tmp_path / "r.yaml"
    cfg.write_text("batch_size: 4\ncomponents:\n  div: {type: distinct, n: 1}\n")
    out = tmp_path / "out.jsonl"
    # a stale progress file of another reward, with bogus numbers, must be ignored and cleaned up
    stale = out.with_name(".out.jsonl.progress-0000000000000000.jsonl")
    stale.write_text('{"chunk": 0, "scores": [[[9, {"div": 9}]], [[9, {"div": 9}]], [[9, {"div": 9}]], [[9, {"div": 9}]]]}\n')
    assert cli("reward", "--config", cfg, "--input", data, "--output", out, "--quiet").code == 0
    assert all(r["reward"] <= 1 for r in read_jsonl(out)) and not stale.exists()


def test_bad_line_exits_2_and_leaves_nothing(tmp_path, cli):
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "response": "fine"}, {"prompt": "q", "response": 3}])
    cfg = tmp_path / "r.yaml"
    cfg.write_text("components:\n  div: {type: distinct}\n")
    out = tmp_path / "out.jsonl"
    res = cli("reward", "--config", cfg, "--input", data, "--output", out, "--quiet")
    assert res.code == 2 and res.err.strip() == f"error: {data}:2: field 'response': expected a string, got int"
    assert not out.exists() and not sidecars(out)


def test_reference_metrics_read_meta_reference_and_name_missing_ones(tmp_path, cli):
    rows = [{"id": "a", "prompt": "p", "response": "the cat is on the mat", "meta": {"reference": "the cat sat on the mat"}},
            {"id": "b", "prompt": "p", "response": "x", "references": ["x", "y"]},
            {"id": "c", "prompt": "p", "response": "no reference here"}]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = tmp_path / "r.yaml"
    cfg.write_text("components:\n  rouge1: {type: rouge, variant: rouge1}\n  bleu: {type: bleu, weight: 0}\n")
    out = tmp_path / "out.jsonl"
    res = cli("reward", "--config", cfg, "--input", data, "--output", out, "--quiet")
    assert res.code == 2 and f"{data}:3: reward component 'rouge1' (rouge) needs a reference" in res.err
    assert not out.exists() and not sidecars(out)
    write_jsonl(data, rows[:2])
    assert cli("reward", "--config", cfg, "--input", data, "--output", out, "--quiet").code == 0
    scored = read_jsonl(out)
    assert scored[0]["rewards"]["rouge1"] == pytest.approx(5 / 6) and scored[0]["reward"] == pytest.approx(5 / 6)
    assert scored[1]["rewards"]["rouge1"] == 1.0 and scored[1]["reward"] == 1.0  # best of two references; bleu weighs 0


def test_preference_and_ranking_records_get_every_response_scored(tmp_path, cli):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("components:\n  len: {type: length}\n")
    pref = write_jsonl(tmp_path / "pref.jsonl", [{"prompt": "p", "chosen": "a b c", "rejected": "a"}])
    rank = write_jsonl(tmp_path / "rank.jsonl", [{"prompt": "p", "responses": ["a", "a b"], "rewards": [0, 0]}])
    assert cli("reward", "-c", cfg, "--input", pref, "--output", tmp_path / "p.jsonl", "-q").code == 0
    assert cli("reward", "-c", cfg, "--input", rank, "--output", tmp_path / "r.jsonl", "-q").code == 0
    p = read_jsonl(tmp_path / "p.jsonl")[0]
    assert (p["chosen_reward"], p["rejected_reward"]) == (3.0, 1.0)
    assert read_jsonl(tmp_path / "r.jsonl")[0]["rewards"] == [1.0, 2.0]
