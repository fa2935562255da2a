"""Published results side by side with ours: aggregate the repeats of a paper config and write its page.

A paper config (config/papers/<name>.yaml) has a `paper:` section: the citation, the table, the
published protocol and how ours differs, the metrics to aggregate and the published figures,
each tied to one of our methods. Its sheet lists the repeats: rows that differ only in `seed`.
`paper_report` reads every repeat's scores.json (models) and baselines/scores.json, and writes
results/papers/<name>.json (mean, sd, n per method and metric, the published figures beside
ours) and a self-contained HTML page.

Method ids: a model's name (`gain`), `baseline:<method>` (`baseline:missforest`) and
`reference:train_vs_test` (real train vs real test rows, the "as good as real data" control that
every model's generation scores carry).
"""

from __future__ import annotations

import html
import json
import math
import statistics
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .errors import InputError
from .evaluate.scoring import direction
from .provenance import write_h5ad, write_json, write_text
from .report.html import CSS, format_value

REFERENCE = "reference:train_vs_test"
BASELINE = "baseline:"


# ---------------------------------------------------------------------------- input tables


def table_to_h5ad(table_path, out_path, label: str | None = None) -> None:
    """A CSV of samples x features with text annotation columns (e.g. a diagnosis) as .h5ad:
    numeric columns become X, text columns obs, so `ingest` can take `label` from obs."""
    table = pd.read_csv(table_path, index_col=0)
    text = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if label and label not in text:
        raise InputError(table_path, f"no text column named '{label}' for the label",
                         hint=f"text columns: {', '.join(text) or 'none'}")
    features = table.drop(columns=text)
    if features.shape[1] == 0:
        raise InputError(table_path, "no numeric feature columns")
    adata = ad.AnnData(X=features.to_numpy(dtype=np.float32), obs=table[text].astype("category"))
    adata.obs_names, adata.var_names = table.index.astype(str), features.columns.astype(str)
    write_h5ad(adata, out_path)


# ---------------------------------------------------------------------------- aggregation


def metric_id(metric: dict) -> str:
    return f"{metric['section']}.{metric['key']}"


def collect(score_paths, baseline_paths, metrics: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """{method: {metric id: {dataset: value}}} over every repeat; None and NaN are left out."""
    values: dict[str, dict[str, dict[str, float]]] = {}

    def put(method, metric, dataset, value):
        if isinstance(value, (int, float)) and math.isfinite(value):
            values.setdefault(method, {}).setdefault(metric_id(metric), {})[dataset] = float(value)

    for path in sorted(map(str, score_paths)):
        scores = _read(path)
        for metric in metrics:
            section = scores.get(metric["section"]) or {}
            put(scores["model"], metric, scores["dataset"], section.get(metric["key"]))
            reference = section.get("reference_train_vs_test") or {}
            # the control depends on the data only: the first model file of a repeat gives it
            if scores["dataset"] not in values.get(REFERENCE, {}).get(metric_id(metric), {}):
                put(REFERENCE, metric, scores["dataset"], reference.get(metric["key"]))
    for path in sorted(map(str, baseline_paths)):
        baselines = _read(path)
        for name, result in baselines["methods"].items():
            for metric in metrics:
                put(BASELINE + name, metric, baselines["dataset"], (result.get(metric["section"]) or {}).get(metric["key"]))
    return values


def summarise(by_dataset: dict[str, float]) -> dict:
    """Mean, sample standard deviation (n - 1) and n over repeats, with the values by dataset."""
    numbers = [by_dataset[d] for d in sorted(by_dataset)]
    return {
        "mean": statistics.fmean(numbers) if numbers else None,
        "sd": statistics.stdev(numbers) if len(numbers) > 1 else None,
        "n": len(numbers),
        "values": {d: by_dataset[d] for d in sorted(by_dataset)},
    }


def aggregate(score_paths, baseline_paths, metrics: list[dict]) -> dict[str, dict[str, dict]]:
    """{method: {metric id: summary}} for every method that scored any metric."""
    collected = collect(score_paths, baseline_paths, metrics)
    return {
        method: {metric_id(m): summarise(collected[method].get(metric_id(m), {})) for m in metrics}
        for method in sorted(collected, key=_method_order)
    }


def compare(paper: dict, ours: dict[str, dict[str, dict]]) -> list[dict]:
    """Each published figure with our mean, sd and n for the method it names (None when not run)."""
    rows = []
    for entry in paper.get("published", []):
        metric = entry.get("metric") or metric_id(paper["metrics"][0])
        summary = ours.get(entry.get("ours", ""), {}).get(metric) or {"mean": None, "sd": None, "n": 0}
        rows.append({**entry, "metric": metric, "ours_mean": summary["mean"], "ours_sd": summary["sd"],
                     "ours_n": summary["n"]})
    return rows


def paper_report(paper: dict, score_paths, baseline_paths, out_html, out_json) -> dict:
    """Aggregate the repeats and write the JSON summary and the HTML page; returns the summary."""
    _check_paper(paper)
    ours = aggregate(score_paths, baseline_paths, paper["metrics"])
    datasets = sorted({_read(p)["dataset"] for p in [*map(str, score_paths), *map(str, baseline_paths)]})
    summary = {
        "paper": paper,
        "repeats": datasets,
        "n_repeats": len(datasets),
        "ours": ours,
        "comparison": compare(paper, ours),
        "inputs": sorted(map(str, [*score_paths, *baseline_paths])),
    }
    write_json(summary, out_json)
    write_text(render(summary), out_html)
    return summary


def _check_paper(paper: dict) -> None:
    missing = [k for k in ("name", "title", "citation", "table", "metrics") if not paper.get(k)]
    if missing:
        raise InputError("config paper:", f"missing {', '.join(missing)}", hint="see docs/papers.md")


def _method_order(method: str) -> tuple[int, str]:
    return (2 if method == REFERENCE else 1 if method.startswith(BASELINE) else 0, method)


def _read(path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"cannot read scores: {err}") from None


# ---------------------------------------------------------------------------- page


def render(summary: dict) -> str:
    paper = summary["paper"]
    body = [
        f"<h1>{_e(paper['title'])}</h1>",
        f"<p><b>Paper:</b> {_e(paper['citation'])}<br><b>Reproduced:</b> {_e(paper['table'])}<br>"
        f"<b>Our run:</b> {summary['n_repeats']} repeat(s): {_e(', '.join(summary['repeats']))}</p>",
        "<h2>Published figures beside ours</h2>",
        _comparison_table(summary["comparison"], paper["metrics"]),
        "<h2>All our methods</h2>",
        '<p class="note">Mean ± standard deviation over repeats (n = repeats with a value); the best mean of each '
        "ranked column is bold; the real-data control is never ranked.</p>",
        _ours_table(summary["ours"], paper["metrics"]),
        "<h2>Protocol</h2>",
        _protocol(paper),
        "<h2>Sources</h2>",
        _sources(paper),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(paper['title'])}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _comparison_table(rows: list[dict], metrics: list[dict]) -> str:
    labels = {metric_id(m): m.get("label", metric_id(m)) for m in metrics}
    lines = ["<table><thead><tr><th>method (paper)</th><th>metric</th><th>published</th><th>ours</th>"
             "<th>our method</th><th>note</th></tr></thead><tbody>"]
    for row in rows:
        published = _mean_sd(row.get("value"), row.get("sd"))
        if not row.get("verified", False):
            published += " (not verified)"
        ours = _mean_sd(row["ours_mean"], row["ours_sd"]) + f" (n={row['ours_n']})" if row["ours_n"] else "not run"
        lines.append(
            f"<tr><td>{_e(row['method'])}</td><td>{_e(labels.get(row['metric'], row['metric']))}</td>"
            f"<td>{_e(published)}</td><td>{_e(ours)}</td><td>{_e(_label(row.get('ours', '')))}</td>"
            f'<td class="text">{_e(row.get("note", ""))}</td></tr>'
        )
    return "\n".join(lines) + "</tbody></table>"


def _ours_table(ours: dict[str, dict[str, dict]], metrics: list[dict]) -> str:
    ids = [metric_id(m) for m in metrics]
    best = {m: _best(ours, m) for m in ids}
    head = "".join(f"<th>{_e(m.get('label', metric_id(m)))}{_arrow(m['key'])}</th>" for m in metrics)
    lines = [f'<div class="scroll"><table><thead><tr><th>method</th>{head}</tr></thead><tbody>']
    for method, scores in ours.items():
        kind = "reference" if method == REFERENCE else "baseline" if method.startswith(BASELINE) else "model"
        cells = "".join(
            f'<td{" class=best" if method in best[m] else ""}>'
            f"{_e(_mean_sd(scores[m]['mean'], scores[m]['sd']))} (n={scores[m]['n']})</td>"
            for m in ids
        )
        lines.append(f'<tr class="{kind}"><td>{_e(_label(method))}</td>{cells}</tr>')
    return "\n".join(lines) + "</tbody></table></div>"


def _best(ours: dict, metric: str) -> set[str]:
    way = direction(metric.split(".", 1)[1])
    means = {k: v[metric]["mean"] for k, v in ours.items() if k != REFERENCE and v[metric]["mean"] is not None}
    if way is None or not means:
        return set()
    target = min(means.values()) if way == "lower" else max(means.values())
    return {k for k, v in means.items() if v == target}


def _arrow(key: str) -> str:
    return {"lower": " ↓", "higher": " ↑"}.get(direction(key), "")


def _protocol(paper: dict) -> str:
    parts = []
    for key, title in (("protocol", "Published protocol"), ("ours", "Ours")):
        if paper.get(key):
            parts.append(f"<p><b>{title}:</b> {_e(paper[key])}</p>")
    if paper.get("differences"):
        parts.append("<p><b>Where ours differs:</b></p><ul>"
                     + "".join(f"<li>{_e(d)}</li>" for d in paper["differences"]) + "</ul>")
    return "\n".join(parts)


def _sources(paper: dict) -> str:
    sources = [paper["citation"], *(s for s in paper.get("sources", []))]
    sources += sorted({e["source"] for e in paper.get("published", []) if e.get("source")} - set(sources))
    return "<ul>" + "".join(f"<li>{_e(s)}</li>" for s in sources) + "</ul>"


def _mean_sd(mean, sd) -> str:
    if mean is None:
        return "–"
    return format_value(mean) + (f" ± {format_value(sd)}" if sd is not None else "")


def _label(method: str) -> str:
    if method == REFERENCE:
        return "real vs real (train vs test)"
    if method.startswith(BASELINE):
        return f"{method[len(BASELINE):]} (baseline)"
    return method


def _e(value) -> str:
    return html.escape(str(value), quote=True)
