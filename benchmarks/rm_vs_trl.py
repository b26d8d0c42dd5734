"""Reward-model training throughput: lolkit (`--algo rm`) vs TRL 1.16's RewardTrainer (CPU, fp32).

Both train the same 4-layer Llama (hidden 256) with a fresh one-output head from the same folder and
seed, on the same preference pairs (prompts and answers of varied lengths, as in HH-RLHF), with the
same batch of pairs, learning rate and gradient clipping (1.0), AdamW each.

Each optimizer step is one call: lolkit's is the training loop's own step function
(`lolkit.train.accumulate_gradients` on the loop's `StepPlan` batches, then clipping and the update);
TRL's is `RewardTrainer.training_step` (its `compute_loss`, metrics included, and backward) on a batch of
its own dataloader, then clipping and the update. The two alternate step by step (the order swapping
every step), so that the load of the shared machine hits both alike. After one untimed epoch each, every
timed epoch trains on every pair exactly once on both sides: the same work, whatever the grouping of the
batches. Throughput = pairs ÷ the epoch's summed step times; the ratio is the median over epochs of the
per-epoch ratio (target: lolkit ≥ 1.3× TRL). Also printed: the padding of each one's batches (lolkit
groups pairs of similar length into a step and runs the rows of a step in length groups; TRL's collator
pads random pairs to the longest), and both mean losses of the last epoch.

TRL is set up with `gradient_checkpointing=False, bf16=False, use_cpu=True` (its defaults, checkpointing and
bf16, are much slower on this CPU), one torch thread (see benchmarks/common.py).
Usage: python benchmarks/rm_vs_trl.py [--quick] [--pairs 96] [--epochs 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import WORDS, paired_ratio, scratch, set_threads, verdict  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def varied_pairs(n: int, seed: int = 0) -> list[dict]:
    """Pairs whose prompts run 6-60 words and answers 3-40 words (HH-RLHF's spread, scaled down)."""
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [{"id": i, "prompt": words(rng.randint(6, 60)) + "?", "chosen": " " + words(rng.randint(3, 40)) + ".",
             "rejected": " " + words(rng.randint(3, 40)) + "."} for i in range(n)]


def lolkit_side(model_dir: Path, data: Path, batch: int, lr: float, out: Path):
    """(steps per epoch, step(k) -> (loss, computed tokens, pad tokens of the collated batch, its tokens))."""
    import torch
    from accelerate.utils import set_seed

    from lolkit.algorithms import get_algorithm
    from lolkit.config import TrainConfig, build
    from lolkit.data.dataset import load_train_data
    from lolkit.engine import Engine
    from lolkit.losses import LossParams
    from lolkit.reward_model import row_chunks
    from lolkit.run import make_optimizer
    from lolkit.train import StepPlan, accumulate_gradients, resolve_config

    cfg = resolve_config(build(TrainConfig, {
        "output_dir": str(out), "batch_size": batch, "seed": 0, "model": {"name": str(model_dir)},
        "data": {"train": str(data), "val_fraction": 0.0, "max_prompt_len": 512, "max_response_len": 512},
        "optim": {"lr": lr, "scheduler": "constant", "max_grad_norm": 1.0}, "algo": {"name": "rm"}}))
    algo = get_algorithm("rm")
    set_seed(cfg.seed)
    model, tok, _ = algo.model.load(cfg)
    model.train()
    data = load_train_data(cfg.data, tok, algo, which=algo.unit)
    plan = StepPlan(data.lengths, cfg.batch_size, cfg.micro_batch_size, cfg.seed)
    engine = Engine(pool=list(range(len(data.units))), weights=None)  # rm needs no reference pass
    optimizer = make_optimizer(cfg.optim, model)
    params = LossParams(group_size=data.group_size)

    def step(k: int):
        micro = plan.step(k)
        sums, pad, tokens = accumulate_gradients(model, algo, params, data, engine, micro, tok.pad_token_id, "cpu",
                                                 cfg.batch_size, lambda loss: loss.backward(),
                                                 lambda m: contextlib.nullcontext())
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        computed = 0
        for units in micro:
            lengths = [len(data.examples[i].encoded) for i in data.rows(units)]
            computed += sum(len(g) * lengths[g[0]] for g in row_chunks(lengths))
        return sums["loss"].item() / cfg.batch_size, computed, pad, tokens

    return plan.steps_per_epoch, step


def trl_side(model_dir: Path, rows: list[dict], batch: int, lr: float, out: Path, steps: int):
    """(its dataloader, step(batch) -> (loss, pad tokens, tokens))."""
    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from lolkit.models import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    cfg = RewardConfig(output_dir=str(out), use_cpu=True, bf16=False, report_to="none", max_steps=steps,
                       per_device_train_batch_size=batch, learning_rate=lr, lr_scheduler_type="constant",
                       max_grad_norm=1.0, gradient_checkpointing=False, save_strategy="no", seed=0,
                       dataloader_num_workers=0, disable_tqdm=True, model_init_kwargs={"dtype": torch.float32})
    trainer = RewardTrainer(model=str(model_dir), args=cfg, train_dataset=Dataset.from_list(
        [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]), processing_class=tok)
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(), which this loop replaces
    model = trainer.model

    def step(inputs):
        mask = inputs["attention_mask"]
        loss = trainer.training_step(model, inputs)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        model.zero_grad(set_to_none=True)
        return loss.item(), int(mask.numel() - mask.sum()), mask.numel()

    return trainer.get_train_dataloader(), step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=96, help="pairs in the data (one epoch)")
    ap.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=4, help="timed epochs (after an untimed one)")
    ap.add_argument("--quick", action="store_true", help="2 timed epochs of 32 pairs, a 2-layer model")
    args = ap.parse_args()
    set_threads(args.threads)
    layers = 4
    if args.quick:
        args.epochs, args.pairs, layers = 2, min(args.pairs, 32), 2

    import torch

    from lolkit.progress import quiet_transformers
    from lolkit.tiny import create_tiny_model

    quiet_transformers()
    tmp = scratch("lolkit-rm-bench-")
    model_dir = create_tiny_model(tmp / "model", hidden_size=256, layers=layers, heads=8, vocab_size=2048)
    rows = varied_pairs(args.pairs)
    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    per_epoch, lk_step = lolkit_side(model_dir, data, args.batch_size, args.lr, tmp / "lolkit")
    loader, trl_step = trl_side(model_dir, rows, args.batch_size, args.lr, tmp / "trl", (args.epochs + 1) * per_epoch)
    rates: dict[str, list[float]] = {"lolkit": [], "TRL": []}
    k = 0
    for epoch in range(args.epochs + 1):  # epoch 0 warms both up, untimed
        trl_batches = list(loader)  # its sampler reshuffles every epoch
        assert len(trl_batches) == per_epoch, (len(trl_batches), per_epoch)
        secs = {"lolkit": 0.0, "TRL": 0.0}
        lk_loss, trl_loss, lk_tok, lk_pad, lk_all, trl_pad, trl_all = [], [], 0, 0, 0, 0, 0
        for j, inputs in enumerate(trl_batches):
            order = ("lolkit", "TRL") if (k + j) % 2 == 0 else ("TRL", "lolkit")
            for side in order:
                t = time.perf_counter()
                if side == "lolkit":
                    loss, computed, pad, tokens = lk_step(k + j)
                else:
                    loss, pad_t, tokens_t = trl_step(inputs)
                secs[side] += time.perf_counter() - t
                if side == "lolkit":
                    lk_loss.append(loss)
                    lk_tok, lk_pad, lk_all = lk_tok + computed, lk_pad + pad, lk_all + tokens
                else:
                    trl_loss.append(loss)
                    trl_pad, trl_all = trl_pad + pad_t, trl_all + tokens_t
        k += per_epoch
        if epoch:
            for side in rates:
                rates[side].append(per_epoch * args.batch_size / secs[side])
    med = statistics.median
    real = lk_all - lk_pad  # the same real tokens on both sides
    print(f"model: Llama hidden 256 x {layers} layers + a one-output head; {len(rows)} pairs (prompts 6-60 words, "
          f"answers 3-40), batch {args.batch_size} pairs; {args.epochs} timed epochs after 1 untimed, steps "
          f"alternating; CPU fp32, {torch.get_num_threads()} thread(s)")
    print(f"throughput: lolkit {med(rates['lolkit']):.2f} pairs/s | TRL {med(rates['TRL']):.2f} pairs/s "
          "(median over epochs)")
    print(f"padding (last epoch): lolkit {lk_pad / lk_all:.1%} of the collated batch, {1 - real / lk_tok:.1%} of "
          f"the tokens its grouped forward computes | TRL {trl_pad / trl_all:.1%}")
    ratio = paired_ratio(rates["lolkit"], rates["TRL"])
    print(f"speed-up lolkit vs TRL = {ratio:.2f}x  (target >= 1.3) {verdict(ratio >= 1.3)}")
    print(f"mean loss of the last epoch: lolkit {statistics.mean(lk_loss):.4f} | TRL {statistics.mean(trl_loss):.4f}")


if __name__ == "__main__":
    main()
