"""`eval`, `generate` and `reward` under torchrun with 2 processes (gloo on CPU) write the single-process files,
byte for byte, and `eval` killed under 2 processes resumes to the same files."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ..conftest import run_cli, write_jsonl

# the single-process runs these tests compare with use one thread, as each torchrun worker does
pytestmark = pytest.mark.usefixtures("one_thread")

OBJECTS = ["tomato", "cherry", "banana", "lemon", "grass", "sky", "snow", "coal", "ruby", "lime", "plum"]


def torchrun(*args, processes: int = 2, **kw) -> subprocess.CompletedProcess | subprocess.Popen:
    """``torchrun --standalone --nproc_per_node N -m lolkit.cli ARGS`` (kw: Popen's; ``popen=True`` to not wait)."""
    cmd = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node", str(processes),
           "-m", "lolkit.cli", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **kw.pop("env", {})}
    if kw.pop("popen", False):
        return subprocess.Popen(cmd, env=env, **kw)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, **kw)


def _prompts(tmp_path: Path, n: int = len(OBJECTS)) -> Path:
    # different lengths, so the length-sorted batches differ from the input order
    return write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"q{i}", "prompt": f"What colour is a {o}?" + " x" * (i % 4),
                                                     "response": f"a {o} is red."} for i, o in enumerate(OBJECTS[:n])])


EVAL = ["--reward", "colours", "--sample", "--num-samples", "2", "--max-new-tokens", "12", "--set", "eval.batch_size=2",
        "--metrics", "self_bleu,ppl", "--quiet"]


def _same_files(a: Path, b: Path, names) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_eval_two_processes_writes_the_single_process_files(tmp_path, tiny_model):
    data = _prompts(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    res = run_cli("eval", "--model", tiny_model, "--data", data, "--output-dir", one, *EVAL)
    assert res.code == 0, res
    out = torchrun("eval", "--model", tiny_model, "--data", data, "--output-dir", two, *EVAL)
    assert out.returncode == 0, out.stderr[-3000:]
    _same_files(one, two, ["generations.jsonl", "summary.json"])
    assert out.stdout.count("evaluation") == 1  # the summary table: printed by the main process only
    assert sorted(p.name for p in two.iterdir()) == ["generations.jsonl", "summary.json"]


@pytest.mark.slow
def test_generate_and_reward_two_processes_write_the_single_process_files(tmp_path, tiny_model):
    data = _prompts(tmp_path)
    gen = ["--model", tiny_model, "--data", data, "--num-samples", "3", "--max-new-tokens", "10", "--batch-size", "3",
           "--seed", "5", "--quiet"]
    res = run_cli("generate", *gen, "--output", tmp_path / "g1.jsonl")
    assert res.code == 0, res
    out = torchrun("generate", *gen, "--output", tmp_path / "g2.jsonl")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "g1.jsonl").read_bytes() == (tmp_path / "g2.jsonl").read_bytes()
    assert out.stdout.count("wrote ") == 1

    score = ["--input", tmp_path / "g1.jsonl", "--reward", "colours", "--batch-size", "4", "--quiet"]
    res = run_cli("reward", *score, "--output", tmp_path / "s1.jsonl")
    assert res.code == 0, res
    out = torchrun("reward", *score, "--output", tmp_path / "s2.jsonl")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "s1.jsonl").read_bytes() == (tmp_path / "s2.jsonl").read_bytes()
    assert not list(tmp_path.glob(".s2.jsonl.progress-*"))


@pytest.mark.slow
def test_eval_killed_under_two_processes_resumes_to_the_same_files(tmp_path, tiny_model):
    """The whole torchrun (workers and agent) is SIGKILLed once the progress file holds 2 finished batches
    (of 6); the re-run under 2 processes reuses them and writes the single-process files."""
    data = _prompts(tmp_path)
    killed, fresh = tmp_path / "killed", tmp_path / "fresh"
    args = ["eval", "--model", tiny_model, "--data", data, "--output-dir", killed, *EVAL]
    proc = torchrun(*args, popen=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, side = time.time() + 300, None
    while time.time() < deadline and proc.poll() is None:
        found = list(killed.glob(".generations.progress-*.jsonl")) if killed.exists() else []
        if found and found[0].read_bytes().count(b"\n") >= 1 + 2:  # header + 2 batches
            side = found[0]
            # the workers run in sessions of their own: kill them, then the agent
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.send_signal(signal.SIGKILL)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert side is not None, proc.stderr.read().decode()[-3000:]
    assert not (killed / "summary.json").exists()
    assert side.read_bytes().count(b"\n") < 1 + 6
    out = torchrun(*args[:-1])  # without --quiet: the resume is reported, once
    assert out.returncode == 0, out.stderr[-3000:]
    assert (out.stdout + out.stderr).count("resumed: ") == 1
    res = run_cli("eval", "--model", tiny_model, "--data", data, "--output-dir", fresh, *EVAL)
    assert res.code == 0, res
    _same_files(killed, fresh, ["generations.jsonl", "summary.json"])
    assert not list(killed.glob(".generations.progress-*"))
