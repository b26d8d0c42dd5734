"""Crash safety: ``lolkit train`` and ``lolkit reward`` killed with SIGKILL at random moments, then re-run
with ``--resume`` (train) or plainly (reward), end exactly where an uninterrupted run ends — the same
weights (tensors equal on CPU) and metrics for ``train``, the same bytes for ``reward``. And every
command killed at the last instant of its final write (train offline / ppo / quark, reward, eval)
leaves no temporary behind once it is resumed.

The kill moments are drawn from a seeded RNG: after a random number of finished optimizer steps (0 =
during start-up) plus a random delay, so kills land in the forward/backward pass, in validation, in
the metrics append, and in the middle of checkpoint and ``best/`` writes. Validation runs every step
with a deliberately slow reward (tests/reward_helpers.py:slow_length) to widen those windows.
(``lolkit eval``'s kill test belongs to the evaluation work, tests/test_eval_*.)
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ..rewards.test_rewards_resume import CONFIG as REWARD_CONFIG
from ..rewards.test_rewards_resume import make_input, sidecars

REPO = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).with_name("lolkit"))
MAX_STEPS = 12
VAL_REWARD = f"""\
components:
  len:
    type: callable
    function: {REPO}/tests/reward_helpers.py:slow_length
"""
TIMING = {"step_time"}


def _env(tmp_path: Path, delay: float) -> dict:
    return {**os.environ, "LOLKIT_TEST_SCORE_DELAY": str(delay), "LOLKIT_CACHE": os.environ["LOLKIT_CACHE"],
            "HF_HUB_OFFLINE": "1"}


def _train_args(run: Path, reward: Path) -> list[str]:
    return [EXE, "train", "--output-dir", str(run), "--max-steps", str(MAX_STEPS), "--save-every", "2",
            "--eval-every", "1", "--batch-size", "8", "--reward", str(reward), "--seed", "3", "--quiet",
            "--set", "eval_prompts=2", "--set", "eval.max_new_tokens=4"]


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _finished_steps(run: Path) -> int:
    p = run / "metrics.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


def _kill_when(proc: subprocess.Popen, ready, delay: float, poll: float = 0.01) -> None:
    """SIGKILL ``proc`` ``delay`` s after ``ready()`` first holds (or after 60 s); it must still be running."""
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and not ready():
            time.sleep(poll)
        time.sleep(delay)
        assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_train_killed_at_random_moments_resumes_to_identical_weights(tmp_path, tiny_model):
    """One run killed three times (kill moments from seeds 0, 1, 2; the 2nd and 3rd kills hit resumed
    runs), then resumed to the end: the same weights, metrics and best checkpoint as one clean run.
    One chain instead of three separate runs: every process pays ~10 s of imports on this machine."""
    reward = tmp_path / "val.yaml"
    reward.write_text(VAL_REWARD)
    ref = tmp_path / "ref"
    res = subprocess.run(_train_args(ref, reward), cwd=REPO, env=_env(tmp_path, 0.0), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr

    run = tmp_path / "run"
    kills = []
    for seed in (0, 1, 2):
        rng = random.Random(seed)
        done = _finished_steps(run)
        # seed 0: right after start-up; later kills: 1-2 steps past what earlier runs finished
        after = 0 if seed == 0 else done + 1 + rng.randint(0, 1)
        delay = rng.uniform(0.0, 0.2)
        resume = ["--resume"] if run.exists() else []
        proc = subprocess.Popen([*_train_args(run, reward), *resume], cwd=REPO, env=_env(tmp_path, 0.05),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _kill_when(proc, lambda n=after: run.exists() if n == 0 else _finished_steps(run) >= n,
                   delay)
        kills.append((after, round(delay, 3), _finished_steps(run)))
        assert not (run / "final").exists()  # killed before the end: no final model yet
        for ck in (run / "checkpoints").glob("step-*"):  # checkpoints are complete or absent
            assert (ck / "trainer" / "state.json").is_file() and (ck / "model.safetensors").is_file(), ck
    print("kills (after steps, delay s, steps done at kill):", kills)
    assert kills[-1][2] < MAX_STEPS, kills

    res = subprocess.run([*_train_args(run, reward), "--resume"], cwd=REPO, env=_env(tmp_path, 0.0),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    a, b = load_file(ref / "final" / "model.safetensors"), load_file(run / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), (k, kills)
    assert _metrics(run) == _metrics(ref), kills
    assert json.loads((run / "checkpoints/best/best.json").read_text()) == json.loads(
        (ref / "checkpoints/best/best.json").read_text())
    stale = [p.name for p in list(run.glob(".*")) + list((run / "checkpoints").glob(".*"))]
    assert stale == [], f"temporary files left after the resumed run: {stale}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reward_killed_at_a_random_moment_resumes_to_identical_bytes(seed, tmp_path, cli):
    data = make_input(tmp_path)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text(REWARD_CONFIG)
    ref_out = tmp_path / "ref.jsonl"
    assert cli("reward", "--config", cfg, "--input", data, "--output", ref_out, "--quiet").code == 0

    rng = random.Random(100 + seed)
    after_chunks, delay = rng.randint(0, 8), rng.uniform(0.0, 0.12)
    out = tmp_path / "out.jsonl"
    args = [EXE, "reward", "--config", str(cfg), "--input", str(data), "--output", str(out), "--quiet"]
    proc = subprocess.Popen(args, cwd=REPO, env=_env(tmp_path, 0.06), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def ready() -> bool:
        side = sidecars(out)
        return after_chunks == 0 or bool(side and len(side[0].read_text().splitlines()) >= 1 + after_chunks)

    _kill_when(proc, ready, delay, poll=0.005)
    assert not out.exists()  # nothing under the real name until complete
    res = subprocess.run(args, cwd=REPO, env=_env(tmp_path, 0.0), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == ref_out.read_bytes()
    assert not sidecars(out) and not list(tmp_path.glob(".out.jsonl.tmp-*"))


KILL_AT_FINAL_WRITE = {
    "train": (["train", "--output-dir", "run", "--max-steps", "2", "--batch-size", "8", "--set", "eval_prompts=2",
               "--set", "eval.max_new_tokens=4", "--quiet"], "final", "run"),
    "ppo": (["train", "--algo", "ppo", "--output-dir", "run", "--max-steps", "2", "--batch-size", "4",
             "--set", "data.task=numbers", "--set", "ppo.max_new_tokens=4", "--set", "ppo.minibatch_size=4",
             "--set", "eval_prompts=2", "--set", "eval.max_new_tokens=4", "--quiet"],
            "final", "run"),
    "quark": (["train", "--algo", "quark", "--output-dir", "run", "--batch-size", "4",
               "--set", "feedback.iterations=1", "--set", "feedback.steps=1", "--set", "feedback.prompts_per_iteration=2",
               "--set", "feedback.samples_per_prompt=2", "--set", "feedback.max_new_tokens=4",
               "--quiet"], "final", "run"),
    "reward": (["reward", "--input", "{data}", "--output", "out/scored.jsonl", "--quiet"], "scored.jsonl", "out"),
    "eval": (["eval", "--model", "tiny", "--output-dir", "ev", "--metrics", "none", "--set", "eval.max_prompts=3",
              "--set", "eval.max_new_tokens=3", "--quiet"], "summary.json", "ev"),
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(KILL_AT_FINAL_WRITE))
def test_sigkill_during_the_final_write_then_resume_leaves_no_temporary(command, tmp_path, tiny_model):
    from lolkit.tasks.colours import records

    from ..conftest import write_jsonl

    args, target, out = KILL_AT_FINAL_WRITE[command]
    data = write_jsonl(tmp_path / "in.jsonl", list(records("test", 0))[:6])
    args = [a.replace("{data}", str(data)) for a in args]
    env = _env(tmp_path, 0.0)
    killed = subprocess.run([sys.executable, str(REPO / "tests" / "kill_on_rename.py"), target, *args], cwd=tmp_path,
                            env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = [p.name for p in (tmp_path / out).rglob(".*tmp-*")]
    assert left, "the kill should leave the final write's temporary behind"
    assert not (tmp_path / out / target).exists()
    again = [*args, "--resume"] if command in ("train", "ppo", "quark") else args
    res = subprocess.run([EXE, *again], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / out / target).exists()
    assert [p.name for p in tmp_path.rglob("*") if ".tmp-" in p.name or ".old-" in p.name] == [], left
