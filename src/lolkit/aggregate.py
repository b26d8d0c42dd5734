"""``lolkit aggregate``: many evaluated runs → one table (Markdown, CSV, LaTeX) and plots.

A run is any directory holding an eval ``summary.json`` (as written by ``lolkit eval``); its run
directory (``summary.run.run_dir``, else the summary's grandparent when it holds ``config.yaml``)
gives the resolved config and ``metrics.jsonl``. Runs are grouped by (data, algorithm, model); each
group reports, for every metric, the mean ± population standard deviation over its seeds, a
percentile-bootstrap 95 % interval of that mean for the reward and the main ``--metric``, and — like
the A-LoL tables — the best and worst validation checkpoints (their validation values and steps,
averaged over seeds). Writes results.md / results.csv / results.tex, a bar chart of the main metric
(``<metric>.png``; ``reward.png`` for the default) and the training curves (``curves.png``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from pathlib import Path

from .errors import LolkitError
from .io import write_text
from .metrics import mean_std

# known metrics in table order; reward components (reward/NAME) follow
METRICS = ["reward_mean", "length_mean", "distinct_1", "distinct_2", "distinct_3", "self_bleu", "qd_similarity", "qd",
           "ppl", "rouge1", "rouge2", "rougeL", "bleu", "chrf", "meteor", "coverage", "density"]
LABELS = {"reward_mean": "reward", "length_mean": "length", "distinct_1": "distinct-1", "distinct_2": "distinct-2",
          "distinct_3": "distinct-3", "self_bleu": "self-BLEU", "qd_similarity": "QD sim.", "qd": "QD", "ppl": "PPL",
          "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "bleu": "BLEU", "chrf": "chrF",
          "meteor": "METEOR", "coverage": "coverage", "density": "density"}
MAIN_MD = ["reward_mean", "length_mean", "distinct_1", "distinct_2"]  # the first table's columns (after the CI)
VAL_KEYS = ["val_best", "val_best_step", "val_worst", "val_worst_step"]


def find_summaries(dirs: list[str]) -> list[tuple[Path, dict]]:
    found = []
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise LolkitError(f"{root}: no such directory")
        for p in sorted(root.rglob("summary.json")):
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise LolkitError(f"{p}: not a valid summary.json ({e})") from None
            if isinstance(data, dict) and "reward_mean" in data:
                found.append((p, data))
    if not found:
        raise LolkitError(f"no eval summaries (summary.json with reward_mean) under {', '.join(dirs)}")
    return found


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


def validation_extremes(run: Path | None) -> dict:
    """Best and worst validation values and their steps from RUN/metrics.jsonl (``val_reward``:
    higher is better; else ``val_nll``: lower is better); {} without validation rows."""
    if run is None or not (run / "metrics.jsonl").is_file():
        return {}
    rows = _read_metrics(run / "metrics.jsonl")
    for key, higher in (("val_reward", True), ("val_nll", False)):
        vals = [(r["step"], float(r[key])) for r in rows if isinstance(r.get(key), (int, float))
                and math.isfinite(r[key]) and "step" in r]
        if vals:
            sign = 1 if higher else -1
            best = max(vals, key=lambda sv: (sign * sv[1], -sv[0]))  # ties: the earliest step
            worst = min(vals, key=lambda sv: (sign * sv[1], sv[0]))
            return {"val_metric": key, "val_best": best[1], "val_best_step": best[0],
                    "val_worst": worst[1], "val_worst_step": worst[0]}
    return {}


def _read_metrics(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        if isinstance(obj, dict):
            rows.append(obj)
    return rows


def bootstrap_ci(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean (a single value gives a zero-width interval)."""
    if len(values) < 2:
        return values[0], values[0]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def _group_order(key: tuple) -> tuple:
    """Groups sort by data, then the algorithm table's order, then model."""
    from .algorithms import names

    order = {n: i for i, n in enumerate(names())}
    return key[0], order.get(key[1], len(order)), key[1], key[2]


def metric_names(found: list[tuple[Path, dict]]) -> list[str]:
    present = {k for _, s in found for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    comps = sorted(k for k in present if k.startswith("reward/"))
    return [m for m in METRICS if m in present] + comps


def group_rows(found: list[tuple[Path, dict]], metric: str = "reward_mean") -> list[dict]:
    groups: dict[tuple, list[tuple[Path, dict]]] = {}
    for path, s in found:
        run = s.get("run") or {}
        ident = _config_identity(run_dir(path, s))
        key = (run.get("data") or ident.get("data") or run.get("test_data") or "?",
               run.get("algo") or ident.get("algo") or _eval_owner(path),
               model_label(run.get("model") or ident.get("model")) or "?")
        groups.setdefault(key, []).append((path, s))
    metrics = metric_names(found)
    rows = []
    for (data, algo, model), items in sorted(groups.items(), key=lambda kv: _group_order(kv[0])):
        row: dict = {"data": data, "algo": algo, "model": model, "seeds": len(items)}
        for m in metrics:
            vals = [float(s[m]) for _, s in items if isinstance(s.get(m), (int, float))]
            if vals:
                row[m], row[m + "_std"] = mean_std(vals)
                if m in ("reward_mean", metric):
                    lo, hi = bootstrap_ci(vals)
                    prefix = "reward" if m == "reward_mean" else m
                    row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"] = lo, hi
        vals = [validation_extremes(run_dir(p, s)) for p, s in items]
        vals = [v for v in vals if v]
        kinds = {v["val_metric"] for v in vals}
        if vals and len(kinds) == 1:
            row["val_metric"] = kinds.pop()
            row["val_runs"] = len(vals)
            for k in VAL_KEYS:
                row[k], row[k + "_std"] = mean_std([float(v[k]) for v in vals])
        rows.append(row)
    return rows


def _columns(rows: list[dict], metric: str) -> list[str]:
    cols = ["data", "algo", "model", "seeds"]
    present = [m for m in METRICS + sorted({k for r in rows for k in r if k.startswith("reward/") and
                                            not k.endswith("_std")}) if any(m in r for r in rows)]
    cols += [c for m in present for c in (m, m + "_std")] + ["reward_ci_low", "reward_ci_high"]
    if metric != "reward_mean":
        cols += [f"{metric}_ci_low", f"{metric}_ci_high"]
    if any("val_metric" in r for r in rows):
        cols += ["val_metric", "val_runs"] + [c for k in VAL_KEYS for c in (k, k + "_std")]
    return cols


def to_csv(rows: list[dict], metric: str = "reward_mean") -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_columns(rows, metric), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _pm(r: dict, m: str, latex: bool = False) -> str:
    if r.get(m) is None:
        return "–"
    sep = " $\\pm$ " if latex else " ± "
    return f"{r[m]:.3f}{sep}{r[m + '_std']:.3f}" if r["seeds"] > 1 else f"{r[m]:.3f}"


def _ci(r: dict, prefix: str = "reward") -> str:
    if f"{prefix}_ci_low" not in r:
        return "–"
    return f"[{r[f'{prefix}_ci_low']:.3f}, {r[f'{prefix}_ci_high']:.3f}]"


def _val(r: dict, which: str, latex: bool = False) -> str:
    if f"val_{which}" not in r:
        return "–"
    step = r[f"val_{which}_step"]
    at = f" @ {step:.0f}" if r["val_runs"] == 1 or r[f"val_{which}_step_std"] == 0 else f" @ {step:.1f}"
    n = dict(r, seeds=r["val_runs"])
    return _pm(n, f"val_{which}", latex) + at


def _extra_metrics(rows: list[dict]) -> list[str]:
    return [m for m in METRICS[len(MAIN_MD) + 1:] if any(m in r for r in rows)] + \
        sorted({k for r in rows for k in r if k.startswith("reward/") and not k.endswith("_std")})


def to_markdown(rows: list[dict]) -> str:
    head = "| data | algo | model | seeds | reward | 95% CI | length | distinct-1 | distinct-2 |\n"
    head += "|---|---|---|---:|---:|---:|---:|---:|---:|\n"
    body = "".join(
        f"| {short(r['data'])} | {r['algo']} | {r['model']} | {r['seeds']} | {_pm(r, 'reward_mean')} | {_ci(r)} | "
        f"{_pm(r, 'length_mean')} | {_pm(r, 'distinct_1')} | {_pm(r, 'distinct_2')} |\n" for r in rows)
    out = head + body
    extra = _extra_metrics(rows)
    if extra:
        out += "\n**Other metrics** (mean ± std over seeds; definitions in docs/evaluation.md)\n\n"
        out += "| data | algo | model | " + " | ".join(LABELS.get(m, m) for m in extra) + " |\n"
        out += "|---|---|---|" + "---:|" * len(extra) + "\n"
        out += "".join(f"| {short(r['data'])} | {r['algo']} | {r['model']} | " + " | ".join(_pm(r, m) for m in extra) + " |\n"
                       for r in rows)
    if any("val_metric" in r for r in rows):
        out += ("\n**Validation checkpoints** (best and worst validation value over training @ its step, "
                "mean ± std over seeds)\n\n")
        out += "| data | algo | model | runs | metric | best | worst |\n|---|---|---|---:|---|---:|---:|\n"
        out += "".join(f"| {short(r['data'])} | {r['algo']} | {r['model']} | {r.get('val_runs', 0)} | "
                       f"{r.get('val_metric', '–')} | {_val(r, 'best')} | {_val(r, 'worst')} |\n" for r in rows)
    return out


def short(data) -> str:
    """A data path as shown in the Markdown/LaTeX tables: its last two components (CSV keeps it whole)."""
    parts = Path(str(data)).parts
    return "/".join(parts[-2:]) if len(parts) > 2 else str(data)


def _esc(s) -> str:
    return str(s).replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&").replace("%", "\\%") \
        .replace("#", "\\#")


def to_latex(rows: list[dict]) -> str:
    extra = [m for m in _extra_metrics(rows) if not m.startswith("reward/")]
    cols = ["reward_mean", "length_mean", "distinct_2"] + extra
    val = any("val_metric" in r for r in rows)
    spec = "lllr" + "r" * len(cols) + ("rr" if val else "")
    names = [LABELS.get(m, m) for m in cols] + (["best val.", "worst val."] if val else [])
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
             "data & algo & model & seeds & " + " & ".join(_esc(n) for n in names) + " \\\\", "\\midrule"]
    for r in rows:
        cells = [_esc(short(r["data"])), _esc(r["algo"]), _esc(r["model"]), str(r["seeds"])]
        cells += [_pm(r, m, True) for m in cols]
        if val:
            cells += [_val(r, "best", True), _val(r, "worst", True)]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _labels(rows: list[dict]) -> list[str]:
    multi_data = len({r["data"] for r in rows}) > 1
    multi_model = len({r["model"] for r in rows}) > 1
    out = []
    for r in rows:
        parts = [r["algo"]]
        if multi_data:
            parts.append(Path(str(r["data"])).stem)
        if multi_model:
            parts.append(Path(str(r["model"])).name)
        out.append("\n".join(parts))
    return out


def _save(fig, path: Path) -> None:
    from .io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")


def bar_chart(rows: list[dict], path: Path, metric: str = "reward_mean") -> bool:
    """Bars of ``metric`` per group with ±1 std error bars (over seeds) and the value on top."""
    keep = [r for r in rows if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    if not keep:
        return False
    plt = _plt()
    labels = _labels(keep)
    means = [r[metric] for r in keep]
    errs = [r.get(metric + "_std", 0.0) if r["seeds"] > 1 else 0.0 for r in keep]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(keep) + 2), 3.8))
    colours = plt.get_cmap("tab10").colors
    algos = list(dict.fromkeys(r["algo"] for r in keep))
    bars = ax.bar(range(len(keep)), means, yerr=errs if any(errs) else None, capsize=4,
                  color=[colours[algos.index(r["algo"]) % 10] for r in keep], edgecolor="black", linewidth=0.5)
    top = max(m + e for m, e in zip(means, errs, strict=True))
    low = min(m - e for m, e in zip(means, errs, strict=True))
    span = (max(top, 0) - min(low, 0)) or 1.0
    for b, m, e in zip(bars, means, errs, strict=True):
        y = m + e if m >= 0 else m - e
        ax.text(b.get_x() + b.get_width() / 2, y + (0.02 if m >= 0 else -0.02) * span, f"{m:.3f}", ha="center",
                va="bottom" if m >= 0 else "top", fontsize=8)
    ax.set_xticks(range(len(keep)), labels, fontsize=9, rotation=30 if len(keep) > 6 else 0,
                  ha="right" if len(keep) > 6 else "center")
    name = LABELS.get(metric, metric)
    ax.set_ylabel(f"eval {name}")
    ax.set_ylim(min(low, 0) - 0.05 * span, max(top, 0) + 0.12 * span)
    ax.axhline(0, color="black", lw=0.6)
    seeds = sorted({r["seeds"] for r in keep})
    ax.set_title(f"Eval {name} by algorithm (mean ± std over {'/'.join(map(str, seeds))} seed"
                 f"{'s' if seeds != [1] else ''})", fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def _ema(values: list[float], alpha: float) -> list[float]:
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def _mean_band(series: list[dict[int, float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Per step present in every seed: mean, min and max over seeds."""
    steps = sorted(set.intersection(*(set(s) for s in series)))
    mean = [sum(s[t] for s in series) / len(series) for t in steps]
    return steps, mean, [min(s[t] for s in series) for t in steps], [max(s[t] for s in series) for t in steps]


def training_curves(found: list[tuple[Path, dict]], path: Path) -> bool:
    """Left: training loss per optimizer step (mean over seeds, smoothed by an EMA, band = min–max
    over seeds of the smoothed curves). Right: validation reward (or NLL) at each validation step,
    mean over seeds with markers and a min–max band."""
    groups: dict[tuple, list[list[dict]]] = {}
    for p, s in found:
        run = run_dir(p, s)
        if run is None or not (run / "metrics.jsonl").exists():
            continue
        info = s.get("run") or {}
        ident = _config_identity(run)
        key = (info.get("data") or ident.get("data") or "?", info.get("algo") or ident.get("algo") or "?",
               model_label(info.get("model") or ident.get("model")) or "?")
        groups.setdefault(key, []).append(_read_metrics(run / "metrics.jsonl"))
    if not groups:
        return False
    groups = dict(sorted(groups.items(), key=lambda kv: _group_order(kv[0])))  # the tables' order and colours
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = plt.get_cmap("tab10").colors
    rows = [{"data": d, "algo": a, "model": m} for d, a, m in groups]
    labels = [lab.replace("\n", " / ") for lab in _labels(rows)]
    val_key = None
    for g, ((_, _, _), runs) in enumerate(groups.items()):
        c = colours[g % 10]
        n = len(runs)
        label = f"{labels[g]} ({n} seed{'s' if n > 1 else ''})"
        losses = []
        for rows_ in runs:
            pts = [(r["step"], r["loss"]) for r in rows_ if isinstance(r.get("loss"), (int, float)) and "step" in r]
            if pts:
                steps, vals = zip(*pts, strict=True)
                alpha = min(1.0, 2.0 / (max(2, len(vals) // 10) + 1))  # EMA span ≈ 10 % of the run
                losses.append(dict(zip(steps, _ema(list(vals), alpha), strict=True)))
        if losses:
            steps, mean, lo, hi = _mean_band(losses)
            axes[0].plot(steps, mean, color=c, lw=1.6, label=label)
            if n > 1:
                axes[0].fill_between(steps, lo, hi, color=c, alpha=0.18, lw=0)
        for key in ("val_reward", "val_nll"):
            vals = [{r["step"]: float(r[key]) for r in rows_ if isinstance(r.get(key), (int, float))} for rows_ in runs]
            vals = [v for v in vals if v]
            if vals:
                val_key = val_key or key
                if key != val_key:
                    break
                steps, mean, lo, hi = _mean_band(vals)
                axes[1].plot(steps, mean, color=c, lw=1.6, marker="o", ms=4, label=label)
                if n > 1:
                    axes[1].fill_between(steps, lo, hi, color=c, alpha=0.18, lw=0)
                break
    axes[0].set(xlabel="optimizer step", ylabel="training loss (EMA)", title="Training loss (mean over seeds; band: min–max)")
    vname = {"val_reward": "validation reward", "val_nll": "validation NLL / token"}.get(val_key or "", "validation")
    axes[1].set(xlabel="optimizer step", ylabel=vname, title=f"{vname[0].upper() + vname[1:]} (mean over seeds; band: min–max)")
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(10)
        if ax.has_data():
            ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return True


def aggregate(dirs: list[str], output_dir: str, metric: str = "reward_mean") -> list[dict]:
    found = find_summaries(dirs)
    if metric not in metric_names(found):
        raise LolkitError(f"--metric {metric!r}: no summary has it (available: {', '.join(metric_names(found))})")
    rows = group_rows(found, metric)
    out = Path(output_dir)
    write_text(out / "results.md", to_markdown(rows))
    write_text(out / "results.csv", to_csv(rows, metric))
    write_text(out / "results.tex", to_latex(rows))
    chart = "reward.png" if metric == "reward_mean" else f"{metric.replace('/', '_')}.png"
    bar_chart(rows, out / chart, metric)
    training_curves(found, out / "curves.png")
    return rows
