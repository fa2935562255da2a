"""Expression time courses: one row a sample with `series` and `time` columns, genes the others."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import InputError
from ._table import numeric_share, read_text_table, require_unique, to_numeric

TIMECOURSE_FORMATS = ("csv", "tsv")
REQUIRED = ("series", "time")


def read_timecourse(path: Path, fmt: str) -> ad.AnnData:
    table = read_text_table(path, fmt)
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise InputError(path, f"no column named {' or '.join(repr(c) for c in missing)}",
                         hint="a time course needs one row a sample with 'series' and 'time' columns")
    require_unique(table.index, path, "sample name")
    times = pd.to_numeric(table["time"], errors="coerce")
    if times.isna().any():
        row = int(np.flatnonzero(times.isna())[0])
        raise InputError(path, f"time '{table['time'].iat[row]}' is not a number", where=f"line {row + 2}, column 'time'",
                         hint="give times as numbers in one unit (e.g. hours)")
    if table["series"].isna().any():
        row = int(np.flatnonzero(table["series"].isna())[0])
        raise InputError(path, "empty series", where=f"line {row + 2}, column 'series'")
    # Other text columns (condition, sex, ...) are sample annotations; mostly-numeric ones are genes.
    annotation = [c for c in table.columns if c not in REQUIRED and numeric_share(table[c]) < 0.5]
    genes = table.drop(columns=[*REQUIRED, *annotation])
    if genes.shape[1] == 0:
        raise InputError(path, "no gene columns besides the annotations")
    require_unique(genes.columns, path, "gene name")
    obs = table[annotation].copy()
    obs.insert(0, "time", times.astype(float))
    obs.insert(0, "series", table["series"].astype(str))
    duplicated = obs.duplicated(["series", "time"])
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise InputError(path, f"series '{obs['series'].iat[row]}' has two samples at time {obs['time'].iat[row]}",
                         where=f"line {row + 2}")
    adata = ad.AnnData(X=to_numeric(genes, path), obs=obs)
    adata.var_names = genes.columns.astype(str)
    order = np.lexsort((adata.obs["time"].to_numpy(), adata.obs["series"].to_numpy()))
    return adata[order].copy()
