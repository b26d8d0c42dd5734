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

The optimizer update is excluded from all.

With ``--online``, the online loop's updates instead (:func:`online_steps`, also run on T5 by
``seq2seq.py --online``), each against the bare forward + backward of the same rollout batch (8 rollouts
of a 20–40-token prompt and a 12–32-token response, random tokens, advantages and returns):

* ppo   one minibatch of the whole rollout (`PPOUpdate.step` with 1 epoch): forward with values,
        clipped loss, backward, gradient clipping, AdamW step
* a2c   `A2CUpdate.step`: the same pass with the A2C loss, gradient clipping, RMSprop step
* trpo  `TRPOUpdate.step`: the differentiable pass, 15 conjugate-gradient Fisher–vector products
        (double backward), the line search's forwards, then 10 epochs of the value-head fit

These include the optimizer (it is part of an update); the ratio says what one rollout's update costs
in bare forward + backward passes. Usage: python benchmarks/step_overhead.py [--quick] [--algo a_lol] [--online]
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


def online_steps(model, tok, rounds: int, rows: int = 8, algos=("ppo", "a2c", "trpo"), log=print) -> dict[str, dict]:
    """Each online update (``lolkit.online.updates``) on one rollout batch vs a bare forward + backward of the
    same batch (a causal LM's logits → cross-entropy on the response tokens; an encoder–decoder's own
    ``model(input_ids, labels=…)`` loss), timed in alternation. Returns {algo: {bare, update, ratio}}."""
    import random

    from lolkit.algorithms import get_algorithm
    from lolkit.config import TrainConfig, build
    from lolkit.logprobs import seq2seq_inputs
    from lolkit.models import is_seq2seq
    from lolkit.online.policy import ValueHead, build_batch, policy_forward
    from lolkit.online.updates import UPDATES, Rollout

    rng = random.Random(0)
    vocab = int(model.config.vocab_size)
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(20, 40))] for _ in range(rows)]
    responses = [[rng.randrange(3, vocab) for _ in range(rng.randint(12, 32))] for _ in range(rows)]
    batch = build_batch(prompts, responses, tok.pad_token_id, "cpu")
    mask = batch.mask
    head = ValueHead(int(model.config.hidden_size))
    modules = torch.nn.ModuleList([model, head])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        old = policy_forward(model, head, batch)
    roll = Rollout(batch, old.logps, old.values * mask, torch.randn(mask.shape, generator=g) * mask,
                   torch.randn(mask.shape, generator=g) * mask)
    if is_seq2seq(model):
        inputs = seq2seq_inputs(batch, tok.pad_token_id, model.generation_config.decoder_start_token_id)
        labels = inputs.pop("labels").masked_fill(~inputs["decoder_attention_mask"].bool(), -100)

        def loss():
            return model(**inputs, labels=labels, use_cache=False).loss
    else:
        def loss():
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, use_cache=False).logits
            m = batch.response_mask.bool()
            return torch.nn.functional.cross_entropy(logits[:, :-1][m], batch.input_ids[:, 1:][m])

    def bare() -> None:
        loss().backward()
        model.zero_grad(set_to_none=True)

    model.train()
    results = {}
    for name in algos:
        cfg = build(TrainConfig, {"algo": {"name": name}, "micro_batch_size": rows,
                                  "optim": {"lr": 1e-6 if get_algorithm(name).policy_lr else 1e-3},
                                  "ppo": {"epochs": 1, "minibatch_size": rows}})
        update = UPDATES[name](cfg, model, head, None, None, modules)
        runs = interleaved_runs({"bare": bare, "update": lambda u=update: u.step(roll, 0)}, rounds, warmup=1)
        t = {k: statistics.median(v) for k, v in runs.items()}
        results[name] = {**t, "ratio": paired_ratio(runs["update"], runs["bare"])}
        log(f"online {name:<6} {rows} rollouts, {int(mask.sum())} response tokens: bare {t['bare'] * 1e3:7.1f} ms  "
            f"update {t['update'] * 1e3:8.1f} ms  ratio {results[name]['ratio']:.2f}")
    return results


def main() -> None:
    from lolkit.algorithms import get_algorithm, names

    def own(ap) -> None:
        ap.add_argument("--algo", action="append", help="only this algorithm (repeatable); default: all offline ones")
        ap.add_argument("--batch-size", type=int, default=8)
        ap.add_argument("--online", action="store_true", help="the online loop's updates (ppo, a2c, trpo) instead")

    args = timing_args(__doc__, 4, 7, own)
    rounds = args.rounds
    if args.online:
        from lolkit.models import ModelConfig, count_parameters, load_model

        torch.manual_seed(0)
        model, tok, _ = load_model(ModelConfig(name=str(tiny_llama(scratch("lolkit-bench-"), layers=4))),
                                   trainable=True)
        print(f"model: Llama {count_parameters(model)[0] / 1e6:.1f}M parameters, {torch.get_num_threads()} thread(s), "
              f"CPU fp32; {rounds} interleaved rounds; ratio = median of per-round ratios (update / bare fwd+bwd)")
        online_steps(model, tok, rounds)
        return
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
