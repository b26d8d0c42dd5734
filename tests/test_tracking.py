"""Experiment trackers (offline), plain progress lines off a terminal, and the per-token / per-sequence
training losses every loop logs."""

import glob
import json
import math
import os
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lolkit import progress, tracking
from lolkit.tracking import loss_views

from .conftest import read_jsonl


def test_loss_views_goldens():
    # a step of 4 sequences with 10 response tokens and summed loss 8: 2 per sequence, 0.8 per token
    assert loss_views(8.0, 4, 10) == {"loss_per_seq": 2.0, "loss_per_token": 0.8}


def test_a_missing_tracker_names_its_extra(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(tracking, "installed", lambda module: module != "wandb")
    res = cli("train", "--report-to", "tensorboard,wandb", "--max-steps", "1", "--output-dir", tmp_path / "run")
    assert res.code == 2 and res.err.strip() == "error: report_to: wandb is not installed; pip install 'lolkit[wandb]'"
    assert not (tmp_path / "run").exists()
    tracking.check_trackers(["tensorboard", "mlflow", "trackio"])  # the others pass


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_plain_progress_lines(monkeypatch):
    import io

    monkeypatch.delenv("LOLKIT_PROGRESS_EVERY", raising=False)
    out, clock = io.StringIO(), _Clock()
    p = progress.PlainLines("train", 100, stream=out, clock=clock)
    for step in range(1, 101):
        clock.t = step * 0.5  # 2 steps per second
        p.update(step, f"loss {1 / step:.4f}")
    lines = out.getvalue().splitlines()
    # the first step, every 5 % (5 steps), and the last: 1, 6, 11, ..., 96, 100
    assert len(lines) == 21
    assert lines[0] == "train 1/100 (1%) | loss 1.0000 | 2 it/s | elapsed 0s | ETA 50s"
    assert lines[-1] == "train 100/100 (100%) | loss 0.0100 | 2 it/s | elapsed 50s | done"
    # every 30 seconds instead, resumed from step 40 of 100
    monkeypatch.setenv("LOLKIT_PROGRESS_EVERY", "30s")
    out, clock = io.StringIO(), _Clock()
    p = progress.PlainLines("train", 100, start=40, stream=out, clock=clock)
    for step in range(41, 101):
        clock.t = (step - 40) * 1.0
        p.update(step)
    assert [ln.split(" | ")[0] for ln in out.getvalue().splitlines()] == \
        ["train 41/100 (41%)", "train 71/100 (71%)", "train 100/100 (100%)"]
    assert "| 1 it/s | elapsed 31s | ETA 29s" in out.getvalue().splitlines()[1]
    # off the main process: silent
    monkeypatch.setenv("RANK", "1")
    assert progress._plain("train", 10, 0, False) is None


def _wandb_records(path):
    """(kind, {key: value}) of the records of an offline .wandb file (LevelDB-style log of protobufs)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, out = Path(path).read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if n == 0 and kind == 0:
            break
        buf += data[pos : pos + n]
        pos += n
        if kind in (1, 4):  # a whole record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            which = rec.WhichOneof("record_type")
            if which == "history":
                out.append(("history", {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                        for i in rec.history.item}))
            elif which == "config":
                out.append(("config", {i.key: json.loads(i.value_json) for i in rec.config.update}))
    return out


@pytest.mark.slow
def test_trackers_offline_and_progress_off_a_terminal(tmp_path, tiny_model):
    """One training run reports to all four trackers in their offline modes; `lolkit eval` adds its summary
    to the same tracker runs. stdout is a pipe: the progress comes as plain lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MLFLOW_", "TRACKIO_"))}
    env.update(TRACKIO_DIR=str(tmp_path / "trackio"), WANDB_SILENT="true", WANDB_CONFIG_DIR=str(tmp_path / "wb"),
               WANDB_CACHE_DIR=str(tmp_path / "wb"), WANDB_DATA_DIR=str(tmp_path / "wb"), HF_HUB_OFFLINE="1",
               LOLKIT_PROGRESS_EVERY="2")
    run = tmp_path / "run"
    lolkit = [sys.executable, "-m", "lolkit.cli"]
    res = subprocess.run(lolkit + ["train", "--model", str(tiny_model), "--max-steps", "4", "--batch-size", "4",
                                   "--eval-every", "2", "--set", "eval_prompts=2", "--set", "eval.max_new_tokens=4",
                                   "--report-to", "tensorboard,wandb,mlflow,trackio", "--output-dir", str(run)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("train ")]
    assert [ln.split(" | ")[0] for ln in lines] == ["train 1/4 (25%)", "train 3/4 (75%)", "train 4/4 (100%)"]
    assert "loss_per_token" in lines[0] and "it/s" in lines[0] and lines[-1].endswith("done")
    res = subprocess.run(lolkit + ["eval", "--model", str(run), "--max-new-tokens", "4", "--set", "eval.max_prompts=4",
                                   "--metrics", "none"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_jsonl(run / "metrics.jsonl")
    summary = json.loads((run / "eval" / "summary.json").read_text())
    want = {r["step"]: r["loss_per_token"] for r in rows}

    # tensorboard: every row's scalars by step, and the eval summary at the last step
    scalars = _tensorboard_scalars(run)
    assert scalars["loss_per_token"] == pytest.approx(want, rel=1e-6)
    assert scalars["eval/reward_mean"] == pytest.approx({4: summary["reward_mean"]})

    # mlflow: a file store in RUN/mlruns; training and eval in one run (its id kept in trackers.json)
    ids = json.loads((run / "trackers.json").read_text())
    (mlrun,) = glob.glob(str(run / "mlruns" / "*" / ids["mlflow"]))
    logged = {int(ln.split()[2]): float(ln.split()[1])
              for ln in Path(mlrun, "metrics", "loss_per_token").read_text().splitlines()}
    assert logged == pytest.approx(want, rel=1e-6)
    assert Path(mlrun, "params", "optim.lr").read_text() == str(_config(run)["optim"]["lr"])
    assert float(Path(mlrun, "metrics", "eval", "reward_mean").read_text().split()[1]) == \
        pytest.approx(summary["reward_mean"])

    # wandb: offline runs in RUN/wandb with one id: the config, each row, then the eval summary
    records = [r for f in sorted(glob.glob(str(run / "wandb" / "offline-run-*" / "run-*.wandb")))
               for r in _wandb_records(f)]
    assert all(Path(f).name == f"run-{ids['wandb']}.wandb" for f in glob.glob(str(run / "wandb" / "*" / "*.wandb")))
    config = {k: v for kind, d in records if kind == "config" for k, v in d.items()}
    assert config["algo.name"] == "nll" and config["optim.lr"] == _config(run)["optim"]["lr"]
    history = [d for kind, d in records if kind == "history"]
    assert {int(d["_step"]): d["loss_per_token"] for d in history if "loss_per_token" in d} == pytest.approx(want)
    assert [d["eval/reward_mean"] for d in history if "eval/reward_mean" in d] == pytest.approx([summary["reward_mean"]])

    # trackio: its local database, one run named after the run directory
    db = sqlite3.connect(tmp_path / "trackio" / "lolkit.db")
    got = {}
    for step, metrics in db.execute("select step, metrics from metrics where run_name = ?", (run.name,)):
        got.setdefault(step, {}).update(json.loads(metrics))
    assert {s: m["loss_per_token"] for s, m in got.items() if "loss_per_token" in m} == pytest.approx(want)
    assert got[4]["eval/reward_mean"] == pytest.approx(summary["reward_mean"])
    (cfg,) = db.execute("select config from configs where run_name = ?", (run.name,)).fetchone()
    assert json.loads(cfg)["algo.name"] == "nll"


def _tensorboard_scalars(run) -> dict:
    """{tag: {step: value}} of every event file in RUN/tensorboard."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer().AddRunsFromDirectory(str(run / "tensorboard"))
    mux.Reload()
    scalars: dict = {}
    for name in mux.Runs():
        for tag in mux.GetAccumulator(name).Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in mux.Scalars(name, tag)})
    return scalars


def _config(run):
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())


def test_offline_loop_logs_losses_per_token_and_per_sequence(tmp_path, tiny_model):
    from lolkit.config import TrainConfig, build
    from lolkit.train import train

    run = train(build(TrainConfig, {"algo": {"name": "nll"}, "model": {"name": str(tiny_model)}, "max_steps": 2,
                                    "batch_size": 4, "eval_every": 1, "eval_prompts": 4, "save_every": 0,
                                    "output_dir": str(tmp_path / "run")}), quiet=True)
    rows = read_jsonl(run / "metrics.jsonl")
    from lolkit.models import ModelConfig, load_model

    vocab = load_model(ModelConfig(name=str(tiny_model)), trainable=False)[0].config.vocab_size
    first = rows[0]
    # `loss` keeps its meaning (per sequence: Σ over tokens, mean over the step's examples)
    assert first["loss_per_seq"] == pytest.approx(first["loss"])
    # an untrained tiny model predicts nearly uniformly: about log V nats per token
    assert first["loss_per_token"] == pytest.approx(math.log(vocab), rel=0.05)
    assert first["loss_per_seq"] / first["loss_per_token"] > 2  # several tokens per response


def _close(a, b):
    return a == pytest.approx(b, rel=1e-5, abs=1e-9)


def test_every_loop_logs_losses_per_token_and_per_sequence(tmp_path, tiny_model):
    """PPO (per-token objective), Quark (per-token) and SELM (per-unit) through the feedback driver, and
    CoLA's stages: each row has both views, and the one matching the loop's own normaliser equals `loss`."""
    from lolkit.cola.rl import RLOptions, train_rl
    from lolkit.cola.train import BCOptions, WorldOptions, train_bc, train_world
    from lolkit.config import TrainConfig, build
    from lolkit.train import train

    def rows_of(algo, **extra):
        cfg = build(TrainConfig, {"algo": {"name": algo}, "model": {"name": str(tiny_model)}, "batch_size": 4,
                                  "micro_batch_size": 2, "output_dir": str(tmp_path / algo), "data": {"task": "numbers"},
                                  "eval_prompts": 2, "eval": {"max_new_tokens": 4}, **extra})
        return read_jsonl(train(cfg, quiet=True) / "metrics.jsonl")

    ppo = rows_of("ppo", max_steps=2, ppo={"max_new_tokens": 5, "epochs": 1, "minibatch_size": 4},
                  report_to=["tensorboard"])
    feedback = {"iterations": 1, "steps": 1, "prompts_per_iteration": 3, "samples_per_prompt": 3, "max_new_tokens": 5}
    quark = rows_of("quark", feedback=feedback)
    selm = rows_of("selm", feedback=feedback, report_to=["tensorboard"])
    for algo, rows in (("ppo", ppo), ("selm", selm)):  # the online and feedback loops report to trackers too
        assert _tensorboard_scalars(tmp_path / algo)["loss_per_token"] == \
            pytest.approx({r["step"]: r["loss_per_token"] for r in rows}, rel=1e-6)
    for row in ppo + quark:  # these normalise by tokens
        assert _close(row["loss_per_token"], row["loss"]) and abs(row["loss_per_seq"]) >= abs(row["loss_per_token"])
    for row in selm:  # SELM normalises by preference units
        assert _close(row["loss_per_seq"], row["loss"])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"the colour of item {i} is {c}\n" for i, c in enumerate(["red", "green", "blue"] * 4)))
    run = tmp_path / "cola"
    train_world(WorldOptions(str(run), str(tiny_model), str(corpus), steps=2, batch_size=4), quiet=True)
    train_bc(BCOptions(str(run), steps=2, batch_size=4), quiet=True)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"the colour of item {i} is"}) + "\n" for i in range(4)))
    train_rl(RLOptions(str(run), "numbers", str(prompts), steps=1, prompts_per_step=2, samples_per_prompt=2,
                       minibatch_size=4, max_new_tokens=4, eval_prompts=2), quiet=True)
    for stage in ("world", "policy_bc", "policy_rl"):
        for row in read_jsonl(run / stage / "metrics.jsonl"):
            assert _close(row["loss_per_token"], row["loss"]), stage  # CoLA's losses are means over actions
            assert row["loss_per_seq"] >= row["loss_per_token"] or row["loss"] < 0, stage
