"""Reward-model training throughput: lolkit (`--algo rm`) vs TRL 1.16's RewardTrainer (CPU, fp32).

Both train the same 4-layer Llama (hidden 256) with a fresh one-output head from the same folder and
seed, on the same preference pairs (prompts and answers of varied lengths, as in HH-RLHF), with the
same batch of pairs, learning rate, constant schedule and gradient clipping, for the same number of
steps. The runs alternate (lolkit, TRL, lolkit, TRL, …) so that a change of load on the shared machine
hits both alike. Reported: pairs per second of each (batch / median optimizer-step time, the first two
steps of each run excluded), their ratio (target: lolkit ≥ 1.3×), the padding of each one's batches
(where the difference comes from: lolkit groups pairs of similar length into a step, TRL's collator pads
random pairs to the longest), and both final losses.

TRL runs with `gradient_checkpointing=False, bf16=False, use_cpu=True` (its defaults, checkpointing and
bf16, are much slower on this CPU) and one torch thread (see benchmarks/common.py).
Usage: python benchmarks/rm_vs_trl.py [--quick] [--steps 12] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import WORDS, scratch, set_threads, verdict  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def varied_pairs(n: int, seed: int = 0) -> list[dict]:
    """Pairs whose prompts run 6–60 words and answers 3–40 words (HH-RLHF's spread, scaled down)."""
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [{"id": i, "prompt": words(rng.randint(6, 60)) + "?", "chosen": " " + words(rng.randint(3, 40)) + ".",
             "rejected": " " + words(rng.randint(3, 40)) + "."} for i in range(n)]


def run_trl(model_dir: Path, rows: list[dict], steps: int, batch: int, lr: float, out: Path):
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    from lolkit.models import load_tokenizer

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    tok = load_tokenizer(str(model_dir))
    cfg = RewardConfig(output_dir=str(out), use_cpu=True, bf16=False, report_to="none", max_steps=steps,
                       per_device_train_batch_size=batch, learning_rate=lr, lr_scheduler_type="constant",
                       max_grad_norm=1.0, gradient_checkpointing=False, logging_steps=1, save_strategy="no",
                       seed=0, dataloader_num_workers=0, disable_tqdm=True,
                       model_init_kwargs={"dtype": torch.float32})
    trainer = RewardTrainer(model=str(model_dir), args=cfg, train_dataset=Dataset.from_list(
        [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]), processing_class=tok, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    pad = []
    for k, b in enumerate(trainer.get_train_dataloader()):  # its sampler's batches, padded by its collator
        if k == steps:
            break
        pad.append(1.0 - b["attention_mask"].sum().item() / b["attention_mask"].numel())
    return times, losses[-1], statistics.mean(pad)


def run_lolkit(model_dir: Path, data: Path, steps: int, batch: int, lr: float, out: Path):
    from lolkit.config import TrainConfig, build
    from lolkit.train import read_metrics, train

    cfg = build(TrainConfig, {"output_dir": str(out), "batch_size": batch, "max_steps": steps, "save_every": 0,
                              "tensorboard": False, "seed": 0, "model": {"name": str(model_dir)},
                              "data": {"train": str(data), "val_fraction": 0.0, "max_prompt_len": 512,
                                       "max_response_len": 512},
                              "optim": {"lr": lr, "scheduler": "constant", "max_grad_norm": 1.0},
                              "algo": {"name": "rm"}})
    run = train(cfg, quiet=True)
    rows = read_metrics(run)
    return [r["step_time"] for r in rows], rows[-1]["loss"], statistics.mean(r["pad_fraction"] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="rounds of (lolkit, TRL) runs")
    ap.add_argument("--pairs", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="one round of 6 steps on a 2-layer model")
    args = ap.parse_args()
    set_threads(args.threads)
    layers = 4
    if args.quick:
        args.steps, args.repeats, args.pairs, layers = min(args.steps, 6), 1, min(args.pairs, 64), 2

    import torch

    from lolkit.models import quiet_transformers
    from lolkit.tiny import create_tiny_model

    quiet_transformers()
    tmp = scratch("lolkit-rm-bench-")
    model_dir = create_tiny_model(tmp / "model", hidden_size=256, layers=layers, heads=8, vocab_size=2048)
    rows = varied_pairs(args.pairs)
    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    med = statistics.median
    lk_times: list[float] = []
    trl_times: list[float] = []
    for r in range(args.repeats):  # alternate, so a change of load hits both alike
        t, lk_loss, lk_pad = run_lolkit(model_dir, data, args.steps, args.batch_size, args.lr, tmp / f"lolkit{r}")
        lk_times += t[2:]
        t, trl_loss, trl_pad = run_trl(model_dir, rows, args.steps, args.batch_size, args.lr, tmp / f"trl{r}")
        trl_times += t[2:]
    lk_rate, trl_rate = args.batch_size / med(lk_times), args.batch_size / med(trl_times)
    print(f"model: Llama hidden 256 x {layers} layers + a one-output head; {len(rows)} pairs (prompts 6-60 words, "
          f"answers 3-40), batch {args.batch_size} pairs, {args.steps} steps x {args.repeats} rounds (first 2 steps "
          f"of each run excluded), CPU fp32, {torch.get_num_threads()} thread(s)")
    print(f"median step: lolkit {med(lk_times) * 1e3:.0f} ms | TRL {med(trl_times) * 1e3:.0f} ms")
    print(f"throughput: lolkit {lk_rate:.1f} pairs/s | TRL {trl_rate:.1f} pairs/s")
    print(f"padding: lolkit {lk_pad:.1%} of the batch tokens | TRL {trl_pad:.1%}")
    ratio = lk_rate / trl_rate
    print(f"speed-up lolkit vs TRL = {ratio:.2f}x  (target >= 1.3) {verdict(ratio >= 1.3)}")
    print(f"final loss: lolkit {lk_loss:.4f} | TRL {trl_loss:.4f}")


if __name__ == "__main__":
    main()
