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
Usage: python benchmarks/scaling.py [--quick]
"""

from __future__ import annotations

import contextlib
import json
import random
import statistics
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
    args = timing_args(__doc__, 2, 4)
    rounds = args.rounds

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


if __name__ == "__main__":
    main()
