"""``lolkit demo``: the whole pipeline on the built-in task with the tiny model, in a few minutes.

preprocess (built-in ``colours`` task) → train each algorithm → eval on the test split → aggregate.
Re-running the same command reuses finished runs and resumes unfinished ones.
"""

from __future__ import annotations

from pathlib import Path

from .algorithms import demo_names, get_algorithm
from .config import TrainConfig, build

DEMO_ALGOS = demo_names()  # the rows of lolkit.algorithms marked demo, in table order
# the data file of each record kind an algorithm trains on first (scored responses, pairs, rankings)
TRAIN_FILE = {"response": "train.jsonl", "preference": "train_pairs.jsonl", "ranking": "train_rankings.jsonl"}
DEMO_TRAIN = {
    "batch_size": 16, "max_steps": 400, "eval_every": 100, "save_every": 100, "eval_prompts": 32,
    "optim": {"lr": 3e-3, "scheduler": "cosine", "warmup_steps": 10},
    "data": {"max_prompt_len": 64, "max_response_len": 24},
    "eval": {"max_new_tokens": 16},
}


# Every algorithm but nll starts from the behaviour-cloned model, as in the A-LoL paper (the SFT model
# is the reference policy and the starting point: SFT → X). This matters for the advantage methods:
# V(x) estimates what the reference earns, and a random reference earns nothing, so from a random
# start every response would have A = R > 0 and A-LoL would reduce to reward weighting. DPO also
# needs the smaller learning rate: it has no likelihood term, and at the offline family's rate it
# unlearns the fluent text along with the rejected answers.
STARTS_FROM_NLL = {algo: ({"optim": {"lr": 3e-5}} if algo == "dpo" else {}) for algo in DEMO_ALGOS if algo != "nll"}


def demo_config(out: Path, algo: str, seed: int, model: str = "tiny", max_steps: int | None = None) -> TrainConfig:
    data = out / "data"
    if algo in STARTS_FROM_NLL:
        model = str(out / "runs" / f"nll-seed{seed}" / "final")
    # a shorter demo (--max-steps) validates and checkpoints four times, like the full one
    short = {"max_steps": max_steps, "eval_every": max(1, max_steps // 4), "save_every": max(1, max_steps // 4)} \
        if max_steps else {}
    return build(TrainConfig, DEMO_TRAIN, short, STARTS_FROM_NLL.get(algo, {}), {
        "output_dir": str(out / "runs" / f"{algo}-seed{seed}"), "seed": seed, "reward": "colours",
        "model": {"name": model}, "algo": {"name": algo},
        "data": {"train": str(data / TRAIN_FILE[get_algorithm(algo).records[0]]), "val": str(data / "val.jsonl")},
    })


def _preference_files(data: Path) -> dict[str, int]:
    """Pairs and rankings from the scored training responses (several answers per prompt)."""
    from .data.pairs import preference_pairs, rankings
    from .data.schema import load_records
    from .io import write_jsonl

    records = load_records(data / "train.jsonl")
    return {"pairs": write_jsonl(data / "train_pairs.jsonl", preference_pairs(records)),
            "rankings": write_jsonl(data / "train_rankings.jsonl", rankings(records))}


def run_demo(output_dir: str, algos: tuple[str, ...] = DEMO_ALGOS, seeds: tuple[int, ...] = (0,),
             model: str = "tiny", quiet: bool = False, log=print, max_steps: int | None = None, warn=None) -> list[dict]:
    from .aggregate import aggregate
    from .evaluate import EvalOptions, evaluate
    from .preprocess import preprocess_builtin
    from .train import train

    out = Path(output_dir)
    if not (out / "data" / "train_rankings.jsonl").exists():
        counts = preprocess_builtin("colours", str(out / "data"))
        counts.update(_preference_files(out / "data"))
        log(f"preprocess: built-in colours task → {out / 'data'} ({counts})")
    for seed in seeds:
        # nll first: the other algorithms start from its model
        order = (("nll",) + tuple(a for a in algos if a != "nll")) if any(a in STARTS_FROM_NLL for a in algos) \
            else tuple(algos)
        for algo in order:
            cfg = demo_config(out, algo, seed, model, max_steps)
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
    return aggregate([str(out / "runs")], str(out), warn=warn)
