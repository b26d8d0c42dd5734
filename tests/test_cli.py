"""The command line: help is fast, user errors are one line with exit code 2."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lolkit.errors import LolkitError

from .conftest import read_jsonl, write_jsonl


def test_help_is_fast_and_lists_the_commands():
    exe = Path(sys.executable).with_name("lolkit")
    t = time.perf_counter()
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"})
    elapsed = time.perf_counter() - t
    assert out.returncode == 0
    for cmd in ("preprocess", "reward", "train", "eval", "aggregate", "demo", "tiny-model"):
        assert cmd in out.stdout
    assert elapsed < 2.0, f"lolkit --help took {elapsed:.2f}s"
    probe = subprocess.run([sys.executable, "-c", "import sys, lolkit.cli; print('torch' in sys.modules)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "False"  # heavy imports happen inside commands


def test_malformed_jsonl_line_exits_2_naming_file_and_line(tmp_path, cli, tiny_model):
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "p", "response": "r"}, '{"prompt": "q", "response": }'])
    res = cli("train", "--data", data, "--output-dir", tmp_path / "run", "--quiet")
    assert res.code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {data}:2: invalid JSON"), res.err
    assert "Traceback" not in res.err


def test_reward_errors_leave_no_output(tmp_path, cli):
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "What colour is a lime?", "response": "a lime is green."},
                                               {"prompt": "x", "response": ""}])
    out = tmp_path / "out.jsonl"
    res = cli("reward", "--input", data, "--output", out, "--quiet")
    assert res.code == 2 and "in.jsonl:2: field 'response': empty string" in res.err
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*"))


def test_unknown_algorithm_model_and_config_key(tmp_path, cli):
    res = cli("train", "--algo", "magic", "--output-dir", tmp_path / "r")
    assert res.code == 2 and "unknown algorithm 'magic'" in res.err
    res = cli("train", "--model", str(tmp_path / "nope"), "--output-dir", tmp_path / "r2")
    assert res.code == 2 and "model directory not found" in res.err
    res = cli("train", "--model", "some-org/some-model", "--output-dir", tmp_path / "r3")
    assert res.code == 2 and "cannot be reached" in res.err
    res = cli("train", "--set", "optim.nope=1", "--output-dir", tmp_path / "r4")
    assert res.code == 2 and "unknown config key 'optim.nope'" in res.err
    with pytest.raises(LolkitError):  # --debug re-raises: the traceback is shown
        cli("--debug", "train", "--algo", "magic", "--output-dir", tmp_path / "r5")


def test_preprocess_reward_train_eval_aggregate(tmp_path, cli, tiny_model):
    d = tmp_path / "data"
    assert cli("preprocess", "builtin", "--output-dir", d).code == 0
    assert {p.name for p in d.iterdir()} == {"train.jsonl", "val.jsonl", "test.jsonl"}
    # strip the rewards and score them again: same numbers
    rows = read_jsonl(d / "train.jsonl")[:20]
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"prompt": r["prompt"], "completion": r["response"]} for r in rows])
    norm = tmp_path / "norm.jsonl"
    assert cli("preprocess", "jsonl", bare, "--output", norm).code == 0
    assert read_jsonl(norm)[0] == {"id": "line-1", "prompt": rows[0]["prompt"], "response": rows[0]["response"]}
    res = cli("reward", "--input", norm, "--output", tmp_path / "scored.jsonl", "--quiet")
    assert res.code == 0, res
    scored = read_jsonl(tmp_path / "scored.jsonl")
    assert [s["reward"] for s in scored] == [r["reward"] for r in rows]
    assert [s["rewards"] for s in scored] == [r["rewards"] for r in rows]
    run = tmp_path / "run"
    res = cli("train", "--data", d / "train.jsonl", "--val-data", d / "val.jsonl", "--reward", "colours",
              "--max-steps", "6", "--batch-size", "8", "--output-dir", run, "--quiet")
    assert res.code == 0, res
    res = cli("eval", "--model", run, "--data", d / "test.jsonl", "--sample", "--num-samples", "2",
              "--max-new-tokens", "8", "--quiet")
    assert res.code == 0, res
    gens = read_jsonl(run / "eval" / "generations.jsonl")
    assert len(gens) == 64 and {g["sample"] for g in gens} == {0, 1}
    res = cli("aggregate", tmp_path, "--output-dir", tmp_path / "agg")
    assert res.code == 0, res
    for f in ("results.md", "results.csv", "results.tex", "reward.png", "curves.png"):
        assert (tmp_path / "agg" / f).exists(), f


@pytest.mark.parametrize("args", [["eval", "--model", "tiny"], ["aggregate", "/nonexistent/dir", "--output-dir", "x"]])
def test_other_user_errors(args, cli):
    res = cli(*args)
    assert res.code == 2 and res.err.startswith("error: ")


def test_generate_builds_an_offline_dataset(tmp_path, cli, tiny_model):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What colour is a lime?", "meta": {"k": 1}},
                                                 {"id": "x", "prompt": [{"role": "user", "content": "hi"}]}])
    out = tmp_path / "gen.jsonl"
    res = cli("generate", "--model", "tiny", "--data", prompts, "--output", out, "--num-samples", "3",
              "--max-new-tokens", "6", "--quiet")
    assert res.code == 0, res
    rows = read_jsonl(out)
    assert 0 < len(rows) <= 6 and all(r["meta"]["sample"] in (0, 1, 2) for r in rows)
    assert {r["meta"]["source_id"] for r in rows} <= {"line-1", "x"}
    res = cli("reward", "--input", out, "--output", tmp_path / "scored.jsonl", "--quiet")
    assert res.code == 0, res
    assert all("reward" in r for r in read_jsonl(tmp_path / "scored.jsonl"))
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "no prompt"}])
    res = cli("generate", "--model", "tiny", "--data", bad, "--output", tmp_path / "o.jsonl")
    assert res.code == 2 and "bad.jsonl:1: field 'prompt': missing field" in res.err
