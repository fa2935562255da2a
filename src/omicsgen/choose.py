"""Which configured models run on a dataset: decided by what the data is, never by its name.

`preprocess` records the facts of the prepared data in `results/{dataset}/facts.json`
(`data_facts`); the Snakefile reads them through a checkpoint and asks `choose_models` which
configured models apply. The rule, in the order it is checked:

1. the model's family takes the data's modality (`omicsgen models` lists them);
2. what the model itself needs (`needs`): a count likelihood (`likelihood` / `output` nb or zinb)
   needs raw counts, `condition_on: label` needs at least two labels, the sequence VAE needs
   aligned records (a gapped alignment, or equal-length records with conserved columns: omicsgen.alignment);
3. the model's `when:` in the config: facts it must match (`values: counts`,
   `modality: [expression, timecourse]`, `aligned: true`, `min_rows: 50`, `max_features: 5000`, ...);
   a condition on a fact the data does not have (`aligned` of a table) does not apply;
4. the model's `datasets:` in the config, when it lists any.

A sheet row's `models` column overrides 3 and 4 for that dataset: it names the models to run,
and only 1 and 2 still apply (a model cannot run on data it cannot read).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

import numpy as np

from .models.catalog import modalities

log = logging.getLogger(__name__)

# Facts compared by `when:`; the numeric ones also as `min_<fact>` / `max_<fact>`.
CATEGORICAL_FACTS = ("modality", "values", "alphabet", "aligned", "gapped", "equal_length")
NUMERIC_FACTS = ("rows", "train_rows", "features", "labels", "series", "time_points", "length")
COUNT_LIKELIHOODS = ("nb", "zinb")


@dataclass(frozen=True)
class Choice:
    model: str
    family: str
    chosen: bool
    reason: str


# ---------------------------------------------------------------------------- facts


def data_facts(adata) -> dict:
    """What the prepared data is, as the selection rule reads it (JSON-ready)."""
    info = adata.uns.get("omicsgen", {})
    modality = info.get("modality", "expression")
    split = adata.obs["split"].astype(str).to_numpy() if "split" in adata.obs else np.array([])
    labels = adata.obs["label"] if "label" in adata.obs else None
    facts = {
        "modality": modality,
        "rows": int(adata.n_obs),
        "train_rows": int((split == "train").sum()),
        "labels": int(labels.dropna().nunique()) if labels is not None else 0,
    }
    if modality == "sequence":
        facts.update(_sequence_facts(adata))
    else:
        facts.update(values="counts" if "counts" in adata.layers else "continuous", features=int(adata.n_vars))
    if modality == "timecourse":
        facts.update(series=int(adata.obs["series"].nunique()), time_points=int(adata.obs["time"].nunique()))
    return facts


def _sequence_facts(adata) -> dict:
    from . import alphabet as alph

    from .alignment import alignment_facts

    tokens = adata.obsm["tokens"]
    lengths = (tokens != alph.PAD).sum(axis=1)
    aligned = alignment_facts(tokens)
    return {
        "alphabet": str(adata.uns.get("alphabet", {}).get("name", "")),
        "features": int(tokens.shape[1]),
        "length": int(lengths.max()) if lengths.size else 0,
        # positions line up: a gapped alignment, or equal-length records with conserved columns
        # (ChIP-seq peaks cut to one length are windows, not an alignment)
        **{k: aligned[k] for k in ("aligned", "gapped", "equal_length")},
    }


def write_facts(adata, path) -> dict:
    facts = data_facts(adata)
    with open(path, "w") as handle:
        json.dump(facts, handle, indent=1, sort_keys=True)
    return facts


# ---------------------------------------------------------------------------- the rule


def needs(family: str, data_modality: str, spec: dict) -> dict:
    """What a model needs of the data whatever the config says, as `when:`-style conditions."""
    required: dict = {}
    if spec.get("likelihood") in COUNT_LIKELIHOODS or spec.get("output") in COUNT_LIKELIHOODS:
        required.update(modality=["expression", "timecourse"], values="counts")
    if spec.get("condition_on"):
        required["min_labels"] = 2
    if family == "vae" and data_modality == "sequence":
        required["aligned"] = True
    return required


def unmet(conditions: dict, facts: dict) -> list[str]:
    """The conditions the facts do not meet, each said in words. A condition on a fact the data's
    modality does not have (`aligned` of a table, `series` of cells) does not apply to it."""
    problems = []
    for key, wanted in sorted(conditions.items()):  # sorted: the page reads the same whatever the config's key order
        bound, _, fact = key.partition("_") if key.startswith(("min_", "max_")) else ("", "", key)
        have = facts.get(fact)
        if have is None and fact != "modality":
            continue
        if bound:
            if (bound == "min" and have < wanted) or (bound == "max" and have > wanted):
                problems.append(f"{key}: {wanted} (the data has {fact} = {have})")
            continue
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if have not in allowed:
            problems.append(f"{fact}: {json.dumps(wanted)} (the data has {json.dumps(have)})")
    return problems


def choose_models(models: dict, facts: dict, dataset: str, asked: list[str] | None = None) -> list[Choice]:
    """One `Choice` per configured model: whether it runs on this dataset, and why (or why not).

    `models` are the configured (sweep-expanded) models; `asked` the sheet row's `models`
    column, when it has one.
    """
    choices = []
    for name, spec in models.items():
        taken = modalities(spec["family"])
        modality = facts["modality"]
        if modality not in taken:
            choices.append(Choice(name, spec["family"], False, f"the {spec['family']} family takes {' or '.join(taken)} data, not {modality}"))
            continue
        problems = unmet(needs(spec["family"], modality, spec), facts)
        if problems:
            choices.append(Choice(name, spec["family"], False, "the model needs " + "; ".join(problems)))
            continue
        choices.append(_configured_choice(name, spec, facts, dataset, asked))
    return choices


def _configured_choice(name: str, spec: dict, facts: dict, dataset: str, asked: list[str] | None) -> Choice:
    if asked is not None:
        if name in asked:
            return Choice(name, spec["family"], True, "named in the sheet's models column")
        return Choice(name, spec["family"], False, "not named in the sheet's models column")
    problems = unmet(spec.get("when", {}), facts)
    if problems:
        return Choice(name, spec["family"], False, "its `when:` asks " + "; ".join(problems))
    if "datasets" in spec and dataset not in spec["datasets"]:
        return Choice(name, spec["family"], False, f"its `datasets:` lists {', '.join(spec['datasets']) or 'none'}")
    why = [f"the {spec['family']} family takes {facts['modality']} data"]
    needed = needs(spec["family"], facts["modality"], spec)
    if needed:
        why.append("the data has what it needs (" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in needed.items()) + ")")
    if spec.get("when"):
        why.append("its `when:` holds (" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in sorted(spec["when"].items())) + ")")
    return Choice(name, spec["family"], True, "; ".join(why))


def chosen(choices: list[Choice]) -> list[str]:
    return [c.model for c in choices if c.chosen]


def as_records(choices: list[Choice]) -> list[dict]:
    return [asdict(c) for c in choices]


def parse_sheet_models(cell: str) -> list[str] | None:
    """The sheet's `models` cell: empty or `auto` -> the rule decides; `none` -> no model;
    otherwise model names separated by commas or spaces."""
    cell = (cell or "").strip()
    if cell in ("", "auto"):
        return None
    if cell == "none":
        return []
    return [name for name in cell.replace(",", " ").split() if name]


def describe_rule(models: dict) -> list[str]:
    """One line per configured model: its family and the conditions it runs under (for `omicsgen models`)."""
    lines = []
    for name, spec in models.items():
        parts = [f"modality in {list(modalities(spec['family']))}"]
        for modality in modalities(spec["family"]):
            needed = needs(spec["family"], modality, spec)
            if needed:
                parts.append(f"on {modality}: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in needed.items()))
        if spec.get("when"):
            parts.append("when " + ", ".join(f"{k}={json.dumps(v)}" for k, v in spec["when"].items()))
        if "datasets" in spec:
            parts.append(f"datasets {spec['datasets']}")
        lines.append(f"{name}\t{spec['family']}\t" + "; ".join(parts))
    return lines
