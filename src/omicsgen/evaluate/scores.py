"""Entry points: score one model's outputs (`evaluate`) or the baselines (`baselines`) into JSON.

The keys are documented in docs/scores.md. Imputation and generation are scored on the test
split only: models fit on train and stop early on val, so only test rows were never seen.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
from threadpoolctl import threadpool_limits

from ..alphabet import GAP, MISSING
from ..provenance import write_json
from . import baseline_methods, data, metrics, scoring
from .baseline_methods import Forecaster

SCORED_SPLIT = "test"
DRAWS_KEY = "imputation_draws"  # imputed.h5ad: draws at the unobserved entries (omicsgen.impute)
# tokens (n x L), observed (n x L bool) -> n x L log-probabilities, NaN where not scored
LogLikelihood = Callable[[np.ndarray, np.ndarray], np.ndarray]


def single_threaded(function):
    """Run scoring with one BLAS/OpenMP thread: multi-threaded reductions round differently with
    the number of cores a job gets (a laptop, a SLURM slot), and scores must be reproducible to
    the byte whatever the machine. The matrices scored here are small enough not to miss threads."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with threadpool_limits(limits=1):
                return function(*args, **kwargs)
        finally:
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
) -> dict:
    """Score a model's imputation, samples and (time course) forecasts; write and return scores.json.

    `data_path` is masked.h5ad (truth, mask, split). `imputed_path` or `samples_path` may be None
    for a family that cannot impute (a GAN) or sample (GAIN): that section is left out and
    `not_scored` says why. `model` defaults to the name of the folder holding the outputs.
    Time courses are forecast with `forecast_fn`, else with the model in `checkpoint`; a model
    that cannot forecast (no `forecast` method) gets no forecast section. When imputed.h5ad holds
    imputation draws (`uns["imputation_draws"]`), their calibration is scored too.
    """
    adata = data.read(data_path)
    modality = data.modality(adata)
    scores = {
        "dataset": data.dataset(adata),
        "model": model or Path(imputed_path or samples_path or out_path).parent.name,
        "modality": modality,
    }
    not_scored = {}
    if imputed_path is not None:
        imputed = data.read(imputed_path)
        _check_same_rows(adata, imputed, imputed_path)
        scores["imputation"] = _score_imputation(adata, imputed)
        draws = imputed.uns.get(DRAWS_KEY)
        if draws is not None and modality != "sequence":
            scores["calibration"] = _score_calibration(adata, draws, imputed_path)
    else:
        not_scored["imputation"] = _why_not(checkpoint, "impute")
    if samples_path is not None:
        scores["generation"] = _score_generation(adata, data.read(samples_path), samples_path, seed)
    else:
        not_scored["generation"] = _why_not(checkpoint, "sample")
    scores["protocol"] = protocol(adata, seed)
    if modality == "timecourse":
        forecaster = forecast_fn or _model_forecaster(checkpoint)
        if forecaster is not None:
            scores["forecast"] = scoring.ForecastTask(adata, SCORED_SPLIT).score(forecaster)
    if modality == "sequence":
        likelihood = likelihood_fn or _model_likelihood(checkpoint)
        if likelihood is not None:
            scores["likelihood"] = _score_likelihood(adata, likelihood)
    if not_scored:
        scores["not_scored"] = not_scored
    return _write(scores, out_path)


@single_threaded
def baselines(data_path, out_path, seed: int = 0, n_samples: int = scoring.COMPARE_ROWS) -> dict:
    """Score every baseline with the same keys as a model; write and return baselines/scores.json.

    Generation baselines draw `n_samples` rows, as many as the models generate."""
    adata = data.read(data_path)
    modality = data.modality(adata)
    score = _sequence_baselines if modality == "sequence" else _numeric_baselines
    methods = score(adata, seed, n_samples)
    result = {"dataset": data.dataset(adata), "modality": modality, "methods": methods}
    return _write(result, out_path)


def protocol(adata: ad.AnnData, seed: int) -> dict:
    """How the numbers were made: the mask, the splits used, and what held-out entries include."""
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
        counts = _counts_scale(adata)
        result["counts_scale"] = counts is not None
        if counts is not None:
            result["counts_target_sum"] = counts[2]
    else:
        result["heldout_likelihood_conditioning"] = "left context, held-out positions hidden"
    return result


# ---------------------------------------------------------------------------- models


def _score_imputation(adata: ad.AnnData, imputed: ad.AnnData) -> dict:
    test = data.split_rows(adata, SCORED_SPLIT)
    heldout = data.heldout_mask(adata)[test]
    if data.modality(adata) == "sequence":
        filled = data.tokens(imputed, "tokens_imputed")
        return metrics.sequence_imputation_accuracy(data.tokens(adata)[test], filled[test], heldout)
    filled = data.dense(imputed.layers["imputed"][test]).astype(np.float64)  # CSR stays sparse until cut
    return _numeric_imputation(data.values(adata)[test], filled, heldout, _counts_scale(adata), test)


def _score_generation(adata: ad.AnnData, samples: ad.AnnData, samples_path, seed: int) -> dict:
    """Samples against the real test split, the real-data reference, and per label for
    conditional samples (samples.obs["label"] = the label each row was asked for)."""
    truth = data.tokens(adata) if data.modality(adata) == "sequence" else data.values(adata)
    train, test = data.split_rows(adata, "train"), data.split_rows(adata, SCORED_SPLIT)
    if data.modality(adata) == "sequence":
        if data.alphabet(samples) != data.alphabet(adata):
            raise ValueError(f"{samples_path}: alphabet {data.alphabet(samples)[0]!r} differs from the data's")
        generated = data.tokens(samples)
        make_scorer = functools.partial(scoring.SequenceGenerationScorer, alphabet=data.alphabet(adata), seed=seed)
    else:
        generated = _samples_in_gene_order(samples, adata, samples_path)
        make_scorer = functools.partial(scoring.NumericGenerationScorer, seed=seed)
    scorer = make_scorer(truth[train], truth[test])
    generation = {**scorer.score(generated), "reference_train_vs_test": scorer.reference()}
    if "label" in samples.obs and "label" in adata.obs:
        requested = samples.obs["label"].astype(str).to_numpy()
        conditional = scoring.conditional_scores(adata, truth, requested, generated, make_scorer, scorer)
        generation["label_accuracy"] = conditional["label_accuracy"]
        generation["reference_train_vs_test"]["label_accuracy"] = conditional["reference_label_accuracy"]
        generation["per_label"] = conditional["per_label"]
    return generation


def _score_calibration(adata: ad.AnnData, draws: dict, imputed_path) -> dict:
    """Interval coverage of the imputation draws on the held-out test entries."""
    truth, heldout = data.values(adata), data.heldout_mask(adata)
    test = data.split_rows(adata, SCORED_SPLIT)
    scored = heldout & test[:, None] & np.isfinite(truth)
    rows, cols = np.asarray(draws["rows"], dtype=np.int64), np.asarray(draws["cols"], dtype=np.int64)
    values = np.asarray(draws["values"], dtype=np.float64)
    stored = rows * truth.shape[1] + cols
    wanted = np.flatnonzero(scored.ravel())
    where = np.searchsorted(stored, wanted)
    found = (where < len(stored)) & (stored[np.minimum(where, len(stored) - 1)] == wanted)
    if not found.all() and not (draws.get("sampled", False) and found.any()):
        raise ValueError(f"{imputed_path}: imputation draws miss {int((~found).sum())} held-out test entries")
    # on large data impute keeps a random subset of the entries' draws ("sampled"): score those
    wanted, where = wanted[found], where[found]
    true_values, draws_at = truth.ravel()[wanted], values[where]
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


def _numeric_imputation(truth, filled, heldout, counts, rows) -> dict:
    """Imputation scores on X's scale, plus the counts scale where the data have counts."""
    scores = metrics.numeric_imputation_metrics(truth, filled, heldout)
    if counts is not None:
        raw, library_size, target_sum = counts
        scores |= metrics.counts_imputation_metrics(raw[rows], filled, heldout, library_size[rows], target_sum)
    return scores


def _counts_scale(adata: ad.AnnData) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(counts, library_size, target_sum) when X = log1p(counts / library_size * target_sum):
    expression with layers["counts"], obs["library_size"] and a preprocess target_sum, unscaled."""
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
    counts = data.dense(adata.layers["counts"]).astype(np.float64)
    return counts, adata.obs["library_size"].to_numpy(dtype=np.float64), float(target_sum)


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


def _numeric_baselines(adata: ad.AnnData, seed: int, n_samples: int) -> dict:
    truth, heldout = data.values(adata), data.heldout_mask(adata)
    train, test = data.split_rows(adata, "train"), data.split_rows(adata, SCORED_SPLIT)
    methods: dict[str, dict] = {}
    if baseline_methods.magic_applies(adata) and not baseline_methods.magic_available():
        methods["magic"] = {"not_scored": {"imputation": baseline_methods.MAGIC_MISSING}}
    counts = _counts_scale(adata)
    for name, filled in baseline_methods.numeric_fills(adata, seed).items():
        methods.setdefault(name, {})["imputation"] = _numeric_imputation(truth[test], filled, heldout[test], counts, test)
    scorer = scoring.NumericGenerationScorer(truth[train], truth[test], seed)
    for name, generated in baseline_methods.numeric_samples(adata, seed, n_samples).items():
        methods.setdefault(name, {})["generation"] = scorer.score(generated)
    if data.modality(adata) == "timecourse":
        task = scoring.ForecastTask(adata, SCORED_SPLIT)
        for name, forecaster in baseline_methods.forecasters(adata).items():
            methods.setdefault(name, {})["forecast"] = task.score(forecaster)
    return methods


def _sequence_baselines(adata: ad.AnnData, seed: int, n_samples: int) -> dict:
    truth, heldout = data.tokens(adata), data.heldout_mask(adata)
    train, test = data.split_rows(adata, "train"), data.split_rows(adata, SCORED_SPLIT)
    methods: dict[str, dict] = {}
    for name, filled in baseline_methods.sequence_fills(adata).items():
        methods.setdefault(name, {})["imputation"] = metrics.sequence_imputation_accuracy(truth[test], filled, heldout[test])
    scorer = scoring.SequenceGenerationScorer(truth[train], truth[test], data.alphabet(adata), seed)
    for name, generated in baseline_methods.sequence_samples(adata, seed, n_samples).items():
        methods.setdefault(name, {})["generation"] = scorer.score(generated)
    for name, likelihood in baseline_methods.sequence_likelihoods(adata).items():
        methods.setdefault(name, {})["likelihood"] = _score_likelihood(adata, likelihood)
    return methods


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
