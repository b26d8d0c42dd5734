"""Wall time of every training loop in this tree against another lolkit tree (e.g. the main branch before a
change), measured in one run: the offline loop (nll), PPO, NLPO, Quark, SELM and CoLA's world / bc / rl
stages, each a few steps on the tiny model, one torch thread (target: this tree / baseline <= 1.05 for
every loop, the margin of repeated runs on a shared machine).

Method: each round starts one process per tree (alternating which goes first), which runs every loop once
to warm up, then ``--repeats`` times timed, keeping the least CPU time of the loop's call (one torch
thread: the loop's work, whatever else runs on the machine; imports and the tiny model's creation are
outside it). The figure per loop is the median over rounds of the paired ratio this / baseline (two
processes started seconds apart see the same machine load).

Usage: git worktree add /tmp/lolkit-main main
       python benchmarks/loop_speed.py --baseline /tmp/lolkit-main [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import scratch, verdict  # noqa: E402

TARGET = 1.05
HERE = Path(__file__).resolve().parent.parent
CORPUS = "".join(f"the colour of item {i} is {c}\n" for i, c in enumerate(["red", "green", "blue"] * 8))


def _train_config(name: str, out: Path, quick: bool) -> dict:
    small = {"eval_prompts": 2, "eval": {"max_new_tokens": 4}, "save_every": 0, "output_dir": str(out)}
    if name == "nll":
        return {**small, "algo": {"name": "nll"}, "max_steps": 4 if quick else 90, "batch_size": 8}
    if name in ("ppo", "nlpo"):
        return {**small, "algo": {"name": name}, "max_steps": 2 if quick else 24, "batch_size": 8, "micro_batch_size": 4,
                "data": {"task": "numbers"}, "ppo": {"max_new_tokens": 8, "epochs": 2, "minibatch_size": 8}}
    return {**small, "algo": {"name": name}, "batch_size": 8, "micro_batch_size": 4,
            "feedback": {"iterations": 2 if quick else 3, "steps": 2 if quick else 18, "prompts_per_iteration": 4,
                         "samples_per_prompt": 4, "max_new_tokens": 8}}


def child(names: list[str], work: str, quick: bool, repeats: int) -> None:
    """Runs in a process whose PYTHONPATH is one tree's src: the CPU time of each loop's call, the least of
    ``repeats`` calls after a warm-up call. CPU time, not wall time: with one torch thread it is the work the
    loop does, which another job on the machine or a virtual machine's stolen time does not count in (a loop
    of half a second measured in wall time moved by ±40 % between rounds here); the least of several calls
    drops what cache misses under load add."""
    import time

    import torch

    torch.set_num_threads(1)
    from lolkit.cola.rl import RLOptions, train_rl
    from lolkit.cola.train import BCOptions, WorldOptions, train_bc, train_world
    from lolkit.config import TrainConfig, build
    from lolkit.train import train

    work_dir = Path(work)
    corpus = work_dir / "corpus.txt"
    corpus.write_text(CORPUS)
    prompts = work_dir / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"the colour of item {i} is"}) + "\n" for i in range(8)))
    steps = 5 if quick else 120

    def no_saves(options) -> dict:
        # like the other loops' save_every 0: no step checkpoints (a tree from before CoLA had them takes none)
        return {"save_every": 0} if "save_every" in getattr(options, "__dataclass_fields__", {}) else {}

    def run(name: str, out: Path):
        if name == "cola_world":
            return train_world(WorldOptions(output_dir=str(out), model="tiny", data=str(corpus), steps=steps,
                                            batch_size=8, **no_saves(WorldOptions)), quiet=True)
        if name == "cola_bc":
            return train_bc(BCOptions(run=str(out), steps=steps, batch_size=8, **no_saves(BCOptions)), quiet=True)
        if name == "cola_rl":
            return train_rl(RLOptions(run=str(out), reward="numbers", data=str(prompts), steps=2 if quick else 18,
                                      prompts_per_step=4, samples_per_prompt=2, minibatch_size=8, max_new_tokens=6,
                                      eval_prompts=4, **no_saves(RLOptions)), quiet=True)
        return train(build(TrainConfig, _train_config(name, out, quick)), quiet=True)

    times: dict[str, float] = {}
    for attempt in ["warm", *(f"timed-{k}" for k in range(repeats))]:
        cola = work_dir / f"cola-{attempt}"
        for name in names:
            out = cola if name.startswith("cola_") else work_dir / f"{name}-{attempt}"
            t = time.process_time()
            run(name, out)
            if attempt != "warm":
                times[name] = min(times.get(name, float("inf")), time.process_time() - t)
    print("TIMES " + json.dumps(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True, help="another lolkit tree (its src/ is imported)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer steps, one round: a smoke test")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls of each loop per round (the fastest counts)")
    ap.add_argument("--loops", default="nll,ppo,nlpo,quark,selm,cola_world,cola_bc,cola_rl")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    names = args.loops.split(",")
    if args.child:
        child(names, args.child[0], args.child[1] == "quick", 1 if args.child[1] == "quick" else args.repeats)
        return
    trees = {"this": HERE, "baseline": Path(args.baseline).resolve()}
    rounds = 1 if args.quick else args.rounds
    cache = scratch("lolkit-loop-speed-")
    results: dict[str, list[dict]] = {k: [] for k in trees}
    for r in range(rounds):
        order = list(trees) if r % 2 == 0 else list(trees)[::-1]
        for which in order:
            work = cache / f"{which}-{r}"
            work.mkdir()
            env = {**os.environ, "PYTHONPATH": str(trees[which] / "src"), "LOLKIT_CACHE": str(cache / "lolkit"),
                   "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                   "HF_HUB_OFFLINE": "1"}
            res = subprocess.run([sys.executable, __file__, "--baseline", args.baseline, "--loops", args.loops,
                                  "--repeats", str(args.repeats),
                                  "--child", str(work), "quick" if args.quick else "full"],
                                 env=env, capture_output=True, text=True, cwd=work)
            if res.returncode != 0:
                raise SystemExit(f"{which} tree failed:\n{res.stderr[-3000:]}")
            line = next(x for x in res.stdout.splitlines() if x.startswith("TIMES "))
            results[which].append(json.loads(line[len("TIMES "):]))
    print(f"{'loop':<11} {'this (cpu s)':>12} {'baseline (cpu s)':>17} {'this / baseline':>16}")
    ok = True
    for name in names:
        mine = [x[name] for x in results["this"]]
        base = [x[name] for x in results["baseline"]]
        ratio = statistics.median(a / b for a, b in zip(mine, base, strict=True))
        good = ratio <= TARGET or args.quick
        ok &= good
        print(f"{name:<11} {statistics.median(mine):>12.2f} {statistics.median(base):>17.2f} {ratio:>15.2f}x "
              f"{'(quick: not judged)' if args.quick else verdict(good)}")
    print(f"overall {verdict(ok)} (target: every loop <= {TARGET}x the baseline's time)")


if __name__ == "__main__":
    main()
