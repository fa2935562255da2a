"""Masking: a recorded, reproducible set of held-out observed entries."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

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
    assert sp.issparse(adata.layers["heldout"])  # sparse X, sparse mask
    held = dense(adata.layers["heldout"])
    assert held.dtype == bool and 0.17 < held.mean() < 0.23
    info = adata.uns["omicsgen"]["mask"]
    assert info["n_heldout"] == held.sum() and info["slot"] == "layers" and info["rate"] == 0.2
    assert info["nonzero_only"] is False or info["nonzero_only"] == 0
    # the truth stays in X, so scoring can use it; zeros are held out too (not "nonzero only")
    x = dense(adata.X)
    assert (x[held] == 0).any() and (x[held] > 0).any()


def dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def test_sparse_mask_equals_dense_mask(tmp_path, prepared):
    """A CSR X gets the same held-out entries as the same matrix stored dense."""
    dense_copy = ad.read_h5ad(prepared["cells"])
    dense_copy.X = dense_copy.X.toarray()
    dense_copy.write_h5ad(tmp_path / "dense.h5ad")
    for nonzero_only in (False, True):
        mask(prepared["cells"], tmp_path / "s.h5ad", rate=0.1, mechanism="mcar", seed=3, nonzero_only=nonzero_only)
        mask(tmp_path / "dense.h5ad", tmp_path / "d.h5ad", rate=0.1, mechanism="mcar", seed=3, nonzero_only=nonzero_only)
        from_sparse = ad.read_h5ad(tmp_path / "s.h5ad").layers["heldout"]
        from_dense = ad.read_h5ad(tmp_path / "d.h5ad").layers["heldout"]
        assert sp.issparse(from_sparse) and isinstance(from_dense, np.ndarray)
        np.testing.assert_array_equal(from_sparse.toarray(), from_dense)


def test_nonzero_only_holds_out_only_nonzero_entries(tmp_path, prepared):
    mask(prepared["cells"], tmp_path / "nz.h5ad", rate=0.25, mechanism="mcar", seed=0, nonzero_only=True)
    adata = ad.read_h5ad(tmp_path / "nz.h5ad")
    held, x = dense(adata.layers["heldout"]), dense(adata.X)
    assert held.any() and (x[held] != 0).all()
    assert 0.21 < held.sum() / (x != 0).sum() < 0.29  # the rate applies to the nonzero entries
    info = adata.uns["omicsgen"]["mask"]
    assert bool(info["nonzero_only"]) and info["n_heldout"] == held.sum()
    mask(prepared["cells"], tmp_path / "mnar.h5ad", rate=0.25, mechanism="mnar", seed=0, nonzero_only=True)
    mnar = ad.read_h5ad(tmp_path / "mnar.h5ad")
    assert (dense(mnar.X)[dense(mnar.layers["heldout"])] != 0).all()
    with pytest.raises(InputError, match="nonzero_only applies to expression and time courses"):
        mask(prepared["ww"], tmp_path / "x.h5ad", rate=0.2, mechanism="mcar", seed=0, nonzero_only=True)


def test_sequence_mask_only_content_positions(tmp_path, prepared):
    mask(prepared["ww"], tmp_path / "m.h5ad", rate=0.3, mechanism="mcar", seed=1)
    adata = ad.read_h5ad(tmp_path / "m.h5ad")
    held, tokens = adata.obsm["heldout"], adata.obsm["tokens"]
    assert held.any() and (tokens[held] >= alph.GAP).all()


def test_same_seed_same_mask(tmp_path, prepared):
    for name in ("a", "b"):
        mask(prepared["cells"], tmp_path / f"{name}.h5ad", rate=0.1, mechanism="mcar", seed=7)
    a, b = (dense(ad.read_h5ad(tmp_path / f"{n}.h5ad").layers["heldout"]) for n in "ab")
    np.testing.assert_array_equal(a, b)


def test_unknown_mechanism(tmp_path, prepared):
    with pytest.raises(InputError, match="unknown mask mechanism 'sometimes'"):
        mask(prepared["cells"], tmp_path / "m.h5ad", rate=0.1, mechanism="sometimes", seed=0)
    assert not (tmp_path / "m.h5ad").exists()


def test_mnar_holds_out_low_values_and_mar_follows_another_gene(tmp_path, prepared):
    truth = dense(ad.read_h5ad(prepared["cells"]).X)
    mask(prepared["cells"], tmp_path / "mnar.h5ad", rate=0.2, mechanism="mnar", seed=0)
    mnar = dense(ad.read_h5ad(tmp_path / "mnar.h5ad").layers["heldout"])
    mask(prepared["cells"], tmp_path / "mcar.h5ad", rate=0.2, mechanism="mcar", seed=0)
    mcar = dense(ad.read_h5ad(tmp_path / "mcar.h5ad").layers["heldout"])
    assert 0.15 < mnar.mean() < 0.25
    assert truth[mnar].mean() < 0.7 * truth[mcar].mean()
    mask(prepared["cells"], tmp_path / "mar.h5ad", rate=0.2, mechanism="mar", seed=0)
    assert 0.15 < dense(ad.read_h5ad(tmp_path / "mar.h5ad").layers["heldout"]).mean() < 0.25


def test_spans_are_contiguous(tmp_path, prepared):
    mask(prepared["ww"], tmp_path / "s.h5ad", rate=0.2, mechanism="span", seed=0, span_length=5)
    held = ad.read_h5ad(tmp_path / "s.h5ad").obsm["heldout"].astype(int)
    starts = (np.diff(held, axis=1, prepend=0) == 1).sum()
    assert held.sum() > 2 * starts  # runs, not isolated positions
    with pytest.raises(InputError, match="unknown mask mechanism 'mnar' for sequence data"):
        mask(prepared["ww"], tmp_path / "x.h5ad", rate=0.2, mechanism="mnar", seed=0)
