"""``lolkit demo``: the whole pipeline on the built-in task with the tiny model, in a few minutes.

preprocess (built-in ``colours`` task) → train each algorithm → eval on the test split → aggregate.
Re-running the same command reuses finished runs and resumes unfinished ones.
"""

from __future__ import annotations

from pathlib import Path

from .config import TrainConfig, build

DEMO_ALGOS = ("nll", "wbc", "r_gold", "r_lol", "a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl")
DEMO_TRAIN = {
    "batch_size": 16, "max_steps": 400, "eval_every": 100, "save_every": 100, "eval_prompts": 32,
    "optim": {"lr": 3e-3, "scheduler": "cosine", "warmup_steps": 10},
    "data": {"max_prompt_len": 64, "max_response_len": 24},
    "eval": {"max_new_tokens": 16},
}


def demo_config(out: Path, algo: str, seed: int, model: str = "tiny") -> TrainConfig:
    data = out / "data"
    return build(TrainConfig, DEMO_TRAIN, {
        "output_dir": str(out / "runs" / f"{algo}-seed{seed}"), "seed": seed, "reward": "colours",
        "model": {"name": model}, "algo": {"name": algo},
        "data": {"train": str(data / "train.jsonl"), "val": str(data / "val.jsonl")},
    })


def run_demo(output_dir: str, algos: tuple[str, ...] = DEMO_ALGOS, seeds: tuple[int, ...] = (0,),
             model: str = "tiny", quiet: bool = False, log=print) -> list[dict]:
    from .aggregate import aggregate
    from .evaluate import EvalOptions, evaluate
    from .preprocess import preprocess_builtin
    from .train import train

    out = Path(output_dir)
    if not (out / "data" / "test.jsonl").exists():
        counts = preprocess_builtin("colours", str(out / "data"))
        log(f"preprocess: built-in colours task → {out / 'data'} ({counts})")
    for seed in seeds:
        for algo in algos:
            cfg = demo_config(out, algo, seed, model)
            run = Path(cfg.output_dir)
            if (run / "eval" / "summary.json").exists():
                log(f"{algo} seed {seed}: done earlier, reusing {run}")
                continue
            if not (run / "final").exists():
                log(f"train: {algo} seed {seed} → {run}")
                train(cfg, resume=run.exists(), quiet=quiet)
            summary = evaluate(EvalOptions(model=str(run), data=str(out / "data" / "test.jsonl"), reward="colours",
                                           overwrite=True), quiet=quiet)
            log(f"eval: {algo} seed {seed}: reward {summary['reward_mean']:.3f}")
    return aggregate([str(out / "runs")], str(out))
