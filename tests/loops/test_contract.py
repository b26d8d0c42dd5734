"""The run lifecycle's contract, checked the same way over every loop (lolkit.run): the offline loop, PPO,
the feedback loop (Quark), and CoLA's three stages.

* killed and resumed == uninterrupted, bitwise on CPU: a run dies after its step-2 metrics row is written
  and before its step-2 checkpoint (so the resume must drop that row and redo the step from step 1);
  the slow part kills a CLI process with SIGKILL while it publishes the step-2 checkpoint;
* a bad input leaves no directory (here a reward that raises once the run directory exists);
* ``--overwrite`` semantics: an existing run is refused without it and left as it was; with it, the run
  is replaced; a folder that is not a lolkit run is never removed;
* gradient accumulation 1 × 8 == 8 × 1 where the loop accumulates (offline, PPO, feedback; CoLA's stages
  take one batch per step).

Tiny model, 3 steps per run, one reference run per loop shared by the checks (module fixtures).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lolkit.config import TrainConfig, build
from lolkit.errors import LolkitError
from lolkit.run import Run, read_metrics

from ..conftest import read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[2]
STEPS = 3
TIMING = {"step_time", "iteration_time", "tokens_per_s", "train_seconds"}
RAISING_REWARD = "def score(prompt, response):\n    raise ValueError('no score for ' + prompt)\n"


@dataclass
class Loop:
    """How the contract drives one loop: ``train(root, **flags)`` runs it into ``root``; ``stage`` is the
    run directory inside ``root`` (CoLA: a stage's folder); ``cli`` the same run as CLI arguments."""

    name: str
    train: object
    stage: str = ""
    cli: list[str] = field(default_factory=list)
    micro: object = None  # micro(root, size): the run with micro-batches of `size` (accumulating loops)
    needs: str | None = None  # a CoLA stage built on another one: its fixture is copied into root first

    def run_dir(self, root: Path) -> Path:
        return root / self.stage if self.stage else root


def _train_loop(layer: dict):
    from lolkit.train import train

    def run(root: Path, resume=False, overwrite=False, reward=None, **over):
        cfg = build(TrainConfig, {**layer, **over, "output_dir": str(root), "save_every": 1,
                                  **({"reward": reward} if reward else {})})
        return train(cfg, resume=resume, overwrite=overwrite, quiet=True)

    return run


OFFLINE = {"algo": {"name": "nll"}, "max_steps": STEPS, "batch_size": 8, "eval_prompts": 2,
           "eval": {"max_new_tokens": 4}, "optim": {"lr": 3e-3}}
PPO = {"algo": {"name": "ppo"}, "max_steps": STEPS, "batch_size": 4, "micro_batch_size": 2, "data": {"task": "numbers"},
       "eval_prompts": 2, "eval": {"max_new_tokens": 4}, "optim": {"lr": 1e-3},
       "ppo": {"max_new_tokens": 4, "epochs": 1, "minibatch_size": 4}}
QUARK = {"algo": {"name": "quark"}, "batch_size": 4, "micro_batch_size": 2, "eval_prompts": 2,
         "eval": {"max_new_tokens": 4},
         "feedback": {"iterations": STEPS, "steps": 1, "prompts_per_iteration": 2, "samples_per_prompt": 2,
                      "max_new_tokens": 4}}
CORPUS = "".join(f"the colour of item {i} is {c}\n" for i, c in enumerate(["red", "green", "blue"] * 4))
PROMPTS = [{"prompt": f"the colour of item {i} is"} for i in range(4)]


def _cola_world(root: Path, resume=False, overwrite=False, reward=None, **over):
    from lolkit.cola.train import WorldOptions, train_world

    corpus = root.parent / f"{root.name}-corpus.txt"
    corpus.write_text(reward or CORPUS)  # `reward` of the bad-input check is a broken corpus here
    sizes = {"num_actions": 64, "width": 128, "idm_layers": 2, "policy_layers": 2}  # as the CLI passes them
    return train_world(WorldOptions(str(root), "tiny", str(corpus), steps=STEPS, batch_size=4, sizes=sizes,
                                    save_every=1, resume=resume, overwrite=overwrite, **over), quiet=True)


def _cola_bc(root: Path, resume=False, overwrite=False, reward=None, **over):
    from lolkit.cola.train import BCOptions, train_bc

    val = None
    if reward is not None:  # the bad input: a validation corpus whose line is not text
        val = str(write_jsonl(root.parent / f"{root.name}-val.jsonl", [{"text": 3}]))
    return train_bc(BCOptions(str(root), val, steps=STEPS, batch_size=4, save_every=1, resume=resume,
                              overwrite=overwrite, **over), quiet=True)


def _cola_rl(root: Path, resume=False, overwrite=False, reward=None, **over):
    from lolkit.cola.rl import RLOptions, train_rl

    prompts = write_jsonl(root.parent / f"{root.name}-prompts.jsonl", PROMPTS)
    return train_rl(RLOptions(str(root), reward or "numbers", str(prompts), steps=STEPS, prompts_per_step=2,
                              samples_per_prompt=2, minibatch_size=4, max_new_tokens=4, eval_prompts=2, save_every=1,
                              resume=resume, overwrite=overwrite, **over), quiet=True)


def _micro(layer: dict):
    def run(root: Path, size: int):
        return _train_loop({**layer, "save_every": 0})(root, micro_batch_size=size)

    return run


LOOPS = {
    "offline": Loop("offline", _train_loop(OFFLINE), micro=_micro({**OFFLINE, "max_steps": 2}),
                    cli=["train", "--max-steps", "3", "--batch-size", "8", "--save-every", "1", "--lr", "3e-3",
                         "--set", "algo.name=nll", "--set", "eval_prompts=2", "--set", "eval.max_new_tokens=4"]),
    "ppo": Loop("ppo", _train_loop(PPO), micro=_micro({**PPO, "max_steps": 1, "batch_size": 8,
                                                         "ppo": {**PPO["ppo"], "minibatch_size": 8}}),
                cli=["train", "--algo", "ppo", "--max-steps", "3", "--batch-size", "4", "--micro-batch-size", "2",
                     "--save-every", "1", "--lr", "1e-3", "--set", "data.task=numbers", "--set", "eval_prompts=2",
                     "--set", "eval.max_new_tokens=4", "--set", "ppo.max_new_tokens=4", "--set", "ppo.epochs=1",
                     "--set", "ppo.minibatch_size=4"]),
    "quark": Loop("quark", _train_loop(QUARK), micro=_micro({**QUARK, "batch_size": 8,
                                                             "feedback": {**QUARK["feedback"], "iterations": 1,
                                                                          "samples_per_prompt": 4}}),
                  cli=["train", "--algo", "quark", "--batch-size", "4", "--micro-batch-size", "2", "--save-every", "1",
                       "--set", "eval_prompts=2", "--set", "eval.max_new_tokens=4", "--set", "feedback.iterations=3",
                       "--set", "feedback.steps=1", "--set", "feedback.prompts_per_iteration=2",
                       "--set", "feedback.samples_per_prompt=2", "--set", "feedback.max_new_tokens=4"]),
    "cola_world": Loop("cola_world", _cola_world, "world",
                       cli=["cola", "world", "--model", "tiny", "--data", "{corpus}", "--steps", "3", "--batch-size",
                            "4", "--save-every", "1"]),
    "cola_bc": Loop("cola_bc", _cola_bc, "policy_bc", needs="cola_world",
                    cli=["cola", "bc", "--run", "{root}", "--steps", "3", "--batch-size", "4", "--save-every", "1"]),
    "cola_rl": Loop("cola_rl", _cola_rl, "policy_rl", needs="cola_bc",
                    cli=["cola", "rl", "--run", "{root}", "--reward", "numbers", "--data", "{prompts}", "--steps", "3",
                         "--prompts-per-step", "2", "--samples-per-prompt", "2", "--minibatch-size", "4",
                         "--max-new-tokens", "4", "--eval-prompts", "2", "--save-every", "1"]),
}


@pytest.fixture(scope="module")
def references(tmp_path_factory, tiny_model):
    """One uninterrupted run of every loop (CoLA's stages built on one another)."""
    base = tmp_path_factory.mktemp("contract")
    out = {}
    for name, loop in LOOPS.items():
        root = base / name
        if loop.needs:
            shutil.copytree(out[loop.needs], root)
        loop.train(root)
        out[name] = root
    return out


def _fresh(loop: Loop, references: dict, path: Path) -> Path:
    """A root to run ``loop`` into: empty, or a copy of the stage it builds on."""
    if loop.needs:
        shutil.copytree(references[loop.needs], path)
    return path


def _weights(run: Path) -> dict:
    final = run / "final"
    return {f"{f.name}/{k}": v for f in sorted(final.glob("*.safetensors")) for k, v in load_file(f).items()}


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa and wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert _strip(read_metrics(a)) == _strip(read_metrics(b))
    for extra in ("rollouts.jsonl",):  # a loop's other per-step log is cut back and rewritten too
        if (a / extra).exists():
            assert _strip(read_jsonl(a / extra)) == _strip(read_jsonl(b / extra))
    if (a / "checkpoints" / "best" / "best.json").exists():  # the best value survives the resume
        assert (a / "checkpoints/best/best.json").read_text() == (b / "checkpoints/best/best.json").read_text()


@pytest.mark.parametrize("name", list(LOOPS))
def test_killed_and_resumed_equals_uninterrupted(name, references, tmp_path, monkeypatch):
    loop = LOOPS[name]
    root = _fresh(loop, references, tmp_path / "run")
    real_checkpoint = Run.checkpoint

    def dying(self, step, *args, **kwargs):
        if step == 2:  # the step's row is in metrics.jsonl; its checkpoint is never written
            raise KeyboardInterrupt
        real_checkpoint(self, step, *args, **kwargs)

    monkeypatch.setattr(Run, "checkpoint", dying)
    with pytest.raises(KeyboardInterrupt):
        loop.train(root)
    run = loop.run_dir(root)
    assert not (run / "final").exists() and [r["step"] for r in read_metrics(run)] == [1, 2]
    assert (run / "checkpoints" / "step-1").is_dir()
    if loop.stage == "world":
        assert not (root / "cola.json").exists()  # a CoLA run is usable once stage 0 has finished
    monkeypatch.setattr(Run, "checkpoint", real_checkpoint)
    loop.train(root, resume=True)
    _same_run(loop.run_dir(references[name]), run)


@pytest.mark.parametrize("name", list(LOOPS))
def test_a_bad_input_leaves_no_directory(name, references, tmp_path):
    loop = LOOPS[name]
    root = _fresh(loop, references, tmp_path / "run")
    bad = tmp_path / "bad.py"
    bad.write_text(RAISING_REWARD)
    broken = {"cola_world": "\n"}.get(name, f"{bad}:score")  # CoLA world: a corpus without a line of text
    with pytest.raises(LolkitError):
        loop.train(root, reward=broken, eval_every=1)  # the offline loop meets its reward at step 1's validation
    assert not loop.run_dir(root).exists()


@pytest.mark.parametrize("name", list(LOOPS))
def test_overwrite_semantics(name, references, tmp_path):
    loop = LOOPS[name]
    root = tmp_path / "run"
    shutil.copytree(references[name], root)
    run = loop.run_dir(root)
    (run / "marker").write_text("from the old run")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(LolkitError, match="run directory exists; pass --resume to continue it or --overwrite"):
        loop.train(root)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    loop.train(root, overwrite=True)
    assert not (run / "marker").exists() and (run / "final").is_dir()
    _same_run(loop.run_dir(references[name]), run)  # the same settings: the same run again
    foreign = tmp_path / "foreign"
    if loop.needs:
        shutil.copytree(references[loop.needs], foreign)
    else:
        foreign.mkdir()
    target = loop.run_dir(foreign)
    target.mkdir(exist_ok=True)
    (target / "notes.txt").write_text("not a run")
    with pytest.raises(LolkitError, match="holds no lolkit run"):
        loop.train(foreign, overwrite=True)
    assert (target / "notes.txt").read_text() == "not a run"


@pytest.mark.parametrize("name", [n for n, loop in LOOPS.items() if loop.micro is not None])
def test_gradient_accumulation_1x8_equals_8x1(name, tmp_path, tiny_model):
    loop = LOOPS[name]
    one, acc = loop.micro(tmp_path / "one", 8), loop.micro(tmp_path / "acc", 1)
    a, b = _weights(one), _weights(acc)
    for k in a:  # Adam amplifies round-off on near-zero gradients to ~1e-5; a scaling bug moves ~1e-3
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)
    for ra, rb in zip(read_metrics(one), read_metrics(acc), strict=True):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-5)


@pytest.mark.slow  # a CLI subprocess per loop (each pays ~10 s of imports on this machine)
@pytest.mark.parametrize("name", list(LOOPS))
def test_sigkill_while_publishing_a_checkpoint_then_resume_equals_uninterrupted(name, references, tmp_path):
    """SIGKILL (no clean-up runs) at the rename that would publish checkpoints/step-2: the resumed run
    tidies the temporary, continues from step 1 and ends bitwise where the uninterrupted one did."""
    loop = LOOPS[name]
    root = _fresh(loop, references, tmp_path / "run")
    corpus = tmp_path / "run-corpus.txt"
    corpus.write_text(CORPUS)
    prompts = write_jsonl(tmp_path / "run-prompts.jsonl", PROMPTS)
    args = [a.format(corpus=corpus, root=root, prompts=prompts) for a in loop.cli]
    args += ["--output-dir", str(root)] if loop.cli[0] == "train" or loop.stage == "world" else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    killed = subprocess.run([sys.executable, str(REPO / "tests" / "kill_on_rename.py"), "step-2", *args, "--quiet"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = loop.run_dir(root)
    assert [p.name for p in (run / "checkpoints").glob(".step-2.tmp-*")], "the kill leaves the temporary behind"
    loop.train(root, resume=True)
    _same_run(loop.run_dir(references[name]), run)
    assert [p.name for p in run.rglob("*") if ".tmp-" in p.name or ".old-" in p.name] == []
