"""Padding waste: length-grouped batching (the training loop's `StepPlan`) vs random batching, on a
long-tailed length distribution (target: ≤ 5% pad tokens with grouping).

Lengths (prompt + response tokens) are drawn from a log-normal distribution — median ~150 tokens, a
long right tail clipped at 1024 — the shape of instruction-tuning data (e.g. HH-RLHF, Alpaca).
One epoch is planned exactly as `lolkit.train` plans it (`StepPlan.step`: `group_by_length` over
mega-chunks of 256 batches, then micro-batches), and every micro-batch is padded to its longest row,
as `collate` does. Random batching cuts the same shuffled order into consecutive batches.
No model is involved. Usage: python benchmarks/padding.py [--quick] [--n 20000]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import verdict  # noqa: E402

TARGET = 0.05


def long_tailed_lengths(n: int, seed: int = 0, median: float = 150.0, sigma: float = 0.8, cap: int = 1024) -> list[int]:
    rng = random.Random(seed)
    return [max(8, min(cap, int(rng.lognormvariate(math.log(median), sigma)))) for _ in range(n)]


def pad_fraction(batches: list[list[int]], lengths: list[int]) -> tuple[float, int]:
    """(pad tokens / all tokens, all tokens) when every batch is padded to its longest row."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    used = sum(lengths[i] for b in batches for i in b)
    return (total - used) / total, total


def measure(n: int, batch_size: int, micro: int, seed: int = 0) -> dict:
    from lolkit.train import StepPlan

    lengths = long_tailed_lengths(n, seed)
    plan = StepPlan(lengths, batch_size, micro, seed)
    grouped = [mb for s in range(plan.steps_per_epoch) for mb in plan.step(s)]
    order = list(range(n))
    random.Random(seed).shuffle(order)
    steps = [order[k : k + batch_size] for k in range(0, n - batch_size + 1, batch_size)]
    rand = [s[k : k + micro] for s in steps for k in range(0, len(s), micro)]
    g, g_tokens = pad_fraction(grouped, lengths)
    r, r_tokens = pad_fraction(rand, lengths)
    return {"grouped": g, "random": r, "token_ratio": r_tokens / g_tokens, "lengths": lengths}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 4000 if args.quick else args.n
    ok = True
    print(f"{n} examples, log-normal lengths (median 150, sigma 0.8, clipped to [8, 1024])")
    ls = sorted(long_tailed_lengths(n))
    print(f"lengths: p50 {ls[n // 2]}, p90 {ls[int(n * .9)]}, p99 {ls[int(n * .99)]}, max {ls[-1]}, "
          f"mean {sum(ls) / n:.0f}")
    print(f"{'batch':>5} {'micro':>5} | {'random pad':>10} | {'grouped pad':>11} | {'tokens random / grouped':>23}")
    for batch, micro in ((8, 8), (32, 32), (64, 16), (256, 32)):
        r = measure(n, batch, micro)
        ok &= r["grouped"] <= TARGET
        print(f"{batch:>5} {micro:>5} | {r['random']:>10.1%} | {r['grouped']:>11.2%} | {r['token_ratio']:>22.2f}x")
    print(f"grouped pad fraction <= {TARGET:.0%} at every batch size: {verdict(ok)}")


if __name__ == "__main__":
    main()
