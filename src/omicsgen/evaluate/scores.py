"""Entry points: score one model's outputs (`evaluate`) or the baselines (`baselines`) into JSON.

The keys are documented in docs/scores.md. Imputation and generation are scored on the test
split only: models fit on train and stop early on val, so only test rows were never seen.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
from threadpoolctl import threadpool_limits

from ..alphabet import GAP, MISSING
from ..errors import InputError
from ..progress import timed
from ..provenance import write_json
from . import baseline_methods, data, metrics, scoring
from .baseline_methods import Forecaster

SCORED_SPLIT = "test"
DRAWS_KEY = "imputation_draws"  # imputed.h5ad: draws at the unobserved entries (omicsgen.impute)
# tokens (n x L), observed (n x L bool) -> n x L log-probabilities, NaN where not scored
LogLikelihood = Callable[[np.ndarray, np.ndarray], np.ndarray]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """The config's `evaluate:` section. `max_rows`: test rows scored (a seeded subsample above
    it; None = all); `max_train_rows`: training rows the slow baselines fit on; `bootstrap`:
    resamples of the 95% intervals of the headline scores (0 = none); `c2st_rows`: rows a side
    the classifier two-sample test's averaged balanced draws target on a small test split
    (`metrics.c2st_repeats`; 0, or any value up to the rows a side, = a single draw);
    `pca_scale`: the features of the PCA that MMD and the c2st of expression-like data work in,
    raw or z-scored (auto: z-scored when in mixed units, `scoring.pca_units`)."""

    max_rows: int | None = data.MAX_ROWS
    max_train_rows: int | None = data.MAX_TRAIN_ROWS
    bootstrap: int = data.BOOTSTRAP_RESAMPLES
    c2st_rows: int = metrics.C2ST_ROWS
    pca_scale: str = "auto"


def single_threaded(function):
    """Run scoring with one BLAS/OpenMP thread: multi-threaded reductions round differently with
    the number of cores a job gets (a laptop, a SLURM slot), and scores must be reproducible to
    the byte whatever the machine. The matrices scored here are small enough not to miss threads."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        # torch is limited only when something already imported it (a checkpoint's model):
        # importing it here would cost a second of CPU for nothing (issue 13).
        torch = sys.modules.get("torch")
        threads = torch.get_num_threads() if torch else None
        if torch:
            torch.set_num_threads(1)
        try:
            with threadpool_limits(limits=1):
                return function(*args, **kwargs)
        finally:
            if torch:
                torch.set_num_threads(threads)

    return wrapper


@single_threaded
def evaluate(
    data_path,
    imputed_path,
    samples_path,
    out_path,
    checkpoint=None,
    seed: int = 0,
    *,
    model: str | None = None,
    forecast_fn: Forecaster | None = None,
    likelihood_fn: LogLikelihood | None = None,
    settings: Settings = Settings(),
    reference_path=None,
) -> dict:
    """Score a model's imputation, samples and (time course) forecasts; write and return scores.json.

    `data_path` is masked.h5ad (truth, mask, split). `imputed_path` or `samples_path` may be None
    for a family that cannot impute (a GAN) or sample (GAIN): that section is left out and
    `not_scored` says why. `model` defaults to the name of the folder holding the outputs.
    Time courses are forecast with `forecast_fn`, else with the model in `checkpoint`; a model
    that cannot forecast (no `forecast` method) gets no forecast section. When imputed.h5ad holds
    imputation draws (`uns["imputation_draws"]`), their calibration is scored too.
    `reference_path`: the dataset's reference.json (`reference`, written by `baselines`), whose
    real-data reference is copied in rather than computed again for every model.

    Only the scored test rows (`data.scored_rows`) and the rows of the generation frame (at most
    `settings.max_rows` train rows) are read from either file: a million-row input is never
    held whole.
    """
    rows = Rows.of(data_path, seed, settings)
    adata = data.read_rows(data_path, rows.read)
    modality = data.modality(adata)
    scores = {
        "dataset": data.dataset(adata),
        "model": model or Path(imputed_path or samples_path or out_path).parent.name,
        "modality": modality,
    }
    not_scored = {}
    if imputed_path is not None:
        imputed = data.read_rows(imputed_path, rows.read)
        _check_same_rows(adata, imputed, imputed_path)
        _guard(scores, not_scored, "imputation", lambda: _score_imputation(adata, imputed, seed, settings.bootstrap))
        draws = imputed.uns.get(DRAWS_KEY)
        if draws is not None and modality != "sequence" and "imputation" in scores:
            scores["calibration"] = _score_calibration(adata, draws, imputed_path, rows.read)
    else:
        not_scored["imputation"] = _why_not(checkpoint, "impute")
    if samples_path is not None:
        samples, n_generated = _read_samples(samples_path, modality, seed)
        known = None if reference_path is None else _read_reference(reference_path, scores["dataset"], rows)
        _guard(scores, not_scored, "generation", lambda: _score_generation(adata, samples, samples_path, seed, settings,
                                                                           n_generated, known))
    else:
        not_scored["generation"] = _why_not(checkpoint, "sample")
    scores["protocol"] = protocol(adata, seed) | rows.protocol()
    if modality == "timecourse":
        forecaster = forecast_fn or _model_forecaster(checkpoint)
        if forecaster is not None:
            _guard(scores, not_scored, "forecast", lambda: scoring.ForecastTask(adata, SCORED_SPLIT).score(forecaster))
    if modality == "sequence":
        likelihood = likelihood_fn or _model_likelihood(checkpoint)
        if likelihood is not None:
            _guard(scores, not_scored, "likelihood", lambda: _score_likelihood(adata, likelihood))
    if not_scored:
        scores["not_scored"] = not_scored
    return _write(scores, out_path)


@single_threaded
def baselines(data_path, out_path, seed: int = 0, n_samples: int = scoring.COMPARE_ROWS, settings: Settings = Settings(),
              reference_path=None) -> dict:
    """Score every baseline with the same keys as a model; write and return baselines/scores.json,
    and with `reference_path` the dataset's real-data reference there too (`reference`).

    Generation baselines draw `n_samples` rows, as many as the models generate. They are scored on
    the same test rows as the models (`data.scored_rows`); mean, median and SVD fit on every
    training row, kNN, MICE, MissForest and MAGIC on at most `settings.max_train_rows` of them
    (`protocol` records both). A baseline the data are too small for is skipped with its reason
    (`not_scored`), never with a traceback."""
    real = None
    if reference_path is not None:
        with timed(log, "the real-data reference (train rows scored as if generated)"):
            real = reference(data_path, seed, settings)
    rows = Rows.of(data_path, seed, settings, all_train=True)
    # raw counts are scored on the test rows only: not read for the (maybe million) training rows
    adata = data.read_rows(data_path, rows.read, skip_layers={"counts"})
    modality = data.modality(adata)
    space = None  # the PCA space of the numeric generation scores, in words
    if modality == "sequence":
        methods, fit_rows = _sequence_baselines(adata, seed, n_samples, settings)
    else:
        methods, fit_rows, space = _numeric_baselines(adata, seed, n_samples, settings, data.read_rows(data_path, rows.scored))
    baseline_protocol = rows.protocol() | {"max_train_rows": settings.max_train_rows, "baseline_fit_rows": fit_rows}
    if space:
        baseline_protocol["pca_space"] = space
    result = {"dataset": data.dataset(adata), "modality": modality, "methods": methods, "protocol": baseline_protocol}
    if real is not None:  # written only once everything is scored: a failed job leaves neither file
        _write(real, reference_path)
    return _write(result, out_path)


def reference(data_path, seed: int = 0, settings: Settings = Settings()) -> dict:
    """The dataset's real-data reference of generation: its train split scored as if it had been
    generated, on the rows and with the settings of `evaluate`. The same for every model of the
    dataset, so `baselines` writes it once (reference.json) and `evaluate` copies it into each
    model's scores; `protocol` is what evaluate checks it was made the same way."""
    rows = Rows.of(data_path, seed, settings)
    adata = data.read_rows(data_path, rows.read)
    result = {"dataset": data.dataset(adata), "protocol": _reference_protocol(rows, settings)}
    truth, train, test = _generation_truth(adata)
    try:
        scorer = _generation_scorer(adata, settings, seed)(truth[train], truth[test], resamples=settings.bootstrap)
        result["reference_train_vs_test"] = scorer.reference()
    except scoring.TooSmall as err:
        result["not_scored"] = str(err)
    return result


def _reference_protocol(rows: Rows, settings: Settings) -> dict:
    return rows.protocol() | {"pca_scale": settings.pca_scale}


def _read_reference(path, dataset: str, rows: Rows) -> dict | None:
    """The real-data reference in `path` (None when it could not be scored there), after checking
    it was made for this dataset with this run's rows and settings."""
    rerun = "rerun `omicsgen baselines --reference` with this evaluation's --seed and scoring options"
    try:
        made = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"cannot read the reference of generation: {err}", hint=rerun) from err
    if not isinstance(made, dict):
        raise InputError(path, "not a reference.json (a JSON object written by `omicsgen baselines --reference`)")
    expected = _reference_protocol(rows, rows.settings)
    if made.get("dataset") != dataset or made.get("protocol") != _json_ready(expected):
        differs = sorted(k for k in expected if (made.get("protocol") or {}).get(k) != _json_ready(expected[k]))
        raise InputError(path, f"the reference was made for dataset {made.get('dataset')!r} with other scoring settings "
                               f"than this evaluation of {dataset!r} (differs: {', '.join(differs) or 'dataset'})", hint=rerun)
    return made.get("reference_train_vs_test")


@dataclass
class Rows:
    """Which rows of a dataset a scoring job reads: the scored test rows, plus training rows
    (the generation frame: at most max_rows of them; every one for the baselines)."""

    n_test: int
    n_train: int
    scored: np.ndarray
    train: np.ndarray
    settings: Settings
    seed: int

    @classmethod
    def of(cls, path, seed: int, settings: Settings, all_train: bool = False) -> Rows:
        obs, uns = data.read_obs(path)
        split = obs["split"].astype(str).to_numpy()
        series = obs["series"].to_numpy() if uns["omicsgen"].get("modality") == "timecourse" else None
        scored = data.scored_rows(split, seed, settings.max_rows, series)
        train = data.train_rows(split, seed, None if all_train else settings.max_rows)
        return cls(int((split == "test").sum()), int((split == "train").sum()), scored, train, settings, seed)

    @property
    def read(self) -> np.ndarray:
        return np.union1d(self.scored, self.train)

    def protocol(self) -> dict:
        return {
            "max_rows": self.settings.max_rows,
            "n_test_rows": self.n_test,
            "n_scored_rows": len(self.scored),
            "scored_rows_subsampled": len(self.scored) < self.n_test,
            "scored_rows_seed": self.seed,
            "n_train_rows": self.n_train,
            "n_train_rows_read": len(self.train),
            "bootstrap_resamples": self.settings.bootstrap,
            "c2st_rows": self.settings.c2st_rows,
            "ci_level": 0.95,
        }


def _guard(scores: dict, not_scored: dict, section: str, compute) -> None:
    """scores[section] = compute(), or not_scored[section] = why, when the data are too small for it."""
    try:
        with timed(log, f"{section} scored"):
            scores[section] = compute()
    except scoring.TooSmall as err:
        log.warning("%s not scored: %s", section, err)
        not_scored[section] = str(err)


def protocol(adata: ad.AnnData, seed: int) -> dict:
    """How the numbers were made: the mask, the splits used, and what held-out entries include.
    Counts are over the rows read (the scored test rows and the training rows of the frame)."""
    mask, heldout = data.mask_info(adata), data.heldout_mask(adata)
    test = data.split_rows(adata, SCORED_SPLIT)
    result = {
        "mask_mechanism": str(mask["mechanism"]),
        "mask_rate": float(mask["rate"]),
        "mask_seed": int(mask["seed"]),
        "n_heldout": int(heldout.sum()),
        "n_heldout_in_split": int(heldout[test].sum()),
        "split": SCORED_SPLIT,
        "generation_reference_fit_split": "train",
        "seed": int(seed),
    }
    if data.modality(adata) != "sequence":
        truth = data.values(adata)[test][heldout[test]]
        truth = truth[np.isfinite(truth)]
        # Held-out entries are chosen whatever their value (zeros scored like any value) unless the
        # mask was drawn from non-zero entries only.
        nonzero_only = bool(mask.get("nonzero_only", False))
        result["mask_nonzero_only"] = nonzero_only
        result["heldout_includes_zeros"] = not nonzero_only
        result["heldout_zero_fraction"] = float(np.mean(truth == 0)) if truth.size else float("nan")
        # Both protocols side by side: keys without a suffix score all held-out entries, `*_nonzero`
        # keys only those whose true value is not 0.
        result["nonzero_only_keys"] = "*_nonzero"
        counts = _counts_scale(adata, slice(0, 0))  # only whether there are counts, and target_sum
        result["counts_scale"] = counts is not None
        if counts is not None:
            result["counts_target_sum"] = counts[2]
    else:
        result["heldout_likelihood_conditioning"] = "left context, held-out positions hidden"
    return result


# ---------------------------------------------------------------------------- models


def _score_imputation(adata: ad.AnnData, imputed: ad.AnnData, seed: int = 0, resamples: int = 0) -> dict:
    test = data.split_rows(adata, SCORED_SPLIT)
    if not test.any():
        raise scoring.TooSmall("the test split has no rows to score")
    heldout = data.heldout_mask(adata)[test]
    if data.modality(adata) == "sequence":
        filled = data.tokens(imputed, "tokens_imputed")
        return _sequence_imputation(data.tokens(adata)[test], filled[test], heldout, seed, resamples)
    filled = data.dense(imputed.layers["imputed"][test]).astype(np.float64)  # CSR stays sparse until cut
    return _numeric_imputation(data.values(adata)[test], filled, heldout, _counts_scale(adata, test), slice(None), seed, resamples)


def _sequence_imputation(truth, filled, heldout, seed: int = 0, resamples: int = 0) -> dict:
    """Accuracy of recovered residues, with its bootstrap interval over records."""
    scores = metrics.sequence_imputation_accuracy(truth, filled, heldout)
    scored = heldout & (truth != MISSING) & (truth >= GAP)
    correct = (scored & (filled == truth)).sum(axis=1)
    interval = metrics.ratio_bootstrap_interval(correct, scored.sum(axis=1), seed=seed, resamples=resamples)
    return scoring.with_context(scores, {"accuracy": interval}, _imputation_skips(scores))


def _imputation_skips(scores: dict) -> dict:
    return {} if scores["n_scored"] else {"imputation": "no held-out entry with a known value in the scored test rows"}


def _read_samples(samples_path, modality: str, seed: int) -> tuple[ad.AnnData, int | None]:
    """samples.h5ad and how many rows it has. Numeric samples without labels are scored on
    `scoring.subsample`'s rows only, so only those are read (the same rows: the scores agree but
    for rounding in the last bits): a million generated cells are never densified whole.
    Conditional samples (a `label` column) and sequences are read whole; the count is then None
    (the samples' own length)."""
    obs, _ = data.read_obs(samples_path)
    if modality == "sequence" or "label" in obs or len(obs) <= scoring.COMPARE_ROWS:
        return data.read(samples_path), None
    return data.read_rows(samples_path, scoring.subsample(np.arange(len(obs)), seed)), len(obs)


def _score_generation(adata: ad.AnnData, samples: ad.AnnData, samples_path, seed: int, settings: Settings,
                      n_generated: int | None = None, known_reference: dict | None = None) -> dict:
    """Samples against the real test split, the real-data reference (`known_reference` when
    given, else computed), and per label for conditional samples (samples.obs["label"] = the label
    each row was asked for). Every c2st, per label too, targets `settings.c2st_rows` rows a side.
    `n_generated`: the rows generated when `samples` holds only the scored subsample of them
    (`_read_samples`)."""
    truth, train, test = _generation_truth(adata)
    make_scorer = _generation_scorer(adata, settings, seed)
    if data.modality(adata) == "sequence":
        if data.alphabet(samples) != data.alphabet(adata):
            raise ValueError(f"{samples_path}: alphabet {data.alphabet(samples)[0]!r} differs from the data's")
        generated = data.tokens(samples)
    else:
        generated = _samples_in_gene_order(samples, adata, samples_path)
    # Intervals for the whole set only: per-label scores keep their point values.
    scorer = make_scorer(truth[train], truth[test], resamples=settings.bootstrap)
    counted = {} if n_generated is None else {"n_generated": n_generated}
    reference = known_reference if known_reference is not None else scorer.reference()
    generation = {**scorer.score(generated, **counted), "reference_train_vs_test": reference}
    if "label" in samples.obs and "label" in adata.obs:
        requested = samples.obs["label"].astype(str).to_numpy()
        conditional = scoring.conditional_scores(adata, truth, requested, generated, make_scorer, scorer)
        generation["label_accuracy"] = conditional["label_accuracy"]
        generation["reference_train_vs_test"]["label_accuracy"] = conditional["reference_label_accuracy"]
        generation["per_label"] = conditional["per_label"]
    return generation


def _generation_truth(adata: ad.AnnData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The values (tokens, for sequences) generation is scored on, and the train and test rows."""
    truth = data.tokens(adata) if data.modality(adata) == "sequence" else data.values(adata)
    return truth, data.split_rows(adata, "train"), data.split_rows(adata, SCORED_SPLIT)


def _generation_scorer(adata: ad.AnnData, settings: Settings, seed: int):
    """make_scorer(train, test, resamples=0): the generation scorer of this modality and run."""
    if data.modality(adata) == "sequence":
        return functools.partial(scoring.SequenceGenerationScorer, alphabet=data.alphabet(adata), seed=seed,
                                 c2st_rows=settings.c2st_rows)
    return functools.partial(scoring.NumericGenerationScorer, seed=seed, names=list(adata.var_names),
                             c2st_rows=settings.c2st_rows, pca_scale=settings.pca_scale)


def _score_calibration(adata: ad.AnnData, draws: dict, imputed_path, file_rows: np.ndarray) -> dict:
    """Interval coverage of the imputation draws on the held-out test entries. `adata` holds the
    rows `file_rows` of the file; the draws are indexed by the file's rows."""
    truth, heldout = data.values(adata), data.heldout_mask(adata)
    test = data.split_rows(adata, SCORED_SPLIT)
    scored = heldout & test[:, None] & np.isfinite(truth)
    rows, cols = np.asarray(draws["rows"], dtype=np.int64), np.asarray(draws["cols"], dtype=np.int64)
    values = np.asarray(draws["values"], dtype=np.float64)
    stored = rows * truth.shape[1] + cols
    scored_rows, scored_cols = np.nonzero(scored)
    wanted = np.asarray(file_rows, dtype=np.int64)[scored_rows] * truth.shape[1] + scored_cols
    where = np.searchsorted(stored, wanted)
    found = (where < len(stored)) & (stored[np.minimum(where, len(stored) - 1)] == wanted)
    if not found.all() and not (draws.get("sampled", False) and found.any()):
        raise ValueError(f"{imputed_path}: imputation draws miss {int((~found).sum())} held-out test entries")
    # on large data impute keeps a random subset of the entries' draws ("sampled"): score those
    where = where[found]
    true_values, draws_at = truth[scored_rows[found], scored_cols[found]], values[where]
    scores = metrics.interval_calibration(true_values, draws_at)
    # Count data: most held-out truths are 0 and many intervals are [0, 0], which covers them
    # exactly; the non-zero entries show calibration where there is something to predict.
    nonzero = metrics.interval_calibration(true_values[true_values != 0], draws_at[true_values != 0])
    for key in ("coverage_50", "coverage_90", "calibration_error", "n_scored"):
        scores[f"{key}_nonzero"] = nonzero[key]
    return scores


def _why_not(checkpoint, action: str) -> str:
    """Why a model has no imputed.h5ad / samples.h5ad: its family's own reason, if known."""
    if checkpoint is not None:
        from ..models.registry import load_model

        model = load_model(checkpoint)
        if not getattr(model, f"can_{action}", True):
            reason = getattr(model, f"cannot_{action}", "")
            return f"a {model.family} model cannot {action}" + (f": {reason}" if reason else "")
    return f"no {'imputed' if action == 'impute' else 'samples'}.h5ad was given"


def _numeric_imputation(truth, filled, heldout, counts, rows, seed: int = 0, resamples: int = 0) -> dict:
    """Imputation scores on X's scale, plus the counts scale where the data have counts; 95%
    bootstrap intervals over rows of RMSE and MAE."""
    scores = metrics.numeric_imputation_metrics(truth, filled, heldout)
    if counts is not None:
        raw, library_size, target_sum = counts
        scores |= metrics.counts_imputation_metrics(raw[rows], filled, heldout, library_size[rows], target_sum)
    scored = heldout & np.isfinite(truth)
    error = np.where(scored, filled - np.where(scored, truth, 0.0), 0.0)
    n = scored.sum(axis=1)
    intervals = {
        "rmse": metrics.ratio_bootstrap_interval((error**2).sum(axis=1), n, np.sqrt, seed, resamples),
        "mae": metrics.ratio_bootstrap_interval(np.abs(error).sum(axis=1), n, None, seed, resamples),
    }
    return scoring.with_context(scores, intervals, _imputation_skips(scores))


def _counts_scale(adata: ad.AnnData, rows=None) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(counts, library_size, target_sum) when X = log1p(counts / library_size * target_sum):
    expression with layers["counts"], obs["library_size"] and a preprocess target_sum, unscaled.
    With `rows`, only those rows (counts and library sizes), densified alone."""
    if data.modality(adata) != "expression" or "counts" not in adata.layers or "library_size" not in adata.obs:
        return None
    record = data.info(adata).get("provenance", {}).get("preprocess")
    if record is None:
        return None
    params = json.loads(str(record["params"]))
    params = params.get("params", params) if isinstance(params.get("params"), dict) else params
    target_sum = params.get("target_sum")
    if target_sum is None or params.get("scale"):
        return None
    rows = slice(None) if rows is None else rows
    counts = data.dense(adata.layers["counts"][rows]).astype(np.float64)
    return counts, adata.obs["library_size"].to_numpy(dtype=np.float64)[rows], float(target_sum)


def _samples_in_gene_order(samples: ad.AnnData, adata: ad.AnnData, samples_path) -> np.ndarray:
    if set(samples.var_names) != set(adata.var_names):
        raise ValueError(f"{samples_path}: generated genes differ from the data's var_names")
    return data.values(samples[:, adata.var_names])


def _check_same_rows(adata: ad.AnnData, imputed: ad.AnnData, imputed_path) -> None:
    """The imputed file must be a copy of the masked one, or held-out entries would be misaligned."""
    if list(imputed.obs_names) != list(adata.obs_names) or list(imputed.var_names) != list(adata.var_names):
        raise ValueError(f"{imputed_path}: rows or columns differ from the masked data it should copy")


def _model_forecaster(checkpoint) -> Forecaster | None:
    """The checkpoint's model as a Forecaster, or None if the model has no `forecast` method."""
    if checkpoint is None:
        raise ValueError("time course scoring needs the model checkpoint (or forecast_fn) to forecast")
    # Imported here so that scoring other modalities (and the tests) never need the models package.
    from ..models.registry import load_model

    model = load_model(checkpoint)
    if not callable(getattr(model, "forecast", None)):
        return None

    def forecast(history: np.ndarray, times: np.ndarray) -> np.ndarray:
        return np.asarray(model.forecast(history, times[:-1], next_time=float(times[-1])), dtype=np.float64)

    return forecast


def _model_likelihood(checkpoint) -> LogLikelihood | None:
    """The checkpoint's `log_likelihood(tokens, observed)`, or None without checkpoint or method."""
    if checkpoint is None:
        return None
    from ..models.registry import load_model

    model = load_model(checkpoint)
    method = getattr(model, "log_likelihood", None)
    return method if callable(method) else None


def _score_likelihood(adata: ad.AnnData, likelihood: LogLikelihood) -> dict:
    """Per-residue log-likelihood of the held-out test positions given the observed tokens
    (held-out ones hidden as MISSING, natively missing never scored)."""
    truth, heldout = data.tokens(adata), data.heldout_mask(adata)
    test = data.split_rows(adata, SCORED_SPLIT)
    tokens, hidden = truth[test], heldout[test]
    observed = ~hidden & (tokens != MISSING)
    log_probs = np.asarray(likelihood(tokens.copy(), observed), dtype=np.float64)
    if log_probs.shape != tokens.shape:
        raise ValueError(f"log-likelihoods have shape {log_probs.shape}, expected {tokens.shape}")
    return metrics.heldout_log_likelihood(log_probs, hidden & (tokens >= GAP))


# ---------------------------------------------------------------------------- baselines


def _numeric_baselines(adata: ad.AnnData, seed: int, n_samples: int, settings: Settings,
                       scored: ad.AnnData) -> tuple[dict, dict, str | None]:
    """Every training row is read, but only the test rows and the frame's rows are made dense.
    `scored` holds the scored test rows alone, with their raw counts. Returns the methods'
    scores, the rows the slow baselines fit on and the generation scores' PCA space (None when
    generation is not scored)."""
    train, test = data.split_rows(adata, "train"), data.split_rows(adata, SCORED_SPLIT)
    truth_test, heldout_test = data.dense(adata.X[test]).astype(np.float64), data.heldout_rows(adata, test)
    methods: dict[str, dict] = {}
    if baseline_methods.magic_applies(adata) and not baseline_methods.magic_available():
        methods["magic"] = {"not_scored": {"imputation": baseline_methods.MAGIC_MISSING}}
    counts = _counts_scale(scored)
    fills, skipped, fit_rows = baseline_methods.fit_numeric_fills(adata, seed, settings.max_train_rows)
    for name, reason in skipped.items():
        methods.setdefault(name, {}).setdefault("not_scored", {})["imputation"] = reason
    for name, filled in fills.items():
        methods.setdefault(name, {})["imputation"] = _numeric_imputation(
            truth_test, filled, heldout_test, counts, slice(None), seed, settings.bootstrap)  # fmt: skip
    # The generation frame of `evaluate`: the same (at most max_rows) training rows, so a model's
    # and a baseline's MMD and c2st are measured in one PCA space.
    frame = data.train_rows(adata.obs["split"].to_numpy(), seed, settings.max_rows)
    try:
        frame_truth = data.dense(adata.X[frame]).astype(np.float64)
        scorer = scoring.NumericGenerationScorer(frame_truth, truth_test, seed, list(adata.var_names), settings.bootstrap,
                                                 settings.c2st_rows, settings.pca_scale)
    except scoring.TooSmall as err:
        scorer = None
        methods.setdefault("mean", {}).setdefault("not_scored", {})["generation"] = str(err)
    if scorer is not None:
        for name, generated in baseline_methods.numeric_samples(adata, seed, n_samples).items():
            with timed(log, f"baseline {name}: {len(generated)} samples scored"):
                methods.setdefault(name, {})["generation"] = scorer.score(generated)
    if data.modality(adata) == "timecourse":
        task = scoring.ForecastTask(adata, SCORED_SPLIT)
        for name, forecaster in baseline_methods.forecasters(adata).items():
            with timed(log, f"baseline {name}: forecasts scored"):
                methods.setdefault(name, {})["forecast"] = task.score(forecaster)
    return methods, fit_rows, None if scorer is None else scorer.space


def _sequence_baselines(adata: ad.AnnData, seed: int, n_samples: int, settings: Settings) -> tuple[dict, dict]:
    truth, heldout = data.tokens(adata), data.heldout_mask(adata)
    train, test = data.split_rows(adata, "train"), data.split_rows(adata, SCORED_SPLIT)
    methods: dict[str, dict] = {}
    names = ("most_frequent", "markov")
    if not train.any() or not test.any():
        why = f"the baselines need training and test records ({int(train.sum())} train, {int(test.sum())} test)"
        return {name: {"not_scored": {"imputation": why, "generation": why}} for name in names}, {}
    with timed(log, f"baselines {' and '.join(names)}: {int(test.sum())} test records filled and scored"):
        for name, filled in baseline_methods.sequence_fills(adata).items():
            methods.setdefault(name, {})["imputation"] = _sequence_imputation(truth[test], filled, heldout[test], seed,
                                                                              settings.bootstrap)
    scorer = scoring.SequenceGenerationScorer(truth[train], truth[test], data.alphabet(adata), seed, settings.bootstrap,
                                              settings.c2st_rows)
    for name, generated in baseline_methods.sequence_samples(adata, seed, n_samples).items():
        with timed(log, f"baseline {name}: {len(generated)} samples scored"):
            methods.setdefault(name, {})["generation"] = scorer.score(generated)
    for name, likelihood in baseline_methods.sequence_likelihoods(adata).items():
        methods.setdefault(name, {})["likelihood"] = _score_likelihood(adata, likelihood)
    return methods, {name: int(train.sum()) for name in names}


# ---------------------------------------------------------------------------- output


def _write(result: dict, out_path) -> dict:
    result = _json_ready(result)
    write_json(result, out_path)
    return result


def _json_ready(value):
    """Plain JSON types; NaN and infinities (undefined scores) become null, which JSON allows."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
