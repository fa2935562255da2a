"""The page's "Decisions made for you" section: what the tool decided about the data and which
models it ran, each with why and the setting that changes it."""

from __future__ import annotations

import html
import json
from pathlib import Path

import h5py

MODEL_SETTINGS = (
    "a model's <code>when:</code> or <code>datasets:</code> in the config, or the sheet's "
    "<code>models</code> column for this dataset (<code>omicsgen models --config</code> prints the rule)"
)


def decisions_section(adata, choices: list[dict] | None, model_dirs: dict | None = None, completed=None) -> str:
    parts = ["<h2>Decisions made for you</h2>", _data_decisions(adata)]
    if choices is not None:
        parts.append(_model_choices(choices))
    if model_dirs:
        parts.append(_training_choices(model_dirs))
    if completed:
        parts.append(completion_section(completed))
    return "".join(parts)


def completion(completed_path) -> dict:
    """`complete`'s record of how completed.h5ad was filled, read alone (not the table)."""
    with h5py.File(completed_path, "r") as handle:
        record = handle["uns/omicsgen/completion"][()]
    return json.loads(record.decode() if isinstance(record, bytes) else record)


KINDS = {"model": "a model", "baseline": "a baseline, not a model", "blend": "the mean of two methods' fills"}


def completion_section(completed_path) -> str:
    """Which method filled the table's native NAs (completed.h5ad), why, and every candidate's val score."""
    record = completion(completed_path)
    name = Path(completed_path).name
    if record["kind"] == "none":
        return f"<h3>Your table, completed</h3><p>The input has no missing value: <code>{_e(name)}</code> is the input as given.</p>"
    scores = record.get("val_rmse_in_sd") or record.get("val_rmse") or {}
    unit = "in each feature's sd" if record.get("val_rmse_in_sd") else "on X's scale"
    rows = "".join(
        f"<tr><td>{'<b>' + _e(method) + '</b>' if method == record['chosen'] else _e(method)}</td><td>{value:.4g}</td></tr>"
        for method, value in sorted(scores.items(), key=lambda item: item[1])
    )
    left = record.get("n_left_missing", 0)
    return (
        "<h3>Your table, completed</h3>"
        f"<p><code>{_e(name)}</code> fills the input's {record['n_native_missing']:,} missing values with "
        f"<b>{_e(record['chosen'])}</b> ({KINDS.get(record['kind'], record['kind'])}): {_e(record['why'])}. "
        f"Refit: {_e(record.get('refit'))}. Uncertainty: {_e(record.get('uncertainty'))}."
        + (f" {left:,} values stay missing (features with no observed value)." if left else "")
        + "</p>"
        + (f"<table><thead><tr><th>candidate</th><th>val RMSE ({unit})</th></tr></thead><tbody>{rows}</tbody></table>"
           if rows else "")
        + "<p class='note'>Force a method with <code>complete: {method: NAME}</code> in the config "
          "(a model, a baseline, or <code>a+b</code> for the mean of two).</p>"
    )


def training_choices(model_dir: Path) -> dict | None:
    """The settings the small-data regime (or a language model's budget) chose for a model
    (`train`'s record, as its imputed.h5ad or samples.h5ad carries it); None when neither file
    holds the record."""
    for name in ("imputed.h5ad", "samples.h5ad"):
        path = Path(model_dir) / name
        if not path.exists():
            continue
        with h5py.File(path, "r") as handle:
            record = handle.get("uns/omicsgen/provenance/train/params")
            if record is not None:
                params = record[()]
                return json.loads(params.decode() if isinstance(params, bytes) else params).get("sized_for_data", {})
    return None


def _training_choices(model_dirs: dict) -> str:
    rows = "".join(
        f"<tr><td>{_e(model)}</td><td>{_e(key)}</td><td><b>{_e(value)}</b></td></tr>"
        for model, folder in model_dirs.items()
        for key, value in (training_choices(folder) or {}).items()
    )
    if not rows:
        return ""
    return ("<p>Training settings chosen for the data: for its size (small-data regime, or a language model's budget of "
            "positions on many long records; <code>models/sizing.py</code>; "
            "docs/small-data.md says why), and the skewed features a Gaussian VAE fits on a log scale "
            "(<code>log_skewed</code>, <code>models/logscale.py</code>):</p>"
            "<table><thead><tr><th>model</th><th>setting</th><th>chosen</th></tr></thead>"
            f"<tbody>{rows}</tbody></table><p class='note'>Change one with that setting in the model's entry of "
            "the config, or turn the regime off with <code>trainer: {size_to_data: false}</code>.</p>")


def data_decisions(adata) -> list[dict]:
    """`uns["omicsgen"]["decisions"]`, however h5ad stored it (a list of dicts, or JSON text)."""
    stored = adata.uns.get("omicsgen", {}).get("decisions", [])
    if isinstance(stored, str):
        stored = json.loads(stored)
    elif isinstance(stored, dict):  # a list of dicts may come back keyed by position
        stored = [stored[key] for key in sorted(stored, key=lambda k: int(k) if str(k).isdigit() else k)]
    return [dict(d) for d in stored]


def _data_decisions(adata) -> str:
    rows = "".join(
        f"<tr><td>{_e(d.get('what'))}</td><td><b>{_e(d.get('value'))}</b></td><td class='text'>{_e(d.get('why'))}</td>"
        f"<td class='text'><code>{_e(d.get('setting'))}</code></td></tr>"
        for d in data_decisions(adata)
    )
    if not rows:
        return "<p class='note'>No decision about the data was recorded.</p>"
    return ("<table><thead><tr><th>what</th><th>decided</th><th>why</th><th>setting that changes it</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def _model_choices(choices: list[dict]) -> str:
    runs = [c for c in choices if c["chosen"]]
    rows = "".join(
        f"<tr><td>{_e(c['model'])}</td><td>{_e(c['family'])}</td><td>{'runs' if c['chosen'] else 'skipped'}</td>"
        f"<td class='text'>{_e(c['reason'])}</td></tr>"
        for c in sorted(choices, key=lambda c: not c["chosen"])
    )
    headline = (f"<p>Models run on this dataset: <b>{_e(', '.join(c['model'] for c in runs))}</b>.</p>" if runs else
                "<p><b>No configured model applies to this dataset</b>: only the baselines were scored. "
                "Each model's reason is below.</p>")
    return (f"{headline}<table><thead><tr><th>model</th><th>family</th><th></th><th>why</th></tr></thead>"
            f"<tbody>{rows}</tbody></table><p class='note'>Change the choice with {MODEL_SETTINGS}.</p>")


def _e(value) -> str:
    return html.escape("" if value is None else str(value))
