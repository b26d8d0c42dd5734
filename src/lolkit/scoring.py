"""``lolkit reward``: add rewards to every response of a records file."""

from __future__ import annotations

from .data.schema import load_records
from .data.tokenize import prompt_text
from .io import write_jsonl


def score_file(reward_name: str, input_path: str, output_path: str, batch_size: int = 256, quiet: bool = False) -> dict:
    from .progress import CountProgress
    from .rewards import get_reward

    reward = get_reward(reward_name)
    records = load_records(input_path)
    total = sum(len(r.responses) for r in records)
    scored = []
    with CountProgress("score", total, disable=quiet) as bar:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            pairs = [(prompt_text(r.prompt), resp) for r in chunk for resp in r.responses]
            results = iter(reward.score([p for p, _ in pairs], [x for _, x in pairs]))
            for rec in chunk:
                out = [next(results) for _ in rec.responses]
                rec.rewards = [t for t, _ in out]
                rec.components = [c for _, c in out]
                scored.append(rec)
            bar.advance(len(pairs))
    write_jsonl(output_path, (r.to_json() for r in scored))
    values = [v for r in scored for v in r.rewards]
    return {"records": len(scored), "responses": len(values), "reward_mean": sum(values) / max(1, len(values))}
