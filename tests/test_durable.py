"""Durable and safe (issue 17): verified checkpoints, caches and progress files; no leftovers after a
resume; nothing outside a run directory deleted or overwritten; a run directory is data, not code;
atomic cache publishing for concurrent writers. CLI errors go through a subprocess of the real CLI."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lolkit.config import TrainConfig, build
from lolkit.errors import LolkitError
from lolkit.io import (
    MANIFEST,
    ProgressLog,
    publish_dir,
    recover_partial,
    staging_dir,
    verify_manifest,
    write_manifest,
)

from .conftest import read_jsonl, run_cli, write_jsonl

REPO = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("lolkit"))
FAST = {"batch_size": 8, "eval_prompts": 4, "optim": {"lr": 3e-3}, "eval": {"max_new_tokens": 6}}


def cli_subprocess(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def one_error_line(res) -> str:
    """The contract of a user error: exit 2, exactly one line on stderr starting 'error: ', no traceback."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    assert "Traceback" not in res.stderr + res.stdout
    return lines[0]


def tree(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def temporaries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp-" in p.name or ".old-" in p.name)


# --------------------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------------------
def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "emptied": lambda p: p.write_bytes(b""),
    "deleted": lambda p: p.unlink(),
    "flipped": _flip,  # same size, different bytes
}


@pytest.mark.parametrize("mode", list(DAMAGE))
def test_manifest_detects_every_damage_mode(tmp_path, mode):
    d = tmp_path / "ck"
    (d / "trainer").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(os.urandom(4096))
    (d / "trainer" / "state.json").write_text('{"step": 2}')
    write_manifest(d)
    assert verify_manifest(d) is None
    DAMAGE[mode](d / "model.safetensors")
    problem = verify_manifest(d)
    assert problem is not None and "model.safetensors" in problem, problem


def test_manifest_missing_or_damaged(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    (d / "a.json").write_text("{}")
    assert "no manifest.json" in verify_manifest(d)
    write_manifest(d)
    (d / MANIFEST).write_text("{not json")
    assert "damaged" in verify_manifest(d)


# --------------------------------------------------------------------------------------------------
# concurrent publishing of a cache entry (item 5)
# --------------------------------------------------------------------------------------------------
def _writer(dest: str, tag: int, barrier, results) -> None:
    tmp = staging_dir(dest)
    (tmp / "payload.bin").write_bytes(bytes([tag]) * 200_000)
    (tmp / "meta.json").write_text(json.dumps({"writer": tag}))
    barrier.wait()  # both writers finish at the same moment
    try:
        results.put((tag, publish_dir(tmp, dest, manifest=True, shared=True)))
    except BaseException as e:  # noqa: BLE001  (reported to the parent)
        results.put((tag, repr(e)))


def test_two_writers_released_by_one_barrier_publish_one_whole_entry(tmp_path):
    """Two processes build the same cache entry and rename it into place at the same moment, 12 times:
    each time exactly one rename wins, the other writer keeps the winner's copy, and the entry is whole
    (its manifest verifies) with no temporary left. The old check-then-rename failed here with
    'directory not empty' whenever both saw no entry."""
    ctx = multiprocessing.get_context("fork")
    for trial in range(12):
        dest = tmp_path / f"ref-{trial}"
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_writer, args=(str(dest), tag, barrier, results)) for tag in (1, 2)]
        for p in procs:
            p.start()
        got = dict(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        assert sorted(got.values()) == [False, True], got
        winner = next(tag for tag, won in got.items() if won)
        assert verify_manifest(dest) is None
        assert json.loads((dest / "meta.json").read_text()) == {"writer": winner}
        assert (dest / "payload.bin").read_bytes() == bytes([winner]) * 200_000
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_shared_publish_keeps_a_verified_entry_and_replaces_a_damaged_one(tmp_path):
    dest = tmp_path / "adv-x"
    first = staging_dir(dest)
    (first / "v.bin").write_bytes(b"first")
    assert publish_dir(first, dest, manifest=True, shared=True) is True
    second = staging_dir(dest)
    (second / "v.bin").write_bytes(b"second")
    assert publish_dir(second, dest, manifest=True, shared=True) is False  # the published copy stays
    assert (dest / "v.bin").read_bytes() == b"first" and not second.exists()
    _flip(dest / "v.bin", 0)
    third = staging_dir(dest)
    (third / "v.bin").write_bytes(b"third")
    assert publish_dir(third, dest, manifest=True, shared=True) is True  # a damaged copy is replaced
    assert (dest / "v.bin").read_bytes() == b"third" and verify_manifest(dest) is None
    assert [p.name for p in tmp_path.iterdir()] == ["adv-x"]


# --------------------------------------------------------------------------------------------------
# leftovers (item 1)
# --------------------------------------------------------------------------------------------------
def test_recover_partial_spares_live_writers_and_other_hosts_in_a_shared_folder(tmp_path):
    from lolkit.io import _HOST

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        names = {
            "live": f".ref-a.tmp-{_HOST}-{live.pid}-x1",
            "dead": f".ref-a.tmp-{_HOST}-{dead.pid}-x2",
            "other_host": f".ref-a.tmp-00000000-{dead.pid}-x3",
            "old_style": ".ref-a.tmp-x4abc",
        }
        for n in names.values():
            (tmp_path / n).mkdir()
        removed = recover_partial(tmp_path, shared=True)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names["live"], names["other_host"],
                                                                      names["old_style"]])
        assert removed == [f"removed {names['dead']}"]
        recover_partial(tmp_path)  # a run's own folder: every dead writer's leftover goes, a live one stays
        assert [p.name for p in tmp_path.iterdir()] == [names["live"]]
    finally:
        live.kill()
        live.wait()


def test_atomic_write_removes_a_killed_writers_leftover_of_the_same_output(tmp_path):
    from lolkit.io import write_jsonl as write

    (tmp_path / ".out.jsonl.tmp-deadbeef-999999999-abc").write_text("half")
    (tmp_path / ".other.jsonl.tmp-deadbeef-999999999-abc").write_text("not ours")
    write(tmp_path / "out.jsonl", [{"a": 1}])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.jsonl.tmp-deadbeef-999999999-abc", "out.jsonl"]


# --------------------------------------------------------------------------------------------------
# progress files (item 2)
# --------------------------------------------------------------------------------------------------
def test_progress_log_drops_lines_whose_bytes_changed(tmp_path, capsys):
    side = tmp_path / ".p.jsonl"
    log = ProgressLog(side, {"format": "t/1", "fingerprint": "abc"})
    with log:
        for j in range(3):
            log.append({"chunk": j, "scores": [[0.5 + j, {"x": j}]]})
    assert [e["chunk"] for e in log.entries()] == [0, 1, 2]
    lines = side.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b"1.5", b"9.5")  # valid JSON, wrong value: only the checksum can tell
    side.write_bytes(b"\n".join(lines) + b'{"chunk": 3, "sco')  # plus a torn last line
    capsys.readouterr()
    assert [e["chunk"] for e in ProgressLog(side, log.header).entries()] == [0, 2]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "1 progress line(s) fail their checksum" in err[0]
    # another work's file is not read, and is replaced by the first new entry
    other = ProgressLog(side, {"format": "t/1", "fingerprint": "zzz"})
    assert list(other.entries()) == []
    with other:
        other.append({"chunk": 0})
    assert [e for e in ProgressLog(side, other.header).entries()] == [{"chunk": 0}]


def test_reward_rescores_a_chunk_whose_progress_line_was_damaged(tmp_path, cli):
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": f"r{i}", "prompt": "p?", "response": "word " * (1 + i % 5)}
                                               for i in range(12)])
    cfg = tmp_path / "r.yaml"
    cfg.write_text("batch_size: 4\ncomponents:\n  d: {type: distinct, n: 1}\n  l: {type: length}\n")
    ref = tmp_path / "ref.jsonl"
    assert cli("reward", "--config", cfg, "--input", data, "--output", ref, "--quiet").code == 0
    out = tmp_path / "out.jsonl"
    import lolkit.scoring as sc

    original = sc.write_records

    def stop(*a, **kw):
        raise KeyboardInterrupt

    sc.write_records = stop  # leave the finished progress file behind, as a kill before the output would
    try:
        with pytest.raises(KeyboardInterrupt):
            sc.score_file(str(cfg), str(data), str(out), quiet=True)
    finally:
        sc.write_records = original
    side = next(tmp_path.glob(".out.jsonl.progress-*"))
    lines = side.read_text().splitlines()
    assert len(lines) == 1 + 3  # header + 3 chunks of 4 responses
    lines[2] = lines[2].replace("[[[", "[[[7", 1)  # still valid JSON; one score of chunk 1 changed on disk
    side.write_text("\n".join(lines) + "\n")
    res = cli("reward", "--config", cfg, "--input", data, "--output", out, "--quiet")
    assert res.code == 0, res
    assert out.read_bytes() == ref.read_bytes()  # chunk 1 scored again, never the changed number
    assert "1 progress line(s) fail their checksum" in res.err and "(8 resumed)" in " ".join(res.out.split())


# --------------------------------------------------------------------------------------------------
# damaged checkpoints (item 2) — offline, online, feedback
# --------------------------------------------------------------------------------------------------
CKPT_DAMAGE = {
    "model-truncated": ("model.safetensors", DAMAGE["truncated"]),
    "model-emptied": ("model.safetensors", DAMAGE["emptied"]),
    "model-deleted": ("model.safetensors", DAMAGE["deleted"]),
    "model-flipped": ("model.safetensors", DAMAGE["flipped"]),
    "optimizer-deleted": ("trainer/optimizer.safetensors", DAMAGE["deleted"]),
    "rng-emptied": ("trainer/rng.safetensors", DAMAGE["emptied"]),
    "state-deleted": ("trainer/state.json", DAMAGE["deleted"]),
    "manifest-deleted": (MANIFEST, DAMAGE["deleted"]),
}


def _train_args(run: Path) -> list[str]:
    return ["train", "--output-dir", str(run), "--max-steps", "4", "--save-every", "2", "--batch-size", "8",
            "--lr", "3e-3", "--set", "eval_prompts=4", "--set", "eval.max_new_tokens=6", "--set",
            "save_total_limit=3", "--quiet"]


def copy_run(src: Path, dest: Path) -> Path:
    """A copy of a run directory that resumes where it lies (config.yaml names its output_dir)."""
    import yaml

    shutil.copytree(src, dest)
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    cfg["output_dir"] = str(dest)
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory, tiny_model):
    """A finished 4-step run with checkpoints at steps 2 and 4, and its final weights."""
    run = tmp_path_factory.mktemp("offline") / "ref"
    res = run_cli(*_train_args(run))
    assert res.code == 0, res
    return run, load_file(run / "final" / "model.safetensors")


def _equal_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("case", list(CKPT_DAMAGE))
def test_a_damaged_checkpoint_is_skipped_in_one_line_and_the_run_resumes_exactly(case, tmp_path, offline_run):
    ref, final = offline_run
    run = copy_run(ref, tmp_path / "run")
    shutil.rmtree(run / "final")  # killed after the step-4 checkpoint, before final/
    rel, damage = CKPT_DAMAGE[case]
    damage(run / "checkpoints" / "step-4" / rel)
    res = run_cli(*_train_args(run), "--resume")
    assert res.code == 0, res
    warnings = [x for x in res.err.splitlines() if x.startswith("warning: ")]
    assert len(warnings) == 1 and "step-4" in warnings[0] and "fails verification" in warnings[0], res.err
    # resumed from step 2: the same final weights as the uninterrupted run, never garbage
    assert _equal_weights(load_file(run / "final" / "model.safetensors"), final)
    assert verify_manifest(run / "checkpoints" / "step-4") is None  # written again
    assert temporaries(run) == []


@pytest.mark.slow  # a subprocess of the real CLI that imports torch
def test_no_intact_checkpoint_left_is_refused_in_one_line_through_the_cli(tmp_path, offline_run):
    ref, _ = offline_run
    run = copy_run(ref, tmp_path / "run")
    shutil.rmtree(run / "final")
    _flip(run / "checkpoints" / "step-4" / "model.safetensors")
    (run / "checkpoints" / "step-2" / "trainer" / "rng.safetensors").write_bytes(b"")
    before = tree(run)
    res = cli_subprocess(*_train_args(run), "--resume", cwd=tmp_path)
    warnings = [x for x in res.stderr.splitlines() if x.startswith("warning: ")]
    assert len(warnings) == 2, res.stderr
    res.stderr = "\n".join(x for x in res.stderr.splitlines() if not x.startswith("warning: "))
    line = one_error_line(res)
    assert "no checkpoint passes verification" in line and "--overwrite" in line
    assert not (run / "final").exists()  # the flipped bytes never become a final model
    assert tree(run) == before


def test_online_and_feedback_resume_skip_a_damaged_checkpoint(tmp_path, tiny_model):
    from lolkit.train import train

    ppo = {**FAST, "batch_size": 4, "micro_batch_size": 2, "data": {"task": "numbers"}, "eval_prompts": 2,
           "ppo": {"max_new_tokens": 4, "epochs": 1, "minibatch_size": 4}, "algo": {"name": "ppo"},
           "max_steps": 4, "save_every": 2, "save_total_limit": 3}
    full = train(build(TrainConfig, {**ppo, "output_dir": str(tmp_path / "ppo-full")}), quiet=True)
    cut = copy_run(full, tmp_path / "ppo-cut")
    shutil.rmtree(cut / "final")
    _flip(cut / "checkpoints" / "step-4" / "trainer" / "value_head.safetensors")
    train(build(TrainConfig, {**ppo, "output_dir": str(cut)}), resume=True, quiet=True)
    assert _equal_weights(load_file(full / "final" / "model.safetensors"), load_file(cut / "final" / "model.safetensors"))

    fb = {"algo": {"name": "quark"}, "batch_size": 4, "micro_batch_size": 2,
          "save_total_limit": 3, "feedback": {"iterations": 2, "steps": 1, "prompts_per_iteration": 3,
                                              "samples_per_prompt": 2, "max_new_tokens": 4}}
    full = train(build(TrainConfig, {**fb, "output_dir": str(tmp_path / "q-full")}), quiet=True)
    cut = copy_run(full, tmp_path / "q-cut")
    shutil.rmtree(cut / "final")
    # the pool is part of the checkpoint (trainer/state.json): a changed byte fails the manifest, iteration 2 is redone
    state = cut / "checkpoints" / "step-2" / "trainer" / "state.json"
    text = state.read_text()
    assert '"parsed": true' in text
    state.write_text(text.replace('"parsed": true', '"parsed": false', 1))
    train(build(TrainConfig, {**fb, "output_dir": str(cut)}), resume=True, quiet=True)
    assert _equal_weights(load_file(full / "final" / "model.safetensors"), load_file(cut / "final" / "model.safetensors"))
    assert read_jsonl(cut / "iter-2" / "pool.jsonl") == read_jsonl(full / "iter-2" / "pool.jsonl")


def test_a_damaged_engine_cache_entry_is_recomputed(tmp_path, tiny_model, lolkit_cache, capsys):
    from lolkit.train import train

    cache = tmp_path / "cache"
    layer = {**FAST, "algo": {"name": "a_lol", "cache_dir": str(cache)}, "max_steps": 2, "save_every": 0}
    a = train(build(TrainConfig, {**layer, "output_dir": str(tmp_path / "a")}), quiet=True)
    (entry,) = cache.glob("ref-*")
    assert verify_manifest(entry) is None
    _flip(entry / "reference.safetensors")
    capsys.readouterr()
    b = train(build(TrainConfig, {**layer, "output_dir": str(tmp_path / "b")}), quiet=True)
    assert "fails verification" in capsys.readouterr().err
    assert json.loads((b / "engine.json").read_text())["reference"]["cached"] is False
    assert verify_manifest(entry) is None
    assert _equal_weights(load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors"))


# --------------------------------------------------------------------------------------------------
# nothing outside the run directory is deleted or overwritten (item 3)
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow  # a subprocess of the real CLI that imports torch
def test_overwrite_refuses_a_folder_that_is_not_a_run_a_link_and_the_working_directory(tmp_path, tiny_model):
    folder = tmp_path / "project"
    (folder / "src").mkdir(parents=True)
    (folder / "important.txt").write_text("keep me")
    (folder / "src" / "code.py").write_text("x = 1")
    before = tree(tmp_path)
    line = one_error_line(cli_subprocess("train", "--output-dir", folder, "--overwrite", "--max-steps", "1",
                                         "--quiet", cwd=tmp_path))
    assert "holds no lolkit run" in line
    assert tree(tmp_path) == before

    # a real run, linked: the link is refused, the run behind it survives
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"algo": "nll"}')
    (tmp_path / "link").symlink_to(run, target_is_directory=True)
    before = tree(tmp_path)
    res = run_cli("train", "--output-dir", tmp_path / "link", "--overwrite", "--max-steps", "1", "--quiet")
    assert res.code == 2 and "is a symbolic link" in res.err, res
    # the working directory itself, even when it is a run
    old = Path.cwd()
    os.chdir(run)
    try:
        res = run_cli("train", "--output-dir", ".", "--overwrite", "--max-steps", "1", "--quiet")
    finally:
        os.chdir(old)
    assert res.code == 2 and "holds the working directory" in res.err, res
    assert tree(tmp_path) == before


def test_tfidf_save_state_never_overwrites_a_foreign_file(tmp_path, cli):
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p?", "response": "some words here"}])
    victim = tmp_path / "notes.json"
    victim.write_text('{"mine": true}')
    cfg = tmp_path / "r.yaml"
    cfg.write_text(f"components:\n  t: {{type: tfidf, save_state: {victim}}}\n")
    res = cli("reward", "--config", cfg, "--input", data, "--output", tmp_path / "o.jsonl", "--quiet")
    assert res.code == 2 and "not a lolkit TF-IDF state file" in res.err, res
    assert victim.read_text() == '{"mine": true}' and not (tmp_path / "o.jsonl").exists()
    state = tmp_path / "state.json"
    cfg.write_text(f"components:\n  t: {{type: tfidf, save_state: {state}}}\n")
    for _ in range(2):  # lolkit's own state file is replaced
        assert cli("reward", "--config", cfg, "--input", data, "--output", tmp_path / "o.jsonl", "--quiet").code == 0
    assert json.loads(state.read_text())["format"] == "lolkit-tfidf/1"


def test_eval_never_replaces_files_it_did_not_write(tmp_path, tiny_model, cli):
    out = tmp_path / "ev"
    out.mkdir()
    (out / "summary.json").write_text('{"their": "numbers"}')
    res = cli("eval", "--model", "tiny", "--output-dir", out, "--overwrite", "--quiet", "--set", "eval.max_prompts=2")
    assert res.code == 2 and "not a lolkit evaluation summary" in res.err, res
    assert (out / "summary.json").read_text() == '{"their": "numbers"}'


# --------------------------------------------------------------------------------------------------
# a run directory is data, not code (item 4)
# --------------------------------------------------------------------------------------------------
PAYLOAD = """\
from pathlib import Path
Path({marker!r}).write_text("imported")
"""


def _fake_run(root: Path, tiny_model: str, marker: Path, reward: str | None = None) -> Path:
    """A downloaded run folder: config.yaml asking for trust_remote_code, final/ a tiny model whose
    config.json maps AutoModelForCausalLM to its own payload module."""
    from lolkit.config import dump_yaml

    run = root / "downloaded"
    shutil.copytree(tiny_model, run / "final", ignore=shutil.ignore_patterns(MANIFEST))
    (run / "final" / "payload.py").write_text(PAYLOAD.format(marker=str(marker)) + "class Evil:\n    pass\n")
    conf = json.loads((run / "final" / "config.json").read_text())
    conf["auto_map"] = {"AutoConfig": "payload.Evil", "AutoModelForCausalLM": "payload.Evil"}
    (run / "final" / "config.json").write_text(json.dumps(conf))
    cfg = build(TrainConfig, {"model": {"trust_remote_code": True}, "reward": reward, "output_dir": str(run)})
    (run / "config.yaml").write_text(dump_yaml(cfg))
    (run / "run.json").write_text(json.dumps({"algo": "nll", "data": "builtin:colours"}))
    return run


@pytest.mark.slow  # a subprocess of the real CLI that imports torch
def test_eval_of_a_run_folder_never_runs_its_code(tmp_path, tiny_model):
    marker = tmp_path / "pwned.txt"
    run = _fake_run(tmp_path, tiny_model, marker)
    res = cli_subprocess("eval", "--model", run, "--quiet", "--metrics", "none", "--set", "eval.max_prompts=2",
                         "--set", "eval.max_new_tokens=2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not marker.exists(), "eval imported the run folder's own code"
    assert (run / "eval" / "summary.json").is_file()


@pytest.mark.slow  # a subprocess of the real CLI that imports torch
def test_eval_does_not_import_a_reward_named_by_the_run_folder(tmp_path, tiny_model):
    marker = tmp_path / "pwned.txt"
    run = _fake_run(tmp_path, tiny_model, marker, reward="payload_reward:score")
    (tmp_path / "payload_reward.py").write_text(PAYLOAD.format(marker=str(marker))
                                                + "def score(prompts, responses):\n    return [0.0] * len(responses)\n")
    before = tree(tmp_path)
    line = one_error_line(cli_subprocess("eval", "--model", run, "--quiet", "--set", "eval.max_prompts=2",
                                         cwd=tmp_path))
    assert "runs code" in line and "--reward payload_reward:score" in line, line
    assert not marker.exists() and tree(tmp_path) == before


def test_pickle_weights_are_refused_unless_allowed(tmp_path, tiny_model):
    from transformers import AutoModelForCausalLM

    from lolkit.models import ModelConfig, load_model

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder, ignore=shutil.ignore_patterns("*.safetensors", MANIFEST))
    weights = load_file(Path(tiny_model) / "model.safetensors")
    torch.save(weights, folder / "pytorch_model.bin")  # transformers 5 only writes safetensors itself
    assert (folder / "pytorch_model.bin").is_file() and not list(folder.glob("*.safetensors"))
    with pytest.raises(LolkitError, match="holds only pickle weights .*model.allow_pickle=true"):
        load_model(ModelConfig(name=str(folder)), trainable=False)
    model, _, _ = load_model(ModelConfig(name=str(folder), allow_pickle=True), trainable=False)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True))


# --------------------------------------------------------------------------------------------------
# issue 16.5 / 16.7 / 16.9
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow  # subprocesses of the real CLI that import torch (tests/bad_inputs has the in-process cases)
@pytest.mark.parametrize("algo", ["ppo", "quark"])
def test_online_and_feedback_runs_with_a_bad_reward_leave_no_run_directory(algo, tmp_path, tiny_model):
    args = ["train", "--algo", algo, "--reward", "no_such_module:score", "--output-dir", "run", "--quiet"]
    line = one_error_line(cli_subprocess(*args, cwd=tmp_path))
    assert "cannot import module 'no_such_module'" in line
    assert list(tmp_path.iterdir()) == []


def test_a_fresh_run_failing_in_its_first_rollout_leaves_no_run_directory(tmp_path, tiny_model, cli):
    (tmp_path / "bad.py").write_text("def score(prompt, response):\n    raise ValueError('no score for ' + prompt)\n")
    res = cli("train", "--algo", "ppo", "--reward", f"{tmp_path}/bad.py:score", "--output-dir", tmp_path / "run",
              "--max-steps", "2", "--set", "ppo.max_new_tokens=2", "--quiet")
    assert res.code == 2 and "raised ValueError: no score for" in res.err, res
    assert not (tmp_path / "run").exists()


def test_lora_final_loads_with_plain_peft_from_another_directory(tmp_path, tiny_model, cli, monkeypatch):
    from peft import AutoPeftModelForCausalLM

    work = tmp_path / "work"
    shutil.copytree(tiny_model, work / "base")
    monkeypatch.chdir(work)
    res = cli("train", "--algo", "nll", "--model", "base", "--lora", "--output-dir", "runs/l", "--max-steps", "1",
              "--set", "model.lora_r=2", "--set", "eval_prompts=2", "--quiet")
    assert res.code == 0, res
    final = work / "runs" / "l" / "final"
    base = json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base == str(work / "base")
    monkeypatch.chdir(tmp_path)  # somewhere the relative name "base" means nothing
    model = AutoPeftModelForCausalLM.from_pretrained(final)
    assert model.peft_config["default"].base_model_name_or_path == str(work / "base")


def test_every_model_option_takes_a_run_directory(tmp_path, tiny_model, cli):
    run = tmp_path / "sft"
    assert cli("train", "--algo", "nll", "--output-dir", run, "--max-steps", "1", "--quiet",
               "--set", "eval_prompts=2").code == 0
    res = cli("train", "--algo", "nll", "--model", run, "--output-dir", tmp_path / "next", "--max-steps", "1",
              "--quiet", "--set", "eval_prompts=2")
    assert res.code == 0, res
    assert json.loads((tmp_path / "next" / "run.json").read_text())["model_path"] == str(run / "final")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What colour is a banana?"}])
    res = cli("generate", "--model", run, "--data", prompts, "--output", tmp_path / "g.jsonl", "--num-samples", "1",
              "--max-new-tokens", "3", "--quiet")
    assert res.code == 0, res
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "run.json").write_text('{"algo": "nll"}')
    res = cli("generate", "--model", unfinished, "--data", prompts, "--output", tmp_path / "h.jsonl", "--quiet")
    assert res.code == 2 and "a run directory without final/" in res.err, res


PER_EXAMPLE = "def score(prompt, response, meta):\n    return len(response) / 10 + meta.get('x', 0)\n"
BATCHED = "def score(prompts, responses, references):\n    return [float(len(r)) for r in responses]\n"


def test_reward_functions_from_the_command_line_per_example_and_batched(tmp_path, cli):
    (tmp_path / "one.py").write_text(PER_EXAMPLE)
    (tmp_path / "many.py").write_text(BATCHED)
    (tmp_path / "odd.py").write_text("def score(text):\n    return 1.0\n")
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "p", "response": "abcd", "meta": {"x": 1}},
                                               {"id": "b", "prompt": "p", "response": "xy"}])
    out = tmp_path / "o.jsonl"
    assert cli("reward", "--reward", f"{tmp_path}/one.py:score", "--input", data, "--output", out, "--quiet").code == 0
    rows = read_jsonl(out)
    assert [r["reward"] for r in rows] == [1.4, 0.2] and rows[0]["rewards"] == {"score": 1.4}
    assert cli("reward", "--reward", f"{tmp_path}/many.py:score", "--input", data, "--output", out, "--quiet").code == 0
    assert [r["reward"] for r in read_jsonl(out)] == [4.0, 2.0]
    assert cli("reward", "--reward", "tests.reward_helpers:echo_meta", "--input", data, "--output", out,
               "--quiet").code == 0  # importable module (pytest puts the repository on the path)
    assert [r["reward"] for r in read_jsonl(out)] == [1.0, 0.0]
    res = cli("reward", "--reward", f"{tmp_path}/odd.py:score", "--input", data, "--output", out, "--quiet")
    assert res.code == 2 and "name its first two parameters (prompt, response)" in res.err, res


def test_the_current_directory_is_not_put_on_the_import_path(tmp_path):
    (tmp_path / "localmod.py").write_text("def score(prompt, response):\n    return 1.0\n")
    data = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "p", "response": "r"}])
    line = one_error_line(cli_subprocess("reward", "--reward", "localmod:score", "--input", data, "--output", "o.jsonl",
                                         cwd=tmp_path))
    assert "cannot import module 'localmod'" in line and "localmod.py:score" in line
    res = cli_subprocess("reward", "--reward", "localmod.py:score", "--input", data, "--output", "o.jsonl", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert read_jsonl(tmp_path / "o.jsonl")[0]["reward"] == 1.0
