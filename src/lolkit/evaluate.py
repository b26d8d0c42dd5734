"""``lolkit eval``: generate for every test prompt, score with the task reward, compute text metrics.

Writes ``generations.jsonl`` (one row per sample: id, prompt, sample index, response, reward,
components, length, and the per-response ``metrics``) and ``summary.json`` (reward mean/std,
per-component means, length, distinct-1/2/3, self-BLEU, quality-diversity, perplexity, reference
metrics, extractive coverage/density, and the run's identity for ``lolkit aggregate``).
Every metric is defined in docs/evaluation.md.

Resumable and atomic: prompts are generated in the same batches as one :func:`generate` call would
use (sorted by length, batch ``b`` seeded with ``seed + b``); after each batch its generations and
rewards go, as one JSON line with its own checksum, to a hidden progress file
``.generations.progress-<fingerprint>.jsonl`` in the output directory (:class:`lolkit.io.ProgressLog`;
the fingerprint covers the model, prompts, generation settings and reward). A re-run after a kill
removes the killed run's temporaries, reuses the batches that verify and generates the rest; the metrics are then
computed from the generations alone, so the final files are byte-identical to an uninterrupted
run's. Outputs are written atomically, ``summary.json`` last; the progress file is removed at the end.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import LolkitError
from .generation import GenerationConfig, generate
from .io import ProgressLog, dumps, read_json, recover_partial, write_json, write_jsonl
from .metrics import corpus_perplexity, distinct_n, load_metric, mean_std, metric_module, quality_diversity

# optional metrics (``--metrics``); reward, length and distinct-n are always computed
METRICS = ("self_bleu", "qd", "ppl", "rouge", "bleu", "chrf", "meteor", "coverage")
REFERENCE_METRICS = ("rouge", "bleu", "chrf", "meteor")
# METEOR is off by default: loading WordNet takes 15-20 s of CPU per process
DEFAULT_METRICS = ("self_bleu", "qd", "ppl", "rouge", "bleu", "chrf", "coverage")
# the per-response values averaged into the summary (perplexity is pooled over tokens instead)
ROW_MEANS = ("self_bleu", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "meteor", "coverage", "density")
SELF_BLEU_MAX_REFS = 256  # with one sample per prompt: at most this many other responses per hypothesis
PROGRESS_FORMAT = "lolkit-eval-progress/2"  # /2: every line carries its checksum


def run_dir_of(model: str) -> Path | None:
    p = Path(model)
    return p if (p / "config.yaml").is_file() and (p / "run.json").is_file() else None


def generation_config(cfg, sample: bool) -> GenerationConfig:
    e = cfg.eval
    return GenerationConfig(max_new_tokens=e.max_new_tokens, do_sample=sample and e.do_sample,
                            temperature=e.temperature, top_p=e.top_p, num_samples=e.num_samples if sample else 1,
                            batch_size=e.batch_size, max_prompt_len=cfg.data.max_prompt_len, seed=cfg.seed)


def _reward_inputs(reward, records, flat_k: list[int]):
    if records is None:
        return None, None
    raw = [r.to_json() if r.responses else {"meta": r.meta} for r in records]
    per_prompt = [reward.references_of(obj) or list(rec.responses) for obj, rec in zip(raw, records, strict=True)]
    return [per_prompt[k] for k in flat_k], [raw[k].get("meta", {}) for k in flat_k]


def score_prompts(model, tokenizer, prompts: list[str], raw_prompts: list[str], reward_name: str | None, cfg,
                  *, sample: bool, progress=None, records=None) -> list[dict]:
    """Generate for ``prompts`` (rendered) and score against ``raw_prompts`` (tokenizer-free text).
    ``cfg`` is a TrainConfig (its ``eval`` section sets the generation). ``records`` (one per prompt)
    give the reward its references (``references`` / ``meta.reference`` fields, else the record's own
    responses) and ``meta``."""
    from .rewards import get_reward

    outs = generate(model, tokenizer, prompts, generation_config(cfg, sample), progress=progress)
    flat = [(k, s, g) for k, gens in enumerate(outs) for s, g in enumerate(gens)]
    scores: list = [(None, {})] * len(flat)
    if reward_name:
        reward = get_reward(reward_name)
        refs, metas = _reward_inputs(reward, records, [k for k, _, _ in flat])
        scores = reward.score([raw_prompts[k] for k, _, _ in flat], [g.text for _, _, g in flat],
                              references=refs, metas=metas)
    return [{"prompt": raw_prompts[k], "response": g.text, "reward": total, "rewards": comps,
             "num_tokens": g.num_tokens, "finished": g.finished, "sample": s}
            for (k, s, g), (total, comps) in zip(flat, scores, strict=True)]


# --------------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------------
def summarise(rows: list[dict], extra: dict | None = None) -> dict:
    """Summary of generation rows: reward mean/std and per-component means, mean length (tokens),
    finished fraction, distinct-1/2/3, the mean of every per-response metric in ``ROW_MEANS`` (over
    the responses that have it) and the token-pooled perplexity; ``extra`` (corpus-level values such
    as quality-diversity) is merged in."""
    texts = [r["response"] for r in rows]
    out: dict = {"num_generations": len(rows), "num_prompts": len({r.get("id", r["prompt"]) for r in rows})}
    rewards = [r["reward"] for r in rows if r["reward"] is not None]
    if rewards:
        out["reward_mean"], out["reward_std"] = mean_std(rewards)
        for comp in rows[0]["rewards"]:
            out[f"reward/{comp}"] = mean_std([r["rewards"][comp] for r in rows])[0]
    out["length_mean"] = mean_std([r["num_tokens"] for r in rows])[0]
    out["finished_fraction"] = sum(r["finished"] for r in rows) / max(1, len(rows))
    for n in (1, 2, 3):
        out[f"distinct_{n}"] = distinct_n(texts, n)
    metrics = [r.get("metrics") or {} for r in rows]
    for key in ROW_MEANS:
        vals = [m[key] for m in metrics if m.get(key) is not None]
        if vals:
            out[key] = sum(vals) / len(vals)
    if any("nll" in m for m in metrics):
        nll = [m["nll"] for m in metrics if "nll" in m]
        count = [m["ppl_tokens"] for m in metrics if "nll" in m]
        out["ppl"] = corpus_perplexity(nll, count)
        out["ppl_tokens"] = sum(count)
    out.update(extra or {})
    return out


# --------------------------------------------------------------------------------------------------
# metrics on generations
# --------------------------------------------------------------------------------------------------
def self_bleu(texts: list[str], groups: list[list[int]]) -> list[float | None]:
    """Self-BLEU of each response (the ``bleu`` module: sacrebleu sentence BLEU / 100, 13a tokens, exp
    smoothing).

    With several samples per prompt (any group of ≥ 2), each response is scored against the other
    responses of its own prompt (singleton groups get None). With one sample per prompt, each
    response is scored against the other responses of the file — all of them up to
    ``SELF_BLEU_MAX_REFS``, else a random subset of that size seeded by the response's position."""
    refs: list[list[str]] = [[] for _ in texts]
    if any(len(g) >= 2 for g in groups):
        for g in groups:
            for i in g:
                refs[i] = [texts[j] for j in g if j != i] if len(g) >= 2 else []
    else:
        for i in range(len(texts)):
            others = [j for j in range(len(texts)) if j != i]
            if len(others) > SELF_BLEU_MAX_REFS:
                others = sorted(random.Random(i).sample(others, SELF_BLEU_MAX_REFS))
            refs[i] = [texts[j] for j in others]
    todo = [i for i in range(len(texts)) if refs[i]]
    out: list[float | None] = [None] * len(texts)
    if todo:
        vals = load_metric("bleu").compute(predictions=[texts[i] for i in todo], references=[refs[i] for i in todo])["bleu"]
        for i, v in zip(todo, vals, strict=True):
            out[i] = v
    return out


def reference_metrics(names: list[str], texts: list[str], refs: list[list[str]]) -> dict[str, list[float | None]]:
    """ROUGE-1/2/L F1, BLEU, chrF and METEOR through lolkit's ``evaluate`` modules (lolkit/evaluate_modules:
    the reward components of rewards/reference.py, all in [0, 1], best or multi-reference over a
    response's references); None where a response has none."""
    todo = [i for i in range(len(texts)) if refs[i]]
    out: dict[str, list[float | None]] = {}
    for name in names:
        values = load_metric(name).compute(predictions=[texts[i] for i in todo],
                                           references=[refs[i] for i in todo]) if todo else \
            {k: [] for k in (("rouge1", "rouge2", "rougeL") if name == "rouge" else (name,))}
        for key, vals in values.items():
            col: list[float | None] = [None] * len(texts)
            for i, v in zip(todo, vals, strict=True):
                col[i] = float(v)
            out[key] = col
    return out


def module_metrics(spec: str, texts: list[str], refs: list[list[str]]) -> tuple[dict, dict[str, list]]:
    """Any ``evaluate`` module named with --metrics (a local script or folder, or a Hub metric in the local
    cache): computed on the responses (and their references, on the responses that have some, when the
    module takes references). Returns (corpus-level values, per-response lists), keyed ``NAME/key``."""
    from datasets import Value

    module = load_metric(spec)
    label = Path(spec).stem if metric_module(spec)[0] == "local" else spec.split("/")[-1]
    feats = module.features if isinstance(module.features, list) else [module.features]
    plain = any(set(f) == {"predictions"} for f in feats)
    # a list of references per response where the module takes one, else the first reference
    multi = any("references" in f and not isinstance(f["references"], Value) for f in feats)
    todo = list(range(len(texts))) if plain else [i for i in range(len(texts)) if refs[i]]
    if not todo:
        raise LolkitError(f"--metrics {spec}: the module needs references and the test records have none")
    kwargs: dict = {"predictions": [texts[i] for i in todo]}
    if not plain:
        kwargs["references"] = [refs[i] if multi else refs[i][0] for i in todo]
    try:
        result = module.compute(**kwargs)
    except LolkitError:
        raise
    except Exception as e:  # a module's own failure (a missing package, a bad input): one line
        raise LolkitError(f"--metrics {spec}: {type(e).__name__}: {' '.join(str(e).split())}") from None
    corpus: dict = {}
    rows: dict[str, list] = {}
    for key, value in (result or {}).items():
        name = f"{label}/{key}"
        if isinstance(value, list) and len(value) == len(todo) and all(
                v is None or isinstance(v, (int, float)) for v in value):
            col: list = [None] * len(texts)
            for i, v in zip(todo, value, strict=True):
                col[i] = None if v is None else float(v)
            rows[name] = col
            present = [v for v in col if v is not None]
            corpus[name] = sum(present) / len(present) if present else None
        elif isinstance(value, (int, float, str)) or value is None:
            corpus[name] = value
        elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            corpus[name] = [float(v) for v in value]
    return corpus, rows


def embed_texts(texts: list[str]):
    """MiniLM-L6 sentence embeddings (mean-pooled, L2-normalised; rewards/embedding.py)."""
    from .rewards.embedding import EmbeddingSimilarity

    return EmbeddingSimilarity("qd", {"type": "embedding_similarity"}, "eval").embed(texts)


def response_nll(model, tokenizer, prompts: list[str], responses: list[str], max_prompt_len: int | None,
                 batch_size: int = 16, shards=None) -> list[tuple[float, int]]:
    """``(Σ −log p(y_t | x, y_<t), number of tokens)`` of each response under ``model``: the response's
    tokens (the scorer's tokenizer, no special tokens, no EOS), conditioned on the prompt (its last
    ``max_prompt_len`` tokens, all when None, and no more than the scorer's context leaves beside the
    response). An empty response gives (0, 0). Under several processes (``shards``) the batches are shared
    among them and gathered in order (:mod:`lolkit.shards`)."""
    import torch

    from .data.tokenize import Encoded, SeparateContext, collate, context_window, encode_prompt
    from .logprobs import forward_logprobs
    from .shards import Shards

    window = context_window(model)
    enc = []
    for p, r in zip(prompts, responses, strict=True):
        ids = tuple(tokenizer(r, add_special_tokens=False)["input_ids"])
        # an encoder–decoder scorer reads the prompt in its encoder: the response takes none of its room
        room = None if window is None else window if isinstance(window, SeparateContext) else max(1, window - len(ids))
        limit = room if max_prompt_len is None else max_prompt_len if room is None else min(max_prompt_len, room)
        enc.append(Encoded(tuple(encode_prompt(tokenizer, p, limit)), ids, False))
    device = next(model.parameters()).device

    @torch.no_grad()
    def work(j: int) -> list:
        items = enc[j * batch_size : (j + 1) * batch_size]
        b = collate(items, range(j * batch_size, j * batch_size + len(items)), tokenizer.pad_token_id).to(device)
        seq, _, _ = forward_logprobs(model, b)
        return [[-float(v), len(e.response_ids)] for v, e in zip(seq.tolist(), items, strict=True)]

    batches = range(-(-len(enc) // batch_size))
    was = model.training
    model.eval()
    try:
        done = (shards or Shards()).share_work(batches, work)
    finally:
        model.train(was)
    return [(nll, n) for j in batches for nll, n in done[j]]


def _knowledge(meta: dict):
    k = meta.get("knowledge") if isinstance(meta, dict) else None
    if isinstance(k, str) and k.strip():
        return k
    if isinstance(k, list) and k and all(isinstance(x, str) for x in k):
        return k
    return None


def metric_references(rec) -> list[str]:
    """Reference texts of a record for the reference metrics: its ``references`` / ``reference`` /
    ``meta.references`` / ``meta.reference`` field, else its response (the chosen one of a
    preference, the best-rewarded one of a ranking)."""
    from .rewards import REFERENCE_AUTO

    obj = rec.to_json() if rec.responses else {"meta": rec.meta}
    for f in REFERENCE_AUTO:
        node = obj
        for part in f.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str):
            return [node]
        if isinstance(node, list) and node and all(isinstance(x, str) for x in node):
            return list(node)
    if not rec.responses:
        return []
    if rec.kind == "ranking" and all(r is not None for r in rec.rewards):
        return [rec.responses[max(range(len(rec.responses)), key=lambda j: rec.rewards[j])]]
    return [rec.responses[0]]


def parse_metrics(spec: str | list[str] | None) -> tuple[list[str], bool]:
    """``--metrics``: a comma-separated list of METRICS and ``evaluate`` modules (a local script or folder,
    or a Hub metric already in the local cache), ``default`` (all of METRICS but METEOR), ``all`` or
    ``none``. Returns (names, explicit): explicitly listed metrics fail loudly when they cannot be
    computed; under ``default`` / ``all`` an inapplicable one is skipped and its reason recorded in
    ``metrics_skipped``."""
    items = [x.strip() for x in (spec.split(",") if isinstance(spec, str) else spec or []) if x.strip()]
    if spec is None or items == ["default"]:
        return list(DEFAULT_METRICS), False
    if items == ["all"]:
        return list(METRICS), False
    if items == ["none"] or not items:
        return [], True
    modules = [x for x in items if x not in METRICS]
    for x in modules:
        try:
            metric_module(x)
        except LolkitError as e:
            raise LolkitError(f"{e} (lolkit's metrics: {', '.join(METRICS)}, default, all, none)") from None
    return [m for m in METRICS if m in items] + list(dict.fromkeys(modules)), True


def compute_metrics(rows: list[dict], records, names: list[str], explicit: bool, *, ppl_scorer=None,
                    max_prompt_len: int | None = None, log=None, shards=None) -> tuple[dict, dict]:
    """Adds per-response values to ``rows[i]['metrics']``; returns (corpus-level values, skipped).
    ``rows[i]['_k']`` is the row's prompt index into ``records``; ``ppl_scorer`` is
    (model, tokenizer, name) or None. ``shards``: the perplexity's forward passes are shared among the
    processes (each of which calls this, the others with ``names`` reduced to ``ppl``)."""
    from .data.tokenize import prompt_text, render_prompt

    texts = [r["response"] for r in rows]
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r["_k"], []).append(i)
        r.setdefault("metrics", {})
    extra: dict = {}
    skipped: dict[str, str] = {}

    def skip(name: str, why: str) -> None:
        if explicit:
            raise LolkitError(f"--metrics {name}: {why}")
        skipped[name] = why

    def put(key: str, values) -> None:
        for r, v in zip(rows, values, strict=True):
            if v is not None:
                r["metrics"][key] = v

    if "self_bleu" in names:
        if len(texts) < 2:
            skip("self_bleu", "needs at least two responses")
        else:
            put("self_bleu", self_bleu(texts, list(groups.values())))
    if "qd" in names:
        if not any(len(g) >= 2 for g in groups.values()):
            skip("qd", "needs several samples per prompt (--sample --num-samples M, M >= 2)")
        else:
            emb = embed_texts(texts)
            s, qd, n = quality_diversity([[emb[i].tolist() for i in g] for g in groups.values()])
            extra.update({"qd_similarity": s, "qd": qd, "qd_groups": n})
            if qd is None:
                extra["qd_note"] = "undefined: the mean pairwise similarity S is <= 0"
    if "ppl" in names:
        if ppl_scorer is None:
            skip("ppl", "no scorer model")
        else:
            model, tok, name = ppl_scorer
            prompts = []
            for r in rows:
                p = records[r["_k"]].prompt
                try:
                    prompts.append(render_prompt(tok, p))
                except LolkitError:  # a conversation and a scorer without a chat template
                    prompts.append(prompt_text(p))
            for r, (nll, n) in zip(rows, response_nll(model, tok, prompts, texts, max_prompt_len, shards=shards),
                                   strict=True):
                r["metrics"]["nll"], r["metrics"]["ppl_tokens"] = nll, n
            extra["ppl_model"] = name
    wanted = [m for m in REFERENCE_METRICS if m in names]
    if wanted:
        refs = [metric_references(records[r["_k"]]) for r in rows]
        if not any(refs):
            for m in wanted:
                skip(m, "the test records have no references (references / meta.reference / response)")
        else:
            if "meteor" in wanted and not explicit:
                try:
                    from .rewards.reference import load_wordnet

                    load_wordnet()
                except LolkitError as e:
                    skip("meteor", str(e))
                    wanted.remove("meteor")
            for key, vals in reference_metrics(wanted, texts, refs).items():
                put(key, vals)
    if "coverage" in names:
        know = [_knowledge(records[r["_k"]].meta) for r in rows]
        todo = [i for i, k in enumerate(know) if k is not None]
        if not todo:
            skip("coverage", "the test records have no meta.knowledge")
        else:
            cd = load_metric("coverage").compute(predictions=[texts[i] for i in todo],
                                                 references=[[know[i]] if isinstance(know[i], str) else know[i]
                                                             for i in todo])
            for key in ("coverage", "density"):
                col = [None] * len(texts)
                for i, v in zip(todo, cd[key], strict=True):
                    col[i] = v
                put(key, col)
    modules = [m for m in names if m not in METRICS]
    if modules:
        refs = [metric_references(records[r["_k"]]) for r in rows]
        for spec in modules:
            corpus, per_row = module_metrics(spec, texts, refs)
            extra.update(corpus)
            for key, col in per_row.items():
                put(key, col)
    return extra, skipped


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------
@dataclass
class EvalOptions:
    model: str  # run directory, model directory or short name
    output_dir: str | None = None  # default: <run>/eval
    data: str | None = None  # JSONL with prompts; default: the run's built-in task test split
    reward: str | None = None  # default: the run's reward
    checkpoint: str = "final"  # final | best (for run directories)
    overwrite: bool = False
    overrides: dict = field(default_factory=dict)  # eval.* / data.* settings
    metrics: str | list[str] | None = None  # see parse_metrics
    ppl_model: str | None = None  # default: the evaluated model


EVAL_FILES = ("generations.jsonl", "summary.json")


def check_eval_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write an evaluation over files lolkit did not write (even with --overwrite), and over a
    finished evaluation without --overwrite. generations.jsonl without summary.json is a killed run's."""
    if out_dir.exists() and not out_dir.is_dir():
        raise LolkitError(f"{out_dir}: --output-dir exists and is not a directory")
    summary, gens = out_dir / "summary.json", out_dir / "generations.jsonl"
    if summary.exists() or summary.is_symlink():
        try:
            obj = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() and not summary.is_symlink() else None
        except (ValueError, UnicodeDecodeError):
            obj = None
        if not (isinstance(obj, dict) and "num_generations" in obj and "generation" in obj):
            raise LolkitError(f"{summary}: exists and is not a lolkit evaluation summary; lolkit does not replace "
                              "files it did not write: choose another --output-dir")
        if not overwrite:
            raise LolkitError(f"{out_dir}: evaluation exists; pass --overwrite to replace it")
    if gens.exists() or gens.is_symlink():
        first = b""
        if gens.is_file() and not gens.is_symlink():
            with open(gens, "rb") as fh:
                first = fh.readline()
        try:
            row = json.loads(first) if first.strip() else {}
        except (ValueError, UnicodeDecodeError):
            row = None
        if not (isinstance(row, dict) and (not row or {"sample", "response", "metrics"} <= set(row))):
            raise LolkitError(f"{gens}: exists and is not lolkit's generations file; lolkit does not replace "
                              "files it did not write: choose another --output-dir")


def _model_identity(path: str) -> list:
    """A model directory's files with sizes and modification times (a hub id: its name)."""
    p = Path(path)
    if not p.is_dir():
        return [path]
    return [path] + [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in sorted(p.iterdir()) if f.is_file()]


def _batches(tokenizer, prompts: list[str], gcfg: GenerationConfig) -> list[list[int]]:
    """The prompt batches of one :func:`generate` call (longest first, ``batch_size`` each)."""
    from .data.tokenize import encode_prompt
    from .generation import prompt_batches

    return prompt_batches([len(encode_prompt(tokenizer, p, gcfg.max_prompt_len)) for p in prompts], gcfg.batch_size)


def _read_progress(log: ProgressLog, batches: list[list[int]], per_prompt: int) -> dict[int, list]:
    done: dict[int, list] = {}
    for obj in log.entries():
        b, rows = obj.get("batch"), obj.get("rows")
        if isinstance(b, int) and 0 <= b < len(batches) and isinstance(rows, list) \
                and len(rows) == len(batches[b]) * per_prompt:
            done[b] = rows
    return done


def generate_and_score(model, tokenizer, prompts: list[str], raw: list[str], records, reward, gcfg: GenerationConfig,
                       side: Path, fingerprint: str, progress=None, shards=None) -> tuple[list[dict], int]:
    """Generate batch by batch (the batches and seeds of one :func:`generate` call), score each batch
    with ``reward`` and append it to the progress file ``side``; batches already there are reused.
    Under several processes (``shards``, :mod:`lolkit.shards`) each generates and scores its share of the
    batches and the main process writes the progress file. Returns the rows in (prompt, sample) order
    and the number of prompts reused."""
    from .shards import Shards

    shards = shards or Shards()
    batches = _batches(tokenizer, prompts, gcfg)
    log = ProgressLog(side, {"format": PROGRESS_FORMAT, "fingerprint": fingerprint})
    # the main process reads the progress file; every process then agrees on the batches left
    done = shards.finished(lambda: _read_progress(log, batches, gcfg.num_samples))
    reused = sum(len(batches[b]) for b in done)
    if progress is not None and reused:
        progress(reused)

    def work(b: int) -> list[dict]:
        idx = batches[b]
        outs = generate(model, tokenizer, [prompts[i] for i in idx], replace(gcfg, seed=gcfg.seed + b))
        flat = [(k, s, g) for k, gens in zip(idx, outs, strict=True) for s, g in enumerate(gens)]
        scores: list = [(None, {})] * len(flat)
        if reward is not None:
            refs, metas = _reward_inputs(reward, records, [k for k, _, _ in flat])
            scores = reward.score([raw[k] for k, _, _ in flat], [g.text for _, _, g in flat],
                                  references=refs, metas=metas)
        return [{"k": k, "sample": s, "response": g.text, "reward": total, "rewards": comps,
                 "num_tokens": g.num_tokens, "finished": g.finished}
                for (k, s, g), (total, comps) in zip(flat, scores, strict=True)]

    with log:
        done.update(shards.share_work(
            [b for b in range(len(batches)) if b not in done], work,
            record=lambda b, rows: log.append({"batch": b, "rows": rows})["rows"],  # through JSON: fresh = resumed
            progress=None if progress is None else (lambda b: progress(len(batches[b])))))
    rows = sorted((r for b in done.values() for r in b), key=lambda r: (r["k"], r["sample"]))
    return rows, reused


def evaluate(opts: EvalOptions, quiet: bool = False, log=None) -> dict:
    import torch

    from .config import TrainConfig, build, load_yaml
    from .data.dataset import builtin_records
    from .data.schema import load_prompts
    from .data.tokenize import context_window, encode_prompts, prompt_text, render_prompt
    from .models import load_model, resolve_model
    from .progress import CountProgress
    from .rewards import get_reward, spec_runs_code

    names, explicit = parse_metrics(opts.metrics)
    run = run_dir_of(opts.model)
    # A run directory is data, not code: its config.yaml gives the settings to evaluate with, but never
    # trust_remote_code / allow_pickle (only this command line does) nor a reward that imports code.
    cli_model = build(TrainConfig, {"model": opts.overrides.get("model") or {}}, source="eval settings").model
    if run is not None:
        cfg = build(TrainConfig, load_yaml(run / "config.yaml"), source=str(run / "config.yaml"))
        model_path = run / ("final" if opts.checkpoint == "final" else "checkpoints/best")
        if opts.checkpoint not in ("final", "best"):
            raise LolkitError(f"--checkpoint {opts.checkpoint!r}: expected final or best")
        if not model_path.exists():
            raise LolkitError(f"{model_path}: not found (did the run finish?)")
        dtype = cli_model.dtype if "dtype" in (opts.overrides.get("model") or {}) else cfg.model.dtype
        mcfg = replace(cli_model, name=str(model_path), dtype=dtype)
        cfg.model = replace(cfg.model, trust_remote_code=False, allow_pickle=False)
        if not _prompt_len_was_set(run):  # the training data's longest prompt is no limit for other prompts
            cfg.data.max_prompt_len = None
    else:
        cfg = TrainConfig()
        mcfg = replace(cli_model, name=opts.model)
        resolve_model(opts.model)  # a mistyped model path fails here, before the questions about the output
    recorded = cfg.reward if run is not None else None
    cfg = build(TrainConfig, _as_dict(cfg), opts.overrides, source="eval settings")
    out_dir = Path(opts.output_dir) if opts.output_dir else (run / "eval" if run else None)
    if out_dir is None:  # (a mistyped model directory has failed above with "not found")
        raise LolkitError("--output-dir is required when --model is not a run directory")
    check_eval_output(out_dir, opts.overwrite)
    if run is not None:  # the run's trackers receive the summary: a missing one fails now, not after generating
        from .tracking import check_trackers

        check_trackers(cfg.report_to)
    if opts.data:
        records = load_prompts(opts.data)
        source = opts.data
    elif cfg.data.train is None:
        records = builtin_records(cfg.data.task, "test")
        source = f"builtin:{cfg.data.task}/test"
    else:
        raise LolkitError("--data is required: the run was trained on a file, and lolkit cannot guess its test split")
    reward_name = opts.reward or cfg.reward or (cfg.data.task if cfg.data.train is None and not opts.data else None)
    if reward_name and reward_name == recorded and not opts.reward and "reward" not in opts.overrides:
        runs = spec_runs_code(recorded)
        if runs:
            raise LolkitError(f"{run / 'config.yaml'}: the run's reward {recorded!r} runs code ({runs}); lolkit does "
                              f"not run code named by a run directory: pass --reward {recorded} to use it")
        if log is not None:
            log(f"reward: {recorded} (recorded in {run / 'config.yaml'})")
    if cfg.eval.max_prompts:
        records = records[: cfg.eval.max_prompts]
    if not records:
        raise LolkitError(f"{source}: no prompts to evaluate")
    from .shards import Shards

    shards = Shards.current()  # before the models: under several processes each takes its own GPU
    if not shards.is_main:
        log = None
    reward = get_reward(reward_name) if reward_name else None
    torch.manual_seed(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer, _ = load_model(mcfg, trainable=False, device=device, seq2seq=True)
    prompts = [render_prompt(tokenizer, r.prompt) for r in records]
    # prompts longer than the limit: counted, and per data.truncation reported, refused or left out
    cut = encode_prompts(tokenizer, prompts, setting=cfg.data.max_prompt_len, window=context_window(model),
                         reserve=cfg.eval.max_new_tokens, policy=cfg.data.truncation, split="test",
                         where=lambda i: (source, records[i].line), model=mcfg.name)
    cut.report(lambda message: None)  # a cut is a warning; the counts go to summary.json
    records, prompts = [records[i] for i in cut.kept], [prompts[i] for i in cut.kept]
    raw = [prompt_text(r.prompt) for r in records]
    gcfg = replace(generation_config(cfg, cfg.eval.do_sample), max_prompt_len=cut.limits.max_prompt_len)
    fingerprint = hashlib.sha256(dumps({
        "format": PROGRESS_FORMAT, "model": _model_identity(mcfg.name), "prompts": prompts,
        "ids": [r.id for r in records], "generation": gcfg.__dict__,
        "reward": reward.fingerprint() if reward else None}, sort_keys=True).encode()).hexdigest()
    for name in EVAL_FILES if shards.is_main else ():  # a killed run's half-written outputs
        recover_partial(out_dir, only=name)
    side = out_dir / f".generations.progress-{fingerprint[:16]}.jsonl"
    with CountProgress("generate", len(prompts), disable=quiet or not shards.is_main) as bar:
        rows, reused = generate_and_score(model, tokenizer, prompts, raw, records, reward, gcfg, side, fingerprint,
                                          progress=bar.advance, shards=shards)
    if reused and log is not None:
        log(f"resumed: {reused} of {len(prompts)} prompts were generated by an earlier, interrupted run")
    for r in rows:
        r["_k"] = r.pop("k")
    ppl_scorer = None
    ppl_name = opts.ppl_model or mcfg.name
    if "ppl" in names:
        if opts.ppl_model is None or opts.ppl_model == mcfg.name:
            ppl_scorer = (model, tokenizer, opts.model if opts.ppl_model is None else opts.ppl_model)
        else:
            pm, ptok, _ = load_model(replace(cli_model, name=opts.ppl_model), trainable=False, device=device,
                                     seq2seq=True)
            ppl_scorer = (pm, ptok, ppl_name)
    if not shards.is_main:  # the perplexity's share of forward passes; the main process does the rest and writes
        compute_metrics(rows, records, [m for m in names if m == "ppl"], explicit, ppl_scorer=ppl_scorer,
                        max_prompt_len=cut.limits.max_prompt_len, shards=shards)
        return {}
    extra, skipped = compute_metrics(rows, records, names, explicit, ppl_scorer=ppl_scorer,
                                     max_prompt_len=cut.limits.max_prompt_len, shards=shards)
    out_rows = [{"id": records[r["_k"]].id, "prompt": raw[r["_k"]], "sample": r["sample"], "response": r["response"],
                 "reward": r["reward"], "rewards": r["rewards"], "num_tokens": r["num_tokens"],
                 "finished": r["finished"], "metrics": r["metrics"]} for r in rows]
    summary = summarise(out_rows, extra)
    summary["truncation"] = cut.to_json()
    summary["metrics_computed"] = [m for m in names if m not in skipped]
    if skipped:
        summary["metrics_skipped"] = skipped
    info = read_json(run / "run.json") if run else {}
    summary["run"] = {
        "run_dir": str(run) if run else None, "algo": info.get("algo"), "seed": cfg.seed if run else None,
        "data": info.get("data"), "model": cfg.model.name if run else opts.model, "checkpoint": opts.checkpoint,
        "test_data": source, "reward": reward_name,
    }
    summary["generation"] = {"do_sample": cfg.eval.do_sample, "num_samples": gcfg.num_samples,
                             "max_new_tokens": cfg.eval.max_new_tokens, "temperature": cfg.eval.temperature,
                             "top_p": cfg.eval.top_p, "batch_size": gcfg.batch_size, "seed": gcfg.seed}
    write_jsonl(out_dir / "generations.jsonl", out_rows)
    write_json(out_dir / "summary.json", summary)
    for stale in out_dir.glob(".generations.progress-*.jsonl"):
        stale.unlink(missing_ok=True)
    if run is not None and cfg.report_to:
        from .tracking import log_eval_summary

        prefix = "eval" if opts.checkpoint == "final" else f"eval_{opts.checkpoint}"
        log_eval_summary(run, cfg.report_to, summary, info.get("total_steps"), prefix)
    return summary


def _prompt_len_was_set(run: Path) -> bool:
    """Whether the run's ``data.max_prompt_len`` (written resolved into its config.yaml) was set by the user,
    as opposed to taken from its training data's longest prompt (run.json's ``truncation``)."""
    try:
        info = json.loads((run / "run.json").read_text(encoding="utf-8")).get("truncation") or {}
    except (OSError, ValueError, AttributeError):
        return True
    if not info:
        return True
    asked = info.get("asked")
    if isinstance(asked, dict):
        return asked.get("max_prompt_len") is not None
    return info.get("lengths_from") not in ("data", None)  # a run from before "asked" was recorded


def _as_dict(cfg) -> dict:
    from .config import to_dict

    return to_dict(cfg)
