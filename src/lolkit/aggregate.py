"""``lolkit aggregate``: many evaluated runs → the tables (LaTeX, Markdown, CSV) and figures of a paper.

A run is any directory holding an eval ``summary.json`` (written by ``lolkit eval``) and, beside it,
``generations.jsonl`` with the per-response scores. Its training run directory
(``summary.run.run_dir``, else the summary's grandparent when it holds ``config.yaml``) gives the
resolved config and ``metrics.jsonl``.

Runs are grouped by the test data they were evaluated on (a block of the table), the algorithm, the
starting model and the evaluated checkpoint; runs of one algorithm trained on different data are
split by it. Per group and metric: the mean over seeds of the per-seed means and a 95 % interval from
a bootstrap over test prompts and seeds; per non-baseline group, the paired difference to the
baseline (``--baseline``, default each block's first group) with its interval and a permutation
p-value, Holm-corrected over the table (the method: :mod:`lolkit.stats`). Metrics computed over the
whole corpus (distinct-n, QD) have no per-prompt values: they report mean ± std over seeds. From the
training runs: the best and worst validation checkpoints with each seed's step, the training curves
and the validation curve. Figures: :mod:`lolkit.figures`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import LolkitError
from .figures import LABELS
from .io import write_text
from .metrics import mean_std
from .run import read_metrics

# known metrics in table order; reward components (reward/NAME) follow
METRICS = ["reward_mean", "length_mean", "distinct_1", "distinct_2", "distinct_3", "self_bleu", "qd_similarity", "qd",
           "ppl", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "meteor", "coverage", "density"]
# +1: higher is better, −1: lower is better; absent: no direction (no bold, no arrow)
BETTER = {"reward_mean": 1, "distinct_1": 1, "distinct_2": 1, "distinct_3": 1, "self_bleu": -1, "qd": 1,
          "ppl": -1, "rouge1": 1, "rouge2": 1, "rougeL": 1, "bleu": 1, "chrf": 1, "meteor": 1}
# the paper table's columns when --columns is not given (those present), after --metric
TABLE_DEFAULT = ["reward_mean", "length_mean", "distinct_2", "self_bleu", "ppl", "rougeL"]
# computed over the whole corpus of responses: no per-prompt values, so no interval and no test
CORPUS = {"distinct_1", "distinct_2", "distinct_3", "qd", "qd_similarity"}
# per-response values of generations.jsonl's ``metrics`` (evaluate.ROW_MEANS)
ROW_METRICS = ("self_bleu", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "meteor", "coverage", "density")
VAL_KEYS = ["val_best", "val_worst"]
PERMUTATIONS_MIN = 9_999  # sign patterns of a permutation test, at least (see compare_to_baseline) ...
SIGN_BUDGET = 3e8  # ... and at most this many signs (patterns × prompts), about a second of CPU

Warn = Callable[[str], None]


# --------------------------------------------------------------------------------------------------
# finding evaluations
# --------------------------------------------------------------------------------------------------
@dataclass
class EvalRun:
    path: Path  # summary.json
    summary: dict
    run_dir: Path | None
    test: str  # the test data: a block of the table
    train: str | None  # the training data
    algo: str
    model: str
    checkpoint: str
    seed: object
    # metric → {prompt key: [Σ value, number of values]} from generations.jsonl; None without that file
    prompts: dict[str, dict] | None = None


def run_dir(path: Path, summary: dict) -> Path | None:
    """The training run behind a summary: ``run.run_dir`` when it exists, else the summary's
    grandparent (RUN/eval/summary.json) when it holds a config.yaml."""
    rd = (summary.get("run") or {}).get("run_dir")
    if rd and Path(rd).is_dir():
        return Path(rd)
    up = path.parent.parent
    return up if (up / "config.yaml").is_file() else None


def _config_identity(run: Path | None) -> dict:
    if run is None or not (run / "config.yaml").is_file():
        return {}
    import yaml

    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return {}
    data = cfg.get("data") or {}
    return {"data": data.get("train") or (f"builtin:{data['task']}" if data.get("task") else None),
            "algo": (cfg.get("algo") or {}).get("name"), "model": (cfg.get("model") or {}).get("name"),
            "seed": cfg.get("seed")}


def _eval_owner(summary: Path) -> str:
    """The name of an evaluation without a run (an untouched model): its folder, or the folder above
    a folder named ``eval`` (``runs/base/eval/summary.json`` → ``base``)."""
    folder = summary.parent
    return folder.parent.name if folder.name == "eval" and folder.parent.name else folder.name


def model_label(name: str | None, depth: int = 0) -> str | None:
    """How a group names its starting model. A model that is a lolkit run's output (``RUN/final``,
    ``RUN/checkpoints/best`` or ``RUN``) is named by what trained it, e.g. ``nll(tiny)``, without the
    path or seed: runs that each start from their own seed's SFT model then group together."""
    if not name or depth > 4 or not Path(name).is_dir():
        return name
    p = Path(name)
    for run in (p, p.parent, p.parent.parent):
        if (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file():
            ident = _config_identity(run)
            if ident.get("algo"):
                return f"{ident['algo']}({model_label(ident.get('model'), depth + 1)})"
    return name


def _data_identity(name) -> str:
    """One spelling per data file (relative or absolute paths to the same file agree)."""
    if not name:
        return "?"
    p = Path(str(name))
    return str(p.resolve()) if p.exists() else str(name)


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _summary_metrics(s: dict) -> list[str]:
    return [k for k, v in s.items() if _numeric(v) and (k in METRICS or k.startswith("reward/"))]


def find_runs(dirs: list[str], warn: Warn) -> list[EvalRun]:
    """Every eval summary under ``dirs``. A corrupt summary.json is an error; an evaluation that
    cannot be aggregated is left out with one warning line naming it and why."""
    runs = []
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise LolkitError(f"{root}: no such directory")
        for p in sorted(root.rglob("summary.json")):
            try:
                s = json.loads(p.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise LolkitError(f"{p}: not a valid summary.json ({e})") from None
            if not isinstance(s, dict):
                raise LolkitError(f"{p}: not a valid summary.json (expected a JSON object)")
            if isinstance(s.get("latent"), dict) and isinstance(s.get("token"), dict):
                warn(f"{p}: left out: a CoLA evaluation (latent-action vs token sampling in one file) has no "
                     "single set of metrics to aggregate")
                continue
            if not _summary_metrics(s):
                if "num_generations" in s or "run" in s:  # an evaluation, but nothing to report
                    warn(f"{p}: left out: no numeric metric in the summary")
                continue  # some other summary.json (a CoLA stage's, a recipe's)
            runs.append(_eval_run(p, s, warn))
    if not runs:
        raise LolkitError(f"no eval summaries (summary.json written by lolkit eval) under {', '.join(map(str, dirs))}")
    return runs


def _eval_run(p: Path, s: dict, warn: Warn) -> EvalRun:
    info = s.get("run") or {}
    rd = run_dir(p, s)
    ident = _config_identity(rd)
    train = info.get("data") or ident.get("data")
    r = EvalRun(p, s, rd, _data_identity(info.get("test_data") or train), _data_identity(train) if train else None,
                info.get("algo") or ident.get("algo") or _eval_owner(p),
                model_label(info.get("model") or ident.get("model")) or "?", info.get("checkpoint") or "final",
                info.get("seed", ident.get("seed")))
    r.prompts = prompt_scores(p.parent / "generations.jsonl", s, warn)
    return r


def _row_values(row: dict) -> dict[str, tuple[float, float]]:
    """(value, weight) of each per-response metric of one generations row (perplexity: its NLL and tokens)."""
    out: dict[str, tuple[float, float]] = {}
    if _numeric(row.get("reward")):
        out["reward_mean"] = (float(row["reward"]), 1.0)
    for name, v in (row.get("rewards") or {}).items():
        if _numeric(v):
            out[f"reward/{name}"] = (float(v), 1.0)
    if _numeric(row.get("num_tokens")):
        out["length_mean"] = (float(row["num_tokens"]), 1.0)
    m = row.get("metrics") or {}
    for k in ROW_METRICS:
        if _numeric(m.get(k)):
            out[k] = (float(m[k]), 1.0)
    if _numeric(m.get("nll")) and _numeric(m.get("ppl_tokens")):
        out["ppl"] = (float(m["nll"]), float(m["ppl_tokens"]))
    return out


def _finish(metric: str, num: float, den: float) -> float:
    return math.exp(num / den) if metric == "ppl" else num / den


def prompt_scores(path: Path, summary: dict, warn: Warn) -> dict[str, dict] | None:
    """Per metric, ``{prompt key: [Σ value, count]}`` over the responses of ``generations.jsonl`` (the
    prompt key: its id, else its text). None — with a warning — without the file, or when its means do
    not reproduce the summary's (a file from another evaluation)."""
    if not path.is_file():
        warn(f"{path.parent}: no generations.jsonl: its metrics enter means over seeds, without intervals or tests")
        return None
    from .io import iter_jsonl

    out: dict[str, dict] = {}
    for _, row in iter_jsonl(path):
        key = str(row["id"]) if row.get("id") is not None else row.get("prompt")
        for metric, (v, w) in _row_values(row).items():
            acc = out.setdefault(metric, {}).setdefault(key, [0.0, 0.0])
            acc[0] += v
            acc[1] += w
    for metric, per in out.items():
        want = summary.get(metric)
        num, den = sum(a for a, _ in per.values()), sum(b for _, b in per.values())
        if _numeric(want) and den > 0 and not math.isclose(_finish(metric, num, den), want, rel_tol=1e-6, abs_tol=1e-9):
            warn(f"{path}: its {metric} ({_finish(metric, num, den):.6g}) differs from summary.json's ({want:.6g}): "
                 "the file is from another evaluation; this run enters without intervals or tests")
            return None
    return out


# --------------------------------------------------------------------------------------------------
# groups
# --------------------------------------------------------------------------------------------------
@dataclass
class Group:
    test: str
    algo: str
    model: str
    checkpoint: str
    train: str | None  # set only when runs of this algorithm were trained on different data
    runs: list[EvalRun] = field(default_factory=list)
    label: str = ""


def make_groups(runs: list[EvalRun]) -> list[Group]:
    from .algorithms import names

    by_key: dict[tuple, list[EvalRun]] = {}
    for r in runs:
        by_key.setdefault((r.test, r.algo, r.model, r.checkpoint), []).append(r)
    groups = []
    for (test, algo, model, ckpt), items in by_key.items():
        trains = list(dict.fromkeys(r.train for r in items))
        for t in trains:
            groups.append(Group(test, algo, model, ckpt, t if len(trains) > 1 else None,
                                [r for r in items if r.train == t]))
    order = {n: i for i, n in enumerate(names())}
    groups.sort(key=lambda g: (g.test, order.get(g.algo, len(order)), g.algo, g.model, g.checkpoint, g.train or ""))
    for test in {g.test for g in groups}:
        block = [g for g in groups if g.test == test]
        for g in block:
            parts = [g.algo]
            if len({h.model for h in block if h.algo == g.algo}) > 1:  # the model tells this algorithm's rows apart
                parts.append(short(g.model))
            if g.train:
                parts.append(Path(g.train).stem)
            if g.checkpoint != "final":
                parts.append(g.checkpoint)
            g.label = parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")
    return groups


def metric_names(runs: list[EvalRun]) -> list[str]:
    present = {k for r in runs for k in _summary_metrics(r.summary)}
    return [m for m in METRICS if m in present] + sorted(k for k in present if k.startswith("reward/"))


def _table(g: Group, metric: str):
    """The group's per-prompt :class:`lolkit.stats.Table` of ``metric``, or None when some seed lacks
    per-prompt values of it (or it is a corpus-level metric)."""
    if metric in CORPUS or any(r.prompts is None or metric not in r.prompts for r in g.runs):
        return None
    import numpy as np

    from .stats import table

    return table([r.prompts[metric] for r in g.runs], np.exp if metric == "ppl" else np.asarray)


def _seed_list(g: Group) -> str:
    return ";".join(str(r.seed) for r in g.runs)


def group_row(g: Group, metrics: list[str]) -> tuple[dict, dict]:
    """The group's CSV row (estimates, std over seeds, intervals, validation) and its per-prompt tables."""
    from .stats import interval

    row: dict = {"data": g.test, "train_data": g.train or "", "algo": g.algo, "model": g.model,
                 "checkpoint": g.checkpoint, "label": g.label, "seeds": len(g.runs), "seed_list": _seed_list(g)}
    tables = {}
    for m in metrics:
        t = _table(g, m)
        if t is not None:
            vals = [float(v) for v in t.values()]
            row[m], row[m + "_std"] = sum(vals) / len(vals), mean_std(vals)[1]
            row[m + "_ci_low"], row[m + "_ci_high"] = interval(t)
            tables[m] = t
        else:
            vals = [float(r.summary[m]) for r in g.runs if _numeric(r.summary.get(m))]
            if vals:
                row[m], row[m + "_std"] = mean_std(vals)
    row.update(validation_row([validation_extremes(r.run_dir) for r in g.runs]))
    return row, tables


def validation_extremes(run: Path | None) -> dict:
    """Best and worst validation values and their steps from RUN/metrics.jsonl (``val_reward``:
    higher is better; else ``val_nll``: lower is better); {} without validation rows."""
    if run is None or not (run / "metrics.jsonl").is_file():
        return {}
    rows = read_metrics(run)
    for key, higher in (("val_reward", True), ("val_nll", False)):
        vals = [(r["step"], float(r[key])) for r in rows if _numeric(r.get(key)) and "step" in r]
        if vals:
            sign = 1 if higher else -1
            best = max(vals, key=lambda sv: (sign * sv[1], -sv[0]))  # ties: the earliest step
            worst = min(vals, key=lambda sv: (sign * sv[1], sv[0]))
            return {"val_metric": key, "val_best": best[1], "val_best_step": best[0],
                    "val_worst": worst[1], "val_worst_step": worst[0]}
    return {}


def validation_row(per_seed: list[dict]) -> dict:
    """Best / worst validation values, mean ± std over the seeds that validated, and each seed's step."""
    vals = [v for v in per_seed if v]
    kinds = {v["val_metric"] for v in vals}
    if not vals or len(kinds) != 1:
        return {}
    out: dict = {"val_metric": kinds.pop(), "val_runs": len(vals)}
    for k in VAL_KEYS:
        out[k], out[k + "_std"] = mean_std([float(v[k]) for v in vals])
        out[k + "_steps"] = ";".join(str(v[k + "_step"]) for v in vals)
    return out


# --------------------------------------------------------------------------------------------------
# paired comparisons
# --------------------------------------------------------------------------------------------------
def compare_to_baseline(groups: list[Group], rows: list[dict], tables: list[dict], tested: list[str],
                        baseline: str | None, warn: Warn) -> None:
    """Adds to each non-baseline row, for each tested metric: ``M_diff``, ``M_diff_low/high``, ``M_p``,
    ``M_p_holm``, ``M_paired_prompts``; and ``baseline`` (the baseline's label) to every row of a block
    that has one. Holm's correction runs over every test of the table."""
    from .stats import holm, paired, shared_keys

    planned: list[tuple[int, int, str]] = []  # (group, its baseline, metric)
    for test in dict.fromkeys(g.test for g in groups):
        block = [i for i, g in enumerate(groups) if g.test == test]
        base = next((i for i in block if baseline is None or groups[i].algo == baseline), None)
        if base is None:
            warn(f"{short(test)}: no {baseline} run evaluated on this test data: its rows are not compared")
            continue
        for i in block:
            rows[i]["baseline"] = groups[base].label
            both = [m for m in tested if i != base and tables[i].get(m) is not None and tables[base].get(m) is not None]
            if both and not shared_keys(tables[i][both[0]], tables[base][both[0]]):
                warn(f"{groups[i].label} and the baseline {groups[base].label} share no test prompts "
                     f"({short(test)}): refused for pairing")
                continue
            planned += [(i, base, m) for m in both]
    # A Monte-Carlo p is at least 2 / (N + 1): with N = 2500 m − 1 patterns, a difference no pattern
    # reaches still gets p = 0.0008 < 0.001 after Holm over m tests (***), within a CPU budget per test.
    done: list[tuple[dict, str]] = []
    for i, base, m in planned:
        cap = int(SIGN_BUDGET / max(1, len(tables[i][m].keys)))
        permutations = max(PERMUTATIONS_MIN, min(2500 * len(planned) - 1, cap))
        res = paired(tables[i][m], tables[base][m], permutations=permutations)
        if res is None:  # prompts with this metric are not shared (others were)
            continue
        rows[i].update({f"{m}_diff": res.diff, f"{m}_diff_low": res.low, f"{m}_diff_high": res.high,
                        f"{m}_p": res.p, f"{m}_paired_prompts": res.prompts})
        done.append((rows[i], m))
    for (row, m), p in zip(done, holm([row[f"{m}_p"] for row, m in done]), strict=True):
        row[f"{m}_p_holm"] = p


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------
def short(data) -> str:
    """A data path as shown in the Markdown/LaTeX tables: its last two components (CSV keeps it whole)."""
    parts = Path(str(data)).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else str(data)


def _decimals(v: float) -> int:
    a = abs(v)
    return 3 if a < 10 else 2 if a < 100 else 1 if a < 1000 else 0


def _half(r: dict, m: str) -> float | None:
    """± of a cell: half the width of the 95 % interval; for corpus-level metrics the std over seeds."""
    if f"{m}_ci_low" in r:
        return (r[f"{m}_ci_high"] - r[f"{m}_ci_low"]) / 2
    if r["seeds"] > 1 and r.get(m + "_std") is not None:
        return r[m + "_std"]
    return None


def _best(rows: list[dict], m: str) -> set[int]:
    """Indexes of the best row(s) of column ``m`` within each block (none for metrics without a direction)."""
    sign = BETTER.get(m)
    if not sign:
        return set()
    out = set()
    for test in {r["data"] for r in rows}:
        vals = [(i, r[m]) for i, r in enumerate(rows) if r["data"] == test and _numeric(r.get(m))]
        if len(vals) > 1:
            top = max(sign * v for _, v in vals)
            d = _decimals(top)
            out |= {i for i, v in vals if round(sign * v, d) == round(top, d)}  # ties as printed
    return out


def cell_text(r: dict, m: str, bold: bool, latex: bool) -> str:
    if not _numeric(r.get(m)):
        return "–"
    d = _decimals(r[m])
    mean = f"{r[m]:.{d}f}"
    if bold:
        mean = f"\\textbf{{{mean}}}" if latex else f"**{mean}**"
    h = _half(r, m)
    pm = "$\\pm$" if latex else "±"
    text = mean if h is None else f"{mean} {pm} {h:.{d}f}"
    from .stats import stars

    mark = stars(r.get(f"{m}_p_holm"))
    if mark:
        text += f"$^{{{mark}}}$" if latex else "\\*" * len(mark)
    return text


def delta_text(r: dict, m: str, latex: bool) -> str:
    if f"{m}_diff" not in r:
        return "baseline" if r.get("baseline") == r["label"] else "–"
    from .stats import stars

    d = _decimals(max(abs(r[f"{m}_diff"]), abs(r[f"{m}_diff_low"]), abs(r[f"{m}_diff_high"])))
    text = f"{r[f'{m}_diff']:+.{d}f} [{r[f'{m}_diff_low']:+.{d}f}, {r[f'{m}_diff_high']:+.{d}f}]"
    mark = stars(r.get(f"{m}_p_holm"))
    if mark:
        text += f"$^{{{mark}}}$" if latex else "\\*" * len(mark)
    return text


def table_columns(rows: list[dict], metric: str, columns: list[str] | None) -> list[str]:
    wanted = columns or ([metric] + [m for m in TABLE_DEFAULT if m != metric])
    return [m for m in dict.fromkeys(wanted) if any(_numeric(r.get(m)) for r in rows)]


def _header(m: str, latex: bool) -> str:
    name = LABELS.get(m, m)
    arrow = {1: "↑", -1: "↓"}.get(BETTER.get(m, 0), "")
    if latex:
        name = _esc(name) + {1: " $\\uparrow$", -1: " $\\downarrow$"}.get(BETTER.get(m, 0), "")
        return name
    return f"{name} {arrow}".strip()


def _legend(rows: list[dict], cols: list[str], metric: str, tests: int) -> list[str]:
    base = {r["baseline"] for r in rows if r.get("baseline")}
    out = ["mean over seeds ± half-width of the 95 % interval (bootstrap over test prompts and seeds)",
           "distinct-n and QD are corpus-level: ± std over seeds"]
    if base:
        out.append(f"Δ {LABELS.get(metric, metric)}: paired difference to {', '.join(sorted(base))} on the shared prompts "
                   "[95 % interval]")
        out.append(f"* p < 0.05, ** p < 0.01, *** p < 0.001: paired permutation test over prompts, Holm-corrected "
                   f"over the {tests} tests of the table")
    if any(BETTER.get(m) for m in cols):
        out.append("bold: best per column")
    return out


def _test_count(rows: list[dict]) -> int:
    return sum(1 for r in rows for k in r if k.endswith("_p_holm"))


def to_markdown(rows: list[dict], metric: str = "reward_mean", columns: list[str] | None = None) -> str:
    cols = table_columns(rows, metric, columns)
    delta = any(f"{metric}_diff" in r for r in rows)
    bold = {m: _best(rows, m) for m in cols}
    head = ["data", "algo", "model", "seeds"] + [_header(m, False) for m in cols] + \
        ([f"Δ {LABELS.get(metric, metric)}"] if delta else [])
    out = "| " + " | ".join(head) + " |\n|---|---|---|" + "---:|" * (len(head) - 3) + "\n"
    for i, r in enumerate(rows):
        cells = [short(r["data"]), r["label"], r["model"], str(r["seeds"])]
        cells += [cell_text(r, m, i in bold[m], False) for m in cols] + ([delta_text(r, metric, False)] if delta else [])
        out += "| " + " | ".join(cells) + " |\n"
    out += "\n" + "".join(f"{line}.  \n" for line in _legend(rows, cols, metric, _test_count(rows)))
    extra = [m for m in present_metrics(rows) if m not in cols]
    if extra:
        out += "\n**Other metrics** (mean over seeds ± half-width of the 95 % interval; corpus-level: ± std)\n\n"
        out += "| data | algo | " + " | ".join(_header(m, False) for m in extra) + " |\n"
        out += "|---|---|" + "---:|" * len(extra) + "\n"
        out += "".join(f"| {short(r['data'])} | {r['label']} | " + " | ".join(cell_text(r, m, False, False) for m in extra)
                       + " |\n" for r in rows)
    if any("val_metric" in r for r in rows):
        out += ("\n**Validation checkpoints** (best and worst validation value over training, mean ± std over "
                "seeds @ each seed's step)\n\n")
        out += "| data | algo | runs | metric | best | worst |\n|---|---|---:|---|---:|---:|\n"
        out += "".join(f"| {short(r['data'])} | {r['label']} | {r.get('val_runs', 0)} | {r.get('val_metric', '–')} | "
                       f"{_val(r, 'best')} | {_val(r, 'worst')} |\n" for r in rows)
    return out


def _val(r: dict, which: str) -> str:
    k = f"val_{which}"
    if k not in r:
        return "–"
    d = _decimals(r[k])
    pm = f" ± {r[k + '_std']:.{d}f}" if r["val_runs"] > 1 else ""
    return f"{r[k]:.{d}f}{pm} @ {r[k + '_steps'].replace(';', ', ')}"


def _esc(s) -> str:
    return str(s).replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&").replace("%", "\\%") \
        .replace("#", "\\#")


def to_latex(rows: list[dict], metric: str = "reward_mean", columns: list[str] | None = None) -> str:
    """A booktabs ``tabular``: algorithms as rows, metrics as columns (mean ± half-width, best bold,
    significance markers) and the paired difference to the baseline; one block per test data."""
    cols = table_columns(rows, metric, columns)
    delta = any(f"{metric}_diff" in r for r in rows)
    bold = {m: _best(rows, m) for m in cols}
    ncol = 2 + len(cols) + delta
    names = ["", "seeds"] + [_header(m, True) for m in cols] + \
        ([f"$\\Delta$ {_esc(LABELS.get(metric, metric))}"] if delta else [])
    lines = [f"% {line}" for line in _legend(rows, cols, metric, _test_count(rows))]
    lines += [f"\\begin{{tabular}}{{l{'r' * (ncol - 1)}}}", "\\toprule", " & ".join(names) + " \\\\", "\\midrule"]
    blocks = list(dict.fromkeys(r["data"] for r in rows))
    for b, test in enumerate(blocks):
        if len(blocks) > 1:
            if b:
                lines.append("\\midrule")
            lines.append(f"\\multicolumn{{{ncol}}}{{l}}{{\\textit{{{_esc(short(test))}}}}} \\\\")
        for i, r in enumerate(rows):
            if r["data"] != test:
                continue
            cells = [_esc(r["label"]), str(r["seeds"])] + [cell_text(r, m, i in bold[m], True) for m in cols]
            if delta:
                cells.append(delta_text(r, metric, True))
            lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def present_metrics(rows: list[dict]) -> list[str]:
    """The metrics some row has, in table order (known metrics, then reward components)."""
    comps = {k for r in rows for k in r if k.startswith("reward/") and _numeric(r[k]) and not k.endswith(_SUFFIXES)}
    return [m for m in METRICS if any(_numeric(r.get(m)) for r in rows)] + sorted(comps)


def csv_columns(rows: list[dict]) -> list[str]:
    cols = ["data", "train_data", "algo", "model", "checkpoint", "label", "seeds", "seed_list", "baseline"]
    for m in present_metrics(rows):
        cols += [c for c in (m, *(m + s for s in _SUFFIXES)) if any(c in r for r in rows)]
    cols += [c for c in ("val_metric", "val_runs", "val_best", "val_best_std", "val_best_steps", "val_worst",
                         "val_worst_std", "val_worst_steps") if any(c in r for r in rows)]
    return cols


_SUFFIXES = ("_std", "_ci_low", "_ci_high", "_diff", "_diff_low", "_diff_high", "_p", "_p_holm", "_paired_prompts")


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=csv_columns(rows), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------
def _warn_stderr(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr)


def aggregate(dirs: list[str], output_dir: str, metric: str = "reward_mean", baseline: str | None = None,
              columns: list[str] | None = None, warn: Warn | None = None) -> list[dict]:
    """Writes results.md / results.csv / results.tex and the figures in ``output_dir``; returns the rows.
    Warnings (one line each) are reported once the outputs are written; an error reports only itself."""
    from .figures import bar_chart, training_curves, validation_curves

    held: list[str] = []
    runs = find_runs(dirs, held.append)
    metrics = metric_names(runs)
    if metric not in metrics:
        bad = [r for r in runs if metric in r.summary and not _numeric(r.summary[metric])]
        why = (f"{bad[0].path} has {metric} = {bad[0].summary[metric]!r} (not a finite number)"
               + (f", and {len(bad) - 1} more summaries" if len(bad) > 1 else "")) if bad else "no summary has it"
        raise LolkitError(f"--metric {metric!r}: {why} (available: {', '.join(metrics) or 'none'})")
    for c in columns or []:
        if c not in metrics:
            raise LolkitError(f"--columns: {c!r} is in no summary (available: {', '.join(metrics)})")
    groups = make_groups(runs)
    if baseline is not None and not any(g.algo == baseline for g in groups):
        raise LolkitError(f"--baseline {baseline!r}: no evaluated run of that algorithm "
                          f"(algorithms: {', '.join(dict.fromkeys(g.algo for g in groups))})")
    built = [group_row(g, metrics) for g in groups]
    rows, tables = [r for r, _ in built], [t for _, t in built]
    tested = [m for m in table_columns(rows, metric, columns) if m not in CORPUS]
    compare_to_baseline(groups, rows, tables, tested, baseline, held.append)
    out = Path(output_dir)
    write_text(out / "results.md", to_markdown(rows, metric, columns))
    write_text(out / "results.csv", to_csv(rows))
    write_text(out / "results.tex", to_latex(rows, metric, columns))
    bar_chart(rows, out / figure_stem(metric), metric)
    training_curves(groups, out / "curves")
    validation_curves(groups, out / "validation")
    for message in held:
        (warn or _warn_stderr)(message)
    return rows


def figure_stem(metric: str) -> str:
    return "reward" if metric == "reward_mean" else metric.replace("/", "_")
