"""Figures of ``lolkit aggregate``, sized for one column of a paper (3.4 in wide, 8 pt text).

Each figure is written as PNG (300 dpi), PDF (fonts embedded as TrueType) and SVG (text kept as
text), without a title: the caption is the paper's. Colours follow the Okabe–Ito palette, which
stays distinguishable under the common colour-vision deficiencies; past eight groups the colours
repeat with another line style, marker and bar hatching.

* ``STEM.{png,pdf,svg}`` — the main metric per group: bars with the 95 % interval (or ± std over
  seeds for corpus-level metrics), the baseline hatched, significance markers over the bars.
* ``curves.*`` — training loss per response token (``loss_per_token``; ``loss`` for runs that
  predate it) against the optimizer step, one small panel per group on a shared step axis: each
  panel has its own loss scale, so losses of different size (DPO's 0.69, NLL's 3) stay readable.
  Mean over seeds of an EMA of each seed's curve, band: min–max over seeds.
* ``validation.*`` — validation reward (or NLL) against the step, every group in one panel: sample
  efficiency. Mean over seeds, band: min–max over seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

# Okabe & Ito (2008), yellow last (as a thin line on white it is the hardest to see) and grey for their
# black (a black bar hides its black error bar)
OKABE_ITO = ["#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#999999", "#F0E442"]
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
HATCHES = ["", "..", "xx", "\\\\"]  # for groups past eight; the baseline's bar has "////"
WIDTH = 3.4  # inches: one column of a two-column paper
STYLE = {"font.size": 8, "axes.labelsize": 8, "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7,
         "axes.spines.top": False, "axes.spines.right": False, "axes.linewidth": 0.6, "lines.linewidth": 1.2,
         "pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none", "savefig.bbox": "tight",
         "savefig.pad_inches": 0.02, "legend.frameon": False}

# how a metric's name is printed in tables and on axes
LABELS = {"reward_mean": "reward", "length_mean": "length", "distinct_1": "distinct-1", "distinct_2": "distinct-2",
          "distinct_3": "distinct-3", "self_bleu": "self-BLEU", "qd_similarity": "QD sim.", "qd": "QD", "ppl": "PPL",
          "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "bleu": "BLEU", "chrf": "chrF",
          "meteor": "METEOR", "coverage": "coverage", "density": "density"}



def style(i: int) -> dict:
    """Colour, line style, marker and hatch of the i-th group."""
    return {"color": OKABE_ITO[i % 8], "linestyle": LINESTYLES[(i // 8) % 4], "marker": MARKERS[i % 8],
            "hatch": HATCHES[(i // 8) % 4]}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, stem: Path) -> list[Path]:
    """``stem``.png / .pdf / .svg, each written atomically and without timestamps (same input, same bytes)."""
    from .io import atomic_path

    out = []
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None}),
                      ("svg", {"Date": None, "Creator": None})):
        path = stem.with_name(f"{stem.name}.{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=300, metadata=meta)
        out.append(path)
    return out


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def bar_chart(rows: list[dict], stem: Path, metric: str = "reward_mean") -> bool:
    """Bars of ``metric`` per group with the 95 % interval and markers of the paired test vs the baseline."""
    from .stats import stars

    keep = [r for r in rows if _finite(r.get(metric))]
    if not keep:
        return False
    plt = _plt()
    multi_block = len({r["data"] for r in keep}) > 1
    labels = [r["label"] + (f"\n{Path(str(r['data'])).stem}" if multi_block else "") for r in keep]
    means = [r[metric] for r in keep]
    lo = [r[metric] - r[f"{metric}_ci_low"] if f"{metric}_ci_low" in r else
          (r.get(metric + "_std", 0.0) if r["seeds"] > 1 else 0.0) for r in keep]
    hi = [r[f"{metric}_ci_high"] - r[metric] if f"{metric}_ci_high" in r else lo[i] for i, r in enumerate(keep)]
    order = list(dict.fromkeys(r["algo"] for r in rows))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(WIDTH, 2.3))
        for i, r in enumerate(keep):
            st = style(order.index(r["algo"]))
            base = r.get("baseline") == r["label"]
            ax.bar(i, means[i], width=0.72, color=st["color"], edgecolor="black", linewidth=0.5,
                   hatch="////" if base else st["hatch"] or None)
        ax.errorbar(range(len(keep)), means, yerr=[lo, hi], fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
        top = max(m + h for m, h in zip(means, hi, strict=True))
        bottom = min(m - low for m, low in zip(means, lo, strict=True))
        span = (max(top, 0) - min(bottom, 0)) or 1.0
        for i, r in enumerate(keep):
            mark = stars(r.get(f"{metric}_p_holm"))
            if mark:
                y = means[i] + hi[i] if means[i] >= 0 else means[i] - lo[i]
                ax.text(i, y + (0.02 if means[i] >= 0 else -0.02) * span, mark, ha="center",
                        va="bottom" if means[i] >= 0 else "top", fontsize=8)
        ax.set_xticks(range(len(keep)), labels, rotation=45 if len(keep) > 4 else 0,
                      ha="right" if len(keep) > 4 else "center", rotation_mode="anchor")
        what = "95 % CI" if any(f"{metric}_ci_low" in r for r in keep) else "± std over seeds"
        ax.set_ylabel(f"{LABELS.get(metric, metric)} ({what})")
        ax.set_ylim(min(bottom, 0) - 0.04 * span, max(top, 0) + 0.12 * span)
        ax.axhline(0, color="black", lw=0.6)
        ax.grid(axis="y", alpha=0.3, lw=0.5)
        ax.set_axisbelow(True)
        save(fig, stem)
        plt.close(fig)
    return True


def _ema(values: list[float], alpha: float) -> list[float]:
    out, acc = [], None
    for v in values:
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out.append(acc)
    return out


def _mean_band(series: list[dict]) -> tuple[list, list[float], list[float], list[float]]:
    """Per step present in every seed: mean, min and max over seeds."""
    steps = sorted(set.intersection(*(set(s) for s in series)))
    mean = [sum(s[t] for s in series) / len(series) for t in steps]
    return steps, mean, [min(s[t] for s in series) for t in steps], [max(s[t] for s in series) for t in steps]


def _metrics_of(groups) -> list[tuple[object, list[list[dict]]]]:
    from .run import read_metrics

    out = []
    for g in groups:
        runs = [read_metrics(r.run_dir) for r in g.runs
                if r.run_dir is not None and (r.run_dir / "metrics.jsonl").is_file()]
        if runs:
            out.append((g, runs))
    return out


def _loss_series(rows: list[dict], key: str) -> dict:
    pts = [(r["step"], float(r[key])) for r in rows if _finite(r.get(key)) and "step" in r]
    if not pts:
        return {}
    steps, vals = zip(*pts, strict=True)
    alpha = min(1.0, 2.0 / (max(2, len(vals) // 10) + 1))  # EMA span ≈ 10 % of the run
    return dict(zip(steps, _ema(list(vals), alpha), strict=True))


def training_curves(groups, stem: Path) -> bool:
    """Small multiples of the training loss per token, one panel per group, shared step axis."""
    data = []
    for g, runs in _metrics_of(groups):
        key = "loss_per_token" if all(any("loss_per_token" in r for r in run) for run in runs) else "loss"
        series = [s for s in (_loss_series(run, key) for run in runs) if s]
        if series:
            data.append((g, key, series))
    if not data:
        return False
    plt = _plt()
    order = list(dict.fromkeys(g.algo for g in groups))
    n = len(data)
    ncols = 1 if n == 1 else 2 if n <= 8 else 3
    nrows = math.ceil(n / ncols)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, 0.35 + 1.05 * nrows), sharex=True, squeeze=False)
        for k, (g, key, series) in enumerate(data):
            ax = axes[k // ncols][k % ncols]
            st = style(order.index(g.algo))
            steps, mean, lo, hi = _mean_band(series)
            if not steps:
                continue
            ax.plot(steps, mean, color=st["color"], linestyle=st["linestyle"], lw=1.1)
            if len(series) > 1:
                ax.fill_between(steps, lo, hi, color=st["color"], alpha=0.25, lw=0)
            name = g.label + ("" if key == "loss_per_token" else " (loss)")
            ax.set_title(name, fontsize=7, loc="left", pad=2)  # a panel's name, not a figure title
            ax.tick_params(labelsize=6, length=2)
            ax.grid(alpha=0.25, lw=0.4)
            ax.yaxis.get_offset_text().set_fontsize(6)
        for k in range(n, nrows * ncols):
            axes[k // ncols][k % ncols].set_visible(False)
        for c in range(ncols):  # the lowest visible panel of each column carries the step axis
            last = max(r for r in range(nrows) if r * ncols + c < n) if c < n else None
            if last is not None:
                axes[last][c].set_xlabel("optimizer step")
                axes[last][c].xaxis.set_tick_params(labelbottom=True)
        fig.supylabel("training loss / token (EMA)", fontsize=8, x=0.0)
        fig.tight_layout(pad=0.3, h_pad=0.4, w_pad=0.6)
        save(fig, stem)
        plt.close(fig)
    return True


def validation_curves(groups, stem: Path) -> bool:
    """Validation reward (else NLL) at each validation step, every group in one panel."""
    val_key, data = None, []
    for g, runs in _metrics_of(groups):
        for key in ("val_reward", "val_nll"):
            series = [{r["step"]: float(r[key]) for r in run if _finite(r.get(key)) and "step" in r} for run in runs]
            series = [s for s in series if s]
            if series:
                val_key = val_key or key
                if key == val_key:
                    data.append((g, series))
                break
    if not data:
        return False
    plt = _plt()
    order = list(dict.fromkeys(g.algo for g in groups))
    seeds = {len(series) for _, series in data}  # seed counts go into the legend only when they differ
    labels = [g.label + (f" ({len(series)} seed{'s' * (len(series) > 1)})" if len(seeds) > 1 else "")
              for g, series in data]
    ncol = 3 if max(map(len, labels)) <= 12 else 2 if max(map(len, labels)) <= 22 else 1
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(WIDTH, 2.2 + 0.14 * math.ceil(len(data) / ncol)))
        for (g, series), label in zip(data, labels, strict=True):
            st = style(order.index(g.algo))
            steps, mean, lo, hi = _mean_band(series)
            ax.plot(steps, mean, color=st["color"], linestyle=st["linestyle"], marker=st["marker"], ms=3,
                    label=label)
            if len(series) > 1:
                ax.fill_between(steps, lo, hi, color=st["color"], alpha=0.2, lw=0)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel({"val_reward": "validation reward", "val_nll": "validation NLL / token"}[val_key])
        ax.grid(alpha=0.3, lw=0.5)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, handlelength=2.2, columnspacing=1.0)
        save(fig, stem)
        plt.close(fig)
    return True
