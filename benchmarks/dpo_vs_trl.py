"""DPO step time: lolkit vs TRL's DPOTrainer on the same model, data, batch and steps (CPU, fp32).

Both train a 4-layer Llama (hidden 256) on the same 96 preference pairs, batch 8, for the same
number of steps, from the same initial weights. Reported: the median optimizer-step time of each
(the first two steps excluded), their ratio (target: lolkit ≥ 1.3× faster), and both final losses.
TRL is run as configured by default (reference log-probs computed in every step) and with
`precompute_ref_log_probs=True` (lolkit always caches them).

Runs with one torch thread (see benchmarks/common.py: on the shared 2-core machine two threads per
process make timings swing). Usage: python benchmarks/dpo_vs_trl.py [--quick] [--steps 12]
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


def pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [{"prompt": words(16) + "?", "chosen": " " + words(16) + ".", "rejected": " " + words(16) + "."}
            for _ in range(n)]


def run_trl(model_dir: Path, rows: list[dict], steps: int, batch: int, lr: float, out: Path, precompute: bool):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from lolkit.models import load_tokenizer

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    torch.manual_seed(0)
    tok = load_tokenizer(str(model_dir))
    cfg = DPOConfig(output_dir=str(out), beta=0.1, use_cpu=True, bf16=False, report_to="none", max_steps=steps,
                    per_device_train_batch_size=batch, learning_rate=lr, lr_scheduler_type="constant",
                    gradient_checkpointing=False, logging_steps=1, save_strategy="no", max_length=None,
                    precompute_ref_log_probs=precompute, seed=0, dataloader_num_workers=0, disable_tqdm=True)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=cfg,
                         train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[Clock()])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return times, losses[-1]


def run_lolkit(model_dir: Path, data: Path, steps: int, batch: int, lr: float, out: Path):
    from lolkit.config import TrainConfig, build
    from lolkit.run import read_metrics
    from lolkit.train import train

    cfg = build(TrainConfig, {"output_dir": str(out), "batch_size": batch, "max_steps": steps, "save_every": 0,
                              "model": {"name": str(model_dir)},
                              "data": {"train": str(data), "val_fraction": 0.0, "max_prompt_len": 512,
                                       "max_response_len": 512},
                              "optim": {"lr": lr, "scheduler": "constant", "max_grad_norm": 1.0},
                              "algo": {"name": "dpo", "beta": 0.1, "cache_dir": str(out.parent / "engine")}})
    run = train(cfg, quiet=True)
    rows = read_metrics(run)
    return [r["step_time"] for r in rows], rows[-1]["loss"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="rounds of (lolkit, TRL, TRL precomputed) runs")
    ap.add_argument("--quick", action="store_true", help="one round of 8 steps")
    args = ap.parse_args()
    set_threads(args.threads)
    if args.quick:
        args.steps, args.repeats = min(args.steps, 8), 1

    import torch

    from lolkit.models import quiet_transformers
    from lolkit.tiny import create_tiny_model

    quiet_transformers()
    tmp = scratch("lolkit-dpo-bench-")
    model_dir = create_tiny_model(tmp / "model", hidden_size=256, layers=4, heads=8, vocab_size=2048)
    rows = pairs(96)
    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))

    med = statistics.median
    lk_times, trl_times, pre_times = [], [], []
    for r in range(args.repeats):  # the three runs alternate, so a change of load hits them alike
        t, lk_loss = run_lolkit(model_dir, data, args.steps, args.batch_size, args.lr, tmp / f"lolkit{r}")
        lk_times += t[2:]
        t, trl_loss = run_trl(model_dir, rows, args.steps, args.batch_size, args.lr, tmp / f"trl{r}", False)
        trl_times += t[2:]
        t, pre_loss = run_trl(model_dir, rows, args.steps, args.batch_size, args.lr, tmp / f"trl-pre{r}", True)
        pre_times += t[2:]
    print(f"model: Llama hidden 256 x 4 layers; {len(rows)} pairs, batch {args.batch_size}, {args.steps} steps x {args.repeats} "
          f"rounds (first 2 steps of each run excluded), CPU fp32, {torch.get_num_threads()} thread(s)")
    print(f"median step: lolkit {med(lk_times) * 1e3:.0f} ms | TRL {med(trl_times) * 1e3:.0f} ms | "
          f"TRL precomputed reference {med(pre_times) * 1e3:.0f} ms")
    speedup = med(trl_times) / med(lk_times)
    print(f"speed-up lolkit vs TRL = {speedup:.2f}x  (target >= 1.3) {verdict(speedup >= 1.3)}")
    print(f"speed-up lolkit vs TRL with precomputed reference = {med(pre_times) / med(lk_times):.2f}x")
    print(f"final loss: lolkit {lk_loss:.4f} | TRL {trl_loss:.4f} | TRL precomputed {pre_loss:.4f}")


if __name__ == "__main__":
    main()
