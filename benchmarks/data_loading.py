"""Data loading at scale: lolkit's load + validate + tokenise of short preference records from Parquet
vs plain `datasets.load_dataset` + `map(tokenizer)` on the same file, in one run.

Targets: lolkit takes ≤ 1.2× the plain pipeline's time and ≤ 1.5× its peak RSS; a second lolkit run
on the same file (the cache hit: nothing validated or tokenised again) takes ≤ 0.1× the first.

* plain    `load_dataset("parquet")` (into a fresh cache) + a batched `map` tokenising prompt, chosen and
           rejected (input ids only)
* lolkit   `lolkit.data.dataset.load_corpus` into a fresh $LOLKIT_CACHE: the loader reads the rows, the
           schema validates every record, the records stream into Arrow and `datasets.map` tokenises them
* cached   `load_corpus` again, same cache

Each measurement runs in a fresh process, so each peak RSS is its own (the process's high-water mark,
or its map workers', whichever is larger; Linux only); imports are done before the clock starts. The tokenizer
is the tiny model's byte-level BPE, one thread (TOKENIZERS_PARALLELISM=false), and both pipelines use
the same number of map processes (--num-proc). Rounds alternate plain and lolkit; medians are reported.

Usage: python benchmarks/data_loading.py [--quick] [--records 1000000] [--num-proc 1] [--format parquet]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import WORDS, scratch, timing_args, verdict  # noqa: E402

TIME_TARGET, RSS_TARGET, HIT_TARGET = 1.2, 1.5, 0.1


def write_preferences(path: Path, n: int, words: int = 12, seed: int = 0) -> Path:
    """``n`` preference records (id, prompt, chosen, rejected; ``words`` words each) as Parquet or JSONL."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    vocab = np.array(WORDS)
    cols = {"id": [f"r{i}" for i in range(n)]}
    for name in ("prompt", "chosen", "rejected"):
        picks = vocab[rng.integers(0, len(vocab), (n, words))]
        cols[name] = [" ".join(row) for row in picks.tolist()]
    table = pa.table(cols)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        with open(path, "w", encoding="utf-8") as fh:
            for row in table.to_pylist():
                fh.write(json.dumps(row) + "\n")
    return path


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss would include the RSS of the parent it was forked from)
    or its map workers' (ru_maxrss of the waited-for children), whichever is larger."""
    import resource

    own = next(int(x.split()[1]) for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, workers) / 1024


def phase(name: str, data: Path, tokenizer_dir: str, cache: Path, num_proc: int) -> dict:
    """One measurement, in this (fresh) process."""
    import datasets
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    datasets.disable_progress_bars()
    if name == "plain":
        def tokenise(batch):
            return {f"{c}_ids": tok(batch[c], add_special_tokens=(c == "prompt"))["input_ids"]
                    for c in ("prompt", "chosen", "rejected")}

        t = time.perf_counter()
        builder = "parquet" if data.suffix == ".parquet" else "json"
        ds = datasets.load_dataset(builder, data_files=str(data), split="train", cache_dir=str(cache))
        out = ds.map(tokenise, batched=True, num_proc=num_proc if num_proc > 1 else None,
                     remove_columns=ds.column_names)
        rows = len(out)
    else:
        os.environ["LOLKIT_CACHE"] = str(cache)
        from lolkit.data.dataset import load_corpus

        t = time.perf_counter()
        rows = len(load_corpus(str(data), tok, num_proc=num_proc))
    return {"seconds": time.perf_counter() - t, "rss_mb": _peak_rss_mb(), "rows": rows}


def run_phase(name: str, data: Path, tokenizer_dir: str, cache: Path, num_proc: int) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "TQDM_DISABLE": "1"}
    out = subprocess.run([sys.executable, __file__, "--phase", name, "--data", str(data), "--tokenizer", tokenizer_dir,
                          "--cache", str(cache), "--num-proc", str(num_proc)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(records: int, rounds: int, num_proc: int, fmt: str, tmp: Path) -> dict:
    from lolkit.tiny import create_tiny_model

    tokenizer_dir = str(create_tiny_model(tmp / "tiny"))
    data = write_preferences(tmp / f"preferences.{fmt}", records)
    runs: dict[str, list[dict]] = {"plain": [], "lolkit": [], "cached": []}
    for r in range(rounds):
        for name in (("plain", "lolkit") if r % 2 == 0 else ("lolkit", "plain")):
            runs[name].append(run_phase(name, data, tokenizer_dir, tmp / f"cache-{name}-{r}", num_proc))
            if name == "lolkit":
                runs["cached"].append(run_phase(name, data, tokenizer_dir, tmp / f"cache-{name}-{r}", num_proc))
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("seconds", "rss_mb")} for k, v in runs.items()}
    assert all(x["rows"] == records for v in runs.values() for x in v)
    return {"records": records, "file_mb": data.stat().st_size / 2**20, **med,
            "time_ratio": statistics.median(a["seconds"] / b["seconds"] for a, b in zip(runs["lolkit"], runs["plain"],
                                                                                        strict=True)),
            "rss_ratio": med["lolkit"]["rss_mb"] / med["plain"]["rss_mb"],
            "hit_ratio": statistics.median(c["seconds"] / a["seconds"] for c, a in zip(runs["cached"], runs["lolkit"],
                                                                                       strict=True))}


def _options(ap) -> None:
    ap.add_argument("--records", type=int, default=None, help="records in the file (default 1,000,000; --quick 5,000)")
    ap.add_argument("--num-proc", type=int, default=1, help="map processes, the same for both pipelines")
    ap.add_argument("--format", choices=("parquet", "jsonl"), default="parquet")
    for name in ("--phase", "--data", "--tokenizer", "--cache"):  # a child process's one measurement
        ap.add_argument(name, help=argparse.SUPPRESS)


def main() -> None:
    args = timing_args(__doc__, 1, 1, _options)
    if args.phase:  # a child: one measurement, one JSON line
        print(json.dumps(phase(args.phase, Path(args.data), args.tokenizer, Path(args.cache), args.num_proc)))
        return
    records = args.records or (5_000 if args.quick else 1_000_000)
    r = measure(records, args.rounds, args.num_proc, args.format, scratch("lolkit-data-bench-"))
    print(f"{r['records']:,} preference records ({args.format}, {r['file_mb']:.1f} MB), tiny BPE tokenizer, "
          f"{args.num_proc} map process(es), {args.rounds} round(s)")
    print(f"{'pipeline':<8} {'seconds':>9} {'peak RSS MB':>12}")
    for k in ("plain", "lolkit", "cached"):
        print(f"{k:<8} {r[k]['seconds']:>9.2f} {r[k]['rss_mb']:>12.0f}")
    print(f"time    lolkit / plain  = {r['time_ratio']:.3f} (target <= {TIME_TARGET}): {verdict(r['time_ratio'] <= TIME_TARGET)}")
    print(f"RSS     lolkit / plain  = {r['rss_ratio']:.3f} (target <= {RSS_TARGET}): {verdict(r['rss_ratio'] <= RSS_TARGET)}")
    print(f"cached  second / first  = {r['hit_ratio']:.3f} (target <= {HIT_TARGET}): {verdict(r['hit_ratio'] <= HIT_TARGET)}")


if __name__ == "__main__":
    main()
