"""``lolkit eval``: generate for every test prompt, score with the task reward, summarise.

Writes ``generations.jsonl`` (one row per sample: prompt, response, reward, components, length) and
``summary.json`` (reward mean/std, per-component means, mean length, distinct-1/2/3, and the run's
identity — algorithm, seed, data, model — for ``lolkit aggregate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import LolkitError
from .generation import GenerationConfig, generate
from .io import read_json, write_json, write_jsonl
from .metrics import distinct_n, mean_std


def run_dir_of(model: str) -> Path | None:
    p = Path(model)
    return p if (p / "config.yaml").is_file() and (p / "run.json").is_file() else None


def score_prompts(model, tokenizer, prompts: list[str], raw_prompts: list[str], reward_name: str | None, cfg,
                  *, sample: bool, progress=None, records=None) -> list[dict]:
    """Generate for ``prompts`` (rendered) and score against ``raw_prompts`` (tokenizer-free text).
    ``cfg`` is a TrainConfig (its ``eval`` section sets the generation). ``records`` (one per prompt)
    give the reward its references (``references`` / ``meta.reference`` fields, else the record's own
    responses) and ``meta``."""
    from .rewards import get_reward

    e = cfg.eval
    gcfg = GenerationConfig(max_new_tokens=e.max_new_tokens, do_sample=sample and e.do_sample,
                            temperature=e.temperature, top_p=e.top_p, num_samples=e.num_samples if sample else 1,
                            batch_size=e.batch_size, max_prompt_len=cfg.data.max_prompt_len, seed=cfg.seed)
    outs = generate(model, tokenizer, prompts, gcfg, progress=progress)
    flat = [(k, s, g) for k, gens in enumerate(outs) for s, g in enumerate(gens)]
    scores: list = [(None, {})] * len(flat)
    if reward_name:
        reward = get_reward(reward_name)
        refs = metas = None
        if records is not None:
            raw = [r.to_json() for r in records]
            per_prompt = [reward.references_of(obj) or list(rec.responses) for obj, rec in zip(raw, records, strict=True)]
            refs = [per_prompt[k] for k, _, _ in flat]
            metas = [raw[k].get("meta", {}) for k, _, _ in flat]
        scores = reward.score([raw_prompts[k] for k, _, _ in flat], [g.text for _, _, g in flat],
                              references=refs, metas=metas)
    return [{"prompt": raw_prompts[k], "response": g.text, "reward": total, "rewards": comps,
             "num_tokens": g.num_tokens, "finished": g.finished, "sample": s}
            for (k, s, g), (total, comps) in zip(flat, scores, strict=True)]


def summarise(rows: list[dict]) -> dict:
    texts = [r["response"] for r in rows]
    out: dict = {"num_generations": len(rows), "num_prompts": len({r["prompt"] for r in rows})}
    rewards = [r["reward"] for r in rows if r["reward"] is not None]
    if rewards:
        out["reward_mean"], out["reward_std"] = mean_std(rewards)
        for comp in rows[0]["rewards"]:
            out[f"reward/{comp}"] = mean_std([r["rewards"][comp] for r in rows])[0]
    out["length_mean"] = mean_std([r["num_tokens"] for r in rows])[0]
    out["finished_fraction"] = sum(r["finished"] for r in rows) / max(1, len(rows))
    for n in (1, 2, 3):
        out[f"distinct_{n}"] = distinct_n(texts, n)
    return out


@dataclass
class EvalOptions:
    model: str  # run directory, model directory or short name
    output_dir: str | None = None  # default: <run>/eval
    data: str | None = None  # JSONL with prompts; default: the run's built-in task test split
    reward: str | None = None  # default: the run's reward
    checkpoint: str = "final"  # final | best (for run directories)
    overwrite: bool = False
    overrides: dict = field(default_factory=dict)  # eval.* / data.* settings


def evaluate(opts: EvalOptions, quiet: bool = False) -> dict:
    import torch

    from .config import TrainConfig, build, load_yaml
    from .data.dataset import builtin_records
    from .data.schema import load_records
    from .data.tokenize import prompt_text, render_prompt
    from .models import ModelConfig, load_model
    from .progress import CountProgress

    run = run_dir_of(opts.model)
    if run is not None:
        cfg = build(TrainConfig, load_yaml(run / "config.yaml"), source=str(run / "config.yaml"))
        model_path = run / ("final" if opts.checkpoint == "final" else "checkpoints/best")
        if opts.checkpoint not in ("final", "best"):
            raise LolkitError(f"--checkpoint {opts.checkpoint!r}: expected final or best")
        if not model_path.exists():
            raise LolkitError(f"{model_path}: not found (did the run finish?)")
        mcfg = ModelConfig(name=str(model_path), dtype=cfg.model.dtype, trust_remote_code=cfg.model.trust_remote_code)
    else:
        cfg = TrainConfig()
        mcfg = ModelConfig(name=opts.model)
    cfg = build(TrainConfig, _as_dict(cfg), opts.overrides, source="eval settings")
    out_dir = Path(opts.output_dir) if opts.output_dir else (run / "eval" if run else None)
    if out_dir is None:
        raise LolkitError("--output-dir is required when --model is not a run directory")
    if (out_dir / "summary.json").exists() and not opts.overwrite:
        raise LolkitError(f"{out_dir}: evaluation exists; pass --overwrite to replace it")
    if opts.data:
        records = load_records(opts.data)
        source = opts.data
    elif cfg.data.train is None:
        records = builtin_records(cfg.data.task, "test")
        source = f"builtin:{cfg.data.task}/test"
    else:
        raise LolkitError("--data is required: the run was trained on a file, and lolkit cannot guess its test split")
    reward = opts.reward or cfg.reward or (cfg.data.task if cfg.data.train is None and not opts.data else None)
    if cfg.eval.max_prompts:
        records = records[: cfg.eval.max_prompts]
    torch.manual_seed(cfg.seed)
    model, tokenizer, _ = load_model(mcfg, trainable=False, device="cuda" if torch.cuda.is_available() else "cpu")
    prompts = [render_prompt(tokenizer, r.prompt) for r in records]
    raw = [prompt_text(r.prompt) for r in records]
    with CountProgress("generate", len(prompts), disable=quiet) as bar:
        rows = score_prompts(model, tokenizer, prompts, raw, reward, cfg, sample=cfg.eval.do_sample, progress=bar.advance,
                             records=records)
    for row, rec in zip(rows, _repeat(records, cfg), strict=True):
        row["id"] = rec.id
    summary = summarise(rows)
    info = read_json(run / "run.json") if run else {}
    summary["run"] = {
        "run_dir": str(run) if run else None, "algo": info.get("algo"), "seed": cfg.seed if run else None,
        "data": info.get("data"), "model": cfg.model.name if run else opts.model, "checkpoint": opts.checkpoint,
        "test_data": source, "reward": reward,
    }
    summary["generation"] = {"do_sample": cfg.eval.do_sample, "num_samples": cfg.eval.num_samples,
                             "max_new_tokens": cfg.eval.max_new_tokens, "temperature": cfg.eval.temperature,
                             "top_p": cfg.eval.top_p}
    write_jsonl(out_dir / "generations.jsonl", rows)
    write_json(out_dir / "summary.json", summary)
    return summary


def _as_dict(cfg) -> dict:
    from .config import to_dict

    return to_dict(cfg)


def _repeat(records, cfg):
    n = cfg.eval.num_samples if cfg.eval.do_sample else 1
    for r in records:
        yield from [r] * n
