"""Fill held-out and natively missing entries with a trained model: imputed.h5ad.

The fill is computed and written a block of rows at a time (when the family treats rows on
their own), so memory holds one block of the output, not the whole matrix: a million cells
impute like ten thousand. Sparse (CSR) data gives sparse output layers.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import torch
from anndata.io import write_elem

from .alphabet import MISSING
from .generate import inherited_provenance, unsupported
from .models.base import INFERENCE_CHUNK, Unsupported, data_rows, is_sparse, modality, split_rows
from .models.registry import load_model_for
from .progress import Progress
from .provenance import atomic_path, meta, stamp
from .rowwriter import RowWriter

log = logging.getLogger(__name__)

N_DRAWS = 20  # multiple imputation: draws per entry when the family can draw (config impute.n_draws)
INTERVAL = 0.9  # imputed_lower / imputed_upper: the central 90% interval of the draws
DRAWS_KEY = "imputation_draws"  # uns: draws at unobserved test entries (evaluate scores calibration)
DRAWS_SPLIT = "test"  # the rows whose draws are kept: the ones evaluate scores
FILLED_SEQUENCE_SPLITS = ("val", "test")  # sequences: rows filled beyond those with native gaps
# Unobserved test entries whose draws are kept at most (a seeded random subset beyond): 40 MB at
# 20 draws, enough for coverage to two decimals, at any data size.
MAX_DRAW_ENTRIES = 500_000


def impute(data_path, checkpoint, out_path, seed: int, n_draws: int = N_DRAWS) -> Path:
    """Write a copy of masked.h5ad with the model's filled matrix beside the truth.

    Expression / time course: `layers["imputed"]` (X stays the truth, NaN included);
    sequence: `obsm["tokens_imputed"]` (tokens stay the truth). Every entry the model could see
    is copied unchanged; held-out and missing entries (NaN, MISSING token) are predicted.
    Sequences are filled where a reader looks (`fill_sequences`): every row with a native
    gap, and the val and test rows; the held-out positions of the other train rows stay MISSING.
    Families with a latent space add its per-row means as `obsm["X_<family>"]`.

    Probabilistic families (`can_draw_imputations`) also draw `n_draws` imputations (0 = none):
    `layers["imputed_sd"]`, `["imputed_lower"]`, `["imputed_upper"]` (their standard deviation
    and central 90% interval; sd 0 and lower = upper = the value where observed) and, for
    calibration scoring, the draws at the unobserved entries of the test rows (at most
    MAX_DRAW_ENTRIES of them) in `uns["imputation_draws"]`. Entries are drawn where a reader
    needs their spread: every natively missing entry, and the held-out entries of the test rows.
    The held-out entries of train and val rows (values the user has, hidden to fit and to
    choose) get the fill but no draws: NaN in the three layers. At a million cells this is
    most of the draws' cost saved.
    """
    data_path, checkpoint, out_path = Path(data_path), Path(checkpoint), Path(out_path)
    adata = ad.read_h5ad(data_path)
    model = load_model_for(checkpoint, adata, data_path)
    if not model.can_impute:
        raise unsupported(checkpoint, model, "impute", model.cannot_impute)
    drawing = n_draws > 0 and getattr(model, "can_draw_imputations", False) and modality(adata) != "sequence"
    if n_draws > 0 and not drawing:
        log.info("%s: one imputation (the family draws none)", model.family)
    n_draws = n_draws if drawing else 0

    meta(adata)["provenance"] = inherited_provenance(adata, checkpoint)
    params = {"checkpoint": str(checkpoint), "family": model.family, "n_draws": n_draws}
    stamp(adata, "impute", params, inputs=[data_path, checkpoint], seed=seed)
    torch.manual_seed(seed)
    with atomic_path(out_path) as tmp:
        # masked.h5ad's bytes with the new uns, then the fills: rewriting (recompressing) its
        # matrices took a million cells 40 s
        shutil.copyfile(data_path, tmp)
        with h5py.File(tmp, "a") as out:
            del out["uns"]
            write_elem(out, "uns", dict(adata.uns))
            try:
                write_fills(out, adata, model, n_draws, seed)
            except Unsupported as err:
                raise unsupported(checkpoint, model, "impute", str(err)) from None
    return out_path


def row_blocks(adata: ad.AnnData, model) -> list[slice]:
    n_rows = adata.n_obs
    if not model.rows_independent or n_rows == 0:
        return [slice(0, n_rows)]
    return [slice(start, min(start + INFERENCE_CHUNK, n_rows)) for start in range(0, n_rows, INFERENCE_CHUNK)]


def write_fills(out: h5py.File, adata: ad.AnnData, model, n_draws: int, seed: int) -> None:
    """The fill (and embedding, draw summaries, draws) block by block into the open file."""
    sparse = is_sparse(adata)
    writers: dict[str, RowWriter] = {}

    def put(slot: str, key: str, block: np.ndarray, dtype=np.float32, as_sparse: bool = False) -> None:
        if key not in writers:  # widths (the latent size) are known from the first block
            writers[key] = RowWriter(out[slot], key, adata.n_obs, block.shape[1], dtype, as_sparse)
        writers[key].append(block)

    draws = None
    if n_draws:
        test_rows = split_rows(adata, DRAWS_SPLIT)
        draws = DrawKeeper(model, n_draws, seed, test_rows, draw_keep_fraction(adata, model, test_rows))
    sequence = modality(adata) == "sequence"
    read_rows = split_rows(adata, FILLED_SEQUENCE_SPLITS) if sequence else None
    n_unfilled = 0
    progress = Progress(log, f"{model.family}: filling {adata.n_obs:,} rows", adata.n_obs)
    for rows in row_blocks(adata, model):
        values, observed = data_rows(adata, rows)
        obs = adata.obs.iloc[rows]
        if sequence:
            filled, unfilled = fill_sequences(model, values, observed, obs, read_rows[rows])
            n_unfilled += unfilled
            put("obsm", "tokens_imputed", filled, np.int8)
        else:
            put("layers", "imputed", model.impute(values, observed, obs=obs), as_sparse=sparse)
        if model.has_latent:
            # a conditional model embeds each row with its own label
            labelled = {"obs": obs} if model.hparams.get("condition_on") else {}
            put("obsm", f"X_{model.family}", model.embed(values, observed, **labelled))
        if draws is not None:
            for key, layer in draws.summarise(rows, values, observed, obs).items():
                put("layers", key, layer, as_sparse=sparse)
        progress.advance(rows.stop - rows.start)
    for writer in writers.values():
        writer.close()
    if sequence:
        log.info("%s: filled the %s rows and the rows with a native gap; %d held-out positions of the other "
                 "train rows left MISSING (no stage reads them)", model.family, " and ".join(FILLED_SEQUENCE_SPLITS),
                 n_unfilled)
    if draws is not None:
        write_elem(out["uns"], DRAWS_KEY, draws.kept())
        log.info("%s: %d draws at %d entries (native NAs, the test rows' held-out entries); the %d held-out "
                 "entries of train and val rows get the fill alone (NaN spread)", model.family, n_draws,
                 draws.n_drawn, draws.n_not_drawn)


def fill_sequences(model, tokens: np.ndarray, observed: np.ndarray, obs, read: np.ndarray) -> tuple[np.ndarray, int]:
    """(filled tokens, positions left MISSING) for a block of sequences. Filled: the rows `read`
    (val, test) and those with a native gap (a MISSING token in the data: the user's own). A
    language model's fill runs the network once per candidate token at every unobserved
    position, and the held-out positions of the other train rows, hidden only for scoring, are
    read by no stage: filling them was 70% of a ChIP-seq impute job."""
    fill = read | (tokens == MISSING).any(axis=1)
    filled = np.where(observed, tokens, MISSING).astype(np.int8)
    if fill.any():
        filled[fill] = model.impute(tokens[fill], observed[fill], obs=obs.iloc[fill])
    return filled, int((~observed[~fill]).sum())


def draw_keep_fraction(adata: ad.AnnData, model, keep_rows: np.ndarray) -> float:
    """The fraction of the unobserved entries of `keep_rows` whose draws fit in MAX_DRAW_ENTRIES."""
    n_unobserved = sum(int((~data_rows(adata, rows)[1][keep_rows[rows]]).sum()) for rows in row_blocks(adata, model))
    return min(1.0, MAX_DRAW_ENTRIES / max(n_unobserved, 1))


def draws_at(model, values: np.ndarray, observed: np.ndarray, n_draws: int, generator: torch.Generator, obs,
             where: np.ndarray | None = None) -> np.ndarray:
    """(n_draws, entries) draws at `where` (default: the unobserved entries), row-major: the
    family's own `draws_at` when it has one (it draws those entries only), else its full draws."""
    where = ~observed if where is None else where
    if hasattr(model, "draws_at"):
        return model.draws_at(values, observed, n_draws, generator, obs=obs, where=where)
    draws = np.asarray(model.impute_draws(values, observed, n_draws, generator, obs=obs))
    if draws.shape != (n_draws, *values.shape):
        raise ValueError(f"{model.family}.impute_draws returned shape {draws.shape}, expected {(n_draws, *values.shape)}")
    return draws[:, where]


class DrawKeeper:
    """Draws `n_draws` imputations per block of rows at the unobserved entries of `keep_rows` and
    the natively missing ones, summarises them per entry and keeps the draws at the unobserved
    entries of `keep_rows` (a seeded `keep_fraction` of them)."""

    def __init__(self, model, n_draws: int, seed: int, keep_rows: np.ndarray, keep_fraction: float = 1.0):
        self.model, self.n_draws, self.keep_rows, self.keep_fraction = model, n_draws, keep_rows, keep_fraction
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.rows, self.cols, self.values = [], [], []
        self.n_drawn = self.n_not_drawn = 0

    def summarise(self, rows: slice, values: np.ndarray, observed: np.ndarray, obs) -> dict[str, np.ndarray]:
        """Layers `imputed_sd`, `imputed_lower`, `imputed_upper` for the block (float32): the
        spread of the draws where drawn, 0 / the value where observed, NaN where not drawn."""
        hidden = ~observed
        drawn = hidden & (self.keep_rows[rows, None] | np.isnan(values))
        at_drawn = np.asarray(draws_at(self.model, values, observed, self.n_draws, self.generator, obs, where=drawn),
                              dtype=np.float32)
        if at_drawn.shape != (self.n_draws, drawn.sum()):
            raise ValueError(f"{self.model.family}.draws_at returned shape {at_drawn.shape}, "
                             f"expected {(self.n_draws, int(drawn.sum()))}")
        sd = np.where(hidden, np.float32(np.nan), np.float32(0.0))
        lower, upper = (np.where(hidden, np.float32(np.nan), values).astype(np.float32) for _ in range(2))
        sd[drawn] = at_drawn.std(axis=0)
        lower[drawn], upper[drawn] = np.quantile(at_drawn, [(1 - INTERVAL) / 2, (1 + INTERVAL) / 2], axis=0)
        self._keep(rows, drawn, hidden & self.keep_rows[rows, None], at_drawn)
        self.n_drawn += int(drawn.sum())
        self.n_not_drawn += int(hidden.sum()) - int(drawn.sum())
        return {"imputed_sd": sd, "imputed_lower": lower, "imputed_upper": upper}

    def _keep(self, rows: slice, drawn: np.ndarray, entries: np.ndarray, draws: np.ndarray) -> None:
        """Keep the draws (n_draws x `drawn` entries, row-major) at `entries` (a subset of `drawn`)."""
        position = np.flatnonzero(entries[drawn])  # where each of `entries` sits among the drawn ones
        block_rows, cols = np.nonzero(entries)  # row-major
        if self.keep_fraction < 1:
            chosen = self.rng.random(len(cols)) < self.keep_fraction
            block_rows, cols, position = block_rows[chosen], cols[chosen], position[chosen]
        self.rows.append((block_rows + rows.start).astype(np.int32))
        self.cols.append(cols.astype(np.int32))
        self.values.append(draws[:, position].T)

    def kept(self) -> dict:
        """{"rows", "cols", "values" (entries x n_draws), "sampled"}: row-major; sampled is True when
        only a random subset of the unobserved test entries was kept."""
        values = np.concatenate(self.values) if self.values else np.zeros((0, self.n_draws), dtype=np.float32)
        return {
            "rows": np.concatenate(self.rows) if self.rows else np.zeros(0, dtype=np.int32),
            "cols": np.concatenate(self.cols) if self.cols else np.zeros(0, dtype=np.int32),
            "values": values.astype(np.float32),
            "sampled": bool(self.keep_fraction < 1),
        }
