"""Helpers shared by the benchmarks: synthetic data, one algorithm's training setup, interleaved
timing, and PASS/FAIL lines."""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars of datasets / TRL / GGUF conversion: not the tables
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("the a reward model policy answer question colour banana red green blue value token step "
         "language learning offline advantage reference sample data batch gradient loss").split()


def synthetic_records(path: Path, n: int, prompt_words: int, response_words: int, seed: int = 0,
                      kind: str = "response", candidates: int = 3) -> Path:
    """``n`` records of one kind: response (with a reward), preference (chosen / rejected) or
    ranking (``candidates`` responses with distinct rewards)."""
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    with open(path, "w") as fh:
        for i in range(n):
            row: dict = {"id": i, "prompt": words(prompt_words)}
            if kind == "response":
                row.update(response=words(response_words), reward=round(rng.random(), 3))
            elif kind == "preference":
                row.update(chosen=words(response_words), rejected=words(response_words))
            else:
                row.update(responses=[words(response_words) for _ in range(candidates)],
                           rewards=[round(1.0 - k / candidates, 3) for k in range(candidates)])
            fh.write(json.dumps(row) + "\n")
    return path


def record_kind(algo: str) -> str:
    return {"dpo": "preference", "pro": "ranking"}.get(algo, "response")


def setup_algo(name: str, model, tok, model_dir: Path, tmp: Path, *, batch_size: int, records: int = 64,
               prompt_words: int = 12, response_words: int = 12):
    """Data, engine (reference pass, value estimate, advantages: the real `prepare_engine`) and the
    first step's units for algorithm ``name``. Returns (algo, data, engine, units, loss params)."""
    from lolkit.algorithms import get_algorithm
    from lolkit.config import TrainConfig, build
    from lolkit.data.dataset import load_train_data
    from lolkit.engine import prepare_engine
    from lolkit.losses import LossParams
    from lolkit.train import resolve_config

    tmp.mkdir(parents=True, exist_ok=True)
    kind = record_kind(name)
    data_path = tmp / f"data-{kind}.jsonl"
    if not data_path.exists():
        synthetic_records(data_path, records, prompt_words, response_words, kind=kind)
    run = tmp / f"run-{name}"
    run.mkdir(parents=True, exist_ok=True)
    cfg = build(TrainConfig, {"output_dir": str(run), "batch_size": batch_size, "model": {"name": str(model_dir)},
                              "data": {"train": str(data_path), "val_fraction": 0.0},
                              "algo": {"name": name, "value_source": "data", "value_folds": 2, "max_reward": 1.0,
                                       "value_epochs": 1, "cache_dir": str(tmp / "engine")}})
    cfg = resolve_config(cfg)
    algo = get_algorithm(name)
    data = load_train_data(cfg.data, tok, algo, which=algo.unit)
    engine = prepare_engine(cfg, algo, model, tok, data, str(model_dir), fresh_adapter=False, log=lambda m: None,
                            run=run)
    units = engine.pool[:batch_size]
    params = LossParams(group_size=data.group_size)
    return algo, data, engine, units, params


def interleaved_runs(fns: dict[str, Callable[[], None]], rounds: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds of every call of each function, timed in alternation (A, B, A, B, …; the order within a
    round rotates) so that drift and other processes' load hit all alike."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    keys = list(fns)
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            t = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t)
    return times


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, timed in alternation so drift hits all alike."""
    return {k: statistics.median(v) for k, v in interleaved_runs(fns, rounds, warmup).items()}


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num[i] / den[i]: each ratio compares two calls made seconds apart, so a
    load change on the shared machine between rounds cancels out."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def set_threads(n: int | None) -> int:
    """Pin torch's intra-op threads (default 1: on a shared 2-core machine, two threads per process
    make every matmul wait on a descheduled sibling, and timings swing by 10x)."""
    import torch

    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def timing_args(doc: str | None, quick_rounds: int, full_rounds: int,
                add: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """Parse the options every timing benchmark shares (``--quick``, ``--rounds``, ``--threads``) and
    the script's own (``add``); pin the torch threads. ``args.rounds`` comes back resolved (``--rounds``,
    else ``quick_rounds`` / ``full_rounds``) and ``args.threads`` is the thread count in use."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    if add is not None:
        add(ap)
    args = ap.parse_args()
    args.threads = set_threads(args.threads)
    args.rounds = args.rounds or (quick_rounds if args.quick else full_rounds)
    return args


def scratch(prefix: str) -> Path:
    """A temporary directory removed when the process exits (forked children leave with os._exit)."""
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def tiny_llama(tmp: Path, *, hidden: int = 256, layers: int = 8, heads: int = 8, vocab: int = 2048) -> Path:
    from lolkit.tiny import create_tiny_model

    return create_tiny_model(tmp / f"llama-{hidden}x{layers}-v{vocab}", hidden_size=hidden, layers=layers,
                             heads=heads, vocab_size=vocab)


def proc_status(key: str) -> int:
    """A byte count from /proc/self/status (VmRSS, VmHWM: the peak RSS since the last reset_peak)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def reset_peak() -> int:
    """Reset the peak RSS to the current RSS (Linux: clear_refs 5); returns the current RSS."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return proc_status("VmRSS")


def build_wide_llama(out: Path, vocab: int, hidden: int, layers: int) -> Path:
    """A random Llama with a large vocabulary (untied head), for the memory benchmarks."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    conf = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                       num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096,
                       tie_word_embeddings=False, pad_token_id=0, eos_token_id=1)
    LlamaForCausalLM(conf).save_pretrained(out, safe_serialization=True)
    return out


def in_fork(fn, *args, what: str = "the child") -> None:
    """Run ``fn(*args)`` in a forked child (its own peak RSS, nothing left in the parent's memory) and wait;
    the child leaves with os._exit, so the parent's atexit handlers never run twice."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn(*args)
            code = 0
        finally:
            os._exit(code)
    if os.waitpid(pid, 0)[1] != 0:
        raise SystemExit(f"{what} failed")


def memory_setup(prefix: str, vocab: int) -> tuple[Path, Path]:
    """The memory benchmarks' start: one torch thread, transformers quiet, a scratch folder holding a
    2-layer Llama (hidden 256) with a ``vocab``-token head. Returns (scratch, model directory)."""
    set_threads(1)
    from lolkit.progress import quiet_transformers

    quiet_transformers()
    tmp = scratch(prefix)
    return tmp, build_wide_llama(tmp / "model", vocab, 256, 2)


def generation_fns(model, tok, prompts: list[str], new: int, *, start: int | None = None) -> dict[str, Callable]:
    """The four calls the generation benchmarks time on the same prompts: lolkit's eval ``generate`` and
    rollout ``sample_tokens``, and ``model.generate`` (greedy and sampled) on the batch lolkit builds —
    sorted by length, left-padded for a causal LM, right-padded for an encoder–decoder (``start``: its
    decoder start token). Every call makes exactly ``new`` tokens (min_new_tokens, which lolkit's calls
    take from the generation config)."""
    import torch

    from lolkit.data.tokenize import encode_prompt
    from lolkit.generation import GenerationConfig, generate, sample_tokens

    pad, eos = tok.pad_token_id, tok.eos_token_id
    enc = [encode_prompt(tok, p, 256) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(enc[i]))
    width = max(len(e) for e in enc)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for row, i in enumerate(order):
        span = slice(width - len(enc[i]), width) if start is None else slice(0, len(enc[i]))
        ids[row, span] = torch.tensor(enc[i])
        attn[row, span] = 1
    gen_kw = {"max_new_tokens": new, "min_new_tokens": new, "pad_token_id": pad, "eos_token_id": eos, "use_cache": True,
              **({} if start is None else {"decoder_start_token_id": start})}
    model.generation_config.min_new_tokens = new

    def direct_greedy():
        model.generate(input_ids=ids, attention_mask=attn, do_sample=False, **gen_kw)

    def lolkit_eval():
        generate(model, tok, prompts, GenerationConfig(max_new_tokens=new, batch_size=len(prompts)))

    def direct_sample():
        torch.manual_seed(0)
        model.generate(input_ids=ids, attention_mask=attn, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, **gen_kw)

    def lolkit_rollout():
        sample_tokens(model, [enc[i] for i in order], pad_id=pad, eos_id=eos, max_new_tokens=new,
                      batch_size=len(prompts))

    return {"direct_greedy": direct_greedy, "lolkit_eval": lolkit_eval, "direct_sample": direct_sample,
            "lolkit_rollout": lolkit_rollout}
