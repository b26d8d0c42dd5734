"""Two processes under torchrun (gloo on CPU) follow the single-process run: the offline loop, the feedback loops,
CoLA's stages and PPO / NLPO — losses and metrics within 1e-5 (or 1e-6 relative), the same samples and data
pool, final weights within tolerance."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lolkit.run import read_metrics

from ..conftest import run_cli

# the single-process runs these tests compare with use one thread, as each torchrun worker does
pytestmark = pytest.mark.usefixtures("one_thread")

ARGS = ["train", "--algo", "a_lol", "--max-steps", "3", "--batch-size", "8", "--save-every", "0", "--quiet",
        "--set", "eval_prompts=4", "--set", "eval.max_new_tokens=4"]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path, tiny_model):
    one = tmp_path / "one"
    res = run_cli(*ARGS, "--output-dir", one, "--set", f"algo.cache_dir={tmp_path / 'cache1'}")
    assert res.code == 0, res
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = tmp_path / "two"
    out = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "lolkit.cli", *ARGS,
                          "--output-dir", str(two), "--set", f"algo.cache_dir={tmp_path / 'cache2'}"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (two / "run.json").exists() and '"processes": 2' in (two / "run.json").read_text()
    a, b = read_metrics(one), read_metrics(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b, strict=True):
        # within 1e-5, or 1e-6 relative for larger losses (float32 sums in another order: the a_lol loss
        # of a random tiny model is ~30, where one ulp is 2e-6)
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-5, rel=1e-6)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-4)
    # the sharded reference pass assembled the same scores as the single-process one
    ref1 = load_file(next((tmp_path / "cache1").glob("ref-*")) / "reference.safetensors")
    ref2 = load_file(next((tmp_path / "cache2").glob("ref-*")) / "reference.safetensors")
    torch.testing.assert_close(ref1["seq_logps"], ref2["seq_logps"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ref1["token_logps"], ref2["token_logps"], atol=1e-5, rtol=1e-5)
    assert torch.equal(ref1["offsets"], ref2["offsets"])


def torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    """``lolkit ARGS`` under ``torchrun --standalone --nproc_per_node N`` (gloo on CPU)."""
    runner = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(runner), "--standalone", "--nproc_per_node", str(nproc), "-m", "lolkit.cli",
                           *map(str, args)], capture_output=True, text=True, env=env, timeout=600)


def assert_rows_close(a: list[dict], b: list[dict], skip=("iteration_time", "step_time", "tokens_per_s")) -> None:
    """The same metrics rows: numbers within 1e-5 (or 1e-6 relative), everything else equal."""
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert set(ra) == set(rb)
        for k in ra:
            if k in skip:
                continue
            x, y = ra[k], rb[k]
            if isinstance(x, float) or isinstance(y, float):
                assert y == pytest.approx(x, abs=1e-5, rel=1e-6), (ra["step"], k, x, y)
            else:
                assert x == y, (ra["step"], k, x, y)


def assert_weights_close(a: Path, b: Path, name: str = "model.safetensors", atol: float = 1e-5) -> None:
    wa, wb = load_file(a / name), load_file(b / name)
    assert set(wa) == set(wb)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], atol=atol, rtol=1e-5, msg=k)


FEEDBACK = ["--lr", "1e-3", "--batch-size", "4", "--micro-batch-size", "1", "--quiet", "--set", "feedback.iterations=2",
            "--set", "feedback.steps=2", "--set", "feedback.prompts_per_iteration=3",
            "--set", "feedback.samples_per_prompt=3", "--set", "feedback.max_new_tokens=6",
            "--set", "eval.batch_size=2"]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["quark", "alt_lmc", "selm"])
def test_feedback_loops_two_processes_match_one_process(tmp_path, tiny_model, algo):
    """Sampling (batch b by rank b % 2, seeded as in one process) and scoring are sharded and gathered, every
    process holds the same pool, training is data-parallel: the same samples, pool and metrics as one process."""
    one, two = tmp_path / "one", tmp_path / "two"
    res = run_cli("train", "--algo", algo, "--output-dir", one, *FEEDBACK)
    assert res.code == 0, res
    out = torchrun("train", "--algo", algo, "--output-dir", two, *FEEDBACK)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"processes": 2' in (two / "run.json").read_text()
    assert_rows_close(read_metrics(one), read_metrics(two))
    for name in ("samples.jsonl", "feedback.jsonl", "pool.jsonl"):  # gathered in order: the same files
        rows1 = [json.loads(x) for x in (one / "iter-2" / name).read_text().splitlines()]
        rows2 = [json.loads(x) for x in (two / "iter-2" / name).read_text().splitlines()]
        assert rows1 == rows2, name
    assert_weights_close(one / "final", two / "final")
    if algo != "quark":
        return
    # resuming the 2-process run's iteration-1 checkpoint in one process continues the same run
    mixed = two
    for p in ("final", "iter-2", "checkpoints/step-2"):
        shutil.rmtree(mixed / p)
    assert json.loads((mixed / "checkpoints/step-1/trainer/state.json").read_text())["processes"] == 2
    res = run_cli("train", "--algo", algo, "--output-dir", mixed, *FEEDBACK, "--resume")
    assert res.code == 0, res
    assert '"processes": 1' in (mixed / "run.json").read_text()
    assert_rows_close(read_metrics(one), read_metrics(mixed))
    assert_weights_close(one / "final", mixed / "final")


@pytest.mark.slow
def test_critic_model_feedback_two_processes_match_one_process(tmp_path, tiny_model):
    """ALT-LMU with a critic model (feedback.provider model): each process generates its share of the critic's
    batches and the answers are gathered in order, so the feedback, pool and metrics are one process's."""
    critic = ["--set", "feedback.provider=model", "--set", f"feedback.critic_model={tiny_model}",
              "--set", "feedback.critic_max_new_tokens=6"]
    one, two = tmp_path / "one", tmp_path / "two"
    res = run_cli("train", "--algo", "alt_lmu", "--output-dir", one, *FEEDBACK, *critic)
    assert res.code == 0, res
    out = torchrun("train", "--algo", "alt_lmu", "--output-dir", two, *FEEDBACK, *critic)
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = read_metrics(one), read_metrics(two)
    assert_rows_close(a, b)
    assert all("feedback_parsed" in r for r in a)
    for name in ("feedback.jsonl", "pool.jsonl"):
        rows1 = [json.loads(x) for x in (one / "iter-2" / name).read_text().splitlines()]
        rows2 = [json.loads(x) for x in (two / "iter-2" / name).read_text().splitlines()]
        assert rows1 == rows2, name
    # the critic's words reached the pool (a fallback everywhere would hide a broken gather)
    assert len({r["feedback"] for r in rows1}) > 1


@pytest.mark.slow
def test_cola_stages_two_processes_match_one_process(tmp_path, tiny_model):
    """CoLA's base-LM passes (the hidden-state cache, latent rollouts) and reward scoring are sharded and
    gathered; the small modules train on the whole batch on every process: every stage equals one process."""
    from lolkit.tasks import colours

    from ..conftest import write_jsonl

    rows = [r for r in colours.records("train") if r["meta"]["object"] in ("tomato", "banana", "frog", "crow")]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", rows)  # 96 sequences: 6 batches of the cache pass
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in sorted({r["prompt"] for r in rows})])
    stages = [("world", ["cola", "world", "--model", "tiny", "--data", corpus, "--steps", 3, "--batch-size", 8]),
              ("policy_bc", ["cola", "bc", "--steps", 3, "--batch-size", 8]),
              # 10 prompts × 4 samples: two sampling batches (32 + 8), one per process
              ("policy_rl", ["cola", "rl", "--data", prompts, "--reward", "colours", "--steps", 2,
                             "--prompts-per-step", 10, "--eval-prompts", 12])]
    one, two = tmp_path / "one", tmp_path / "two"
    calls = [[*args, "--output-dir" if stage == "world" else "--cola-run", "--quiet"] for stage, args in stages]
    for call in calls:
        res = run_cli(*call[:-2], call[-2], one, call[-1])
        assert res.code == 0, (call, res)
    # the three stages in one torchrun (the launcher's start-up paid once); a user writes --cola-run under torchrun,
    # which would take --run for an abbreviation of its own --run-path
    script = tmp_path / "stages.py"
    script.write_text("import json, sys\nfrom lolkit import cli\n"
                      f"for args in json.loads({json.dumps(json.dumps([[*map(str, c[:-1]), str(two), c[-1]] for c in calls]))}):\n"
                      "    sys.argv = ['lolkit', *args]\n"
                      "    try:\n        cli.main()\n    except SystemExit as e:\n"
                      "        if e.code:\n            raise\n")
    runner = Path(sys.executable).with_name("torchrun")
    out = subprocess.run([str(runner), "--standalone", "--nproc_per_node", "2", str(script)], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = {"one": one, "two": two}
    for stage, _ in stages:
        assert '"processes": 2' in (two / stage / "run.json").read_text()
        assert_rows_close(read_metrics(one / stage), read_metrics(two / stage))
        for f in (one / stage / "final").glob("*.safetensors"):
            assert_weights_close(f.parent, two / stage / "final", f.name)
    caches = [sorted((runs[k] / "cache").glob("hidden-*.safetensors")) for k in ("one", "two")]
    assert [p.name for p in caches[0]] == [p.name for p in caches[1]] and caches[0]
    h1, h2 = load_file(caches[0][0]), load_file(caches[1][0])
    assert torch.equal(h1["h"], h2["h"]) and torch.equal(h1["offsets"], h2["offsets"])
    rl = [[json.loads(x) for x in (runs[k] / "policy_rl" / "rollouts.jsonl").read_text().splitlines()]
          for k in ("one", "two")]
    assert rl[0] == rl[1]


@pytest.mark.slow
def test_batch_not_divisible_by_the_processes_is_one_line_and_writes_nothing(tmp_path, tiny_model):
    out = torchrun("train", "--algo", "quark", "--batch-size", "3", "--output-dir", tmp_path / "run", "--quiet")
    errors = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert errors == ["error: batch_size 3 is not divisible by the 2 processes: it is the global batch, split evenly "
                      "among them"]
    assert "exitcode  : 2" in out.stderr  # each worker's exit code, in torchrun's report
    assert not [x for x in out.stderr.splitlines() if x.strip().startswith('File "') and "lolkit" in x]  # no traceback
    assert not (tmp_path / "run").exists()


def test_check_divisible_message():
    from lolkit.distributed import check_divisible
    from lolkit.errors import LolkitError

    check_divisible(8, 2, "batch_size")
    check_divisible(3, 1, "batch_size")
    with pytest.raises(LolkitError, match="ppo.minibatch_size 6 is not divisible by the 4 processes"):
        check_divisible(6, 4, "ppo.minibatch_size")


# a learning rate large enough that two processes' gradients not being combined would show in the weights
ONLINE = ["--max-steps", "2", "--batch-size", "4", "--micro-batch-size", "1", "--quiet", "--set", "ppo.samples_per_prompt=2",
          "--set", "ppo.max_new_tokens=5", "--set", "ppo.minibatch_size=4", "--set", "ppo.epochs=2",
          "--set", "eval.batch_size=3", "--set", "ppo.rollout_samples=0", "--set", "ppo.kl_target=0.05",
          "--set", "ppo.mask_update_every=1"]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "nlpo", "a2c", "trpo"])
def test_online_two_processes_match_one_process(tmp_path, tiny_model, algo):
    """Each process samples its share of the rollout's batches and scores its chunk; the no-grad pass is split by
    micro-batch; the whitening and the KL controller see the whole gathered rollout; each minibatch's rows are
    split between the processes and their gradients summed: the same rollouts, metrics and weights as one process."""
    one, two = tmp_path / "one", tmp_path / "two"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Count to {n}:"}) + "\n" for n in range(8)))
    # a reward that is never constant: every rollout moves the policy
    args = [*ONLINE, "--data", prompts, "--reward", "tests.loops.test_online:length_reward",
            *(["--set", "trpo.value_lr=1e-3"] if algo == "trpo" else ["--lr", "1e-3"])]  # TRPO: no policy lr
    res = run_cli("train", "--algo", algo, "--output-dir", one, *args)
    assert res.code == 0, res
    out = torchrun("train", "--algo", algo, "--output-dir", two, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"processes": 2' in (two / "run.json").read_text()
    a, b = read_metrics(one), read_metrics(two)
    assert a[1]["kl"] != 0.0 and a[1]["kl_beta"] != a[0]["kl_beta"]  # the policy moved; so did the KL controller
    assert_rows_close(a, b)
    rollouts = [[json.loads(x) for x in (d / "rollouts.jsonl").read_text().splitlines()] for d in (one, two)]
    assert len(rollouts[0]) == 16 and rollouts[0] == rollouts[1]
    assert_weights_close(one / "final", two / "final")
    assert_weights_close(one / "final", two / "final", "value_head.safetensors")


def test_sum_gradients_in_buckets_and_metric_sums():
    """With a stand-in all-reduce (the other process holds the same values: the sum doubles them), gradients come
    back in place across several buckets, a parameter without a gradient takes part with zeros, and metric sums
    keep their keys' order."""
    from lolkit.distributed import Dist, sum_gradients

    dist = Dist(rank=1, world=2, reduce_sum=lambda t: t * 2)
    params = [torch.nn.Parameter(torch.arange(n, dtype=torch.float32)) for n in (2, 2, 5)]
    for q in params[:2]:
        q.grad = torch.arange(q.numel(), dtype=torch.float32) + 1
    sum_gradients(dist, params, bucket=3)  # buckets [2], [2], [5]: none may exceed 3 unless alone
    assert [q.grad.tolist() for q in params] == [[2.0, 4.0], [2.0, 4.0], [0.0] * 5]
    assert list(dist.sum({"loss": 0.25, "tokens": 3.0}).items()) == [("loss", 0.5), ("tokens", 6.0)]
    a, b = dist.assemble(torch.ones(2), torch.zeros(2))
    assert a.tolist() == [2.0, 2.0] and b.tolist() == [0.0, 0.0]
    assert dist.share(list(range(7))) == [1, 3, 5] and [c for c in range(5) if dist.owns(c)] == [1, 3]
    assert dist.even_chunk(7) == 4
