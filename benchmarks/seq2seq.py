"""Encoder–decoder (T5) policies: generation throughput against a direct `model.generate` (target ≥ 0.95)
and the offline training step against a bare forward + backward (target ≤ 1.10), in one run.

Model: a random T5 (d_model 256, 4 + 4 layers, 8 heads, byte-level BPE, vocabulary ≤ 2048), CPU fp32, one
torch thread. Timed in alternation (medians of per-round ratios):

* eval     `lolkit.generation.generate` (tokenise, sort, right-pad the encoder input, generate from the
           decoder start token, decode) vs `model.generate` on the already padded batch: 8 prompts,
           greedy, 16 new tokens, min_new_tokens=16 so every call makes the same number of tokens
* rollout  `lolkit.generation.sample_tokens` vs `model.generate`, sampling, same seed
* step     the training loop's step (`lolkit.train.accumulate_gradients`: collate, the seq2seq branch
           of `forward_logprobs` — encoder / decoder inputs from the concatenated batch, the LM head on
           the decoder's rows in chunks — the algorithm's loss with the engine's cached reference
           log-probs and advantages, backward) vs the bare `model(input_ids, labels=…)` cross-entropy
           (T5's own loss on the same encoder inputs and labels, built once outside the timing) +
           backward; for a_lol and dpo (pairs: 2 × 8 rows)

* online   (with ``--online``) the online loop's updates on a T5 policy — ppo, a2c, trpo — against T5's
           bare ``model(input_ids, labels=…)`` forward + backward on the same rollout batch
           (`step_overhead.online_steps`, whose docstring says what each update holds)

Usage: python benchmarks/seq2seq.py [--quick] [--algo a_lol] [--online]
"""

from __future__ import annotations

import contextlib
import random
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    WORDS,
    generation_fns,
    interleaved_runs,
    paired_ratio,
    scratch,
    setup_algo,
    timing_args,
    verdict,
)

GEN_TARGET = 0.95
STEP_TARGET = 1.10


def tiny_t5(tmp: Path, *, hidden: int = 256, layers: int = 4, heads: int = 8, vocab: int = 2048) -> Path:
    from lolkit.tiny import create_tiny_model

    return create_tiny_model(tmp / f"t5-{hidden}x{layers}-v{vocab}", hidden_size=hidden, layers=layers, heads=heads,
                             vocab_size=vocab, arch="t5", dropout=0.0)


def generation(model, tok, rounds: int) -> list[tuple[str, float, float, float]]:
    """(pass, lolkit tok/s, direct tok/s, throughput ratio) for greedy eval and sampled rollouts."""
    rng = random.Random(0)
    n_prompts, new = 8, 16
    prompts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 30))) + "?" for _ in range(n_prompts)]
    fns = generation_fns(model, tok, prompts, new, start=model.generation_config.decoder_start_token_id)
    runs = interleaved_runs(fns, rounds, warmup=1)
    model.generation_config.min_new_tokens = None
    med = {k: statistics.median(v) for k, v in runs.items()}
    tokens = n_prompts * new
    return [(label, tokens / med[ours], tokens / med[theirs], paired_ratio(runs[theirs], runs[ours]))
            for label, ours, theirs in [("eval generate (greedy)", "lolkit_eval", "direct_greedy"),
                                        ("rollout sample_tokens", "lolkit_rollout", "direct_sample")]]


def steps(model, tok, model_dir: Path, tmp: Path, algos: list[str], rounds: int, batch_size: int) -> dict[str, dict]:
    from lolkit.data.tokenize import collate
    from lolkit.logprobs import seq2seq_inputs
    from lolkit.train import accumulate_gradients

    results = {}
    for name in algos:
        algo, data, engine, units, params = setup_algo(name, model, tok, model_dir, tmp, batch_size=batch_size)
        rows = data.rows(units)
        batch = collate([data.examples[i].encoded for i in rows], rows, tok.pad_token_id)
        inputs = seq2seq_inputs(batch, tok.pad_token_id, model.generation_config.decoder_start_token_id)
        labels = inputs.pop("labels").masked_fill(~inputs["decoder_attention_mask"].bool(), -100)
        model.train()

        def bare(inputs=inputs, labels=labels) -> None:
            model(**inputs, labels=labels, use_cache=False).loss.backward()
            model.zero_grad(set_to_none=True)

        def step(algo=algo, data=data, engine=engine, units=units, params=params) -> None:
            accumulate_gradients(model, algo, params, data, engine, [units], tok.pad_token_id, "cpu", len(units),
                                 lambda loss: loss.backward(), lambda m: contextlib.nullcontext())
            model.zero_grad(set_to_none=True)

        runs = interleaved_runs({"bare": bare, "lolkit": step}, rounds, warmup=1)
        results[name] = {"rows": len(rows), "encoder": int(inputs["input_ids"].shape[1]),
                         "decoder": int(labels.shape[1]), "bare": statistics.median(runs["bare"]),
                         "lolkit": statistics.median(runs["lolkit"]), "ratio": paired_ratio(runs["lolkit"], runs["bare"])}
    return results


def main() -> None:
    def own(ap) -> None:
        ap.add_argument("--algo", action="append", help="only this algorithm (repeatable); default: a_lol and dpo")
        ap.add_argument("--batch-size", type=int, default=8)
        ap.add_argument("--online", action="store_true", help="also the online updates (ppo, a2c, trpo) on T5")

    args = timing_args(__doc__, 4, 9, own)
    from lolkit.models import ModelConfig, count_parameters, load_model

    torch.manual_seed(0)
    tmp = scratch("lolkit-s2s-bench-")
    model_dir = tiny_t5(tmp)
    model, tok, _ = load_model(ModelConfig(name=str(model_dir)), trainable=True, seq2seq=True)
    total, _ = count_parameters(model)
    print(f"model: T5 {total / 1e6:.1f}M parameters (d_model 256, 4 + 4 layers), vocab {model.config.vocab_size}, "
          f"{torch.get_num_threads()} thread(s), CPU fp32; {args.rounds} interleaved rounds; ratio = median of "
          "per-round ratios")
    model.eval()
    ok = True
    print(f"{'pass':<26} {'lolkit tok/s':>12} {'direct tok/s':>12} {'throughput ratio':>17}")
    for label, ours, theirs, ratio in generation(model, tok, args.rounds):
        ok &= ratio >= GEN_TARGET
        print(f"{label:<26} {ours:>12.0f} {theirs:>12.0f} {ratio:>17.3f}  (target >= {GEN_TARGET}) "
              f"{verdict(ratio >= GEN_TARGET)}  [new tokens]")
    res = steps(model, tok, model_dir, tmp, args.algo or ["a_lol", "dpo"], args.rounds, args.batch_size)
    print(f"\n{'step':<8} {'rows':>4} {'enc x dec':>10} {'bare ms':>9} {'lolkit ms':>10} {'ratio':>7}")
    for name, r in res.items():
        ok &= r["ratio"] <= STEP_TARGET
        print(f"{name:<8} {r['rows']:>4} {r['encoder']:>4} x {r['decoder']:<4} {r['bare'] * 1e3:>9.1f} "
              f"{r['lolkit'] * 1e3:>10.1f} {r['ratio']:>7.3f}  (target <= {STEP_TARGET}) "
              f"{verdict(r['ratio'] <= STEP_TARGET)}")
    print(f"seq2seq generation and step overhead: {verdict(ok)}")
    if args.online:
        from benchmarks.step_overhead import online_steps

        print()
        online_steps(model, tok, args.rounds)


if __name__ == "__main__":
    main()
