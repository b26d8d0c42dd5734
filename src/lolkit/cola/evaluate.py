"""``lolkit eval`` on a CoLA run: latent-action sampling against token sampling from the base, on the same
N prompts with M samples each.

For each side: the task reward (quality), distinct-1/2 and the quality-diversity metric of spec §4 —
S = the mean over prompts of the mean pairwise cosine (pairs i ≠ j) of the M responses' MiniLM
sentence embeddings, QD = 1 / S (undefined when S ≤ 0, reported as such; :func:`lolkit.metrics.quality_diversity`).
Writes ``RUN/eval/generations.jsonl`` (one row per sample, ``side`` = latent | token, with the action
sequence for latent samples) and ``RUN/eval/summary.json`` (``latent`` and ``token`` sections).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import LolkitError


@dataclass
class ColaEvalOptions:
    run: str
    output_dir: str | None = None  # default: RUN/eval
    data: str | None = None  # prompts; default: the built-in task's test split
    reward: str | None = None  # default: the built-in task of the run's corpus
    policy: str = "final"  # final (rl when trained, else bc) | bc | rl
    num_samples: int = 4  # M
    max_prompts: int | None = None  # N (default: all)
    max_new_tokens: int = 32
    temperature: float = 1.0  # of the actions (latent side) and of the tokens (token side)
    seed: int = 0
    overwrite: bool = False


def side_summary(rows: list[dict], groups: list[list[int]], embeddings) -> dict:
    from ..metrics import distinct_n, mean_std, quality_diversity

    texts = [r["response"] for r in rows]
    s, qd, n = quality_diversity([[embeddings[i].tolist() for i in g] for g in groups])
    out: dict = {"qd_similarity": s, "qd": qd, "qd_groups": n}
    if qd is None:
        out["qd_note"] = "undefined: the mean pairwise similarity S is <= 0"
    rewards = [r["reward"] for r in rows if r["reward"] is not None]
    if rewards:
        out["reward_mean"], out["reward_std"] = mean_std(rewards)
    out["distinct_1"], out["distinct_2"] = distinct_n(texts, 1), distinct_n(texts, 2)
    out["length_mean"] = mean_std([r["num_tokens"] for r in rows])[0]
    return out


def evaluate_cola(opts: ColaEvalOptions, quiet: bool = False, log=None) -> dict:
    import torch

    from ..data.tokenize import encode_prompt, prompt_text, render_prompt
    from ..evaluate import embed_texts
    from ..generation import GenerationConfig, generate
    from ..io import read_json, write_json, write_jsonl
    from ..rewards import get_reward
    from .data import cola_prompts
    from .generate import latent_generate, response_text
    from .run import latest_policy, load_cola

    if opts.num_samples < 2:
        raise LolkitError("quality-diversity needs several samples per prompt: --num-samples M with M >= 2")
    out_dir = Path(opts.output_dir) if opts.output_dir else Path(opts.run) / "eval"
    if (out_dir / "summary.json").exists() and not opts.overwrite:
        raise LolkitError(f"{out_dir}: evaluation exists; pass --overwrite to replace it")
    cola = load_cola(opts.run)
    which = latest_policy(opts.run) if opts.policy in ("final", "best") else opts.policy
    policy = cola.policy(which)
    corpus = cola.info["data"]
    recs = cola_prompts(opts.data, corpus, "test")[: opts.max_prompts]
    if not recs:
        raise LolkitError("no prompts to evaluate")
    reward_name = opts.reward or (corpus.split(":", 1)[1] if corpus.startswith("builtin:") and not opts.data else None)
    reward = get_reward(reward_name) if reward_name else None
    tok, M = cola.tokenizer, opts.num_samples
    rendered = [render_prompt(tok, r.prompt) for r in recs]
    raw = [prompt_text(r.prompt) for r in recs]
    enc = [encode_prompt(tok, p, 256) for p in rendered]

    latent = latent_generate(cola.base, cola.world, policy, [e for e in enc for _ in range(M)],
                             pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=opts.max_new_tokens,
                             action_temperature=opts.temperature, seed=opts.seed)
    torch.manual_seed(opts.seed)
    tokens = generate(cola.base, tok, rendered, GenerationConfig(max_new_tokens=opts.max_new_tokens, do_sample=True,
                                                                 temperature=opts.temperature, num_samples=M,
                                                                 seed=opts.seed))
    rows = []
    for k, rec in enumerate(recs):
        for s in range(M):
            smp = latent[k * M + s]
            rows.append({"id": rec.id, "prompt": raw[k], "side": "latent", "sample": s,
                         "response": response_text(tok, smp.tokens), "num_tokens": len(smp.tokens),
                         "finished": smp.finished, "actions": smp.actions})
    for k, rec in enumerate(recs):
        for s, g in enumerate(tokens[k]):
            rows.append({"id": rec.id, "prompt": raw[k], "side": "token", "sample": s, "response": g.text,
                         "num_tokens": g.num_tokens, "finished": g.finished})
    scores = reward.score([r["prompt"] for r in rows], [r["response"] for r in rows]) if reward else None
    for i, r in enumerate(rows):
        r["reward"], r["rewards"] = (scores[i] if scores else (None, {}))
    emb = embed_texts([r["response"] for r in rows])
    n = len(recs) * M
    groups = [list(range(k * M, (k + 1) * M)) for k in range(len(recs))]
    summary = {
        "latent": side_summary(rows[:n], groups, emb[:n]),
        "token": side_summary(rows[n:], groups, emb[n:]),
        "run": {"run_dir": str(opts.run), "algo": f"cola_{which}", "model": cola.info["model"], "policy": which,
                "data": corpus, "reward": reward_name, "test_data": opts.data or f"builtin:{corpus.split(':', 1)[-1]}/test"},
        "generation": {"num_prompts": len(recs), "num_samples": M, "max_new_tokens": opts.max_new_tokens,
                       "temperature": opts.temperature, "seed": opts.seed, "token_decoding": "greedy given the action"},
    }
    rl_summary = Path(opts.run) / "policy_rl" / "summary.json"
    if rl_summary.is_file():
        summary["rl"] = read_json(rl_summary)
    write_jsonl(out_dir / "generations.jsonl", rows)
    write_json(out_dir / "summary.json", summary)
    return summary


def comparison_rows(summary: dict) -> list[tuple[str, str, str]]:
    """(metric, latent, token) rows of the printed table."""
    def fmt(v) -> str:
        return "undefined (S <= 0)" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    keys = [("reward_mean", "reward"), ("qd_similarity", "S (mean pairwise cosine)"), ("qd", "QD = 1/S"),
            ("distinct_1", "distinct-1"), ("distinct_2", "distinct-2"), ("length_mean", "length (tokens)")]
    return [(label, fmt(summary["latent"].get(k)), fmt(summary["token"].get(k))) for k, label in keys
            if k in summary["latent"] or k in summary["token"]]
