"""The page's "Decisions made for you" section: what the tool decided about the data and which
models it ran, each with why and the setting that changes it."""

from __future__ import annotations

import html
import json

MODEL_SETTINGS = (
    "a model's <code>when:</code> or <code>datasets:</code> in the config, or the sheet's "
    "<code>models</code> column for this dataset (<code>omicsgen models --config</code> prints the rule)"
)


def decisions_section(adata, choices: list[dict] | None) -> str:
    parts = ["<h2>Decisions made for you</h2>", _data_decisions(adata)]
    if choices is not None:
        parts.append(_model_choices(choices))
    return "".join(parts)


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
