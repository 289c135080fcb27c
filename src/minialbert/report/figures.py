"""`minialbert figures`: the report's five figures, each as PNG and SVG.

1. score vs unique parameters, per task (teacher, each student; full and adapter);
2. adapter minus full fine-tuning per task, with its 95% interval (comparisons.csv);
3. distillation loss per term over tokens seen, train and eval (train_log.json);
4. inference throughput and latency at batch 1 and 32 (`minialbert bench-inference`);
5. anytime inference: score and speed with the first k recursions (fine-tuning `anytime`).

A figure whose inputs are missing is drawn as a placeholder that says what is missing, so a
partial run still has every file the report names.
"""

from __future__ import annotations

import math
from pathlib import Path

from . import FIGURES
from .inputs import Inputs, number
from .style import (FLOOR_COLOUR, FLOORS, MODE_LINES, MODE_MARKERS, MODE_NAMES, compact, legend_below, placeholder,
                    pyplot, save)

TERM_TITLES = {"total": "weighted total", "mlm": "MLM", "kd": "KD", "att": "ATT (attention KL)",
               "hid": "HID (hidden states)"}
# arms of one size (full and adapter of a model, students of one shape) sit side by side on the
# log axis, this far apart (as a factor)
DODGE = 1.09


class Missing(Exception):
    """The figure has nothing to draw; the message says why (shown in the placeholder)."""


def _grid(plt, n: int, max_cols: int, width: float, height: float, rows_per_item: int = 1):
    """Panels in balanced rows (5 panels: 3 + 2, not 4 + 1)."""
    nrows = math.ceil(max(1, n) / max_cols)
    ncols = math.ceil(max(1, n) / nrows)
    nrows *= rows_per_item
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.9),
                             layout="constrained", squeeze=False)
    return fig, axes


def _compact_axis(axis) -> None:
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))


def _interval(row, centre: float) -> tuple[float, float] | None:
    """Error bar lengths below and above: the 95% interval, else one std over seeds."""
    lo, hi = number(row.get("ci_low")), number(row.get("ci_high"))
    if lo is not None and hi is not None:
        return max(0.0, centre - lo), max(0.0, hi - centre)
    std = number(row.get("std"))
    return (std, std) if std else None


def _dodged(sizes: list) -> list:
    """x positions: the arms of one size spread symmetrically around it, in the given order."""
    sizes = [number(v) for v in sizes]
    count = {v: sizes.count(v) for v in sizes if v is not None}
    out, seen = [], {}
    for v in sizes:
        if v is None:
            out.append(None)
            continue
        seen[v] = seen.get(v, -1) + 1
        out.append(v * DODGE ** (seen[v] - (count[v] - 1) / 2))
    return out


def _model_keys(data: Inputs, models: list[str]) -> list[tuple]:
    from matplotlib.lines import Line2D

    return [(Line2D([], [], color=data.style.colour(m), marker="o", ls="", ms=7), m) for m in models]


def _mode_keys(modes: list[str]) -> list[tuple]:
    from matplotlib.lines import Line2D

    return [(Line2D([], [], color="#555555", marker=MODE_MARKERS.get(m, "o"), ls="", ms=7,
                    mfc="#555555" if m == "full" else "white"), MODE_NAMES.get(m, m)) for m in modes]


# ---- 1. score vs unique parameters --------------------------------------------------------------

def score_vs_params(data: Inputs):
    scores = data.scores()
    if scores is None:
        raise Missing("No results/summary/results.csv yet: the aggregate has not run.")
    plt = pyplot()
    from matplotlib.lines import Line2D

    tasks = sorted(scores["task"].unique())
    fig, axes = _grid(plt, len(tasks), 4, 3.4, 3.0)
    size = "unique_params" if "unique_params" in scores else "total_params"
    seen_floors = False
    for ax, task in zip(axes.flat, tasks):
        metric, split = data.headline(task)
        rows = scores[scores["task"] == task]
        records = sorted(rows.to_dict("records"), key=lambda r: data.style.arm_key(r["model"], r["mode"]))
        placed = _dodged([(r[size] if r["model"] not in FLOORS else None) for r in records])
        xs = []
        for row, x in zip(records, placed):
            if x is None:
                seen_floors = True
                ax.axhline(row["mean"], color=FLOOR_COLOUR, ls=":", lw=1.2)
                ax.annotate(row["model"], (1.0, row["mean"]), xycoords=("axes fraction", "data"), fontsize=8,
                            color=FLOOR_COLOUR, ha="right", va="bottom")
                continue
            xs.append(x)
            colour = data.style.colour(row["model"])
            err = _interval(row, row["mean"])
            ax.errorbar(x, row["mean"], yerr=None if err is None else [[err[0]], [err[1]]], ls="",
                        marker=MODE_MARKERS.get(row["mode"], "o"), ms=8, color=colour, capsize=3,
                        mfc=colour if row["mode"] == "full" else "white", mew=1.6)
        ax.set_xscale("log")
        if xs:
            ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
        # ticks at the models' own sizes: the reader sees "5.9M" and "22.7M", not decades
        sizes = sorted({v for r in records if r["model"] not in FLOORS and (v := number(r[size])) is not None})
        ax.set_xticks(sizes, [compact(v) for v in sizes])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        ax.set_title(task)
        ax.set_ylabel(f"{metric} on {split}")
        ax.set_xlabel("unique parameters (log scale)")
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    models = [m for m in data.style.sorted(scores["model"]) if m not in FLOORS]
    keys = _mode_keys([m for m in MODE_MARKERS if m in set(scores["mode"])])
    if seen_floors:
        keys.append((Line2D([], [], color=FLOOR_COLOUR, ls=":", lw=1.2), "floor (majority / tf-idf)"))
    legend_below(fig, _model_keys(data, models), keys)
    return fig


# ---- 2. adapter minus full -----------------------------------------------------------------------

def _model_mode(label: str) -> tuple[str, str]:
    model, _, mode = str(label).rpartition("/")
    return (model, mode) if model else (mode, "")


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def adapter_differences(data: Inputs) -> list[dict]:
    """comparisons.csv rows of one model's adapter arm against its full arm, as adapter - full."""
    if data.comparisons is None:
        return []
    out = []
    for row in data.comparisons.to_dict("records"):
        if row.get("comparison", "difference") != "difference":  # retention rows are ratios
            continue
        (ma, mode_a), (mb, mode_b) = _model_mode(row["a"]), _model_mode(row["b"])
        if ma != mb or {mode_a, mode_b} != {"adapter", "full"}:
            continue
        metric, _ = data.headline(row["task"])
        if metric is not None and row["metric"] != metric:
            continue
        sign = 1.0 if mode_a == "adapter" else -1.0
        lo, hi = sign * row["ci_low"], sign * row["ci_high"]
        out.append({"task": row["task"], "split": row["split"], "metric": row["metric"], "model": ma,
                    "diff": sign * row["diff"], "ci_low": min(lo, hi), "ci_high": max(lo, hi),
                    "distinguishable": _truthy(row.get("distinguishable"))})
    return out


def adapter_minus_full(data: Inputs):
    rows = adapter_differences(data)
    if not rows:
        why = ("No results/summary/comparisons.csv yet." if data.comparisons is None
               else "comparisons.csv has no adapter-vs-full pair (no model was tuned both ways).")
        raise Missing(why)
    plt = pyplot()
    from matplotlib.lines import Line2D

    groups = sorted({(r["task"], r["split"], r["metric"]) for r in rows}, key=lambda g: (g[0], g[1] != "test", g[1]))
    models = data.style.sorted(r["model"] for r in rows)
    step = 0.7 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.55 * len(groups) * max(1, len(models) * 0.45) + 0.9),
                           layout="constrained")
    for r in rows:
        g, j = groups.index((r["task"], r["split"], r["metric"])), models.index(r["model"])
        y = g + (j - (len(models) - 1) / 2) * step
        colour = data.style.colour(r["model"])
        ax.errorbar(r["diff"], y, xerr=[[r["diff"] - r["ci_low"]], [r["ci_high"] - r["diff"]]], ls="",
                    marker="o", ms=7, color=colour, capsize=3, mew=1.6,
                    mfc=colour if r["distinguishable"] else "white")
    ax.axvline(0.0, color="#000000", lw=0.9)
    ax.set_yticks(range(len(groups)), [f"{t}\n{m} on {s}" for t, s, m in groups])
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("adapter − full fine-tuning (score difference, 95% interval)")
    ax.set_title("Adapters only vs full fine-tuning (left of 0: adapters lose)", loc="left")
    students = [(h, data.style.label(m, "adapter")) for h, m in _model_keys(data, models)]
    legend_below(fig, students, [(Line2D([], [], color="#555555", marker="o", ls="", ms=7), "interval excludes 0"),
                                 (Line2D([], [], color="#555555", marker="o", ls="", ms=7, mfc="white"),
                                  "interval includes 0")])
    return fig


# ---- 3. distillation losses ----------------------------------------------------------------------

def _term(rec: dict, term: str):
    value = rec.get("loss", rec.get("total")) if term == "total" else rec.get(term)
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _series(records: list[dict], term: str) -> tuple[list[float], list[float]]:
    pts = [(r["tokens"], v) for r in records if "tokens" in r and (v := _term(r, term)) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _smooth(ys: list[float], window: int) -> list[float]:
    import numpy as np

    kernel = np.ones(window) / window
    padded = np.pad(np.asarray(ys, dtype=float), (window // 2, window - 1 - window // 2), mode="edge")
    return list(np.convolve(padded, kernel, mode="valid"))


def distill_losses(data: Inputs):
    runs = [r for r in data.distill if r.train or r.eval]
    idle = [r.name for r in data.distill if not (r.train or r.eval)]
    if not runs:
        why = "No distillation log: no student was distilled"
        raise Missing(why + (f" ({', '.join(idle)} are saved initialisations)." if idle else "."))
    plt = pyplot()
    from matplotlib.lines import Line2D

    terms = [t for t in TERM_TITLES if any(_series(r.train + r.eval, t)[0] for r in runs)]
    fig, axes = _grid(plt, len(terms), 4, 3.4, 2.9)
    for ax, term in zip(axes.flat, terms):
        positive = True
        for run in runs:
            colour = data.style.colour(run.name)
            xs, ys = _series(run.train, term)
            if len(ys) > 60:  # long runs: the raw curve faint, a moving average on top
                ax.plot(xs, ys, color=colour, lw=0.8, alpha=0.25)
                ys = _smooth(ys, max(3, len(ys) // 30))
            ax.plot(xs, ys, color=colour, lw=1.6)
            ex, ey = _series(run.eval, term)
            ax.plot(ex, ey, color=colour, ls="--", marker="o", ms=4, lw=1.2)
            positive &= all(v > 0 for v in ys + ey)
        lo_hi = [v for run in runs for v in _series(run.train + run.eval, term)[1]]
        if positive and lo_hi and max(lo_hi) / max(min(lo_hi), 1e-12) > 20:
            ax.set_yscale("log")
        _compact_axis(ax.xaxis)
        ax.set_title(TERM_TITLES[term])
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss")
    for ax in axes.flat[len(terms):]:
        ax.set_visible(False)
    if idle:
        fig.suptitle(f"not distilled, so no curve: {', '.join(idle)}", x=0.01, ha="left", fontsize=9, color="#444444")
    legend_below(fig, [(Line2D([], [], color=data.style.colour(r.name), lw=2), r.name) for r in runs],
                 [(Line2D([], [], color="#555555", lw=1.6), "train (per logged step)"),
                  (Line2D([], [], color="#555555", ls="--", marker="o", ms=4), "held-out eval")])
    return fig


# ---- 4. inference --------------------------------------------------------------------------------

def inference(data: Inputs):
    table = data.inference
    if table is None:
        raise Missing("No inference benchmark yet (results/summary/inference.csv from `minialbert bench-inference`).")
    plt = pyplot()
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator

    machines = list(dict.fromkeys(zip(table["device_name"], table["precision"])))
    fig, axes = plt.subplots(len(machines), 2, figsize=(10, 3.4 * len(machines) + 0.9), layout="constrained",
                             squeeze=False)
    models = data.style.sorted(table["model"])
    for (name, precision), (ax_tp, ax_lat) in zip(machines, axes):
        rows = table[(table["device_name"] == name) & (table["precision"] == precision)]
        batches = sorted(rows["batch_size"].unique())
        width = 0.8 / max(1, len(models))
        for j, model in enumerate(models):
            mine = rows[rows["model"] == model].set_index("batch_size")
            xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(batches))]
            for ax, col in ((ax_tp, "sequences_per_second"), (ax_lat, "latency_ms_median")):
                vals = [float(mine[col].get(b, float("nan"))) for b in batches]
                bars = ax.bar(xs, vals, width * 0.95, color=data.style.colour(model))
                for bar, b, v in zip(bars, batches, vals):
                    ref = rows[(rows["model"] == "teacher") & (rows["batch_size"] == b)][col]
                    text = f"{v:,.0f}" if v >= 10 else f"{v:.2g}"
                    if ax is ax_tp and model != "teacher" and len(ref) and v == v:
                        text += f"\n×{v / float(ref.iloc[0]):.1f}"
                    ax.annotate(text, (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                                fontsize=7, xytext=(0, 2), textcoords="offset points")
        threads = ", ".join(map(str, sorted(rows["threads"].unique())))
        seq = ", ".join(map(str, sorted(rows["seq_len"].unique())))
        for ax, title, unit in ((ax_tp, "throughput", "sequences / s"), (ax_lat, "latency (median)", "ms per batch")):
            ax.set_yscale("log")
            ax.margins(y=0.25)
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
            ax.yaxis.set_minor_locator(plt.NullLocator())
            ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
            ax.grid(axis="x", visible=False)
            ax.set_ylabel(unit)
            ax.set_title(title)
        ax_tp.annotate(f"{name} · {precision} · {threads} thread(s) · {seq} tokens per sequence", (0, 1.12),
                       xycoords="axes fraction", fontsize=9, color="#444444")
    legend_below(fig, [(Patch(color=data.style.colour(m)), m) for m in models])
    return fig


# ---- 5. anytime inference ------------------------------------------------------------------------

def _best_lr(data: Inputs) -> dict:
    if data.results is None or "best_lr" not in data.results:
        return {}
    return {(r["task"], r["model"], r["mode"]): float(r["best_lr"])
            for r in data.results.to_dict("records") if r["best_lr"] == r["best_lr"]}


def anytime_curves(data: Inputs) -> dict:
    """(task, model, mode) -> {k: (mean score, mean sequences/s)} over seeds, at the chosen LR."""
    best = _best_lr(data)
    sums: dict = {}
    for m in data.finetune:
        key = (m.get("task"), m.get("model"), m.get("mode"))
        if not m.get("anytime") or (key in best and not math.isclose(float(m["lr"]), best[key], rel_tol=1e-9)):
            continue
        for point in m["anytime"]:
            score = (point.get("metrics") or {}).get(m.get("selection_metric"))
            if score is None:
                continue
            acc = sums.setdefault(key, {}).setdefault(point["num_recursions"], [[], []])
            acc[0].append(score)
            if point.get("sequences_per_second"):  # None when the pass was too fast to time
                acc[1].append(point["sequences_per_second"])
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    return {key: {k: (mean(s), mean(v)) for k, (s, v) in sorted(ks.items())} for key, ks in sums.items()}


def anytime(data: Inputs):
    curves = anytime_curves(data)
    if not curves:
        raise Missing("No fine-tuning run recorded `anytime` (MiniALBERT students with finetune.settings.anytime).")
    plt = pyplot()
    from matplotlib.lines import Line2D

    tasks = sorted({t for t, _, _ in curves})
    fig, axes = _grid(plt, len(tasks), 4, 3.4, 2.7, rows_per_item=2)
    ncols = axes.shape[1]
    scores = data.scores()
    for i, task in enumerate(tasks):
        top, bottom = axes[2 * (i // ncols), i % ncols], axes[2 * (i // ncols) + 1, i % ncols]
        metric, split = data.headline(task)
        for (t, model, mode), points in sorted(curves.items(), key=lambda kv: data.style.arm_key(*kv[0][1:])):
            if t != task:
                continue
            ks = list(points)
            style = dict(color=data.style.colour(model), ls=MODE_LINES.get(mode, "-"),
                         marker=MODE_MARKERS.get(mode, "o"), ms=6, mfc="white" if mode != "full" else None)
            top.plot(ks, [points[k][0] for k in ks], **style)
            bottom.plot(ks, [points[k][1] for k in ks], **style)
        if scores is not None:
            ref = scores[(scores["task"] == task) & (scores["model"] == "teacher") & (scores["mode"] == "full")]
            if len(ref):
                top.axhline(float(ref["mean"].iloc[0]), color="#000000", ls="-.", lw=1.1)
        top.set_title(task)
        top.set_ylabel(f"{metric} on {split}")
        bottom.set_ylabel("sequences / s")
        bottom.set_xlabel("recursions used (k)")
        for ax in (top, bottom):
            ax.xaxis.get_major_locator().set_params(integer=True)
    for j in range(len(tasks), axes.shape[1] * axes.shape[0] // 2):
        axes[2 * (j // ncols), j % ncols].set_visible(False)
        axes[2 * (j // ncols) + 1, j % ncols].set_visible(False)
    arms = sorted({(m, mode) for _, m, mode in curves}, key=lambda a: data.style.arm_key(*a))
    keys = [(Line2D([], [], color=data.style.colour(m), ls=MODE_LINES.get(mode, "-"), marker=MODE_MARKERS.get(mode, "o"),
                    mfc="white" if mode != "full" else None), data.style.label(m, mode, show_mode=True)) for m, mode in arms]
    reference = []
    if scores is not None and "teacher" in set(scores["model"]):
        reference = [(Line2D([], [], color="#000000", ls="-.", lw=1.1), "teacher, full fine-tuning")]
    legend_below(fig, keys, reference, max_cols=4)
    return fig


DRAW = {
    "1_score_vs_params": score_vs_params,
    "2_adapter_minus_full": adapter_minus_full,
    "3_distill_losses": distill_losses,
    "4_inference": inference,
    "5_anytime": anytime,
}
assert DRAW.keys() == FIGURES.keys()


def draw_all(data: Inputs, out: Path) -> dict[str, str]:
    """Every figure into `out` (PNG + SVG); returns {stem: "drawn" | the placeholder's reason}."""
    status = {}
    for stem, title in FIGURES.items():
        try:
            fig = DRAW[stem](data)
            status[stem] = "drawn"
        except Missing as why:
            fig = placeholder(title[0].upper() + title[1:], f"{why}\nThis figure fills in once that input exists.")
            status[stem] = str(why)
        save(fig, out, stem)
    return status


def run(args) -> None:
    data = Inputs.read(summary=args.summary, distill=args.distill, finetune=args.finetune_metrics,
                       inference=args.inference, order=args.order)
    for stem, state in draw_all(data, Path(args.out)).items():
        print(f"figures: {stem}: {state}")
