"""Step overhead of lolkit's A-LoL training step over a bare forward + backward (spec target ≤ 1.10).

On a ~10M-parameter Llama (CPU, fp32) and one batch of 8 examples of ~70 tokens, three things are
timed in alternation, in one run:

* bare      model(input_ids).logits → cross-entropy on the response tokens → backward
* lolkit    the training loop's own step (`accumulate_gradients`): collate, forward, response
            log-probs, A-LoL loss with the cached reference log-probs and advantages, backward
* published the same step plus a forward pass of a frozen reference copy, as the published A-LoL
            code does on every step

The optimizer update is excluded from all three. Usage: python benchmarks/step_overhead.py [--algo a_lol]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import interleaved, synthetic_records  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algo", default="a_lol")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()

    from lolkit.algorithms import get_algorithm
    from lolkit.config import TrainConfig, build
    from lolkit.data.dataset import load_train_data
    from lolkit.data.tokenize import collate
    from lolkit.engine import prepare_engine
    from lolkit.losses import LossParams
    from lolkit.models import count_parameters, load_model
    from lolkit.tiny import create_tiny_model
    from lolkit.train import accumulate_gradients, resolve_config

    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="lolkit-bench-"))
    os.environ.setdefault("LOLKIT_CACHE", str(tmp / "cache"))
    model_dir = create_tiny_model(tmp / "model", hidden_size=256, layers=8, heads=8, vocab_size=2048)
    data_path = synthetic_records(tmp / "data.jsonl", 64, prompt_words=12, response_words=12)
    cfg = build(TrainConfig, {"output_dir": str(tmp / "run"), "batch_size": args.batch_size, "model": {"name": str(model_dir)},
                              "data": {"train": str(data_path), "val_fraction": 0.0},
                              "algo": {"name": args.algo, "value_source": "data", "value_folds": 2, "max_reward": 1.0,
                                       "value_epochs": 1, "cache_dir": str(tmp / "engine")}})
    cfg = resolve_config(cfg)
    algo = get_algorithm(args.algo)
    model, tok, path = load_model(cfg.model, trainable=True)
    data = load_train_data(cfg.data, tok, algo)
    (tmp / "run").mkdir()
    engine = prepare_engine(cfg, algo, model, tok, data, path, fresh_adapter=False, log=lambda m: None, run=tmp / "run")
    idx = engine.pool[: args.batch_size]
    params = LossParams()
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    batch = collate([data.examples[i].encoded for i in idx], idx, tok.pad_token_id)
    model.train()

    def bare() -> None:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        mask = batch.response_mask.bool()
        loss = torch.nn.functional.cross_entropy(logits[:, :-1][mask], batch.input_ids[:, 1:][mask])
        loss.backward()
        model.zero_grad(set_to_none=True)

    def lolkit_step() -> None:
        accumulate_gradients(model, algo, params, data, engine, [idx], tok.pad_token_id, "cpu", len(idx),
                             lambda loss: loss.backward(), lambda m: contextlib.nullcontext())
        model.zero_grad(set_to_none=True)

    def published() -> None:
        with torch.no_grad():
            reference(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        lolkit_step()

    t = interleaved({"bare": bare, "lolkit": lolkit_step, "published": published}, args.rounds)
    total, _ = count_parameters(model)
    print(f"model: Llama {total / 1e6:.1f}M parameters, batch {len(idx)} x {batch.input_ids.shape[1]} tokens, "
          f"{torch.get_num_threads()} threads, algo {args.algo}")
    print(f"median step: bare fwd+bwd {t['bare'] * 1e3:.1f} ms | lolkit {t['lolkit'] * 1e3:.1f} ms | "
          f"published-style (reference forward every step) {t['published'] * 1e3:.1f} ms")
    print(f"ratio lolkit / bare = {t['lolkit'] / t['bare']:.3f}  (target <= 1.10)")
    print(f"ratio published-style / bare = {t['published'] / t['bare']:.3f}")


if __name__ == "__main__":
    main()
