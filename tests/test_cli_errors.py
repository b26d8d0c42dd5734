"""The command line through a subprocess of the real CLI: every usage error of every command is one line
``error: …`` with exit code 2 (typer's own errors included: it bundles its own click), ``--version`` works,
and Ctrl-C (SIGINT) exits 130 with one line, leaves no partial output and can be re-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("lolkit"))

USAGE_ERRORS = [
    (["train", "--algoo", "a_lol"], "lolkit train: No such option: --algoo"),
    (["train", "--max-steps", "abc"], "Invalid value for '--max-steps'"),
    (["eval"], "lolkit eval: Missing option '--model'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["preprocess", "nosuch"], "lolkit preprocess: No such command 'nosuch'"),
    (["preprocess", "jsonl"], "lolkit preprocess jsonl: Missing argument"),
    (["preprocess", "hh", "--kind"], "lolkit preprocess hh: Option '--kind' requires an argument"),
    (["reward", "--bogus"], "lolkit reward: No such option: --bogus"),
    (["generate", "--model", "tiny"], "lolkit generate: Missing option"),
    (["aggregate", "--output-dir", "x"], "lolkit aggregate: Missing argument"),
    (["compare", "a"], "lolkit compare: Missing argument"),
    (["demo", "--max-steps", "1.5"], "Invalid value for '--max-steps'"),
    (["tiny-model", "d", "--layers", "x"], "Invalid value for '--layers'"),
    (["cola", "world", "--steps", "x"], "lolkit cola world: Invalid value for '--steps'"),
    (["cola", "nosuch"], "lolkit cola: No such command 'nosuch'"),
    (["--nosuch"], "lolkit: No such option: --nosuch"),
]


def _run(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80"}, **kw)


def _one_error_line(out: subprocess.CompletedProcess, code: int = 2) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    return lines[0]


@pytest.mark.parametrize("args, message", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_are_one_line_exit_2(args, message, tmp_path):
    line = _one_error_line(_run(args, tmp_path))
    assert line.startswith("error: ") and message in line, line
    assert "--help" in line  # where to read the command's options
    assert list(tmp_path.iterdir()) == []


def test_version_and_no_arguments(tmp_path):
    from lolkit import __version__

    out = _run(["--version"], tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"lolkit {__version__}"
    out = _run([], tmp_path)  # the help, as click does for a group without a command: exit 2, no error line
    assert out.returncode == 2 and "Usage: lolkit" in out.stdout and out.stderr == ""


def _interrupt_when(proc: subprocess.Popen, ready, timeout: float = 90) -> subprocess.CompletedProcess:
    """SIGINT ``proc`` as soon as ``ready()`` holds; it must still be running then."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    assert proc.poll() is None, f"the command ended before Ctrl-C: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([EXE, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def test_ctrl_c_during_preprocess_exits_130_and_leaves_nothing(tmp_path):
    rows = [{"id": i, "prompt": f"question {i}?", "response": f"answer {i}."} for i in range(400_000)]
    data = write_jsonl(tmp_path / "big.jsonl", rows)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start(["preprocess", "jsonl", str(data), "--output", str(out_dir / "norm.jsonl")], tmp_path)
    started = time.time()
    res = _interrupt_when(proc, lambda: time.time() - started > 1.5)
    line = _one_error_line(res, 130)
    assert line.startswith("interrupted")
    assert list(out_dir.iterdir()) == []  # no output, no temporary


def test_ctrl_c_during_reward_exits_130_and_a_rerun_finishes(tmp_path):
    from .rewards.test_rewards_resume import CONFIG, make_input, sidecars

    data = make_input(tmp_path)
    cfg = tmp_path / "slow.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "o" / "scored.jsonl"
    out.parent.mkdir()
    args = ["reward", "--config", str(cfg), "--input", str(data), "--output", str(out), "--quiet"]
    proc = _start(args, REPO, {"LOLKIT_TEST_SCORE_DELAY": "0.25"})
    res = _interrupt_when(proc, lambda: bool(sidecars(out)))
    assert _one_error_line(res, 130).startswith("interrupted")
    assert not out.exists() and not list(out.parent.glob(f".{out.name}.tmp-*"))
    done = subprocess.run([EXE, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(out)) == 40 and not sidecars(out)


def test_ctrl_c_during_train_exits_130_and_resumes(tmp_path, tiny_model):
    run = tmp_path / "run"
    args = ["train", "--output-dir", str(run), "--max-steps", "40", "--save-every", "2", "--batch-size", "8",
            "--quiet"]
    proc = _start(args, tmp_path)
    res = _interrupt_when(proc, lambda: (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()))
    assert _one_error_line(res, 130).startswith("interrupted")
    assert not (run / "final").exists()
    assert not [p for p in run.rglob(".*tmp-*")]
    done = subprocess.run([EXE, *args, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (run / "final").is_dir() and read_jsonl(run / "metrics.jsonl")[-1]["step"] == 40


def _commands():
    import typer

    from lolkit.cli import app

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            yield path, cmd
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    return list(walk(typer.main.get_command(app), []))


def test_help_shows_every_default_and_fits_80_columns(tmp_path):
    """Every option without a plain default says what happens when it is absent; help stays readable in an
    80-column terminal (one help run per command, through the real CLI)."""
    for path, cmd in _commands():
        for p in cmd.params:
            if getattr(p, "required", False) or p.name == "help" or p.default is not None:
                continue
            text = getattr(p, "help", "") or ""
            assert "[default:" in text or "(default:" in text, f"lolkit {' '.join(path)} {p.name}: {text!r}"
        out = _run([*path, "--help"], tmp_path)
        assert out.returncode == 0, out.stderr
        too_wide = [line for line in out.stdout.splitlines() if len(line) > 80]
        assert not too_wide, (path, too_wide[:3])
        assert "[bold]" not in out.stdout and "[/" not in out.stdout  # no rich markup printed literally


def test_read_only_output_directory_is_one_line(tmp_path, monkeypatch, cli):
    """A folder the user cannot write to fails before any work, in one line (as root, permissions cannot be
    taken away, so the permission answer is simulated; a real read-only mount answers the same way)."""
    import lolkit.io

    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "What colour is a lime?", "response": "a lime is green."}])
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(lolkit.io.os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    for args in (["preprocess", "jsonl", src, "--output", locked / "out.jsonl"],
                 ["reward", "--input", src, "--output", locked / "out.jsonl", "--quiet"],
                 ["preprocess", "builtin", "--output-dir", locked / "data"],
                 ["aggregate", tmp_path, "--output-dir", locked / "agg"]):
        res = cli(*args)
        assert res.code == 2 and len(res.err.strip().splitlines()) == 1, res.err
        assert res.err.startswith(f"error: {locked}: directory is not writable (--output"), res.err
    assert list(locked.iterdir()) == []


def test_a_write_refused_by_the_system_is_one_line(tmp_path, monkeypatch, cli):
    """Where the early check cannot see it coming (a read-only mount, a full disk), the writer's own error is
    still one line, and no temporary is left."""
    import tempfile

    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "What colour is a lime?", "response": "a lime is green."}])

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    res = cli("preprocess", "jsonl", src, "--output", tmp_path / "out" / "norm.jsonl")
    assert res.code == 2 and res.err.strip() == f"error: {tmp_path / 'out'}: directory is not writable (writing norm.jsonl)"

    def full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(tempfile, "mkstemp", full)
    res = cli("preprocess", "jsonl", src, "--output", tmp_path / "out" / "norm.jsonl")
    assert res.code == 2 and res.err.strip() == f"error: {tmp_path / 'x'}: No space left on device"
    assert not list((tmp_path / "out").glob(".*"))
