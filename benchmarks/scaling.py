"""Scaling: time of the reference pass and of one training epoch for 1×, 4× and 16× the data
(target: linear within 10%).

Two figures per size, relative to 1×: time per example and, for information, time per token
processed (padding included). The gate is that the time per example at 4× and 16× is at most 10%
above 1×: cost grows no faster than linearly. It may fall below 1× by more than 10% in a short or
noisy run: a larger set pads less, and a 1× epoch of two steps carries the fixed cost of a call.

A Llama (hidden 128, 4 layers), CPU fp32, one torch thread. The base set is 16 response records of
varied length (prompts of 8–12 words, responses of 16–24: a narrow spread, so that padding — which
falls as a larger set offers closer neighbours to group with — barely differs between sizes; the
padding benchmark covers long tails); the 4× and 16× sets repeat it with fresh words, so all three
have exactly the same length distribution.

* reference  `lolkit.engine.reference.compute_reference` over every example (micro-batches of 8)
* epoch      the training loop's epoch: `StepPlan` (length-grouped batches of 8), and per step
             `accumulate_gradients` + AdamW step, A-LoL loss with the engine's cached reference
             log-probs and advantages

Sizes are timed in alternation (1×, 4×, 16×, 1×, 1×, 16×, 4×, 1×, …); the figure is the median time
per example.

The processes axis: the same model under `torchrun --standalone --nproc_per_node N` (gloo on CPU, one
torch thread per process), N = 1 and 2 in alternation (1, 2, 2, 1, …), each run timing inside the
process group (a barrier before and after each timed section):

* engine     the engine before the first step over 64 examples: the reference pass, sharded (each process
             scores a strided share), and the advantages (rewards from the data)
* step       the offline training step: global batch 16 split among the processes, DDP, AdamW
* eval       `lolkit eval`'s generation + reward scoring of 32 prompts (batches of 4 shared among the
             processes, `lolkit.shards`), greedy, 16 new tokens
* ppo        `lolkit train --algo ppo` under the launcher: per iteration, a rollout of 16 prompts × 2 samples
             (16 new tokens, sampling and reward scoring shared among the processes), the no-grad pass,
             and 2 epochs of minibatch updates; time per rollout sample from the run's `iteration_time`,
             the first iteration (warm-up) left out

The figure is the median ratio of the time per example with 2 processes to that with 1 (ideal on 2
free cores: 0.5; at 1.0 nothing was gained, and above 1 a process waits on the other).
Usage: python benchmarks/scaling.py [--quick] [--axis data|processes|both]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import WORDS, scratch, timing_args, tiny_llama, verdict  # noqa: E402

TOLERANCE = 0.10
BASE = 16


def records(path: Path, copies: int) -> Path:
    shape = random.Random(0)
    lengths = [(shape.randint(8, 12), shape.randint(16, 24)) for _ in range(BASE)]
    rng = random.Random(copies)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    with open(path, "w") as fh:
        for c in range(copies):
            for i, (p, r) in enumerate(lengths):
                fh.write(json.dumps({"id": f"{c}-{i}", "prompt": words(p), "response": words(r),
                                     "reward": round(rng.random(), 3)}) + "\n")
    return path


def main() -> None:
    args = timing_args(__doc__, 2, 4, add=lambda ap: (
        ap.add_argument("--axis", choices=("data", "processes", "both"), default="both"),
        ap.add_argument("--worker", help=argparse.SUPPRESS)))
    if args.worker:
        return processes_worker(Path(args.worker))
    if args.axis in ("data", "both"):
        data_axis(args.rounds)
    if args.axis in ("processes", "both"):
        processes_axis(args.rounds)


def data_axis(rounds: int) -> None:
    from lolkit.algorithms import get_algorithm
    from lolkit.config import TrainConfig, build
    from lolkit.data.dataset import load_train_data
    from lolkit.engine import prepare_engine
    from lolkit.engine.reference import compute_reference
    from lolkit.losses import LossParams
    from lolkit.models import ModelConfig, load_model, quiet_transformers
    from lolkit.train import StepPlan, accumulate_gradients, resolve_config

    quiet_transformers()
    tmp = scratch("lolkit-scaling-")
    model_dir = tiny_llama(tmp, hidden=128, layers=4, heads=4)
    model, tok, _ = load_model(ModelConfig(name=str(model_dir)), trainable=True)
    algo = get_algorithm("a_lol")
    setups = {}
    for k in (1, 4, 16):
        cfg = resolve_config(build(TrainConfig, {
            "output_dir": str(tmp / f"run{k}"), "batch_size": 8, "model": {"name": str(model_dir)},
            "data": {"train": str(records(tmp / f"data{k}.jsonl", k)), "val_fraction": 0.0},
            "algo": {"name": "a_lol", "value_source": "data", "value_folds": 2, "max_reward": 1.0, "value_epochs": 1,
                     "cache_dir": str(tmp / "engine")}}))
        data = load_train_data(cfg.data, tok, algo)
        (tmp / f"run{k}").mkdir()
        engine = prepare_engine(cfg, algo, model, tok, data, str(model_dir), fresh_adapter=False, log=lambda m: None,
                                run=tmp / f"run{k}")
        engine.pool = list(range(len(data.examples)))  # every example, whatever its advantage: equal work per copy
        setups[k] = (cfg, data, engine)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    params = LossParams()

    def reference(k: int) -> None:
        _, data, _ = setups[k]
        compute_reference(model, [e.encoded for e in data.examples], tok.pad_token_id, 8, disable_adapter=False)

    def epoch(k: int) -> None:
        cfg, data, engine = setups[k]
        plan = StepPlan(data.lengths, 8, 8, cfg.seed, pool=engine.pool)
        model.train()
        for s in range(plan.steps_per_epoch):
            accumulate_gradients(model, algo, params, data, engine, plan.step(s), tok.pad_token_id, "cpu", 8,
                                 lambda loss: loss.backward(), lambda m: contextlib.nullcontext())
            opt.step()
            opt.zero_grad(set_to_none=True)

    def processed_tokens(name: str, k: int) -> int:
        cfg, data, engine = setups[k]
        lengths = [len(e.encoded) for e in data.examples]
        if name == "reference":  # compute_reference: longest first, batches of 8
            order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
            batches = [order[s : s + 8] for s in range(0, len(order), 8)]
        else:
            plan = StepPlan(data.lengths, 8, 8, cfg.seed, pool=engine.pool)
            batches = [mb for s in range(plan.steps_per_epoch) for mb in plan.step(s)]
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    per_example: dict[tuple[str, int], list[float]] = {}
    for name, fn in (("reference", reference), ("epoch", epoch)):
        fn(1)  # warm-up
        for r in range(rounds):  # 1x before and after the larger sets: the short call gets two samples a round
            for k in ((1, 4, 16, 1) if r % 2 == 0 else (1, 16, 4, 1)):
                t = time.perf_counter()
                fn(k)
                per_example.setdefault((name, k), []).append((time.perf_counter() - t) / (BASE * k))
    print(f"Llama 128 x 4, CPU fp32, {torch.get_num_threads()} thread(s); base {BASE} examples; {rounds} rounds")
    print(f"{'pass':<10} {'data':>5} {'examples':>8} {'total s':>8} {'ms/example':>11} {'vs 1x':>7} "
          f"{'pad':>6} {'us/token':>9} {'vs 1x':>7}")
    ok = True
    for name in ("reference", "epoch"):
        base = statistics.median(per_example[(name, 1)])
        base_tok = base * BASE / processed_tokens(name, 1)
        for k in (1, 4, 16):
            m = statistics.median(per_example[(name, k)])
            tokens = processed_tokens(name, k)
            used = sum(len(e.encoded) for e in setups[k][1].examples)
            per_tok = m * BASE * k / tokens
            rel, rel_tok = m / base, per_tok / base_tok
            good = rel <= 1 + TOLERANCE
            ok &= good
            print(f"{name:<10} {k:>4}x {BASE * k:>8} {m * BASE * k:>8.2f} {m * 1e3:>11.1f} {rel:>7.3f} "
                  f"{1 - min(used, tokens) / tokens:>6.1%} {per_tok * 1e6:>9.1f} {rel_tok:>7.3f}"
                  + ("" if k == 1 else f"  {verdict(good)}"))
    print(f"linear within {TOLERANCE:.0%} (time per example at 4x and 16x at most {1 + TOLERANCE:.2f} x 1x): "
          f"{verdict(ok)}")


# --------------------------------------------------------------------------------------------------
# the processes axis
# --------------------------------------------------------------------------------------------------
PROC_EXAMPLES, PROC_BATCH, PROC_STEPS, PROC_PROMPTS = 64, 16, 4, 32


def processes_worker(spec_path: Path) -> None:
    """One timed run inside a torchrun process group (``spec_path``: JSON with the model, data and output)."""
    from accelerate import Accelerator

    from lolkit.algorithms import get_algorithm
    from lolkit.config import TrainConfig, build
    from lolkit.data.dataset import load_train_data
    from lolkit.engine import Dist, prepare_engine
    from lolkit.evaluate import generate_and_score
    from lolkit.generation import GenerationConfig
    from lolkit.losses import LossParams
    from lolkit.models import ModelConfig, load_model, quiet_transformers
    from lolkit.rewards import get_reward
    from lolkit.shards import Shards
    from lolkit.train import StepPlan, accumulate_gradients, resolve_config

    quiet_transformers()
    spec = json.loads(spec_path.read_text())
    acc = Accelerator(cpu=True)
    world, rank = acc.num_processes, acc.process_index
    out = Path(spec["out"])
    model, tok, _ = load_model(ModelConfig(name=spec["model"]), trainable=True)
    algo = get_algorithm("a_lol")
    cfg = resolve_config(build(TrainConfig, {
        "output_dir": str(out / "run"), "batch_size": PROC_BATCH, "micro_batch_size": PROC_BATCH // world,
        "model": {"name": spec["model"]}, "data": {"train": spec["data"], "val_fraction": 0.0},
        "algo": {"name": "a_lol", "value_source": "data", "max_reward": 1.0, "cache_dir": str(out / "engine")}}))
    data = load_train_data(cfg.data, tok, algo)
    dist = Dist(rank, world, acc.wait_for_everyone, lambda t: acc.reduce(t, reduction="sum"))
    times = {}

    def timed(name: str, fn) -> None:
        acc.wait_for_everyone()
        t = time.perf_counter()
        fn()
        acc.wait_for_everyone()
        times[name] = time.perf_counter() - t

    (out / "run").mkdir(parents=True, exist_ok=True)
    box = {}
    timed("engine", lambda: box.setdefault("engine", prepare_engine(
        cfg, algo, model, tok, data, spec["model"], fresh_adapter=False, log=lambda m: None, run=out / "run",
        dist=dist)))
    engine = box["engine"]
    engine.pool = list(range(len(data.examples)))
    plan = StepPlan(data.lengths, PROC_BATCH, PROC_BATCH // world, cfg.seed, rank, world, pool=engine.pool)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ddp, opt = acc.prepare(model, opt)
    params = LossParams()

    def steps(first: int, count: int) -> None:
        for s in range(first, first + count):
            accumulate_gradients(ddp, algo, params, data, engine, plan.step(s), tok.pad_token_id, "cpu",
                                 PROC_BATCH / world, acc.backward, acc.no_sync)
            opt.step()
            opt.zero_grad(set_to_none=True)

    steps(0, 1)  # warm-up
    timed("step", lambda: steps(1, PROC_STEPS))
    prompts = [json.loads(line)["prompt"] for line in Path(spec["data"]).read_text().splitlines()][:PROC_PROMPTS]
    gcfg = GenerationConfig(max_new_tokens=16, batch_size=4, max_prompt_len=64)
    reward = get_reward("colours")
    shards = Shards.current()
    timed("eval", lambda: generate_and_score(acc.unwrap_model(ddp), tok, prompts, prompts, None, reward, gcfg,
                                             out / f"progress-{world}.jsonl", "bench", shards=shards))
    if rank == 0:
        per = {"engine": times["engine"] / PROC_EXAMPLES, "step": times["step"] / (PROC_STEPS * PROC_BATCH),
               "eval": times["eval"] / PROC_PROMPTS}
        (out / "times.json").write_text(json.dumps(per))


def processes_axis(rounds: int) -> None:
    tmp = scratch("lolkit-scaling-proc-")
    model_dir = tiny_llama(tmp, hidden=128, layers=4, heads=4)
    data = records(tmp / "data.jsonl", PROC_EXAMPLES // BASE)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parent.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for r in range(rounds):
        for n in ((1, 2) if r % 2 == 0 else (2, 1)):
            out = tmp / f"r{r}-n{n}"
            out.mkdir()
            spec = out / "spec.json"
            spec.write_text(json.dumps({"model": str(model_dir), "data": str(data), "out": str(out)}))
            res = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", str(n), __file__,
                                  "--worker", str(spec)], env=env, capture_output=True, text=True, timeout=900)
            if res.returncode:
                raise SystemExit(f"torchrun with {n} processes failed:\n{res.stderr[-3000:]}")
            runs[n].append(json.loads((out / "times.json").read_text()))
    print(f"\nprocesses: Llama 128 x 4, CPU fp32 over gloo, 1 thread per process, {os.cpu_count()} cores; "
          f"{rounds} rounds")
    print(f"{'pass':<10} {'1 proc ms/ex':>13} {'2 procs ms/ex':>14} {'2 / 1':>7}")
    for name in ("engine", "step", "eval"):
        one = statistics.median(x[name] for x in runs[1])
        two = statistics.median(x[name] for x in runs[2])
        ratio = statistics.median(b[name] / a[name] for a, b in zip(runs[1], runs[2], strict=True))
        print(f"{name:<10} {one * 1e3:>13.1f} {two * 1e3:>14.1f} {ratio:>7.3f}")
    ppo_axis(rounds, tmp, model_dir, torchrun, env)


PPO_PROMPTS, PPO_SAMPLES, PPO_STEPS = 16, 2, 4


def ppo_times(torchrun: Path, env: dict, model_dir: Path, prompts: Path, out: Path, n: int) -> float:
    """Median seconds per rollout sample of a PPO run under ``torchrun`` with ``n`` processes (iterations
    after the first)."""
    args = ["train", "--algo", "ppo", "--model", str(model_dir), "--data", str(prompts), "--reward", "colours",
            "--output-dir", str(out), "--max-steps", str(PPO_STEPS), "--batch-size", str(PPO_PROMPTS),
            "--micro-batch-size", "4", "--quiet", "--set", f"ppo.samples_per_prompt={PPO_SAMPLES}",
            "--set", "ppo.max_new_tokens=16", "--set", "ppo.minibatch_size=8", "--set", "ppo.epochs=2",
            "--set", "ppo.rollout_samples=0", "--set", "eval_prompts=1", "--set", "eval.max_new_tokens=1",
            "--set", "eval_every=0", "--set", "save_every=0"]
    res = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", str(n), "-m", "lolkit.cli", *args],
                         env=env, capture_output=True, text=True, timeout=900)
    if res.returncode:
        raise SystemExit(f"ppo under torchrun with {n} processes failed:\n{res.stderr[-3000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    its = [r["iteration_time"] for r in rows if "iteration_time" in r][1:]
    return statistics.median(its) / (PPO_PROMPTS * PPO_SAMPLES)


def ppo_axis(rounds: int, tmp: Path, model_dir: Path, torchrun: Path, env: dict) -> None:
    prompts = tmp / "prompts.jsonl"
    rng = random.Random(0)
    prompts.write_text("".join(json.dumps({"prompt": " ".join(rng.choice(WORDS) for _ in range(8))}) + "\n"
                               for _ in range(PPO_PROMPTS)))
    runs: dict[int, list[float]] = {1: [], 2: []}
    for r in range(rounds):
        for n in ((1, 2) if r % 2 == 0 else (2, 1)):
            runs[n].append(ppo_times(torchrun, env, model_dir, prompts, tmp / f"ppo-r{r}-n{n}", n))
    one, two = statistics.median(runs[1]), statistics.median(runs[2])
    ratio = statistics.median(b / a for a, b in zip(runs[1], runs[2], strict=True))
    print(f"{'ppo':<10} {one * 1e3:>13.1f} {two * 1e3:>14.1f} {ratio:>7.3f}")


if __name__ == "__main__":
    main()
