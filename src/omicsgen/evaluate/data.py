"""Reading the AnnData contract (docs/data-format.md) the way scoring and baselines need it.

Everything a baseline may see goes through `observed_values` / `hidden_tokens`, which blank the
held-out entries, so no baseline can read a value it is scored on.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..alphabet import MISSING
from ..preprocess.split import split_rows  # noqa: F401  (evaluate's modules import it from here)


def read(path) -> ad.AnnData:
    return ad.read_h5ad(path)


def info(adata: ad.AnnData) -> dict:
    return adata.uns["omicsgen"]


def modality(adata: ad.AnnData) -> str:
    return str(info(adata)["modality"])


def dataset(adata: ad.AnnData) -> str:
    return str(info(adata)["dataset"])


def mask_info(adata: ad.AnnData) -> dict:
    return info(adata)["mask"]


def heldout_mask(adata: ad.AnnData) -> np.ndarray:
    """Boolean matrix, True where an entry is held out for imputation scoring."""
    mask = mask_info(adata)
    return dense(getattr(adata, str(mask["slot"]))[str(mask["key"])]).astype(bool)


def values(adata: ad.AnnData) -> np.ndarray:
    """X as float64 (the truth, held-out entries included)."""
    return dense(adata.X).astype(np.float64)


def observed_values(adata: ad.AnnData) -> np.ndarray:
    """X with held-out entries set to NaN: what a model or baseline is allowed to see."""
    observed = values(adata)
    observed[heldout_mask(adata)] = np.nan
    return observed


def tokens(adata: ad.AnnData, key: str = "tokens") -> np.ndarray:
    return np.asarray(adata.obsm[key]).astype(np.int16)


def hidden_tokens(adata: ad.AnnData) -> np.ndarray:
    """Tokens with held-out positions set to MISSING: what a model or baseline is allowed to see."""
    hidden = tokens(adata)
    hidden[heldout_mask(adata)] = MISSING
    return hidden


def alphabet(adata: ad.AnnData) -> tuple[str, list[str]]:
    table = adata.uns["alphabet"]
    return str(table["name"]), [str(s) for s in table["symbols"]]


def feature_means(observed: np.ndarray) -> np.ndarray:
    """Per-feature mean of the observed entries; features never observed get the overall mean."""
    counts = np.isfinite(observed).sum(axis=0)
    sums = np.nansum(observed, axis=0)
    overall = np.nanmean(observed) if np.isfinite(observed).any() else 0.0
    return np.where(counts > 0, sums / np.maximum(counts, 1), overall)


def filtered_steps(adata: ad.AnnData) -> list[dict]:
    """What preprocessing removed (`uns['omicsgen']['filtered']`), or [] when not recorded."""
    text = info(adata).get("filtered")
    return json.loads(str(text)) if text is not None else []


def dense(matrix, dtype=None) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=dtype)


# ---------------------------------------------------------------------------- which rows are read

# Defaults of the config's `evaluate:` section (config/config.yaml documents the choice).
MAX_ROWS = 10_000  # scored test rows; see docs/scores.md ("Subsampling") for why 10,000
MAX_TRAIN_ROWS = 2_000  # training rows the slow baselines (kNN, MICE, MissForest, MAGIC) fit on
BOOTSTRAP_RESAMPLES = 200


def seeded_subset(rows: np.ndarray, cap: int | None, seed: int, stream: int) -> np.ndarray:
    """At most `cap` of the sorted row indices `rows`, drawn without replacement from a generator
    seeded by (seed, stream): the same rows for the same data, seed and purpose, whatever reads them."""
    rows = np.asarray(rows, dtype=np.int64)
    if cap is None or len(rows) <= cap:
        return rows
    rng = np.random.default_rng([int(seed), stream])
    return np.sort(rng.choice(rows, int(cap), replace=False))


def scored_rows(split: np.ndarray, seed: int, max_rows: int | None = MAX_ROWS, series=None) -> np.ndarray:
    """Indices of the test rows every model and baseline of a dataset is scored on: all of them,
    or a seeded subsample of `max_rows` when the split is larger. They depend on the split column
    and the seed only, so `evaluate` and `baselines` pick the same rows. Time courses keep whole
    series (a forecast needs each series' earlier points): series are drawn until the cap is met."""
    test = np.flatnonzero(np.asarray(split).astype(str) == "test")
    if series is None:
        return seeded_subset(test, max_rows, seed, stream=1)
    if max_rows is None or len(test) <= max_rows:
        return test
    names = np.asarray(series).astype(str)[test]
    order = np.random.default_rng([int(seed), 1]).permutation(np.unique(names))
    sizes = np.cumsum([np.sum(names == name) for name in order])
    keep = order[: max(1, int(np.searchsorted(sizes, max_rows, side="right")))]
    return test[np.isin(names, keep)]


def train_rows(split: np.ndarray, seed: int, cap: int | None) -> np.ndarray:
    """Training rows, or a seeded subsample of `cap` of them (slow baselines, the scoring frame)."""
    return seeded_subset(np.flatnonzero(np.asarray(split).astype(str) == "train"), cap, seed, stream=2)


def read_obs(path) -> tuple:
    """obs and uns of an .h5ad without its matrices (cheap at a million rows)."""
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as handle:
        return read_elem(handle["obs"]), read_elem(handle["uns"])


def read_rows(path, rows: np.ndarray | None, skip_layers=()) -> ad.AnnData:
    """The rows `rows` (sorted indices) of an .h5ad, X, layers (but `skip_layers`) and obsm
    included, without reading the others: sparse matrices are cut on disk, so a million-row file
    costs only the rows asked for."""
    if rows is None:
        return read(path)
    import h5py
    from anndata.io import read_elem, sparse_dataset

    rows = np.asarray(rows, dtype=np.int64)

    def cut(element):
        if isinstance(element, h5py.Group) and "encoding-type" in element.attrs and "indptr" in element:
            matrix = sparse_dataset(element)
            if not len(rows):
                return sp.csr_matrix((0, matrix.shape[1]), dtype=matrix.dtype)
            return sp.vstack([matrix[lo:hi][picked] for lo, hi, picked in _slabs(rows)], format="csr")
        if isinstance(element, h5py.Dataset):
            if not len(rows):
                return element[:0]
            return np.concatenate([element[lo:hi][picked] for lo, hi, picked in _slabs(rows)])
        return read_elem(element)[rows]

    with h5py.File(path, "r") as handle:
        obs = read_elem(handle["obs"]).iloc[rows]
        adata = ad.AnnData(
            X=cut(handle["X"]) if "X" in handle else None,
            obs=obs,
            var=read_elem(handle["var"]),
            uns=read_elem(handle["uns"]),
            layers={key: cut(handle["layers"][key]) for key in handle.get("layers", {}) if key not in skip_layers},
            obsm={key: cut(handle["obsm"][key]) for key in handle.get("obsm", {})},
        )
    return adata


SLAB_ROWS = 65_536


def _slabs(rows: np.ndarray):
    """(start, stop, positions within) of each block of SLAB_ROWS file rows holding wanted rows:
    contiguous reads are fast where h5py's and anndata's row lists are slow, and one block at a
    time bounds the memory of a read."""
    blocks = rows // SLAB_ROWS
    for block in np.unique(blocks):
        wanted = rows[blocks == block]
        lo = int(wanted[0])
        yield lo, int(wanted[-1]) + 1, wanted - lo


# ---------------------------------------------------------------------------- a few rows at a time

COLUMN_BLOCK = 256  # genes densified at once when a statistic needs every training row
# ... and at most this many entries (0.4 GB as float64): fewer genes a block above ~195,000 rows
# (at 700,000 training rows, 256 genes were 1.4 GB a block, and nanmedian copies it)
BLOCK_ENTRIES = 50_000_000


def observed_rows(adata: ad.AnnData, rows) -> np.ndarray:
    """`observed_values` of the rows `rows` only (indices or a boolean mask): a sparse matrix is
    densified for those rows, never whole."""
    rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=np.int64)
    values = dense(adata.X[rows]).astype(np.float64)
    values[heldout_rows(adata, rows)] = np.nan
    return values


def heldout_rows(adata: ad.AnnData, rows) -> np.ndarray:
    mask = mask_info(adata)
    return dense(getattr(adata, str(mask["slot"]))[str(mask["key"])][rows]).astype(bool)


def observed_column_blocks(adata: ad.AnnData, rows, block: int = COLUMN_BLOCK):
    """(columns, observed values of `rows` x those columns) for consecutive blocks of columns:
    per-gene statistics over every training row without a dense rows x genes matrix. A block
    holds at most BLOCK_ENTRIES values (fewer columns when there are many rows)."""
    rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=np.int64)
    block = max(1, min(block, BLOCK_ENTRIES // max(1, len(rows))))
    mask = mask_info(adata)
    # CSR column blocks are cut by a scan of the rows' entries: slower than CSC, but no second copy
    x, held = adata.X[rows], getattr(adata, str(mask["slot"]))[str(mask["key"])][rows]
    for start in range(0, adata.n_vars, block):
        columns = slice(start, min(start + block, adata.n_vars))
        values = dense(x[:, columns]).astype(np.float64)
        values[dense(held[:, columns]).astype(bool)] = np.nan
        yield columns, values
