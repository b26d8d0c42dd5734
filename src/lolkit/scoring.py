"""``lolkit reward``: add rewards to every response of a records file — batched, resumable, atomic.

* The whole input is read and validated first: a bad line fails (file, line, field named) before
  anything is written.
* The records are cut into fixed chunks of about ``batch_size`` responses (a function of the file
  alone). After each chunk its scores are appended, as one JSON line, to a hidden progress file next
  to the output, ``.<output name>.progress-<fingerprint>.jsonl``; the fingerprint hashes the input
  file's bytes and the reward's full configuration, so a changed input or reward never reuses stale
  scores.
* A re-run after a kill reads that file, skips the chunks already there (a torn last line is
  ignored) and scores the rest. Chunks are the same in both runs, so every model sees the same
  batches and the final file is byte-identical to an uninterrupted run's.
* The output is written to a temporary file and renamed into place only when every row is scored;
  then the progress file is removed.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from .data.loader import source_digest, write_records
from .data.schema import Record, iter_records, prompt_text
from .errors import LolkitError
from .io import ProgressLog, recover_partial

FORMAT = "lolkit-reward-progress/2"  # /2: every line carries its checksum


def read_input(path: str, reward) -> tuple[list[Record], list[list[str]]]:
    """Validated records and each record's reference texts (errors name file, line and field)."""
    records: list[Record] = []
    refs: list[list[str]] = []
    for obj, rec in iter_records(path):
        try:
            refs.append(reward.references_of(obj))
        except LolkitError as e:
            raise LolkitError(f"{path}:{rec.line}: {e}") from None
        records.append(rec)
    return records, refs


def chunks(records: list[Record], batch_size: int) -> list[tuple[int, int]]:
    """[start, end) record ranges of about ``batch_size`` responses each; depends on the file only."""
    out, start, n = [], 0, 0
    for i, rec in enumerate(records):
        n += len(rec.responses)
        if n >= batch_size:
            out.append((start, i + 1))
            start, n = i + 1, 0
    if start < len(records):
        out.append((start, len(records)))
    return out


def progress_path(output: Path, fingerprint: str) -> Path:
    return output.with_name(f".{output.name}.progress-{fingerprint[:16]}.jsonl")


def _read_progress(log: ProgressLog, spans: list[tuple[int, int]], records: list[Record]) -> dict:
    """Chunk index → list (per record) of [[reward, components], ...], from the lines that verify."""
    done: dict[int, list] = {}
    for obj in log.entries():
        j, scores = obj.get("chunk"), obj.get("scores")
        if not isinstance(j, int) or not 0 <= j < len(spans) or not isinstance(scores, list):
            continue
        a, b = spans[j]
        if len(scores) == b - a and all(isinstance(s, list) and len(s) == len(records[a + k].responses)
                                        for k, s in enumerate(scores)):
            done[j] = scores
    return done


def score_file(reward_spec, input_path: str, output_path: str, batch_size: int | None = None, quiet: bool = False,
               overrides: dict | None = None) -> dict:
    """Score ``input_path`` with a reward spec (task / preset / YAML path / dict) into ``output_path``."""
    from .progress import CountProgress
    from .rewards import get_reward
    from .rewards.base import Batch
    from .shards import Shards

    shards = Shards.current()  # before the reward's models: under several processes each takes its own GPU
    reward = get_reward(reward_spec, overrides)
    input_path = str(input_path)
    records, refs = read_input(input_path, reward)
    out = Path(output_path)
    if out.resolve() == Path(input_path).resolve():
        raise LolkitError(f"{out}: the output must not be the input file")
    size = batch_size or reward.batch_size
    if size < 1:
        raise LolkitError(f"--batch-size must be positive, got {size}")
    spans = chunks(records, size)
    fingerprint = hashlib.sha256(json.dumps({"format": FORMAT, "input": source_digest(input_path),
                                             "reward": reward.fingerprint(), "batch_size": size}).encode()).hexdigest()
    side = progress_path(out, fingerprint)

    def batch_of(a: int, b: int) -> Batch:
        items = [(rec, refs[i], resp) for i, rec in enumerate(records[a:b], start=a) for resp in rec.responses]
        return Batch(prompts=[prompt_text(r.prompt) for r, _, _ in items], responses=[x for _, _, x in items],
                     references=[f for _, f, _ in items], metas=[r.meta for r, _, _ in items],
                     messages=[r.prompt for r, _, _ in items], where=[f"{input_path}:{r.line}" for r, _, _ in items])

    reward.prepare(batch_of(0, len(records)))
    if shards.is_main:
        recover_partial(out.parent, only=out.name)  # a killed run's half-written output
    log = ProgressLog(side, {"format": FORMAT, "fingerprint": fingerprint, "input": input_path})
    # the main process reads the progress file; every process then agrees on the chunks left
    done = shards.finished(lambda: _read_progress(log, spans, records))
    total = sum(len(r.responses) for r in records)
    reused = sum(len(records[k].responses) for j in done for k in range(*spans[j]))

    def work(j: int) -> list:
        batch = batch_of(*spans[j])
        scored = reward.score_batch(batch)
        for (value, _), where in zip(scored, batch.where, strict=True):
            if not math.isfinite(value):
                raise LolkitError(f"{where}: reward {reward.name!r} gave {value} (not a finite number)")
        it = iter(scored)
        return [[list(next(it)) for _ in rec.responses] for rec in records[spans[j][0] : spans[j][1]]]

    if shards.is_main:
        out.parent.mkdir(parents=True, exist_ok=True)
    with log, CountProgress("score", total, disable=quiet or not shards.is_main) as bar:
        bar.advance(reused)
        # the scores go through JSON either way, so resumed and fresh runs write the same bytes; the log is
        # opened at the first chunk: a run that fails before it leaves nothing
        done.update(shards.share_work(
            [j for j in range(len(spans)) if j not in done], work,
            record=lambda j, scores: log.append({"chunk": j, "scores": scores})["scores"],
            progress=lambda j: bar.advance(sum(len(rec.responses) for rec in records[spans[j][0] : spans[j][1]]))))
    rows = []
    values: list[float] = []
    for j, (a, b) in enumerate(spans):
        for rec, scores in zip(records[a:b], done[j], strict=True):
            rec.rewards = [s[0] for s in scores]
            rec.components = [s[1] for s in scores]
            values += rec.rewards
            rows.append(rec.to_json())
    if shards.is_main:
        write_records(out, rows)
        for stale in out.parent.glob(f".{out.name}.progress-*.jsonl"):
            stale.unlink(missing_ok=True)
    return {"records": len(rows), "responses": len(values), "reward_mean": sum(values) / max(1, len(values)),
            "resumed_responses": reused, "reward": reward.name, "components": list(reward.components)}
