"""Masking: a recorded, reproducible set of held-out observed entries."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from omicsgen import alphabet as alph
from omicsgen.errors import InputError
from omicsgen.ingest import ingest
from omicsgen.mask import mask
from omicsgen.preprocess import preprocess


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_data):
    folder = tmp_path_factory.mktemp("mask")
    paths = {}
    for name, modality in [("cells", "expression"), ("ww", "sequence")]:
        ingest(tiny_data[name], folder / f"{name}.i.h5ad", name, modality)
        preprocess(folder / f"{name}.i.h5ad", folder / f"{name}.p.h5ad", {"n_top_genes": 100},
                   {"val": 0.1, "test": 0.2}, 0)
        paths[name] = folder / f"{name}.p.h5ad"
    return paths


def test_expression_mask_rate_and_record(tmp_path, prepared):
    mask(prepared["cells"], tmp_path / "m.h5ad", rate=0.2, mechanism="mcar", seed=1)
    adata = ad.read_h5ad(tmp_path / "m.h5ad")
    held = adata.layers["heldout"]
    assert held.dtype == bool and 0.17 < held.mean() < 0.23
    info = adata.uns["omicsgen"]["mask"]
    assert info["n_heldout"] == held.sum() and info["slot"] == "layers" and info["rate"] == 0.2
    # the truth stays in X, so scoring can use it; zeros are held out too (not "nonzero only")
    assert (adata.X[held] == 0).any() and (adata.X[held] > 0).any()


def test_sequence_mask_only_content_positions(tmp_path, prepared):
    mask(prepared["ww"], tmp_path / "m.h5ad", rate=0.3, mechanism="mcar", seed=1)
    adata = ad.read_h5ad(tmp_path / "m.h5ad")
    held, tokens = adata.obsm["heldout"], adata.obsm["tokens"]
    assert held.any() and (tokens[held] >= alph.GAP).all()


def test_same_seed_same_mask(tmp_path, prepared):
    for name in ("a", "b"):
        mask(prepared["cells"], tmp_path / f"{name}.h5ad", rate=0.1, mechanism="mcar", seed=7)
    a, b = (ad.read_h5ad(tmp_path / f"{n}.h5ad").layers["heldout"] for n in "ab")
    np.testing.assert_array_equal(a, b)


def test_unknown_mechanism(tmp_path, prepared):
    with pytest.raises(InputError, match="unknown mask mechanism 'sometimes'"):
        mask(prepared["cells"], tmp_path / "m.h5ad", rate=0.1, mechanism="sometimes", seed=0)
    assert not (tmp_path / "m.h5ad").exists()


def test_mnar_holds_out_low_values_and_mar_follows_another_gene(tmp_path, prepared):
    truth = ad.read_h5ad(prepared["cells"]).X
    mask(prepared["cells"], tmp_path / "mnar.h5ad", rate=0.2, mechanism="mnar", seed=0)
    mnar = ad.read_h5ad(tmp_path / "mnar.h5ad").layers["heldout"]
    mask(prepared["cells"], tmp_path / "mcar.h5ad", rate=0.2, mechanism="mcar", seed=0)
    mcar = ad.read_h5ad(tmp_path / "mcar.h5ad").layers["heldout"]
    assert 0.15 < mnar.mean() < 0.25
    assert truth[mnar].mean() < 0.7 * truth[mcar].mean()
    mask(prepared["cells"], tmp_path / "mar.h5ad", rate=0.2, mechanism="mar", seed=0)
    assert 0.15 < ad.read_h5ad(tmp_path / "mar.h5ad").layers["heldout"].mean() < 0.25


def test_spans_are_contiguous(tmp_path, prepared):
    mask(prepared["ww"], tmp_path / "s.h5ad", rate=0.2, mechanism="span", seed=0, span_length=5)
    held = ad.read_h5ad(tmp_path / "s.h5ad").obsm["heldout"].astype(int)
    starts = (np.diff(held, axis=1, prepend=0) == 1).sum()
    assert held.sum() > 2 * starts  # runs, not isolated positions
    with pytest.raises(InputError, match="unknown mask mechanism 'mnar' for sequence data"):
        mask(prepared["ww"], tmp_path / "x.h5ad", rate=0.2, mechanism="mnar", seed=0)
