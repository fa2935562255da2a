"""Stage `complete`: the user's own table back, every native missing value filled: completed.h5ad.

What a user takes home is their data, complete. Which method fills it is decided without the
test rows: every model's imputed.h5ad and every imputation baseline (fit on the train rows,
filling the train and val rows) are scored on the held-out entries of the train and val rows
(`choice_rows`: the refit fills NAs of rows it trained on, so the choice scores candidates there
too), and the lowest RMSE in each feature's own unit (its errors over its sd on the train rows) wins, a baseline as
readily as a model, or a blend (the mean of two fills, "ae+iterative": the two best, and the
best with `iterative`), scored on the same entries. The RMSE on X's scale is recorded too, but
not chosen on: it weighs a feature by its variance, so on a panel whose largest protein holds
76% of it the choice was made on that protein's few val entries. A tie (the best within two
paired standard errors of the `iterative` baseline, sklearn's IterativeImputer) goes to
`iterative`, failing that to the best's blend with it: val entries are held out at random,
native NAs are often low values. The test rows, on which scores.json reports, play no part in
the choice (a table without missing values has none to make: it comes back as given). The winner
is then refit on every row with every observed entry (held-out entries are observed values: they
were hidden only to score) and fills the native missing values; a model that draws imputations
gives their sd and 90% interval too.

The output has every row and feature of ingested.h5ad, values on the input's own scale:
- X: the input with its native NAs filled (entries it had are bit for bit the input's);
- layers["filled"]: True where a value was filled; ["imputed_sd"], ["imputed_lower"],
  ["imputed_upper"] when the chosen method draws imputations (0 / the value where observed);
- uns["omicsgen"]["completion"] (JSON text): the chosen method, each candidate's val RMSE (in
  features' sd, the choice, and on X's scale), why,
  how it was refit, and what could not be filled (a feature with no observed value stays NA);
  the choice is also one of uns["omicsgen"]["decisions"].
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError
from .evaluate import baseline_methods as bm
from .evaluate.data import dense, observed_column_blocks
from .preprocess.expression import LOG2_INTENSITIES
from .preprocess.split import split_rows
from .provenance import meta, stamp, write_h5ad

MAX_TRAIN_ROWS = bm.data.MAX_TRAIN_ROWS  # the config's evaluate.max_train_rows default

LOG = logging.getLogger(__name__)

CHOICE_SPLIT = "val"
INTERVAL = 0.9
# Baselines that need every row given (transductive) or whole series.
TRANSDUCTIVE = ("svd", "magic")
SERIES = ("linear", "last_value")


# ---------------------------------------------------------------------------- the stage


def complete(ingested_path, masked_path, runs: dict[str, dict], out_path, seed: int = 0,
             trainer: dict | None = None, n_draws: int = 20, method: str = "auto",
             max_train_rows: int | None = MAX_TRAIN_ROWS) -> Path:
    """Write completed.h5ad. `runs` maps a model name to {"imputed": imputed.h5ad, "checkpoint":
    model.ckpt}; `trainer` holds the trainer settings a chosen model is refit with (its own
    recorded settings fill the rest); `method` forces a candidate instead of the choice on held-out entries."""
    ingested_path, masked_path, out_path = Path(ingested_path), Path(masked_path), Path(out_path)
    given, masked = ad.read_h5ad(ingested_path), ad.read_h5ad(masked_path)
    if meta(masked).get("modality") == "sequence":
        raise InputError(masked_path, "complete fills expression and time-course tables, not sequences")
    dtype = given.X.dtype  # the input's own dtype, dense or sparse
    # A sparse input (counts) holds no NaN in practice: it stays sparse, so a million cells fit.
    native_count = int(np.isnan(given.X.data).sum()) if sp.issparse(given.X) else int(np.isnan(given.X).sum())
    completed = given.copy()
    if native_count:
        scores = val_scores(masked, runs, seed, max_train_rows)
        chosen, why = choose(scores, method, masked_path)
        record = {"chosen": chosen, "kind": candidate_kind(chosen, runs), "why": why,
                  "val_rmse": scores["rmse"], "val_rmse_in_sd": scores["rmse_in_sd"], "n_val_entries": scores["n_entries"], "split_used": f"train and {CHOICE_SPLIT}",
                  "n_native_missing": native_count, "val_baseline_fit_rows": scores["baseline_fit_rows"]}
        completed.X = dense(given.X, np.float64).copy()
        completed.layers["filled"] = np.zeros(completed.shape, dtype=bool)
        fill, spread = refit_and_fill(masked, chosen, runs, seed, trainer or {}, n_draws, record)
        _place(completed, masked, fill, spread, record)
        completed.X = completed.X.astype(dtype, copy=False)
    else:
        # No choice to make: fitting every baseline on the val rows cost mouse_10x 42 s CPU for nothing.
        chosen, why = "none", "the input has no missing value: nothing to fill (scores.json compares the methods)"
        record = {"chosen": chosen, "kind": "none", "why": why, "n_native_missing": 0, "n_filled": 0,
                  "refit": "nothing to fill: the input has no missing value"}
        completed.layers["filled"] = sp.csr_matrix(completed.shape, dtype=bool)
    _record(completed, record, chosen, why, method)
    stamp(completed, "complete", {"method": method, "runs": {k: {kk: str(vv) for kk, vv in v.items()} for k, v in runs.items()},
                                  "n_draws": n_draws}, inputs=[ingested_path, masked_path], seed=seed)
    write_h5ad(completed, out_path)
    return out_path


# ---------------------------------------------------------------------------- the choice


def candidate_kind(name: str, runs: dict) -> str:
    return "blend" if BLEND in name else "model" if name in runs else "baseline"


def val_scores(masked: ad.AnnData, runs: dict[str, dict], seed: int, max_train_rows: int | None = MAX_TRAIN_ROWS) -> dict:
    """{"rmse": {candidate: RMSE on the held-out entries of the choice rows (`choice_rows`)},
    "rmse_in_sd": {the same with each feature's errors in its sd on the train rows
    (`feature_scale`): the choice}, "squared_in_sd": {candidate: its squared errors in sd, per
    entry (for the tie)}, "n_entries", "baseline_fit_rows": {baseline: training rows it was fit
    on}}: models from their imputed.h5ad, baselines fit on the train rows (`val_baseline_fills`)."""
    rows = choice_rows(masked, seed, max_train_rows)
    # Only the scored rows are densified, never the whole (possibly sparse) matrix.
    held = dense(masked.layers["heldout"][rows], bool) if "heldout" in masked.layers else np.zeros((int(rows.sum()), masked.n_vars), bool)
    truth = dense(masked.X[rows], np.float64)
    held &= np.isfinite(truth)
    rmse: dict[str, float] = {}
    in_sd: dict[str, float] = {}
    squared: dict[str, np.ndarray] = {}
    fit_rows: dict[str, int] = {}
    if held.any():
        scale = feature_scale(masked, split_rows(masked, "train"))
        fills, fit_rows = val_baseline_fills(masked, seed, max_train_rows, rows)
        candidates = {**fills, **{name: _imputed_rows(paths["imputed"], rows) for name, paths in runs.items()}}
        def score(name, filled):
            rmse[name] = _rmse(filled, truth, held)
            squared[name] = ((np.asarray(filled, dtype=np.float64) - truth) / scale)[held] ** 2
            in_sd[name] = float(np.sqrt(np.mean(squared[name]))) if np.isfinite(squared[name]).all() else float("inf")

        for name, filled in candidates.items():
            score(name, filled)
        for pair in blend_pairs(in_sd):
            score(BLEND.join(pair), (np.asarray(candidates[pair[0]], np.float64) + np.asarray(candidates[pair[1]], np.float64)) / 2)
    return {"rmse": rmse, "rmse_in_sd": in_sd, "squared_in_sd": squared, "n_entries": int(held.sum()),
            "baseline_fit_rows": fit_rows}


def choice_rows(masked: ad.AnnData, seed: int, max_train_rows: int | None = MAX_TRAIN_ROWS) -> np.ndarray:
    """The rows whose held-out entries the choice scores (a boolean mask): the val rows, and the
    train rows (a seeded subsample of at most `max_train_rows`, the slow baselines' own). The
    refit fills the NAs of rows it trained on, so the choice scores each candidate there too: on
    the held-out entries of its own training rows, hidden from it as the NAs are. A network can
    fill unseen rows well and the rows it trained on badly: on a metabolite table (seed 0) the AE
    scored 0.60 sd on the val rows' entries and 0.91 on the train rows', the VAE 0.56 and 0.70,
    and the AE's fill of the native NAs, mostly in train rows, was the worst (docs/small-data.md)."""
    rows = split_rows(masked, CHOICE_SPLIT).copy()
    rows[bm.data.train_rows(masked.obs["split"].to_numpy(), seed, max_train_rows)] = True
    return rows


# A blend "a+b" fills with the mean of two candidates' fills. Two methods that err differently
# (a network that pulls towards the rows it resembles, a regression that extrapolates) cancel
# part of each other's error; it is scored on the same held-out entries as every other candidate.
BLEND = "+"


def blend_pairs(rmse_in_sd: dict) -> list[tuple[str, str]]:
    """The blends worth scoring: the two candidates best on val, and the best with `iterative`
    (the tie's hedge, `choose`); finite scores and names without BLEND only."""
    ranked = sorted((name for name, value in rmse_in_sd.items() if np.isfinite(value) and BLEND not in name),
                    key=rmse_in_sd.get)
    pairs = [(ranked[0], ranked[1])] if len(ranked) >= 2 else []
    if ranked and PREFERRED in ranked[2:]:
        pairs.append((ranked[0], PREFERRED))
    return pairs


def feature_scale(masked: ad.AnnData, rows: np.ndarray) -> np.ndarray:
    """Each feature's sd over the observed entries of `rows` (held-out ones hidden), a block of
    features at a time; 1 where a feature has no spread to measure: the unit its val errors are
    counted in, so that every feature weighs alike in the choice, whatever its unit."""
    scale = np.ones(masked.n_vars)
    for columns, values in observed_column_blocks(masked, rows):
        counts = np.isfinite(values).sum(axis=0)
        with warnings.catch_warnings():  # a feature with < 2 observed entries: NaN, made 1 below
            warnings.simplefilter("ignore", RuntimeWarning)
            sd = np.nanstd(values, axis=0, ddof=1) if len(values) else np.full(values.shape[1], np.nan)
        scale[columns] = np.where((counts > 1) & (sd > 0) & np.isfinite(sd), sd, 1.0)
    return scale


def val_baseline_fills(masked: ad.AnnData, seed: int, max_train_rows: int | None = MAX_TRAIN_ROWS,
                       rows: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """(each imputation baseline's fill of the choice rows `rows` (default `choice_rows`), file
    order; the training rows each was fit on): evaluate's own `fit_numeric_fills`, fit on the
    train rows (held-out entries hidden), on a view in which the val rows take the place of the
    test rows and the test rows are left out. The slow baselines (kNN, MICE, MissForest, MAGIC)
    fit on a seeded subsample of at most `max_train_rows` train rows, as `omicsgen baselines`
    does (the config's evaluate.max_train_rows default): uncapped, MissForest alone took 70 s of
    110 on 7,000 cells, and the cap moves their val RMSE by about the spread between seeds."""
    rows = choice_rows(masked, seed, max_train_rows) if rows is None else rows
    keep = split_rows(masked, ["train", CHOICE_SPLIT])
    view = masked[keep].copy()
    view.obs["split"] = view.obs["split"].astype(str).replace({CHOICE_SPLIT: "test"})
    fills, _skipped, fit_rows = bm.fit_numeric_fills(view, seed, max_train_rows, fill_rows=rows[keep])
    return fills, fit_rows


def _imputed_rows(path, rows: np.ndarray) -> np.ndarray:
    """The rows `rows` of layers["imputed"] of a model's imputed.h5ad, read alone (not its
    counts, draws and intervals)."""
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as handle:
        return dense(read_elem(handle["layers"]["imputed"])[rows], np.float64)


def _rmse(filled_rows: np.ndarray, truth_rows: np.ndarray, held_rows: np.ndarray) -> float:
    diff = np.asarray(filled_rows, dtype=np.float64)[held_rows] - truth_rows[held_rows]
    return float(np.sqrt(np.mean(diff**2))) if np.isfinite(diff).all() else float("inf")


# A tie on the val entries goes to sklearn's default IterativeImputer (the `iterative` baseline), and
# failing that to the best candidate's blend with it:
# val entries are held out at random, but native NAs are often low values (below detection).
# A regression fills beyond the observed range; kNN, forests and SVD (clipped) cannot. On
# limit-of-detection NAs with known values it was as good as or better than every baseline that
# tied it on val (docs/small-data.md).
PREFERRED = "iterative"


def _within_noise(squared: dict, preferred: str, best: str) -> bool:
    """Whether `preferred`'s mean squared val error exceeds `best`'s by at most two standard
    errors of the paired per-entry differences."""
    if preferred == best or preferred not in squared or best not in squared or len(squared[best]) < 2:
        return False
    difference = squared[preferred] - squared[best]
    if not np.isfinite(difference).all():
        return False
    return bool(difference.mean() <= 2 * difference.std(ddof=1) / np.sqrt(len(difference)))


def choose(scores: dict, method: str, where) -> tuple[str, str]:
    """(the candidate, why) from the val scores (RMSE in each feature's sd; on X's scale when
    that is all there is), or the forced `method`."""
    rmse = scores.get("rmse_in_sd") or scores["rmse"]
    unit = "in each feature's sd" if scores.get("rmse_in_sd") else "on X's scale"
    if method != "auto":
        singles = {name for name in rmse if BLEND not in name}
        if rmse and method not in rmse and not all(part in singles for part in method.split(BLEND)):
            raise InputError(where, f"complete: unknown method {method!r}",
                             hint=f"candidates: {', '.join(sorted(rmse))}; 'a{BLEND}b' blends two of them")
        return method, f"set by the user (--method {method})"
    if not rmse:
        return "knn", ("no held-out entry falls in the train or val rows, so no method could be compared: "
                       "k nearest neighbours, a robust default")
    ranked = sorted(rmse, key=rmse.get)
    best = ranked[0]
    runner = f"; next {ranked[1]} {rmse[ranked[1]]:.4g}" if len(ranked) > 1 else ""
    if _within_noise(scores.get("squared_in_sd", {}), PREFERRED, best):
        return PREFERRED, (f"{best} had the lowest RMSE {unit} on {scores['n_entries']} held-out entries of the train "
                           f"and val rows ({rmse[best]:.4g}), but {PREFERRED} ({rmse[PREFERRED]:.4g}) is within two standard "
                           "errors of it (paired), and a tie goes to sklearn's IterativeImputer: a regression can "
                           "fill beyond the observed range, where values missing for being low or high lie "
                           "(the test rows took no part in the choice)")
    hedge = next((name for name in rmse if set(name.split(BLEND)) == {best, PREFERRED}), None)
    if hedge and _within_noise(scores.get("squared_in_sd", {}), hedge, best):
        return hedge, (f"{best} had the lowest RMSE {unit} on {scores['n_entries']} held-out entries of the train and val rows "
                       f"({rmse[best]:.4g}) and {PREFERRED} was beyond the noise ({rmse[PREFERRED]:.4g}), but their mean "
                       f"{hedge} ({rmse[hedge]:.4g}) is within two standard errors of it (paired): a tie goes to the "
                       f"candidate nearest {PREFERRED}, whose regression reaches values missing for being low or high "
                       "(the test rows took no part in the choice)")
    part = _tied_part(scores.get("squared_in_sd", {}), rmse, best)
    if part:
        return part, (f"{best} had the lowest RMSE {unit} on {scores['n_entries']} held-out entries of the train and val rows "
                      f"({rmse[best]:.4g}), but its part {part} ({rmse[part]:.4g}) is within two standard errors of "
                      "it (paired): a blend fills only where it beats its parts beyond the noise "
                      "(the test rows took no part in the choice)")
    return best, (f"lowest RMSE {unit} on {scores['n_entries']} held-out entries of the train and val rows: {best} "
                  f"{rmse[best]:.4g}{runner} (the test rows took no part in the choice)")


def _tied_part(squared: dict, rmse: dict, best: str) -> str | None:
    """The better part of a blend `best` (without `iterative`: that one is the tie's hedge) when it
    is within the noise of the blend: the simpler candidate keeps the tie. On a metabolite table
    with the measurements behind its NAs known, the VAE and AE's mean beat the VAE by 0.003 sd on
    72 val entries, and filled the NAs with a relative squared error of 0.130 where the VAE alone
    gave 0.063 (docs/small-data.md)."""
    parts = best.split(BLEND)
    if len(parts) < 2 or PREFERRED in parts:
        return None
    tied = [part for part in parts if _within_noise(squared, part, best)]
    return min(tied, key=rmse.get) if tied else None


# ---------------------------------------------------------------------------- refit and fill


def all_rows(masked: ad.AnnData) -> ad.AnnData:
    """masked.h5ad with nothing held out: every observed value is seen (native NAs stay NaN)."""
    full = masked.copy()
    full.layers.pop("heldout", None)
    meta(full).pop("mask", None)
    full.X = dense(full.X, np.float64)
    return full


def refit_and_fill(masked, chosen: str, runs: dict, seed: int, trainer: dict, n_draws: int, record: dict):
    """(filled X on the prepared scale, {"sd", "lower", "upper"} or None)."""
    full = all_rows(masked)
    if BLEND in chosen:
        return _refit_blend(full, chosen.split(BLEND), runs, seed, trainer, n_draws, record)
    return _refit_one(full, chosen, runs, seed, trainer, n_draws, record)


def _refit_one(full: ad.AnnData, chosen: str, runs: dict, seed: int, trainer: dict, n_draws: int, record: dict):
    """One model or baseline refit on `full` (all_rows) and filled."""
    if chosen in runs:
        return _refit_model(full, runs[chosen], seed, trainer, n_draws, record)
    record["refit"] = f"the {chosen} baseline fit on all {full.n_obs} rows with every observed entry"
    record["uncertainty"] = "none: a baseline gives one value per entry"
    return baseline_fill(full, chosen, seed), None


def _refit_blend(full: ad.AnnData, parts: list[str], runs: dict, seed: int, trainer: dict, n_draws: int, record: dict):
    """Each part refit and filled on its own, then averaged. The spread, where a part draws
    imputations, is that part's draws moved to centre on the blend: the blend has no draws of
    its own, and halving them (the other part held fixed) would claim a certainty it lacks."""
    fills, spread, refits, uncertainty = [], None, [], []
    for part in parts:
        own: dict = {}
        fill, part_spread = _refit_one(full, part, runs, seed, trainer, n_draws, own)
        fills.append(fill)
        refits.append(own["refit"])
        uncertainty.append(f"{part}: {own['uncertainty']}")
        if part_spread is not None and spread is None:
            spread, drawn = part_spread, fill
    blended = np.mean(fills, axis=0)
    if spread is not None:
        shift = blended - drawn
        spread = {"sd": spread["sd"], "lower": spread["lower"] + shift, "upper": spread["upper"] + shift}
    record["refit"] = "the mean of " + "; and ".join(refits)
    record["uncertainty"] = ("the drawing part's spread, centred on the blend; " if spread is not None else "none; ") + "; ".join(uncertainty)
    return blended, spread


def baseline_fill(full: ad.AnnData, name: str, seed: int) -> np.ndarray:
    """`name` fit on every row, filling every row's NaN."""
    values = dense(full.X, np.float64)
    if name in SERIES:
        series = full.obs["series"].astype(str).to_numpy()
        times = full.obs["time"].to_numpy(dtype=np.float64)
        return bm.interpolate_series(values, series, times, bm.feature_means(values), name)
    if name == "svd":
        return bm.svd_impute(values)
    if name == "magic":
        return bm.magic_impute(values, seed=seed)
    fits = {"mean": bm.mean_impute, "median": bm.median_impute, "knn": bm.knn_impute}
    if name in fits:
        return fits[name](values, values)
    seeded = {"iterative": bm.iterative_impute, "mice": bm.mice_impute, "missforest": bm.missforest_impute}
    return seeded[name](values, values, seed=seed)


def _refit_model(full: ad.AnnData, paths: dict, seed: int, trainer: dict, n_draws: int, record: dict):
    """Train the chosen model's family and settings again on every row, for the number of
    epochs its validated run found best, then fill (and draw) with it."""
    # torch and the models here, not at the top: ~5 s to import, and only a chosen model needs them
    import torch

    from .models.registry import load_model_for, training_record
    from .train import train

    params = json.loads(training_record(paths["checkpoint"])["params"])
    epochs = best_epochs(Path(paths["checkpoint"]).parent / "metrics.csv")
    settings = {**params["trainer"], **{k: v for k, v in trainer.items() if k in ("accelerator", "devices", "precision")},
                "max_epochs": epochs, "patience": epochs, "size_to_data": False}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "all_rows.h5ad"
        full.obs["split"] = "train"
        write_h5ad(full, data)
        checkpoint = train(data, Path(tmp) / "model", params["family"], params["hparams"], settings, seed)
        model = load_model_for(checkpoint, full, data)
    values = dense(full.X, np.float64)
    observed = ~np.isnan(values)
    filled = model.impute(values, observed, obs=full.obs)
    record["refit"] = (f"{params['family']} with its recorded settings, trained on all {full.n_obs} rows for "
                       f"{epochs} epochs (the best epoch of its validated run)")
    spread = None
    if n_draws > 0 and getattr(model, "can_draw_imputations", False):
        draws = model.impute_draws(values, observed, n_draws, torch.Generator().manual_seed(seed), obs=full.obs)
        lower, upper = np.quantile(draws, [(1 - INTERVAL) / 2, (1 + INTERVAL) / 2], axis=0)
        spread = {"sd": np.where(observed, 0.0, draws.std(axis=0)), "lower": lower, "upper": upper}
        record["uncertainty"] = f"sd and central {INTERVAL:.0%} interval of {n_draws} draws from the model"
    else:
        record["uncertainty"] = f"none: the {params['family']} family gives one value per entry"
    return filled, spread


def best_epochs(metrics_csv: Path) -> int:
    """Epochs up to and including the one with the lowest val loss (the weights train kept)."""
    log = pd.read_csv(metrics_csv)
    column = "val_loss" if "val_loss" in log and log["val_loss"].notna().any() else "train_loss"
    return int(log.loc[log[column].idxmin(), "epoch"]) + 1


# ---------------------------------------------------------------------------- back onto the input


def to_input_scale(x: np.ndarray, prepared: ad.AnnData) -> np.ndarray:
    """Undo preprocess's scaling / normalisation so the fills sit on the input's own scale."""
    scale = str(meta(prepared).get("x_scale", "as_given"))
    if scale.endswith("_minmax"):
        x = x * prepared.var["minmax_range"].to_numpy() + prepared.var["minmax_min"].to_numpy()
    elif scale.endswith("_scaled"):
        x = x * prepared.var["std"].to_numpy() + prepared.var["mean"].to_numpy()
    if scale.startswith(LOG2_INTENSITIES):
        x = np.maximum(np.exp2(x) - 1, 0.0)  # intensities are >= 0 (io.expression checks)
    if scale.startswith("log1p_normalised"):
        target = float(json.loads(meta(prepared)["provenance"]["preprocess"]["params"])["params"].get("target_sum", 1e4))
        x = np.expm1(x) * prepared.obs["library_size"].to_numpy()[:, None] / target
    return x


def _place(completed: ad.AnnData, masked: ad.AnnData, fill: np.ndarray, spread, record: dict) -> None:
    """Fills at the native NAs of the rows and features the method saw; what it did not see is
    filled with the feature's observed mean (and counted); a feature with no value stays NA."""
    rows = completed.obs_names.get_indexer(masked.obs_names)
    cols = completed.var_names.get_indexer(masked.var_names)
    x = completed.X
    native = np.isnan(x)
    empty = native.all(axis=0)  # no value to learn from: any fill would be invented
    block = to_input_scale(np.asarray(fill, dtype=np.float64), masked)
    sub = (native & ~empty[None, :])[np.ix_(rows, cols)]
    target = x[np.ix_(rows, cols)]
    target[sub] = block[sub]
    x[np.ix_(rows, cols)] = target
    if spread is not None:
        lower, upper = to_input_scale(spread["lower"], masked), to_input_scale(spread["upper"], masked)
        layers = {"imputed_sd": np.zeros(x.shape), "imputed_lower": x.copy(), "imputed_upper": x.copy()}
        for key, values in (("imputed_sd", (upper - lower) / 2 / 1.6449), ("imputed_lower", lower), ("imputed_upper", upper)):
            part = layers[key][np.ix_(rows, cols)]
            part[sub] = values[sub]
            layers[key][np.ix_(rows, cols)] = part
        completed.layers.update({k: v.astype(np.float32) for k, v in layers.items()})
        record["imputed_sd"] = "half the 90% interval / 1.645 on the input's scale (the sd where the scale is linear)"
    outside = np.isnan(x)
    means = np.nanmean(np.where(empty[None, :], 0.0, x), axis=0)
    fallback = outside & ~empty[None, :]
    x[fallback] = np.broadcast_to(means, x.shape)[fallback]
    completed.layers["filled"] = native & ~np.isnan(x)
    record["n_filled"] = int(completed.layers["filled"].sum())
    record["n_filled_outside_model"] = int(fallback.sum())
    if fallback.any():
        record["outside_model"] = "rows or features preprocessing left out: filled with the feature's observed mean"
    record["features_without_values"] = [str(v) for v in completed.var_names[empty]]
    record["n_left_missing"] = int(np.isnan(x).sum())


def _record(completed: ad.AnnData, record: dict, chosen: str, why: str, method: str) -> None:
    from .decisions import record_decision
    from .report.decisions import KINDS

    meta(completed)["completion"] = json.dumps(record, sort_keys=True, default=float)
    kind = KINDS.get(record["kind"], "no missing value")
    record_decision(completed, "method that fills the native missing values", f"{chosen} ({kind})", why,
                    "config complete: {method: NAME}, or omicsgen complete --method NAME (auto: the choice on held-out entries)")
    LOG.info("completed: %s filled %d native missing values (%s)", chosen, record.get("n_filled", 0), why)

