"""Model families without the trainer: the data contract, batching, sampling and imputation rules.

The `make_*` builders make tiny AnnData files in the masked.h5ad layout; test_train.py reuses them.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

from omicsgen.alphabet import FIRST_RESIDUE, GAP, MISSING, PAD, symbols
from omicsgen.batches import InMemoryBatches
from omicsgen.models import FAMILIES, families_for, get_family
from omicsgen.models.base import observed_mask

MOTIF = "GATTACAGATTACA"


# ---- tiny data in the masked.h5ad layout ---------------------------------------------------
def _splits(n: int, rng: np.random.Generator) -> pd.Categorical:
    labels = rng.choice(["train", "val", "test"], size=n, p=[0.7, 0.15, 0.15])
    return pd.Categorical(labels, categories=["train", "val", "test"])


def _omicsgen_uns(modality: str, slot: str, n_heldout: int) -> dict:
    mask = {"key": "heldout", "slot": slot, "mechanism": "mcar", "rate": 0.1, "seed": 0, "n_heldout": n_heldout}
    return {"modality": modality, "dataset": f"tiny_{modality}", "mask": mask}


def _heldout(candidates: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    return candidates & (rng.random(candidates.shape) < rate)


def make_expression(n_cells=400, n_genes=30, rank=3, noise=0.1, seed=0) -> ad.AnnData:
    """Low-rank signal plus noise, 3% NaN, 10% of the rest held out."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n_cells, rank)) @ rng.normal(size=(rank, n_genes))
    x = (2.0 + signal + noise * rng.normal(size=signal.shape)).astype(np.float32)
    x[rng.random(x.shape) < 0.03] = np.nan
    heldout = _heldout(~np.isnan(x), 0.1, rng)
    adata = ad.AnnData(x, obs=pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)]))
    adata.var_names = [f"gene{j}" for j in range(n_genes)]
    adata.obs["split"] = _splits(n_cells, rng)
    adata.layers["heldout"] = heldout
    adata.uns["omicsgen"] = _omicsgen_uns("expression", "layers", int(heldout.sum()))
    return adata


def make_sequences(n=400, length=40, seed=0) -> ad.AnnData:
    """DNA records of 30..40 nt, uniform background with MOTIF planted at a random offset."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, length), dtype=np.int8)
    motif = np.array([FIRST_RESIDUE + "ACGT".index(c) for c in MOTIF], dtype=np.int8)
    lengths = rng.integers(30, length + 1, size=n)
    for i, record_length in enumerate(lengths):
        tokens[i, :record_length] = rng.integers(FIRST_RESIDUE, FIRST_RESIDUE + 4, size=record_length)
        start = rng.integers(0, record_length - len(motif) + 1)
        tokens[i, start : start + len(motif)] = motif
    content = tokens >= FIRST_RESIDUE
    tokens[content & (rng.random(tokens.shape) < 0.02)] = MISSING
    heldout = _heldout(tokens >= GAP, 0.1, rng)
    obs = pd.DataFrame({"id": [f"seq{i}" for i in range(n)], "length": lengths}, index=[f"seq{i}" for i in range(n)])
    adata = ad.AnnData(np.zeros((n, 0), dtype=np.float32), obs=obs)
    adata.obsm["tokens"] = tokens
    adata.obsm["heldout"] = heldout
    adata.obs["split"] = _splits(n, rng)
    adata.uns["alphabet"] = {"name": "dna", "symbols": symbols("dna")}
    adata.uns["omicsgen"] = _omicsgen_uns("sequence", "obsm", int(heldout.sum()))
    return adata


def make_clustered_sequences(n=600, length=30, n_clusters=3, purity=0.8, seed=0) -> ad.AnnData:
    """Fixed-length DNA records from `n_clusters` profiles: each position takes its cluster's base
    with probability `purity`, another base otherwise; obs["label"] names the cluster. All the
    dependence between positions goes through the cluster: what a latent-variable model can learn
    and a per-position frequency model cannot."""
    rng = np.random.default_rng(seed)
    consensus = rng.integers(0, 4, size=(n_clusters, length))
    cluster = rng.integers(0, n_clusters, size=n)
    off = (consensus[cluster] + rng.integers(1, 4, size=(n, length))) % 4
    bases = np.where(rng.random((n, length)) < purity, consensus[cluster], off)
    tokens = (FIRST_RESIDUE + bases).astype(np.int8)
    heldout = _heldout(np.ones_like(tokens, dtype=bool), 0.1, rng)
    ids = [f"seq{i}" for i in range(n)]
    obs = pd.DataFrame({"id": ids, "length": length, "label": [f"cluster{c}" for c in cluster]}, index=ids)
    adata = ad.AnnData(np.zeros((n, 0), dtype=np.float32), obs=obs)
    adata.obsm["tokens"] = tokens
    adata.obsm["heldout"] = heldout
    adata.obs["split"] = _splits(n, rng)
    adata.uns["alphabet"] = {"name": "dna", "symbols": symbols("dna")}
    adata.uns["omicsgen"] = _omicsgen_uns("sequence", "obsm", int(heldout.sum()))
    adata.uns["consensus"] = (FIRST_RESIDUE + consensus).astype(np.int8)
    return adata


def position_frequency_log_p(tokens: np.ndarray, train_rows: np.ndarray, vocab: int = 7) -> np.ndarray:
    """log p(token) per position of a model that knows only each position's token frequencies
    in the train rows (add-one), for every entry of `tokens`."""
    counts = np.ones((tokens.shape[1], vocab))
    for position in range(tokens.shape[1]):
        counts[position] += np.bincount(tokens[train_rows, position], minlength=vocab)[:vocab]
    log_freq = np.log(counts / counts.sum(1, keepdims=True))
    return log_freq[np.arange(tokens.shape[1])[None, :], tokens]


def make_timecourse(n_series=16, n_steps=8, n_genes=12, noise=0.05, seed=0) -> ad.AnnData:
    """Series at irregular times following a gene-specific linear trend; lengths vary."""
    rng = np.random.default_rng(seed)
    slope, offset = rng.normal(size=n_genes), rng.normal(size=n_genes)
    rows, obs = [], []
    split_of_series = np.array(["train"] * (n_series - 4) + ["val"] * 2 + ["test"] * 2)
    for s in range(n_series):
        steps = n_steps - rng.integers(0, 3)
        times = np.sort(rng.choice(np.arange(3 * n_steps), size=steps, replace=False)).astype(float)
        level = offset + rng.normal(scale=0.5, size=n_genes)
        rows.append(level + slope * times[:, None] / 2 + noise * rng.normal(size=(steps, n_genes)))
        obs += [{"series": f"s{s}", "time": t, "split": split_of_series[s]} for t in times]
    x = np.vstack(rows).astype(np.float32)
    x[rng.random(x.shape) < 0.03] = np.nan
    heldout = _heldout(~np.isnan(x), 0.1, rng)
    obs = pd.DataFrame(obs, index=[f"row{i}" for i in range(len(x))])
    obs["split"] = pd.Categorical(obs["split"], categories=["train", "val", "test"])
    adata = ad.AnnData(x, obs=obs)
    adata.var_names = [f"gene{j}" for j in range(n_genes)]
    adata.layers["heldout"] = heldout
    adata.uns["omicsgen"] = _omicsgen_uns("timecourse", "layers", int(heldout.sum()))
    return adata


MAKERS = {"vae": make_expression, "lstm": make_sequences, "gru": make_timecourse}


def _model(family: str, adata: ad.AnnData):
    torch.manual_seed(0)
    return get_family(family).from_data(adata)


# ---- registry and data contract ------------------------------------------------------------
def test_registry_declares_modalities():
    assert set(FAMILIES) == {"vae", "lstm", "gru", "ae", "gain", "wgan"}
    assert set(families_for("sequence")) == {"vae", "lstm", "gru", "wgan"}
    assert set(families_for("timecourse")) == {"vae", "lstm", "gru", "ae", "gain"}
    assert set(families_for("expression")) == {"vae", "ae", "gain", "wgan"}
    for family in FAMILIES.values():
        for data_modality in family.modalities:
            cls = family.model_class(data_modality)
            assert cls.family == family.name and data_modality in cls.modalities
            assert "learning_rate" in family.defaults_for(data_modality)
            assert set(cls.defaults) <= set(family.defaults)
    # One cell type per family, whatever the job: language model or forecaster.
    assert {get_family("lstm").model_class(m).__name__ for m in ("sequence", "timecourse")} == {
        "LSTMLanguageModel", "LSTMForecaster"}
    assert {get_family("gru").model_class(m).__name__ for m in ("sequence", "timecourse")} == {
        "GRULanguageModel", "GRUForecaster"}
    assert FAMILIES["wgan"].can_sample and not FAMILIES["wgan"].can_impute
    assert not FAMILIES["gain"].can_sample and FAMILIES["gain"].can_impute


@pytest.mark.parametrize("family", ["vae", "lstm", "gru"])
def test_tensors_never_carry_heldout_values(family):
    adata = MAKERS[family]()
    truth = adata.obsm["tokens"] if family == "lstm" else adata.X
    hidden = ~observed_mask(adata)
    # Plant a value no model could guess at every unobserved entry; it must not reach a tensor.
    if family == "lstm":
        adata.obsm["tokens"] = np.where(adata.obsm["heldout"], FIRST_RESIDUE, truth).astype(np.int8)
        tensors = get_family(family).tensors(adata, ["train", "val", "test"])
        assert (tensors["tokens"].numpy()[hidden] == MISSING).all()
    else:
        adata.X = np.where(adata.layers["heldout"], 1e6, truth).astype(np.float32)
        tensors = get_family(family).tensors(adata, ["train", "val", "test"])
        assert tensors["x"].abs().max() < 1e5
        assert not torch.isnan(tensors["x"]).any()
        assert int(tensors["observed"].sum()) == int((~hidden).sum())


def test_tensors_select_split_rows():
    adata = make_expression()
    n_train = int((adata.obs["split"] == "train").sum())
    assert len(get_family("vae").tensors(adata, "train")["x"]) == n_train
    gru = get_family("gru").tensors(make_timecourse(), "val")
    assert gru["x"].shape[0] == 2 and (gru["lengths"] >= 6).all()


# ---- batching ----------------------------------------------------------------------------------
def test_batches_cover_every_row_once_per_epoch_in_a_seeded_order():
    tensors = {"a": torch.arange(10), "b": torch.arange(10) * 2}
    batches = InMemoryBatches(tensors, batch_size=4, shuffle=True, seed=3)
    assert len(batches) == 3
    first, second = list(batches), list(batches)
    assert [len(b["a"]) for b in first] == [4, 4, 2]
    assert all((b["b"] == 2 * b["a"]).all() for b in first)
    order = torch.cat([b["a"] for b in first])
    assert sorted(order.tolist()) == list(range(10))
    assert not torch.equal(order, torch.cat([b["a"] for b in second]))  # a new order each epoch
    replay = list(InMemoryBatches(tensors, batch_size=4, shuffle=True, seed=3))
    assert torch.equal(order, torch.cat([b["a"] for b in replay]))
    assert torch.equal(torch.cat([b["a"] for b in InMemoryBatches(tensors, 4)]), torch.arange(10))


def test_batches_reject_ragged_tensors():
    with pytest.raises(ValueError, match="rows"):
        InMemoryBatches({"a": torch.zeros(3), "b": torch.zeros(4)}, batch_size=2)


# ---- imputation keeps observed entries -----------------------------------------------------
@pytest.mark.parametrize("family", ["vae", "gru"])
def test_impute_fills_only_unobserved_entries(family):
    adata = MAKERS[family]()
    observed = observed_mask(adata)
    filled = _model(family, adata).impute(adata.X, observed, obs=adata.obs)
    assert filled.shape == adata.X.shape and filled.dtype == np.float32
    assert np.array_equal(filled[observed], adata.X[observed])
    assert np.isfinite(filled).all()


def test_lstm_impute_fills_with_content_tokens_only():
    adata = make_sequences()
    tokens, observed = adata.obsm["tokens"], observed_mask(adata)
    filled = _model("lstm", adata).impute(tokens, observed)
    assert filled.dtype == np.int8
    assert np.array_equal(filled[observed], tokens[observed])
    assert (filled[~observed] >= GAP).all()


# ---- sampling --------------------------------------------------------------------------------
def test_vae_samples_and_embeds():
    adata = make_expression()
    model = _model("vae", adata)
    samples = model.sample(7, torch.Generator().manual_seed(1))
    assert samples.shape == (7, adata.n_vars) and samples.dtype == np.float32
    assert np.array_equal(samples, model.sample(7, torch.Generator().manual_seed(1)))
    assert model.embed(adata.X).shape == (adata.n_obs, model.hparams.latent_dim)


def test_lstm_samples_valid_records():
    adata = make_sequences()
    model = _model("lstm", adata)
    samples = model.sample(50, torch.Generator().manual_seed(1), temperature=3.0)
    assert samples.shape == (50, 40) and samples.dtype == np.int8
    assert not (samples == MISSING).any() and (samples < len(symbols("dna"))).all()
    for row in samples:  # nothing after the first pad
        ends = np.flatnonzero(row == PAD)
        assert not ends.size or (row[ends[0] :] == PAD).all()


def test_lstm_log_likelihood_scores_heldout_positions():
    adata = make_sequences()
    tokens, observed = adata.obsm["tokens"], observed_mask(adata)
    log_p = _model("lstm", adata).log_likelihood(tokens, observed)
    assert log_p.shape == tokens.shape
    assert np.isfinite(log_p[adata.obsm["heldout"]]).all() and (log_p[adata.obsm["heldout"]] <= 0).all()
    assert np.isnan(log_p[tokens == MISSING]).all()
    after_end = np.cumsum(tokens == PAD, axis=1) > 1
    assert np.isnan(log_p[after_end]).all()


def test_gru_samples_series_and_forecasts():
    adata = make_timecourse()
    model = _model("gru", adata)
    x, obs = model.sample(5, torch.Generator().manual_seed(1))
    assert x.shape == (len(obs), adata.n_vars) and list(obs.columns) == ["series", "time"]
    assert obs["series"].nunique() == 5
    assert all(group.is_monotonic_increasing for _, group in obs.groupby("series")["time"])
    history = adata.X[:4]
    assert model.forecast(history).shape == (adata.n_vars,)
    # Untrained, the forecaster carries the last value forward, barely pulled toward the series mean.
    last, level = history[-1], np.nanmean(history, axis=0)
    seen = ~np.isnan(last)
    gap = np.abs(model.forecast(history) - last)[seen]
    assert (gap <= 0.05 * np.abs(level - last)[seen] + 1e-5).all()
