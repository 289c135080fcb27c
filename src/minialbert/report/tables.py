"""`minialbert report-tables`: the report's tables as small HTML pages.

`results.html` is the aggregate's results.md rendered, `headline.html` its main table and text only
(the report's first view), `tasks/<task>.html`
every metric and split of one task with its paired comparisons, `params.html` the parameter counts,
`distill.html` one row per student's distillation run, `inference.html` the benchmark. Each page also reads well inside the
report's first view: its styles apply only under `.minialbert-report`.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

from ..atomic import write_text
from .inputs import Inputs, number
from .style import compact

CSS = """
.minialbert-report { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1a1a1a; max-width: 100%; }
.minialbert-report h1 { font-size: 1.4em; margin: 0.4em 0; }
.minialbert-report h2 { font-size: 1.15em; margin: 1.2em 0 0.4em; }
.minialbert-report table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 13px; display: block; overflow-x: auto; }
.minialbert-report th, .minialbert-report td { padding: 3px 9px; border-bottom: 1px solid #ddd; text-align: left; white-space: nowrap; }
.minialbert-report th { background: #f2f2f2; border-bottom: 2px solid #999; position: sticky; top: 0; }
.minialbert-report tbody tr:nth-child(even) { background: #fafafa; }
.minialbert-report td.num, .minialbert-report th.num { text-align: right; font-variant-numeric: tabular-nums; }
.minialbert-report .note { color: #555; }
.minialbert-report code { background: #f2f2f2; padding: 0 3px; border-radius: 3px; }
"""


# results.md sections that list everything (per-task pages, params.html and distill.html show them)
LISTING_HEADINGS = {"## all metrics", "## parameters", "## distillation"}


def page(title: str, body: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{CSS}</style></head>\n<body><div class=\"minialbert-report\">\n{body}\n</div></body></html>\n")


def table_html(rows: list[dict], numeric: set[str] = frozenset()) -> str:
    if not rows:
        return '<p class="note">No rows.</p>'
    cols = list(rows[0])
    head = "".join(f'<th{" class=num" if c in numeric else ""}>{html.escape(c)}</th>' for c in cols)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if c in numeric else ""}>{html.escape(str(r[c]))}</td>' for c in cols) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _num(v, digits: int = 3) -> str:
    return "–" if number(v) is None else f"{number(v):.{digits}f}"


def _ci(row: dict, fmt: str = "{:.3f}") -> str:
    lo, hi = number(row.get("ci_low")), number(row.get("ci_high"))
    return "–" if lo is None or hi is None else f"[{fmt.format(lo)}, {fmt.format(hi)}]"


# ---- pages ---------------------------------------------------------------------------------------

def results_page(data: Inputs, headline_only: bool = False) -> str:
    """results.md rendered; `headline_only` stops before its full listings (the report's first
    view shows the main table and what is distinguishable; the listings have their own pages)."""
    if data.results_md is None:
        return page("Results", '<h1>Results</h1><p class="note">results/summary/results.md is not written yet '
                               "(the aggregate has not run).</p>")
    import markdown

    text = data.results_md
    if headline_only:
        lines = text.splitlines()
        cut = next((i for i, line in enumerate(lines) if line.strip().lower() in LISTING_HEADINGS), len(lines))
        text = "\n".join(lines[:cut])
    return page("Results", markdown.markdown(text, extensions=["tables"]))


def _task_rows(data: Inputs, task: str) -> list[dict]:
    table = data.results[data.results["task"] == task]
    metric, split = data.headline(task)
    records = sorted(table.to_dict("records"), key=lambda r: (
        *data.style.arm_key(r["model"], r["mode"]), r["metric"] != metric, r["split"] != split, r["metric"], r["split"]))
    return [{
        "model": data.style.label(r["model"], r["mode"]), "mode": r["mode"], "metric": r["metric"],
        "split": r["split"], "mean": _num(r.get("mean")), "95% interval": _ci(r),
        # a standard deviation over one seed says nothing
        "std over seeds": _num(r.get("std")) if (r.get("n_seeds") or 0) > 1 else "–",
        "seeds": _num(r.get("n_seeds"), 0),
        "best LR": f"{r['best_lr']:g}" if r.get("mode") != "floor" and number(r.get("best_lr")) else "–",
        "trainable": compact(r.get("trainable_params")), "unique params": compact(r.get("unique_params")),
    } for r in records]


def _comparison_rows(data: Inputs, task: str) -> list[dict]:
    if data.comparisons is None:
        return []
    rows = []
    for r in data.comparisons[data.comparisons["task"] == task].to_dict("records"):
        ratio = str(r.get("comparison", "")).startswith("retention")
        rows.append({
            "comparison": "retention: 100 · a / b" if ratio else "difference: a − b", "a": r["a"], "b": r["b"],
            "metric": r["metric"], "split": r["split"], "value": f"{r['diff']:.1f}%" if ratio else _num(r.get("diff")),
            "95% interval": _ci(r, "{:.1f}%" if ratio else "{:.3f}"),
            # a retention is distinguishable when its interval excludes 100%, a difference when it excludes 0
            "distinguishable": "yes" if str(r.get("distinguishable")).lower() in ("true", "1", "yes") else "no",
        })
    return rows


def task_pages(data: Inputs) -> dict[str, str]:
    if data.results is None:
        return {}
    pages = {}
    for task in sorted(data.results["task"].unique()):
        metric, split = data.headline(task)
        protocol = data.results[data.results["task"] == task].get("protocol")
        how = f" Protocol: {protocol.iloc[0]}." if protocol is not None and len(protocol) else ""
        body = (f"<h1>{html.escape(task)}</h1><p>Selected and reported on <b>{html.escape(str(metric))}</b> "
                f"({html.escape(str(split))} split).{html.escape(how)} Mean over seeds at the chosen learning rate; "
                "the interval is a 95% bootstrap over examples (and seeds).</p>"
                + table_html(_task_rows(data, task), {"mean", "std over seeds", "seeds", "best LR", "trainable",
                                                       "unique params"}))
        comparisons = _comparison_rows(data, task)
        if comparisons:
            body += ("<h2>Paired comparisons</h2><p>On the same resampled examples for both arms; a difference "
                     "is distinguishable when its interval excludes 0, a retention when it excludes 100%.</p>"
                     + table_html(comparisons, {"value"}))
        pages[task] = page(f"{task}: results", body)
    return pages


def params_page(data: Inputs) -> str:
    if data.params is None:
        return page("Parameters", '<h1>Parameters</h1><p class="note">No results/summary/params.csv yet.</p>')
    from pandas.api.types import is_numeric_dtype

    numeric = {c for c in data.params.columns if is_numeric_dtype(data.params[c])}
    rows = []
    for r in data.params.to_dict("records"):
        row = {}
        for k, v in r.items():
            if k not in numeric:
                row[k] = "–" if v is None or v != v else v
            elif number(v) is None:
                row[k] = "–"
            else:  # parameter counts as "5.9M (5,912,320)", step counts plain
                row[k] = f"{int(v):,}" if k.endswith("steps") else f"{compact(v)} ({int(v):,})"
        rows.append(row)
    rows.sort(key=lambda r: data.style.sort_key(str(r.get("model", ""))))
    intro = ("<p>Unique parameters of each model (the MiniALBERT encoder counts its one shared layer once). "
             "Fine-tuned models drop the MLM head.</p>")
    return page("Parameters", "<h1>Parameters</h1>" + intro + table_html(rows, numeric))


def _duration(seconds) -> str:
    seconds = number(seconds)
    if not seconds or seconds <= 0:
        return "–"
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _losses(losses: dict | None) -> str:
    if not losses:
        return "–"
    return ", ".join(f"{k} {v:.3g}" for k, v in losses.items() if isinstance(v, (int, float)) and k not in ("step", "tokens"))


def distill_page(data: Inputs) -> str:
    rows = []
    for run in data.distill:
        s = run.summary
        tps = s.get("steady_tokens_per_second") or s.get("tokens_per_second")
        rows.append({
            "student": run.name, "init": s.get("init", "–"), "distilled": "yes" if s.get("distill") else "no",
            "steps": f"{s.get('steps', 0):,}", "tokens seen": compact(s.get("tokens_seen")),
            "tokens / s": "–" if not tps else f"{tps:,.0f}",
            "wall time": _duration(s.get("wall_seconds")),
            "precision": s.get("precision") or "–", "device": s.get("device") or "–",
            "final train losses": _losses(s.get("final_losses")), "last eval losses": _losses(s.get("eval_losses")),
        })
    if not rows:
        body = '<p class="note">No distillation folder (results/distill/*) was given.</p>'
    else:
        body = ("<p>Per student: the run that produced it. A student with <code>distill: false</code> is the "
                "initialised model saved as is (0 steps), a control for what distillation adds.</p>"
                + table_html(rows, {"steps", "tokens seen", "tokens / s", "wall time"}))
    return page("Distillation", "<h1>Distillation</h1>" + body)


def inference_page(data: Inputs) -> str:
    if data.inference is None:
        body = '<p class="note">No inference benchmark yet (results/summary/inference.csv).</p>'
    else:
        rows = [{
            "model": r["model"], "device": r["device_name"], "precision": r["precision"], "threads": r["threads"],
            "batch": r["batch_size"], "tokens": r["seq_len"], "latency (median ms)": _num(r["latency_ms_median"], 2),
            "latency (p90 ms)": _num(r.get("latency_ms_p90"), 2), "sequences / s": f"{r['sequences_per_second']:,.1f}",
            "params": compact(r.get("params")), "passes timed": r.get("repeats", "–"),
            "timed as": r.get("timed_as") if isinstance(r.get("timed_as"), str) else r["model"],
        } for r in sorted(data.inference.to_dict("records"), key=lambda r: (r["device_name"], r["batch_size"],
                                                                          data.style.sort_key(r["model"])))]
        body = ("<p>Encoder only (no task head), random token ids, no padding, after warm-up passes. "
                "The numbers describe the machine that ran the benchmark rule; models of one architecture are "
                "timed once (<i>timed as</i>).</p>"
                + table_html(rows, {"threads", "batch", "tokens", "latency (median ms)", "latency (p90 ms)",
                                    "sequences / s", "params", "passes timed"}))
    return page("Inference speed", "<h1>Inference speed</h1>" + body)


def write_all(data: Inputs, out: Path) -> list[Path]:
    out = Path(out)
    written = {out / "results.html": results_page(data), out / "headline.html": results_page(data, headline_only=True),
               out / "params.html": params_page(data),
               out / "distill.html": distill_page(data), out / "inference.html": inference_page(data)}
    (out / "tasks").mkdir(parents=True, exist_ok=True)
    for task, text in task_pages(data).items():
        written[out / "tasks" / f"{task}.html"] = text
    for path, text in written.items():
        write_text(path, text)
    return list(written)


def run(args) -> None:
    data = Inputs.read(summary=args.summary, distill=args.distill, inference=args.inference, order=args.order)
    for path in write_all(data, Path(args.out)):
        print(f"report-tables: wrote {path}")
