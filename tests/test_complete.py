"""complete: the user's table back, every native NA filled by the method best on val entries."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from omicsgen.complete import BLEND, blend_pairs, choose, complete, val_baseline_fills, val_scores
from omicsgen.impute import impute
from omicsgen.ingest import ingest
from omicsgen.mask import mask
from omicsgen.preprocess import preprocess
from omicsgen.train import train

TRAINER = {"max_epochs": 4, "batch_size": 64, "accelerator": "cpu", "patience": 4, "size_to_data": False}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The Wisconsin breast-cancer table (scikit-learn's copy, first 300 of 569 x 30) with a limit-of-detection
    NA pattern (low values missing more often, 4%) and one feature never measured; a VAE."""
    from sklearn.datasets import load_breast_cancer

    folder = tmp_path_factory.mktemp("complete")
    truth = load_breast_cancer(as_frame=True).frame.drop(columns="target").iloc[:300].astype(np.float32)
    truth.index = [f"s{i}" for i in range(len(truth))]
    rng = np.random.default_rng(0)
    z = ((truth - truth.mean()) / truth.std()).to_numpy()
    weight = 1 / (1 + np.exp(2 * z))
    table = truth.mask(rng.random(truth.shape) < 0.04 * weight / weight.mean())
    table["never_measured"] = np.nan
    table.to_csv(folder / "bc.csv", index_label="sample")
    ingest(folder / "bc.csv", folder / "ingested.h5ad", "bc", "expression", orientation="samples_as_rows")
    preprocess(folder / "ingested.h5ad", folder / "prepared.h5ad", {"scale": "zscore"}, {"val": 0.15, "test": 0.2}, 0)
    mask(folder / "prepared.h5ad", folder / "masked.h5ad", 0.1, "mcar", 0)
    checkpoint = train(folder / "masked.h5ad", folder / "vae", "vae", {}, TRAINER, 0)
    impute(folder / "masked.h5ad", checkpoint, folder / "vae" / "imputed.h5ad", 0, n_draws=0)
    runs = {"vae": {"imputed": folder / "vae" / "imputed.h5ad", "checkpoint": checkpoint}}
    return folder, truth, table, runs


def test_every_native_na_filled_by_the_val_choice(run):
    folder, truth, table, runs = run
    complete(folder / "ingested.h5ad", folder / "masked.h5ad", runs, folder / "completed.h5ad", 0, n_draws=0)
    out = ad.read_h5ad(folder / "completed.h5ad")
    assert list(out.obs_names) == list(table.index) and list(out.var_names) == list(table.columns)
    given = table.to_numpy()
    seen = ~np.isnan(given)
    assert np.array_equal(out.X[seen], given[seen])  # the user's own values untouched
    record = json.loads(out.uns["omicsgen"]["completion"])
    scores = record["val_rmse_in_sd"]
    assert {"vae", "mean", "knn", "iterative", "mice", "svd"} <= set(scores) == set(record["val_rmse"])
    assert {"mean", "knn", "mice", "svd"} <= set(record["val_baseline_fit_rows"]) <= set(scores)
    best = min(scores, key=scores.get)
    assert record["chosen"] == best or (record["chosen"] == "iterative" and "two standard errors" in record["why"])
    assert "val rows" in record["why"] and "in each feature's sd" in record["why"]
    # every NA filled but the feature with no value at all, which stays NA and is named
    assert record["features_without_values"] == ["never_measured"]
    assert np.isnan(out.X[:, -1]).all() and not np.isnan(out.X[:, :-1]).any()
    assert out.layers["filled"].sum() == record["n_filled"] == int(np.isnan(given[:, :-1]).sum())
    # on the input's scale (preprocess z-scored), and far better than the feature means
    missing = np.isnan(given[:, :-1])
    true = truth.to_numpy()[missing]
    error = np.sum((out.X[:, :-1][missing] - true) ** 2) / np.sum(true**2)
    means = np.broadcast_to(np.nanmean(given[:, :-1], axis=0), missing.shape)[missing]
    assert error < 0.5 * np.sum((means - true) ** 2) / np.sum(true**2)
    decisions = json.loads(out.uns["omicsgen"]["decisions"])
    assert decisions[-1]["value"].startswith(record["chosen"]) and "--method" in decisions[-1]["setting"]


def test_choice_never_reads_test_rows(run):
    folder, _, _, runs = run
    masked = ad.read_h5ad(folder / "masked.h5ad")
    before = val_scores(masked, runs, 0)
    test = (masked.obs["split"] == "test").to_numpy()
    masked.X[test] = masked.X[test] + 100.0  # wreck the test rows' truth
    after = val_scores(masked, runs, 0)
    assert after["rmse"] == before["rmse"] and after["rmse_in_sd"] == before["rmse_in_sd"]
    assert all(np.array_equal(after["squared_in_sd"][name], errors) for name, errors in before["squared_in_sd"].items())


def test_choice_scores_the_rows_a_candidate_was_fit_on(run):
    """The refit fills the NAs of rows it trained on: a candidate exact on the val rows' held-out
    entries but far off on the train rows' (a network that fills new rows well and its own
    training rows badly) is scored on both and loses to the feature means."""
    folder, _, _, runs = run
    masked = ad.read_h5ad(folder / "masked.h5ad")
    imputed = ad.read_h5ad(runs["vae"]["imputed"])
    split = masked.obs["split"].to_numpy()
    fill = np.asarray(imputed.layers["imputed"], dtype=np.float64)
    truth = np.asarray(masked.X, dtype=np.float64)
    spread = np.nanstd(truth, axis=0)
    fill[split == "val"] = truth[split == "val"]
    fill[split == "train"] = truth[split == "train"] + 3 * spread
    imputed.layers["imputed"] = fill.astype(np.float32)
    imputed.write_h5ad(folder / "val_only.h5ad")
    scores = val_scores(masked, {"val_only": {"imputed": folder / "val_only.h5ad"}}, 0)
    assert scores["rmse_in_sd"]["val_only"] > 2 * scores["rmse_in_sd"]["mean"]
    assert choose(scores, "auto", "here")[0] != "val_only"
    n_train_held = int(np.asarray(masked.layers["heldout"], bool)[split == "train"].sum())
    assert scores["n_entries"] > n_train_held  # the train rows' entries and the val rows'


def test_choice_weighs_every_feature_alike_whatever_its_unit(run):
    """The choice reads errors in each feature's sd on the train rows: a feature recorded in
    units 1,000 times larger leaves the feature-mean fill's score as it was, while its RMSE on
    X's scale becomes that feature's alone."""
    folder, _, _, _ = run
    masked = ad.read_h5ad(folder / "masked.h5ad")
    before = val_scores(masked, {}, 0)
    masked.X[:, 0] = masked.X[:, 0] * 1000.0
    after = val_scores(masked, {}, 0)
    for name in ("mean", "median"):
        assert after["rmse_in_sd"][name] == pytest.approx(before["rmse_in_sd"][name], rel=1e-5)
        assert after["rmse"][name] > 5 * before["rmse"][name]
    chosen, why = choose(after, "auto", "here")
    assert chosen == min(after["rmse_in_sd"], key=after["rmse_in_sd"].get) or "two standard errors" in why
    assert "sd" in why


def _scores(squared: dict) -> dict:
    return {"rmse": {k: float(np.sqrt(np.mean(v))) for k, v in squared.items()},
            "rmse_in_sd": {k: float(np.sqrt(np.mean(v))) for k, v in squared.items()},
            "squared_in_sd": squared, "n_entries": 400}


def test_a_val_tie_goes_to_sklearns_iterative_imputer():
    """Val entries are held out at random, native NAs are often low values: when the best
    candidate beats `iterative` by no more than two paired standard errors, `iterative` fills
    (it extrapolates beyond the observed range); a clear win still wins."""
    rng = np.random.default_rng(0)
    base = rng.chisquare(1, 400)
    noise = rng.normal(0, 0.5, 400)
    tied = {"iterative": base + noise + 0.02, "knn": base + noise[::-1], "mean": base + 1.0}
    assert min(_scores(tied)["rmse_in_sd"], key=_scores(tied)["rmse_in_sd"].get) == "knn"
    chosen, why = choose(_scores(tied), "auto", "here")
    assert chosen == "iterative" and "knn had the lowest" in why and "two standard errors" in why
    clear = {"iterative": base + 0.5, "knn": base, "mean": base + 1.0}
    assert choose(_scores(clear), "auto", "here")[0] == "knn"
    # failing `iterative`, a tie goes to the best's blend with it; a clear win still wins
    hedged = {**clear, "knn+iterative": base + noise - noise.mean() + 0.02}  # 0.02 worse, 2 s.e. = 0.05
    chosen, why = choose(_scores(hedged), "auto", "here")
    assert chosen == "knn+iterative" and "nearest iterative" in why
    assert choose(_scores({**clear, "knn+iterative": base + 0.3}), "auto", "here")[0] == "knn"
    assert choose(_scores(tied), "knn", "here")[0] == "knn"  # a forced method is never overruled


def test_a_blend_within_the_noise_of_its_part_gives_way_to_it():
    """A blend of two models fills only where it beats its better part beyond two paired standard
    errors; the better part within the noise fills instead; a blend with `iterative` stays the tie's hedge."""
    rng = np.random.default_rng(1)
    base = rng.chisquare(1, 400)
    noise = rng.normal(0, 0.5, 400)
    far = {"iterative": base + 1.0, "mean": base + 2.0}
    hair = {**far, "vae": base + noise - noise.mean() + 0.02, "ae": base + 0.4, "vae+ae": base}
    chosen, why = choose(_scores(hair), "auto", "here")
    assert chosen == "vae" and "vae+ae had the lowest" in why and "beats its parts beyond the noise" in why
    clear = {**far, "vae": base + 0.3, "ae": base + 0.4, "vae+ae": base}
    assert choose(_scores(clear), "auto", "here")[0] == "vae+ae"
    hedge = {**far, "iterative": base + 0.3, "vae": base + noise - noise.mean() + 0.02, "vae+iterative": base}
    assert choose(_scores(hedge), "auto", "here")[0] == "vae+iterative"


def test_slow_baselines_fit_on_capped_train_rows(run):
    """The val choice fits kNN, MICE, MissForest and MAGIC on a seeded subsample of the train
    rows, as `omicsgen baselines` does; mean, median and SVD on every one; same seed, same fills."""
    folder = run[0]
    masked = ad.read_h5ad(folder / "masked.h5ad")
    n_train, cap = int((masked.obs["split"] == "train").sum()), 50
    fills, fit_rows = val_baseline_fills(masked, 0, max_train_rows=cap)
    assert fit_rows["missforest"] == fit_rows["knn"] == fit_rows["mice"] == cap
    assert fit_rows["mean"] == fit_rows["svd"] == n_train and set(fills) == set(fit_rows)
    again, _ = val_baseline_fills(masked, 0, max_train_rows=cap)
    assert all(np.array_equal(fills[name], again[name]) for name in fills)


def test_a_forced_model_is_refit_on_all_rows_with_uncertainty(run):
    folder, truth, table, runs = run
    complete(folder / "ingested.h5ad", folder / "masked.h5ad", runs, folder / "forced.h5ad", 0,
             trainer={"accelerator": "cpu"}, n_draws=8, method="vae")
    out = ad.read_h5ad(folder / "forced.h5ad")
    record = json.loads(out.uns["omicsgen"]["completion"])
    assert record["kind"] == "model" and "all 300 rows" in record["refit"]
    filled = out.layers["filled"]
    assert (out.layers["imputed_sd"][filled] > 0).all() and (out.layers["imputed_sd"][~filled] == 0).all()
    assert (out.layers["imputed_lower"][filled] <= out.X[filled]).mean() > 0.8
    assert (out.layers["imputed_upper"][filled] >= out.X[filled]).mean() > 0.8


def test_the_two_best_candidates_blended_are_one_more_candidate(run):
    """The mean of the two best fills on val is scored on the same entries: its squared errors are
    those of the mean fill, so its RMSE is at most the mean of the two RMSEs (convexity)."""
    folder, _, _, runs = run
    scores = val_scores(ad.read_h5ad(folder / "masked.h5ad"), runs, 0)
    singles = {k: v for k, v in scores["rmse_in_sd"].items() if BLEND not in k}
    ranked = sorted(singles, key=singles.get)
    pairs = blend_pairs(singles)
    assert pairs[0] == (ranked[0], ranked[1])
    # the best with `iterative` too, when iterative is not already one of the two
    assert pairs[1:] == ([] if "iterative" in ranked[:2] else [(ranked[0], "iterative")])
    assert [k for k in scores["rmse_in_sd"] if BLEND in k] == [BLEND.join(pair) for pair in pairs]
    for first, second in pairs:
        blend = scores["rmse_in_sd"][f"{first}{BLEND}{second}"]
        assert blend <= (singles[first] + singles[second]) / 2 + 1e-12


def test_a_forced_blend_is_the_mean_of_its_parts_refit(run):
    """`--method vae+iterative`: both refit on all rows, the fills averaged, the VAE's draws
    (the part that draws) centred on the blend with their spread kept."""
    folder, _, table, runs = run
    filled = {}
    for method in ("vae", "iterative", f"vae{BLEND}iterative"):
        out = folder / f"forced_{method}.h5ad"
        complete(folder / "ingested.h5ad", folder / "masked.h5ad", runs, out, 0, trainer={"accelerator": "cpu"},
                 n_draws=8, method=method)
        filled[method] = ad.read_h5ad(out)
    blend = filled[f"vae{BLEND}iterative"]
    mask = blend.layers["filled"]
    expected = (filled["vae"].X[mask].astype(np.float64) + filled["iterative"].X[mask]) / 2
    assert np.allclose(blend.X[mask], expected, rtol=1e-5, atol=1e-5)
    record = json.loads(blend.uns["omicsgen"]["completion"])
    assert record["kind"] == "blend" and record["refit"].startswith("the mean of vae") and "iterative" in record["refit"]
    assert np.allclose(blend.layers["imputed_sd"][mask], filled["vae"].layers["imputed_sd"][mask], rtol=1e-4)
    assert (blend.layers["imputed_lower"][mask] <= blend.X[mask]).mean() > 0.8
    with pytest.raises(Exception, match="unknown method"):
        complete(folder / "ingested.h5ad", folder / "masked.h5ad", runs, folder / "bad.h5ad", 0, method="vae+nothing")
    assert not (folder / "bad.h5ad").exists()


def test_the_page_says_which_method_filled_the_table(run):
    from omicsgen.report.decisions import completion_section

    folder, _, _, runs = run
    complete(folder / "ingested.h5ad", folder / "masked.h5ad", runs, folder / "page.h5ad", 0, n_draws=0, method="knn")
    section = completion_section(folder / "page.h5ad")
    assert "<b>knn</b> (a baseline, not a model)" in section and "set by the user" in section
    assert "vae" in section and "iterative" in section  # every candidate's val score is listed
    assert "complete: {method: NAME}" in section


def test_a_table_without_missing_values_comes_back_as_given(run, tmp_path):
    folder, _, _, runs = run
    given = ad.read_h5ad(folder / "ingested.h5ad")
    given.X = np.nan_to_num(given.X, nan=1.5)
    given.write_h5ad(tmp_path / "full.h5ad")
    complete(tmp_path / "full.h5ad", folder / "masked.h5ad", runs, tmp_path / "completed.h5ad", 0, n_draws=0)
    out = ad.read_h5ad(tmp_path / "completed.h5ad")
    assert np.array_equal(out.X, given.X) and out.layers["filled"].sum() == 0
    record = json.loads(out.uns["omicsgen"]["completion"])
    assert record["chosen"] == "none" and record["n_native_missing"] == 0 and "val_rmse" not in record
    assert "nothing to fill" in json.loads(out.uns["omicsgen"]["decisions"])[-1]["why"]
