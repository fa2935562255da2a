"""What GEO writes above a table. Sample annotations: a GDS SOFT file's subsets (`^SUBSET` blocks:
`!subset_type = disease state`, `!subset_description = RCC`, `!subset_sample_id = GSM11815,...`)
and a series matrix's `!Sample_...` lines (title, source, `!Sample_characteristics_ch1` "key:
value" cells, one a sample). They become sample annotations, so the sheet's `label` can name one
(e.g. `disease state`) for the conditional models. And a GDS file's `!dataset_value_type`: `count`
(single-channel values on their linear scale, e.g. MAS5 signal), `transformed count` (logged) or a
`log ratio` of two channels, which tells `values: auto` the scale instead of a guess."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pandas as pd

from ._open import open_text

# Series matrix lines kept besides the characteristics (the accession line names the samples).
SAMPLE_LINES = {"!Sample_title": "title", "!Sample_source_name_ch1": "source_name"}


def read_preamble(path: Path, preamble: int) -> list[str]:
    """The first `preamble` lines of the file (the metadata above its table), read once for both below."""
    with open_text(path) as handle:
        return [line.rstrip("\n") for line in itertools.islice(handle, preamble)]


def geo_annotations(lines: list[str]) -> pd.DataFrame | None:
    """One row a sample (GSM accession), one column an annotation; None when the preamble's
    `lines` hold no GEO sample metadata."""
    columns = _gds_subsets(lines) or _series_samples(lines)
    if not columns:
        return None
    return pd.DataFrame(columns).astype("category")


def gds_value_type(lines: list[str]) -> str | None:
    """A GDS file's `!dataset_value_type` (lower case), or None when the preamble's `lines` have none."""
    for line in lines:
        key, _, value = line.partition(" = ")
        if key.strip().lower() == "!dataset_value_type" and value.strip():
            return value.strip().lower()
    return None


def _gds_subsets(lines: list[str]) -> dict[str, dict[str, str]]:
    """{subset type: {sample: description}} from a GDS file's ^SUBSET blocks."""
    columns: dict[str, dict[str, str]] = {}
    subset: dict[str, str] = {}
    for line in [*lines, "^END"]:
        if line.startswith("^"):
            if {"type", "description", "sample_id"} <= subset.keys():
                for sample in subset["sample_id"].split(","):
                    columns.setdefault(subset["type"], {})[sample.strip()] = subset["description"]
            subset = {}
        elif line.lower().startswith("!subset_") and " = " in line:
            key, value = line.split(" = ", 1)
            subset[key[len("!subset_"):].lower()] = value.strip()
    return columns


def _series_samples(lines: list[str]) -> dict[str, dict[str, str]]:
    """{annotation: {sample: value}} from a series matrix's !Sample_ lines (tab-separated, quoted)."""
    rows = {}
    characteristics = []
    for fields in csv.reader((line for line in lines if line.startswith("!Sample_")), delimiter="\t"):
        if fields[0] == "!Sample_characteristics_ch1":
            characteristics.append(fields[1:])
        else:
            rows.setdefault(fields[0], fields[1:])
    samples = rows.get("!Sample_geo_accession")
    if not samples:
        return {}
    columns = {name: dict(zip(samples, rows[line])) for line, name in SAMPLE_LINES.items() if line in rows}
    for cells in characteristics:  # "tissue: kidney" in each cell of one line
        keys = {cell.split(":", 1)[0].strip() for cell in cells if ":" in cell}
        if len(keys) == 1:
            key = keys.pop()
            columns[key] = {s: c.split(":", 1)[1].strip() for s, c in zip(samples, cells) if ":" in c}
    return columns
