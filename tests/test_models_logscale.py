"""Right-skewed positive features on a log scale inside the Gaussian VAE (models/logscale.py)."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
from test_models import make_expression, make_timecourse

from omicsgen.generate import generate
from omicsgen.impute import impute
from omicsgen.models.logscale import fit_log_scale, normality
from omicsgen.models.registry import training_record
from omicsgen.train import train


def test_only_skewed_measurements_that_the_log_makes_gaussian_are_chosen():
    rng = np.random.default_rng(0)
    n = 300
    lognormal = np.exp(rng.normal(3.0, 1.0, n))
    spike = np.where(rng.random(n) < 0.6, 4.0, 4.0 + rng.exponential(1.0, n))  # a detection floor and a tail
    log_level = 6 + rng.exponential(1.0, n)  # a log-expression level with a right tail: already a log
    zeros = np.where(rng.random(n) < 0.3, 0.0, lognormal)  # zeros beside a lognormal: log(x + shift)
    x = np.column_stack([lognormal, rng.normal(size=n), rng.integers(0, 2, n), spike, lognormal * 1e-6,
                         -lognormal, log_level, zeros]).astype(np.float32)
    observed = np.ones_like(x, dtype=bool)
    observed[rng.random(n) < 0.3, 4] = False  # missing entries do not stop it
    use, offset, floor, top = fit_log_scale(x, observed)
    # normal, a 0 / 1 code, a spike at a floor, negative values and a mildly skewed level: no log
    assert use.tolist() == [True, False, False, False, True, False, False, True]
    assert offset[0] == 0 and floor[0] == x[:, 0].min() / 2  # every value > 0: log x itself
    assert offset[7] < 0 and (x[:, 7] - offset[7] >= 2 * floor[7] * 0.999).all()  # zeros: a shift
    assert np.isclose(np.exp(top[0]) + offset[0], x[:, 0].max(), rtol=1e-4)
    logged = np.log(x[:, 0] - offset[0])
    assert normality(logged[:, None])[0] < 0.5 * normality(x[:, :1].astype(np.float64))[0]


def test_normality_is_zero_for_gaussian_quantiles_and_ignores_nan():
    from scipy.stats import norm

    column = norm.ppf((np.arange(1, 101) - 0.375) / 100.25)
    with_nan = np.concatenate([column, [np.nan] * 20])
    assert normality(column[:, None])[0] < 1e-9
    assert normality(np.column_stack([with_nan, np.exp(with_nan)]))[0] < 1e-9
    assert normality(np.exp(with_nan)[:, None])[0] > 0.05


def skewed_expression(n_cells: int = 300) -> ad.AnnData:
    """make_expression with gene0 a lognormal (median ~20, long right tail) tied to gene1."""
    data = make_expression(n_cells=n_cells)
    x = np.asarray(data.X)
    signal = np.nan_to_num(x[:, 1] - np.nanmean(x[:, 1])) / np.nanstd(x[:, 1])
    rng = np.random.default_rng(1)
    gene0 = np.exp(3.0 + 0.8 * signal + 0.6 * rng.normal(size=n_cells)).astype(np.float32)
    x[:, 0] = np.where(np.isnan(x[:, 0]), np.nan, gene0)
    data.X = x
    return data


@pytest.mark.parametrize("log_skewed", [True, False])
def test_a_lognormal_feature_keeps_its_shape_in_samples_and_fills(tmp_path, log_skewed):
    """On X's own scale a Gaussian draws a lognormal feature symmetric, negatives included; on
    the log scale its samples stay positive and right-skewed, and its fills stay in range."""
    data = skewed_expression()
    data.write_h5ad(tmp_path / "masked.h5ad")
    ckpt = train(tmp_path / "masked.h5ad", tmp_path / "vae", "vae", {"hidden_dim": 32, "log_skewed": log_skewed},
                 {"max_epochs": 30}, seed=0)
    samples = np.asarray(ad.read_h5ad(generate(tmp_path / "masked.h5ad", ckpt, tmp_path / "s.h5ad", 600, seed=0)).X)[:, 0]
    train_rows = (data.obs["split"] == "train").to_numpy()
    real = np.asarray(data.X)[train_rows, 0]
    real = real[~np.isnan(real)]
    sample_skew = float(((samples - samples.mean()) ** 3).mean() / samples.std() ** 3)
    if not log_skewed:  # the behaviour the log scale fixes: this test fails without it
        assert (samples <= 0).mean() > 0.02 and abs(sample_skew) < 1.0
        return
    assert (samples > 0).all() and sample_skew > 1.0
    record = training_record(ckpt)  # the choice is recorded for the page, with its setting's name
    params = json.loads(record["params"]) if isinstance(record["params"], str) else record["params"]
    assert params["sized_for_data"]["log_skewed"].startswith("1 of 30 features on a log scale: gene0")
    assert 0.7 < np.median(samples) / np.median(real) < 1.4
    filled = ad.read_h5ad(impute(tmp_path / "masked.h5ad", ckpt, tmp_path / "i.h5ad", seed=0))
    fills = np.asarray(filled.layers["imputed"])[np.asarray(data.layers["heldout"])[:, 0], 0]
    assert (fills > 0).all() and (fills <= real.max() * 1.001).all()
    truth = skewed_expression().X[np.asarray(data.layers["heldout"])[:, 0], 0]
    assert np.sqrt(np.mean((fills - truth) ** 2)) < 0.9 * np.std(real)  # better than the feature's mean


def test_series_offsets_read_a_persons_level_on_the_log_scale(tmp_path):
    """Time courses: a row's fill moves by its series' mean residual over its other time points
    (`series_offsets`), computed on the model's scale, so it works for a logged gene too. Each
    person has their own level of each gene, which no other gene tells."""
    data = make_timecourse(n_series=40, n_steps=8, n_genes=12, seed=3)
    rng = np.random.default_rng(4)
    person = data.obs["series"].astype("category").cat.codes.to_numpy()
    x = (rng.normal(0, 2, size=(person.max() + 1, 12))[person] + 0.2 * rng.normal(size=(len(person), 12))).astype(np.float32)
    x[:, 0] = np.exp(x[:, 0] / 2)  # a right-skewed positive gene: fit on a log scale
    x[np.isnan(np.asarray(data.X))] = np.nan
    data.X = x
    data.write_h5ad(tmp_path / "tc.h5ad")
    held = np.asarray(data.layers["heldout"])
    errors = {}
    for offsets in (True, False):
        ckpt = train(tmp_path / "tc.h5ad", tmp_path / str(offsets), "vae", {"hidden_dim": 16, "series_offsets": offsets},
                     {"max_epochs": 40, "size_to_data": False}, seed=0)
        fills = np.asarray(ad.read_h5ad(impute(tmp_path / "tc.h5ad", ckpt, tmp_path / f"{offsets}.h5ad", seed=0)).layers["imputed"])
        assert np.isfinite(fills).all() and (fills[:, 0] > 0).all()
        errors[offsets] = np.sqrt(np.mean((fills - x)[held] ** 2)), np.sqrt(np.mean((fills - x)[held[:, 0], 0] ** 2))
    params = training_record(ckpt)["params"]
    params = json.loads(params) if isinstance(params, str) else params
    assert params["sized_for_data"]["log_skewed"].startswith("1 of 12 features on a log scale: gene0")
    assert errors[True][0] < 0.5 * errors[False][0] and errors[True][1] < 0.5 * errors[False][1]


def test_no_feature_is_logged_twice_after_preprocess_logged_the_intensities():
    """Intensities reach the VAE as log2(x + 1) (preprocess): its log_skewed chooses no feature
    and says why; the same values as plain normalised data get gene0 on a log scale."""
    from omicsgen.models.vae import VAE

    chosen = {}
    for scale in ("intensities", "normalised"):
        data = skewed_expression()
        data.uns["omicsgen"]["input_scale"] = scale
        chosen[scale] = VAE.from_data(data, hidden_dim=16, log_skewed=True).data_choices["log_skewed"]
    assert chosen["intensities"] == "no feature (log2 intensities)"
    assert chosen["normalised"].startswith("1 of 30 features on a log scale: gene0")
