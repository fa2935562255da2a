"""Self-contained HTML reports: one page per dataset and a leaderboard over all datasets.

Pages carry their own stylesheet and embed figures as data URIs; they have no scripts and no
external links, so a page can be mailed or archived as one file. Numbers show 4 significant
digits; in every score column the best model or baseline is bold (the real-data reference row
is context, never ranked).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..evaluate import data, metrics
from ..evaluate.baseline_methods import CAPPED
from ..evaluate.scoring import FORECAST_HORIZONS, NumericGenerationScorer, direction
from ..provenance import write_text
from . import plots
from .decisions import decisions_section

SECTIONS = ("imputation", "calibration", "generation", "forecast", "likelihood")
# The one number per section the leaderboard shows, by modality-specific key (first present wins).
HEADLINE = {
    "imputation": ("rmse", "accuracy"), "generation": ("mmd2", "kmer_js_mean"), "forecast": ("rmse",),
    "likelihood": ("heldout_perplexity",), "calibration": ("calibration_error",),
}  # fmt: skip
# Table columns: headline scores first, context after, counts (any other key) last.
COLUMN_ORDER = [
    "rmse", "mae", "median_abs_error", "pearson_r", "spearman_r", "median_gene_rmse", "median_gene_mae", "median_gene_pearson_r",
    "rmse_nonzero", "mae_nonzero", "pearson_r_nonzero", "spearman_r_nonzero", "counts_rmse", "counts_mae",
    "counts_median_abs_error", "counts_rmse_nonzero", "calibration_error", "coverage_50", "coverage_90",
    "interval_width_50", "interval_width_90", "calibration_error_nonzero", "coverage_50_nonzero", "coverage_90_nonzero", "accuracy", "heldout_nll", "heldout_perplexity",
    "mmd2", "c2st_auc", "kmer_js_mean", "kmer_js_1", "kmer_js_2", "kmer_js_3", "kmer_js_4", "kmer_js_5", "kmer_js_6",
    "aa_composition_distance", "gc_mean_abs_diff", "gc_mean", "uniqueness", "novelty",
    "nearest_train_distance_mean", "nearest_train_distance_median", "label_accuracy",
    "gene_mean_pearson_r", "gene_mean_abs_diff", "gene_variance_pearson_r", "gene_variance_abs_diff",
    "gene_zero_fraction_abs_diff", "corr_matrix_distance", "corr_matrix_pearson_r",
    "rmse_ratio_to_last_value", "rmse_horizon_1", "rmse_horizon_2", "rmse_horizon_3", "last_value_rmse",
    "last_value_rmse_horizon_1", "last_value_rmse_horizon_2", "last_value_rmse_horizon_3",
]  # fmt: skip
REFERENCE = "reference_train_vs_test"
REFERENCE_LABEL = "real data (train vs test)"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; max-width: 1200px;
       margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { margin-top: 2em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f4f6f8; }
tr.reference td { font-style: italic; color: #555; background: #fafafa; }
tr.baseline td:first-child { color: #555; }
td.best { font-weight: bold; background: #e8f5e9; }
td.why, tr.missing td { color: #777; font-style: italic; text-align: left; }
td.text { text-align: left; font-family: ui-monospace, monospace; font-size: .85em; word-break: break-all; }
.scroll { overflow-x: auto; }
table.winners td, table.winners th { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: .9em; }
code { font-size: .9em; }
"""


@dataclass
class Row:
    """One line of a score table; `kind` is model, baseline, reference (never ranked) or missing
    (a method that cannot do this section: `why` says so)."""

    label: str
    kind: str
    scores: dict
    why: str = ""


# ---------------------------------------------------------------------------- dataset page


def dataset_report(dataset: str, data_path, model_dirs: dict, baselines_path, out_html, choices: list[dict] | None = None,
                   completed=None) -> None:
    """Write one page for a dataset: score tables, figures, provenance and preprocessing filters.

    `data_path` is the dataset's masked.h5ad; each model dir holds scores.json, metrics.csv,
    imputed.h5ad and samples.h5ad (missing files leave out that model's figure, with a note).
    `choices` are the configured models with whether each ran here and why (`omicsgen.choose`);
    `completed` is the dataset's completed.h5ad (which method filled its native NAs, and why).
    """
    obs, _ = data.read_obs(data_path)
    rows = figure_rows(obs)
    adata = data.read_rows(data_path, rows)  # the page's figures draw from these rows only
    model_dirs = {name: Path(folder) for name, folder in model_dirs.items()}
    model_scores = {name: _read_json(folder / "scores.json") for name, folder in model_dirs.items()}
    baselines = _read_json(baselines_path)
    baseline_methods = baselines["methods"]
    body = [
        f"<h1>{_e(dataset)}</h1>",
        _data_summary(adata, obs),
        _scoring_protocol(baselines.get("protocol", {})),
        decisions_section(adata, choices, model_dirs, completed),
        _winners(model_scores, baseline_methods),
        _score_sections(model_scores, baseline_methods),
        _figures(adata, model_dirs, model_scores, baseline_methods, rows),
        _provenance(adata),
        _filtered(adata),
    ]
    write_text(_page(f"omicsgen report: {dataset}", body), out_html)


def figure_rows(obs: pd.DataFrame, seed: int = 0) -> np.ndarray | None:
    """The rows of masked.h5ad the figures read: at most `plots.FIGURE_ROWS` (seeded) of the
    train and of the test split; None (every row is read) when neither split has more. A page at
    a million cells then costs what one at a few thousand does."""
    split = obs["split"].astype(str).to_numpy()
    picked = [np.flatnonzero(split == name) for name in ("train", "test")]
    if all(len(rows) <= plots.FIGURE_ROWS for rows in picked):
        return None
    return np.sort(np.concatenate([rows[plots.figure_rows(len(rows), seed, plots.FIGURE_ROWS)] for rows in picked]))


def _read_samples(path, seed: int = 0):
    """samples.h5ad, or at most `plots.FIGURE_ROWS` of its rows (seeded) when it has more."""
    n_rows = len(data.read_obs(path)[0])
    rows = plots.figure_rows(n_rows, seed, plots.FIGURE_ROWS)
    return data.read_rows(path, rows if len(rows) < n_rows else None)


def _data_summary(adata, obs: pd.DataFrame) -> str:
    splits = obs["split"].astype(str).value_counts()
    split_text = ", ".join(f"{name} {splits.get(name, 0)}" for name in ("train", "val", "test"))
    shape = f"{len(obs)} records" if data.modality(adata) == "sequence" else f"{len(obs)} × {adata.n_vars}"
    mask = data.mask_info(adata)
    return (
        f"<p>Modality <b>{_e(data.modality(adata))}</b>, {shape}; split: {split_text}. "
        f"Held-out mask: {_e(mask['mechanism'])} at rate {_e(format_value(float(mask['rate'])))}, "
        f"{'non-zero entries only' if mask.get('nonzero_only', False) else 'zeros included'}. "
        "Scores are on the test split; bold marks the best value in each column "
        "(↓ lower is better, ↑ higher is better).</p>"
    )


# How the page writes the names of the baselines that fit on capped training rows (baseline_methods.CAPPED).
BASELINE_LABELS = {"knn": "kNN", "mice": "MICE", "missforest": "MissForest", "magic": "MAGIC"}


def _scoring_protocol(protocol: dict) -> str:
    """Which rows were scored and what the slow baselines fit on (the same rows for every method)."""
    if "n_scored_rows" not in protocol:
        return ""
    scored = (f"a seeded subsample of {protocol['n_scored_rows']} of the {protocol.get('n_test_rows')} test rows "
              f"(<code>evaluate.max_rows</code>: {protocol.get('max_rows')})" if protocol.get("scored_rows_subsampled")
              else f"all {protocol['n_scored_rows']} test rows")
    fit = protocol.get("baseline_fit_rows") or {}
    # a wide table skips the three regressions: name only the capped baselines that ran
    ran = [name for name in CAPPED if fit.get(name)] if isinstance(fit, dict) else list(CAPPED)
    fit = (fit.get(ran[0]) if ran else None) if isinstance(fit, dict) else fit  # older pages: one figure
    names = [BASELINE_LABELS.get(name, name) for name in ran]
    listed = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
    capped = (f" {listed} fit on {fit} of the {protocol.get('n_train_rows')} training rows "
              f"(<code>evaluate.max_train_rows</code>: {protocol.get('max_train_rows')})." if fit else "")
    rows = protocol.get("c2st_rows")
    c2st = ("" if rows is None else
            f" The classifier two-sample test averages balanced draws until about {rows} rows a side were fit "
            f"(<code>evaluate.c2st_rows</code>: {rows})." if rows else
            " The classifier two-sample test fits one balanced draw (<code>evaluate.c2st_rows</code>: 0).")
    space = protocol.get("pca_space")
    space = f" MMD and the classifier two-sample test work in a PCA of {_e(space)}." if space else ""
    return (f"<p>Every model and baseline is scored on {scored}; numbers in brackets are 95% bootstrap intervals "
            f"over those rows.{capped}{c2st}{space}</p>")


def _winners(model_scores: dict, baseline_methods: dict) -> str:
    """A short summary: per section and ranked metric, the model or baseline with the best value
    (ties all named), with the real-data reference where there is one."""
    lines, wins = [], {}
    for section in SECTIONS:
        rows = _rows(section, model_scores, baseline_methods)
        reference = next((r for r in rows if r.kind == "reference"), None)
        for column in _scalar_columns(rows):
            values = {r.label: r.scores.get(column) for r in rows if r.kind != "reference"}
            best = _best_labels(values, column)
            if not best:
                continue
            names = ", ".join(label for label in values if label in best)
            for label in best:
                wins[label] = wins.get(label, 0) + 1
            value = format_value(values[next(iter(best))])
            real = format_value(reference.scores.get(column)) if reference else "–"
            lines.append(
                f"<tr><td>{_e(section)}</td><td>{_e(column)}{_arrow(column)}</td><td>{_e(names)}</td>"
                f"<td>{value}</td><td>{real}</td></tr>"
            )
    if not lines:
        return ""
    tally = ", ".join(f"<b>{_e(label)}</b> {n}" for label, n in sorted(wins.items(), key=lambda item: (-item[1], item[0])))
    return (
        f"<h2>Winners</h2><p>Ranked metrics won (of {len(lines)}; ties count for each): {tally}.</p>"
        "<p class='note'>Which model or baseline has the best value of each ranked metric.</p>"
        '<div class="scroll"><table class="winners"><thead><tr><th>section</th><th>metric</th><th>best</th><th>value</th>'
        f"<th>{_e(REFERENCE_LABEL)}</th></tr></thead><tbody>{''.join(lines)}</tbody></table></div>"
    )


def _score_sections(model_scores: dict, baseline_methods: dict) -> str:
    parts = []
    for section in SECTIONS:
        rows = _rows(section, model_scores, baseline_methods)
        if rows:
            parts.append(f"<h2>{section.capitalize()}</h2>" + _score_table(rows))
        if section == "generation":
            parts.append(_per_label_table(model_scores))
            parts.append(_c2st_evidence(model_scores))
    return "\n".join(parts)


def _c2st_evidence(model_scores: dict) -> str:
    """Where each generated set differs most from real data: the features the two-sample
    classifier leans on (figure and table), so a user sees why a set is separable."""
    evidence = {name: s.get("generation", {}).get("c2st_top_features") or [] for name, s in model_scores.items()}
    uri = plots.c2st_features(evidence)
    if not uri:
        return ""
    return ("<h3>Where generated and real data differ most</h3><p class='note'>The features (genes, or k-mers for "
            "sequences) the classifier of <code>c2st_auc</code> leans on most, with their mean in the real test rows "
            "and in the generated rows.</p>" + _figure(uri, "real vs generated means of the classifier's top features")
            + plots.c2st_features_table(evidence))


def _per_label_table(model_scores: dict) -> str:
    """Conditional models: generation scores per requested label, each with the real data of that
    label (train vs test) beneath it."""
    rows = []
    for name, scores in model_scores.items():
        for label, label_scores in scores.get("generation", {}).get("per_label", {}).items():
            rows.append(Row(f"{name}: {label}", "model", label_scores))
            if REFERENCE in label_scores:
                rows.append(Row(f"{REFERENCE_LABEL}: {label}", "reference", label_scores[REFERENCE]))
    if not rows:
        return ""
    return (
        "<h3>Generation per label</h3><p class='note'>Each label's generated rows against the real test rows of that "
        "label; <code>label_accuracy</code>: how often a classifier trained on real train rows assigns a generated row to "
        "the label it was asked for (real-data row: its accuracy on the real test rows).</p>" + _score_table(rows)
    )


def _rows(section: str, model_scores: dict, baseline_methods: dict) -> list[Row]:
    """Models, then baselines, then (generation only) the real-data reference; a method whose
    scores say it could not do the section (`not_scored`) gets a `missing` row with the reason."""
    rows = []
    for kind, prefix, methods in (("model", "", model_scores), ("baseline", "baseline: ", baseline_methods)):
        for name, s in methods.items():
            if section in s:
                rows.append(Row(prefix + name, kind, s[section]))
            elif section in s.get("not_scored", {}):
                rows.append(Row(prefix + name, "missing", {}, why=str(s["not_scored"][section])))
    references = [s[section][REFERENCE] for s in model_scores.values() if REFERENCE in s.get(section, {})]
    if references:
        rows.append(Row(REFERENCE_LABEL, "reference", references[0]))
    return rows


def _score_table(rows: list[Row]) -> str:
    columns = _scalar_columns(rows)
    best = {column: _best_labels({r.label: r.scores.get(column) for r in rows if r.kind != "reference"}, column) for column in columns}
    header = "".join(f"<th>{_e(column)}{_arrow(column)}</th>" for column in columns)
    body = []
    for row in rows:
        if row.kind == "missing":
            cells = f'<td colspan="{max(1, len(columns))}" class="why">— not scored: {_e(row.why)}</td>'
        else:
            interval = row.scores.get("ci95") or {}
            cells = "".join(_cell(row.scores.get(column), row.label in best[column], interval.get(column)) for column in columns)
        body.append(f'<tr class="{row.kind}"><td>{_e(row.label)}</td>{cells}</tr>')
    skipped = [f"{row.label}: {metric} ({reason})" for row in rows for metric, reason in (row.scores.get("skipped") or {}).items()]
    note = f"<p class='note'>Not computed: {_e('; '.join(skipped))}.</p>" if skipped else ""
    return f'<div class="scroll"><table><thead><tr><th>method</th>{header}</tr></thead><tbody>{"".join(body)}</tbody></table></div>{note}'


def _scalar_columns(rows: list[Row]) -> list[str]:
    """Numeric keys in COLUMN_ORDER; nested values (reference, example) are not columns."""
    columns = {k for row in rows for k, v in row.scores.items() if v is None or isinstance(v, (int, float))}
    rank = {key: i for i, key in enumerate(COLUMN_ORDER)}
    return sorted(columns, key=lambda key: (rank.get(key, len(rank)), key))


def _best_labels(values: dict, metric: str) -> set[str]:
    """Labels holding the best value of `metric` (ties all marked); empty if the metric is not ranked."""
    way = direction(metric)
    numbers = {label: v for label, v in values.items() if isinstance(v, (int, float)) and np.isfinite(v)}
    if way is None or not numbers:
        return set()
    target = (min if way == "lower" else max)(numbers.values())
    return {label for label, v in numbers.items() if v == target}


def _figures(adata, model_dirs: dict, model_scores: dict, baseline_methods: dict, rows=None) -> str:
    """`rows`: the rows of masked.h5ad that `adata` holds (None: all of them)."""
    figures = [_loss_figure(model_dirs)]
    if rows is not None:
        figures.append(f"<p class='note'>Figures draw from a seeded subsample: at most {plots.FIGURE_ROWS} train rows, "
                       f"{plots.FIGURE_ROWS} test rows and {plots.FIGURE_ROWS} rows of each model's samples.</p>")
    if data.modality(adata) == "sequence":
        figures += _sequence_figures(adata, model_dirs)
    else:
        figures += _numeric_figures(adata, model_dirs, model_scores, rows)
    if data.modality(adata) == "timecourse":
        figures.append(_forecast_figure(model_scores, baseline_methods))
        figures.append(_horizon_figure(model_scores, baseline_methods))
    return "<h2>Figures</h2>" + "\n".join(f for f in figures if f)


def _loss_figure(model_dirs: dict) -> str:
    histories = {name: pd.read_csv(d / "metrics.csv") for name, d in model_dirs.items() if (d / "metrics.csv").exists()}
    missing = _missing_note(model_dirs, "metrics.csv")
    if not histories:
        return missing
    return _figure(plots.loss_curves(histories), "Training and validation loss per epoch.") + missing


def _numeric_figures(adata, model_dirs: dict, model_scores: dict, file_rows=None) -> list[str]:
    truth, heldout = data.values(adata), data.heldout_mask(adata)
    train, test = data.split_rows(adata, "train"), data.split_rows(adata, "test")
    space = NumericGenerationScorer(truth[train], truth[test])
    scored = heldout & np.isfinite(truth) & test[:, None]
    pairs = {
        name: (truth[scored], data.dense(data.read_rows(d / "imputed.h5ad", file_rows).layers["imputed"])[scored])
        for name, d in model_dirs.items()
        if (d / "imputed.h5ad").exists()
    }
    samples = {
        name: data.values(_read_samples(d / "samples.h5ad")[:, adata.var_names]) for name, d in model_dirs.items() if (d / "samples.h5ad").exists()
    }
    generated = {name: space.project(rows) for name, rows in samples.items()}
    figures = []
    if generated:
        caption = "Real test rows and generated rows in the PCA space of the real train split (where MMD is computed)."
        real_points = space.project(truth[test])
        figures.append(_figure(plots.pca_real_vs_generated(real_points, generated), caption))
        embedding, why_not = plots.umap_embedding(real_points, generated)
        if embedding is None:
            figures.append(f"<p class='note'>No UMAP: {html.escape(why_not)}.</p>")
        else:
            caption = (f"UMAP of real test rows and generated rows together (at most {plots.UMAP_ROWS} of each, from "
                       "the PCA coordinates above, 15 neighbours, seeded): generated rows should cover the real clusters.")
            figures.append(_figure(plots.pca_real_vs_generated(*embedding, axis="UMAP"), caption))
        real_stats = metrics.gene_statistics(truth[test])
        generated_stats = {name: metrics.gene_statistics(rows) for name, rows in samples.items()}
        caption = "Per-gene mean and variance: real test rows (x) against generated rows (y); one point a gene, identity line = perfect agreement."
        figures.append(_figure(plots.gene_statistics(real_stats, generated_stats), caption))
    if pairs:
        figures.append(_figure(plots.imputed_vs_true(pairs), "True against imputed values on held-out test entries."))
    curves = {name: (s["calibration"]["curve"]["nominal"], s["calibration"]["curve"]["observed"])
              for name, s in model_scores.items() if "curve" in s.get("calibration", {})}  # fmt: skip
    if curves:
        caption = ("Calibration of multiple imputation: the fraction of held-out test entries inside each model's "
                   "central interval of its imputation draws, against the interval's nominal level.")
        figures.append(_figure(plots.calibration(curves), caption))
    return figures + [_missing_note(model_dirs, "samples.h5ad"), _missing_note(model_dirs, "imputed.h5ad")]


def _sequence_figures(adata, model_dirs: dict) -> list[str]:
    name, symbols = data.alphabet(adata)
    test = data.tokens(adata)[data.split_rows(adata, "test")]
    generated = {m: data.tokens(_read_samples(d / "samples.h5ad")) for m, d in model_dirs.items() if (d / "samples.h5ad").exists()}
    if not generated:
        return [_missing_note(model_dirs, "samples.h5ad")]
    k = 2 if name == "protein" else 3  # protein 3-mers (8000) would be an unreadable cloud
    n_residues = len(symbols) - 3
    spectra = {m: metrics.kmer_spectrum(t, k, n_residues) for m, t in generated.items()}
    caption = f"{k}-mer frequencies: real test records against generated ones (identity line = same spectrum)."
    figures = [_figure(plots.kmer_spectra(metrics.kmer_spectrum(test, k, n_residues), spectra, k), caption)]
    if name in ("dna", "rna"):
        gc = {m: metrics.gc_fractions(t, name) for m, t in generated.items()}
        figures.append(_figure(plots.gc_histograms(metrics.gc_fractions(test, name), gc), "GC fraction per record."))
    return figures + [_missing_note(model_dirs, "samples.h5ad")]


def _forecast_figure(model_scores: dict, baseline_methods: dict) -> str:
    """Every method forecasts the same example series (chosen by the scorer), so one plot shows them all."""
    candidates = {name: s.get("forecast", {}).get("example") for name, s in model_scores.items()}
    candidates |= {f"baseline: {name}": m.get("forecast", {}).get("example") for name, m in baseline_methods.items()}
    examples = {name: ex for name, ex in candidates.items() if ex}
    if not examples:
        return ""
    example = next(iter(examples.values()))
    forecasts = {name: ex["forecast"] for name, ex in examples.items() if ex["series"] == example["series"]}
    caption = f"Test series {example['series']}: true values and each method's forecast of the last time point."
    return _figure(plots.forecast_example(example, forecasts), caption)


def _horizon_figure(model_scores: dict, baseline_methods: dict) -> str:
    """RMSE by forecast horizon for every method that forecasts, with carrying the last value forward."""
    sections = {name: s.get("forecast") for name, s in model_scores.items()}
    sections |= {f"baseline: {name}": m.get("forecast") for name, m in baseline_methods.items()}
    sections = {name: f for name, f in sections.items() if f and "rmse_horizon_1" in f}
    if not sections:
        return ""
    horizons = list(FORECAST_HORIZONS)
    errors = {name: [f.get(f"rmse_horizon_{h}") for h in horizons] for name, f in sections.items()}
    reference = [next(iter(sections.values())).get(f"last_value_rmse_horizon_{h}") for h in horizons]
    caption = "Forecast RMSE by horizon: each test time point forecast from the series up to 1, 2 or 3 points before it."
    return _figure(plots.forecast_horizons(errors, horizons, reference), caption)


def _missing_note(model_dirs: dict, filename: str) -> str:
    missing = [name for name, d in model_dirs.items() if not (d / filename).exists()]
    return f'<p class="note">No {filename} for: {_e(", ".join(missing))}.</p>' if missing else ""


def _provenance(adata) -> str:
    """Per step: when, with which seed and from which inputs (checksums); versions of the last step."""
    records = data.info(adata).get("provenance", {})
    if not records:
        return "<h2>Provenance</h2><p class='note'>No provenance recorded.</p>"
    rows = []
    for step, record in records.items():
        inputs = "<br>".join(f"{_e(path)}: {_e(digest)}" for path, digest in json.loads(str(record["inputs"])).items())
        params = f"<details><summary>params</summary><code>{_e(record['params'])}</code></details>"
        rows.append(
            f"<tr><td>{_e(step)}</td><td>{_e(record['time'])}</td><td>{_e(record['seed'])}</td>"
            f'<td class="text">{inputs or "–"}{params}</td></tr>'
        )
    last = max(records.values(), key=lambda r: str(r["time"]))
    versions = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in json.loads(str(last["versions"])).items())
    return (
        "<h2>Provenance</h2><table><thead><tr><th>step</th><th>time</th><th>seed</th><th>inputs (sha256)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<table><thead><tr><th>package</th><th>version</th></tr></thead><tbody>{versions}</tbody></table>"
    )


def _filtered(adata) -> str:
    steps = data.filtered_steps(adata)
    if not steps:
        return ""
    rows = "".join(
        f"<tr><td>{_e(s.get('step'))}</td><td>{_e(_removed(s.get('removed_obs')))}</td>"
        f"<td>{_e(_removed(s.get('removed_vars')))}</td><td class='text'>{_e(s.get('reason'))}</td></tr>"
        for s in steps
    )
    return (
        "<h2>Preprocessing filters</h2><table><thead><tr><th>step</th><th>removed records</th>"
        f"<th>removed features</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _removed(value) -> str:
    """A count, or for a list of names its length and the first few."""
    if isinstance(value, list):
        shown = ", ".join(map(str, value[:5]))
        return f"{len(value)} ({shown}{', …' if len(value) > 5 else ''})" if value else "0"
    return "–" if value is None else str(value)


# ---------------------------------------------------------------------------- leaderboard


def leaderboard(score_paths: list, baseline_paths: list, out_html) -> None:
    """One page over all datasets: per section, a dataset × method table of its headline metric."""
    models: dict[str, dict] = {}
    baselines: dict[str, dict] = {}
    for path in score_paths:
        scores = _read_json(path)
        models.setdefault(scores["dataset"], {})[scores["model"]] = scores
    for path in baseline_paths:
        result = _read_json(path)
        baselines[result["dataset"]] = result["methods"]
    datasets = sorted(set(models) | set(baselines))
    body = [
        "<h1>omicsgen leaderboard</h1>",
        (
            "<p>Test-split scores per dataset; bold marks the best model or baseline in each row "
            "(↓ lower is better, ↑ higher is better). Follow a dataset's name for its full report.</p>"
        ),
    ]
    for section in SECTIONS:
        rows = {d: _rows(section, models.get(d, {}), baselines.get(d, {})) for d in datasets}
        rows = {d: r for d, r in rows.items() if r}
        if rows:
            body.append(f"<h2>{section.capitalize()}</h2>" + _leaderboard_table(section, rows))
    write_text(_page("omicsgen leaderboard", body), out_html)


def _leaderboard_table(section: str, rows_by_dataset: dict[str, list[Row]]) -> str:
    """A dataset x method table; a method that cannot do the section shows "—" with a numbered
    note saying why."""
    labels: list[str] = []
    for kind in ("model", "missing", "baseline", "reference"):
        for rows in rows_by_dataset.values():
            labels += [r.label for r in rows if r.kind == kind and r.label not in labels]
    header = "".join(f"<th>{_e(label)}</th>" for label in labels)
    body, reasons = [], []
    for dataset, rows in rows_by_dataset.items():
        metric = next((m for m in HEADLINE[section] if any(m in r.scores for r in rows)), HEADLINE[section][0])
        values = {r.label: r.scores.get(metric) for r in rows}
        why = {r.label: r.why for r in rows if r.kind == "missing"}
        best = _best_labels({r.label: values[r.label] for r in rows if r.kind not in ("reference", "missing")}, metric)
        link = f'<a href="{_e(dataset)}/report.html">{_e(dataset)}</a>'
        cells = []
        for label in labels:
            if label in why:
                if why[label] not in reasons:
                    reasons.append(why[label])
                note = reasons.index(why[label]) + 1
                cells.append(f'<td class="why" title="{_e(why[label])}">—<sup>{note}</sup></td>')
            else:
                cells.append(_cell(values.get(label), label in best))
        body.append(f"<tr><td>{link}</td><td>{_e(metric)}{_arrow(metric)}</td>{''.join(cells)}</tr>")
    notes = "".join(f"<li>{_e(reason)}</li>" for reason in reasons)
    notes = f'<ol class="note">{notes}</ol>' if notes else ""
    return f"<table><thead><tr><th>dataset</th><th>metric</th>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>{notes}"


# ---------------------------------------------------------------------------- shared


def format_value(value) -> str:
    """How every number appears on a page: 4 significant digits, counts whole, missing as a dash."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (bool, int)):
        return str(value)
    return f"{value:.4g}"


def _cell(value, is_best: bool, interval=None) -> str:
    """A score, with its 95% bootstrap interval over rows beneath it when evaluate computed one."""
    shown = format_value(value)
    if interval is not None and len(interval) == 2:
        shown += f"<br><small>[{format_value(interval[0])}, {format_value(interval[1])}]</small>"
    return f'<td class="best">{shown}</td>' if is_best else f"<td>{shown}</td>"


def _arrow(metric: str) -> str:
    return {"lower": " ↓", "higher": " ↑"}.get(direction(metric), "")


def _figure(uri: str, caption: str) -> str:
    return f'<figure><img src="{uri}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def _e(value) -> str:
    return html.escape(str(value), quote=True)
