"""Step overhead of every offline algorithm's training step over a bare forward + backward
(target ≤ 1.10), and A-LoL against a re-run of the published step that recomputes the reference.

On a 4.5M-parameter Llama (hidden 256, 4 layers) (CPU, fp32) and one batch of 8 units (examples; pairs for dpo, rankings of
3 for pro) of ~78 tokens, each algorithm's step is timed in alternation with a bare step on exactly
the same rows, in one run:

* bare       model(input_ids).logits → cross-entropy on the response tokens → backward
* lolkit     the training loop's own step (`lolkit.train.accumulate_gradients`): collate, forward,
             response log-probs, the algorithm's loss with the cached reference log-probs and
             advantages from the real engine (`prepare_engine`), backward
* published  (a_lol only) the published A-LoL step: a forward of a frozen reference copy on every
             step, full-vocabulary log-softmax of policy and reference, the A-LoL loss, backward

The optimizer update is excluded from all. Usage: python benchmarks/step_overhead.py [--quick] [--algo a_lol]
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import (  # noqa: E402
    interleaved_runs,
    paired_ratio,
    scratch,
    setup_algo,
    timing_args,
    tiny_llama,
    verdict,
)

TARGET = 1.10


def published_step(model, reference, batch, advantages: torch.Tensor, clip: float = 0.9) -> None:
    """The published A-LoL training step: reference forward every step, full log-softmax."""
    mask = batch.response_mask
    targets = batch.input_ids[:, 1:, None]

    def seq_logps(m):
        logits = m(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits[:, :-1]
        return (torch.log_softmax(logits.float(), -1).gather(-1, targets).squeeze(-1) * mask).sum(-1)

    with torch.no_grad():
        ref = seq_logps(reference)
    pol = seq_logps(model)
    ratio = (pol.detach() - ref).exp().clamp(1 - clip, 1 + clip)
    (advantages.clamp(min=0) * ratio * -pol).mean().backward()
    model.zero_grad(set_to_none=True)


def measure(algos: list[str], rounds: int, batch_size: int, warmup: int = 1, log=print) -> dict[str, dict]:
    from lolkit.data.tokenize import collate
    from lolkit.models import ModelConfig, count_parameters, load_model
    from lolkit.train import accumulate_gradients

    torch.manual_seed(0)
    tmp = scratch("lolkit-bench-")
    model_dir = tiny_llama(tmp, layers=4)
    model, tok, _ = load_model(ModelConfig(name=str(model_dir)), trainable=True)
    total, _ = count_parameters(model)
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    log(f"model: Llama {total / 1e6:.1f}M parameters, vocab {model.config.vocab_size}, {torch.get_num_threads()} "
        f"threads, CPU fp32; batch of {batch_size} units; {rounds} interleaved rounds; ratio = median of per-round "
        "ratios")
    results: dict[str, dict] = {}
    for name in algos:
        algo, data, engine, units, params = setup_algo(name, model, tok, model_dir, tmp, batch_size=batch_size)
        rows = data.rows(units)
        batch = collate([data.examples[i].encoded for i in rows], rows, tok.pad_token_id)
        model.train()

        def bare(batch=batch) -> None:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
            mask = batch.response_mask.bool()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1][mask], batch.input_ids[:, 1:][mask])
            loss.backward()
            model.zero_grad(set_to_none=True)

        def step(algo=algo, data=data, engine=engine, units=units, params=params) -> None:
            accumulate_gradients(model, algo, params, data, engine, [units], tok.pad_token_id, "cpu", len(units),
                                 lambda loss: loss.backward(), lambda m: contextlib.nullcontext())
            model.zero_grad(set_to_none=True)

        fns = {"bare": bare, "lolkit": step}
        if name == "a_lol":
            adv = engine.advantages[torch.tensor(rows)]
            fns["published"] = lambda batch=batch, adv=adv: published_step(model, reference, batch, adv)
        runs = interleaved_runs(fns, rounds, warmup=warmup)
        t = {k: statistics.median(v) for k, v in runs.items()}
        res = {"rows": len(rows), "width": batch.input_ids.shape[1], **t,
               "ratio": paired_ratio(runs["lolkit"], runs["bare"])}
        if "published" in t:
            res["published_ratio"] = paired_ratio(runs["published"], runs["bare"])
            res["speedup_vs_published"] = paired_ratio(runs["published"], runs["lolkit"])
        results[name] = res
        log(f"{name:<15} {len(rows):>3} x {res['width']:<4} bare {t['bare'] * 1e3:7.1f} ms  lolkit "
            f"{t['lolkit'] * 1e3:7.1f} ms  ratio {res['ratio']:.3f}  {verdict(res['ratio'] <= TARGET)}")
    return results


def main() -> None:
    from lolkit.algorithms import get_algorithm, names

    def own(ap) -> None:
        ap.add_argument("--algo", action="append", help="only this algorithm (repeatable); default: all offline ones")
        ap.add_argument("--batch-size", type=int, default=8)

    args = timing_args(__doc__, 4, 7, own)
    rounds = args.rounds
    # the causal-LM rows: their step and the bare forward + backward run on the same model (rm: rm_vs_trl.py)
    res = measure(args.algo or [n for n in names("offline") if get_algorithm(n).model.name == "causal_lm"], rounds,
                  args.batch_size)
    worst = max(res, key=lambda k: res[k]["ratio"])
    print(f"\nratio lolkit step / bare fwd+bwd: worst {worst} {res[worst]['ratio']:.3f}, "
          f"best {min(r['ratio'] for r in res.values()):.3f}  (target <= {TARGET}) "
          f"{verdict(all(r['ratio'] <= TARGET for r in res.values()))}")
    if "a_lol" in res:
        r = res["a_lol"]
        print(f"a_lol: published step (reference forward every step) {r['published'] * 1e3:.1f} ms = "
              f"{r['published_ratio']:.3f} x bare; lolkit a_lol is {r['speedup_vs_published']:.2f}x faster")


if __name__ == "__main__":
    main()
