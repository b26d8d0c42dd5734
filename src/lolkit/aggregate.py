"""``lolkit aggregate``: many evaluated runs → one table (Markdown, CSV, LaTeX) and plots.

A run is any directory holding an eval ``summary.json`` (as written by ``lolkit eval``). Runs are
grouped by (data, algorithm, model); each group reports the mean ± standard deviation over its
seeds and a bootstrap 95 % interval of that mean.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

from .errors import LolkitError
from .io import write_text
from .metrics import mean_std

METRICS = ["reward_mean", "length_mean", "distinct_1", "distinct_2", "distinct_3"]


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


def bootstrap_ci(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean (a single value gives a zero-width interval)."""
    if len(values) < 2:
        return values[0], values[0]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=len(values))) / len(values) for _ in range(n))
    return means[int(0.025 * n)], means[int(0.975 * n) - 1]


def group_rows(found: list[tuple[Path, dict]]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for path, s in found:
        run = s.get("run") or {}
        key = (run.get("data") or run.get("test_data") or "?", run.get("algo") or path.parent.name, run.get("model") or "?")
        groups.setdefault(key, []).append(s)
    from .algorithms import names

    order = {n: i for i, n in enumerate(names())}
    rows = []
    for (data, algo, model), items in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], len(order)),
                                                                              kv[0][1], kv[0][2])):
        row = {"data": data, "algo": algo, "model": model, "seeds": len(items)}
        for m in METRICS:
            vals = [float(s[m]) for s in items if s.get(m) is not None]
            if vals:
                row[m], row[m + "_std"] = mean_std(vals)
                if m == "reward_mean":
                    row["reward_ci_low"], row["reward_ci_high"] = bootstrap_ci(vals)
        rows.append(row)
    return rows


def to_csv(rows: list[dict]) -> str:
    cols = ["data", "algo", "model", "seeds"] + [c for m in METRICS for c in (m, m + "_std")] + ["reward_ci_low", "reward_ci_high"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _pm(r: dict, m: str, latex: bool = False) -> str:
    if m not in r:
        return "–"
    sep = " $\\pm$ " if latex else " ± "
    return f"{r[m]:.3f}{sep}{r[m + '_std']:.3f}" if r["seeds"] > 1 else f"{r[m]:.3f}"


def to_markdown(rows: list[dict]) -> str:
    head = "| data | algo | model | seeds | reward | 95% CI | length | distinct-1 | distinct-2 |\n"
    head += "|---|---|---|---:|---:|---:|---:|---:|---:|\n"
    body = "".join(
        f"| {r['data']} | {r['algo']} | {r['model']} | {r['seeds']} | {_pm(r, 'reward_mean')} | "
        f"[{r.get('reward_ci_low', float('nan')):.3f}, {r.get('reward_ci_high', float('nan')):.3f}] | "
        f"{_pm(r, 'length_mean')} | {_pm(r, 'distinct_1')} | {_pm(r, 'distinct_2')} |\n" for r in rows)
    return head + body


def to_latex(rows: list[dict]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&").replace("%", "\\%")

    lines = ["\\begin{tabular}{lllrrrr}", "\\toprule",
             "data & algo & model & seeds & reward & length & distinct-2 \\\\", "\\midrule"]
    for r in rows:
        lines.append(f"{esc(r['data'])} & {esc(r['algo'])} & {esc(r['model'])} & {r['seeds']} & "
                     f"{_pm(r, 'reward_mean', True)} & {_pm(r, 'length_mean', True)} & {_pm(r, 'distinct_2', True)} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)


def bar_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['algo']}" + (f"\n{Path(r['data']).name}" if len({x['data'] for x in rows}) > 1 else "") for r in rows]
    means = [r.get("reward_mean", 0.0) for r in rows]
    errs = [r.get("reward_mean_std", 0.0) if r["seeds"] > 1 else 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows) + 1), 3.5))
    bars = ax.bar(range(len(rows)), means, yerr=errs if any(errs) else None, capsize=4, color="#4C72B0")
    for b, m in zip(bars, means, strict=True):
        ax.text(b.get_x() + b.get_width() / 2, m, f"{m:.2f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(rows)), labels)
    ax.set_ylabel("mean eval reward")
    ax.set_ylim(min(0.0, min(means) * 1.1), max(means) * 1.12 if max(means) > 0 else 1.0)
    ax.set_title("Eval reward by algorithm (mean ± std over seeds)")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    from .io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def training_curves(found: list[tuple[Path, dict]], path: Path) -> bool:
    """Loss (and validation metric) per optimizer step of every run with a metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    for _, s in found:
        run = (s.get("run") or {}).get("run_dir")
        if run and (Path(run) / "metrics.jsonl").exists():
            rows = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines() if x.strip()]
            label = f"{s['run'].get('algo')} s{s['run'].get('seed')}"
            series.append((label, rows))
    if not series:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, rows in series:
        axes[0].plot([r["step"] for r in rows], [r["loss"] for r in rows], label=label, lw=1)
        val = [(r["step"], r["val_reward"]) for r in rows if r.get("val_reward") is not None]
        if val:
            axes[1].plot(*zip(*val, strict=True), marker="o", label=label, lw=1)
    axes[0].set(xlabel="optimizer step", ylabel="training loss", title="Training loss")
    axes[1].set(xlabel="optimizer step", ylabel="validation reward", title="Validation reward")
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    from .io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return True


def aggregate(dirs: list[str], output_dir: str) -> list[dict]:
    found = find_summaries(dirs)
    rows = group_rows(found)
    out = Path(output_dir)
    write_text(out / "results.md", to_markdown(rows))
    write_text(out / "results.csv", to_csv(rows))
    write_text(out / "results.tex", to_latex(rows))
    bar_chart(rows, out / "reward.png")
    training_curves(found, out / "curves.png")
    return rows
