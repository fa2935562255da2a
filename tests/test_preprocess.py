"""Preprocessing: scanpy QC/normalisation/HVG, NaN kept, every removal counted, splits right."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from omicsgen.alphabet import decode
from omicsgen.errors import InputError
from omicsgen.ingest import ingest
from omicsgen.preprocess import preprocess

SPLIT = {"val": 0.2, "test": 0.2}
UNSEEN = Path(__file__).parent / "unseen"


def run(tmp_path, source, modality, params, name="d", **ingest_options):
    ingest(source, tmp_path / f"{name}.ingested.h5ad", name, modality, **ingest_options)
    preprocess(tmp_path / f"{name}.ingested.h5ad", tmp_path / f"{name}.prepared.h5ad", params, SPLIT, seed=0)
    return ad.read_h5ad(tmp_path / f"{name}.prepared.h5ad")


def dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def test_counts_normalised_logged_and_hvg(tmp_path, tiny_data):
    adata = run(tmp_path, tiny_data["cells"], "expression",
                {"min_genes": 10, "min_cells": 5, "target_sum": 1e4, "n_top_genes": 100})
    assert adata.n_vars == 100
    # a sparse input stays sparse (CSR float32) through preprocessing
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32 and sp.issparse(adata.layers["counts"])
    counts = dense(adata.layers["counts"])
    assert np.allclose(counts, np.round(counts)) and counts.max() > 10
    # X = log1p(counts / library_size * 1e4), library size over all genes before selection
    expected = np.log1p(counts / adata.obs["library_size"].to_numpy()[:, None] * 1e4)
    np.testing.assert_allclose(dense(adata.X), expected, rtol=1e-4, atol=1e-4)
    filtered = json.loads(adata.uns["omicsgen"]["filtered"])
    by_step = {r["step"]: r for r in filtered}
    assert by_step["n_top_genes"]["removed_vars"] == 1000 - by_step["min_cells"]["removed_vars"] - 100
    assert set(adata.obs["split"]) == {"train", "val", "test"}
    assert "preprocess" in adata.uns["omicsgen"]["provenance"]


def test_native_missing_values_survive(tmp_path):
    table = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    counts = rng.poisson(5, size=(20, 8)).astype(float)
    counts[3, 2] = np.nan
    lines = ["cell," + ",".join(f"g{j}" for j in range(8))]
    lines += [f"c{i}," + ",".join("NA" if np.isnan(v) else str(int(v)) for v in row) for i, row in enumerate(counts)]
    table.write_text("\n".join(lines) + "\n")
    adata = run(tmp_path, table, "expression", {"min_genes": 1, "min_cells": 1, "n_top_genes": None})
    cell = list(adata.obs_names).index("c3")
    assert np.isnan(adata.X[cell, list(adata.var_names).index("g2")])
    assert np.isnan(adata.X).sum() == 1


def test_filter_removing_everything_is_a_clear_error(tmp_path, tiny_data):
    with pytest.raises(InputError, match="no samples pass the filters min_genes=100000"):
        run(tmp_path, tiny_data["cells"], "expression", {"min_genes": 100000, "filter_max_removed": 1})
    assert not (tmp_path / "d.prepared.h5ad").exists()


def test_detection_filters_that_would_empty_a_sparse_table_are_not_applied(tmp_path):
    """Real OTU counts (78 lung samples, median one detected OTU per sample): the single-cell
    thresholds would keep 10 samples x 1 OTU, so they are not applied and the page says why."""
    from pathlib import Path
    otus = Path(__file__).parent / "unseen" / "lung_otus.tsv"
    params = {"min_genes": 20, "min_cells": 10, "n_top_genes": 256, "filter_max_removed": 0.5}
    adata = run(tmp_path, otus, "expression", params, orientation="genes_as_rows")
    assert adata.n_obs == 78 and adata.n_vars == 256
    skipped = [d for d in json.loads(adata.uns["omicsgen"]["decisions"])
               if d["value"] == "not applied"]
    assert [d["what"] for d in skipped] == ["min_genes filter", "min_cells filter"]
    assert "68 of 78 samples" in skipped[0]["why"] and "filter_max_removed" in skipped[0]["setting"]
    by_step = {r["step"]: r for r in json.loads(adata.uns["omicsgen"]["filtered"])}
    assert by_step["min_genes"]["removed_obs"] == 0 and by_step["min_cells"]["removed_vars"] == 0
    # asked for whatever it removes, the filter applies
    forced = run(tmp_path, otus, "expression", {**params, "filter_max_removed": 1, "n_top_genes": None},
                 name="forced", orientation="genes_as_rows")
    assert forced.n_obs == 10


def test_timecourse_split_by_series_and_genes_by_variance(tmp_path, tiny_data):
    adata = run(tmp_path, tiny_data["flu"], "timecourse", {"n_top_genes": 50, "filter_continuous": True})
    assert adata.n_vars == 50 and adata.uns["omicsgen"]["x_scale"] == "as_given"
    assert (adata.obs.groupby("series", observed=True)["split"].nunique() == 1).all()
    assert set(adata.obs["split"]) == {"train", "val", "test"}


def test_sequence_length_filter_counted(tmp_path):
    fasta = tmp_path / "s.fa"
    fasta.write_text(">a\nACGTACGT\n>b\nACG\n>c\nACGTAC\n>d\nACGTAC\n>e\nTTTTTT\n")
    adata = run(tmp_path, fasta, "sequence", {"min_length": 4, "max_length": 7})
    assert list(adata.obs["id"]) == ["c", "d", "e"]
    assert adata.obsm["tokens"].shape == (3, 6)
    removed = json.loads(adata.uns["omicsgen"]["filtered"])[0]
    assert removed["removed_obs"] == 2
    assert adata.uns["omicsgen"]["duplicate_sequences"] == 1


def test_split_is_reproducible(tmp_path, tiny_data):
    first = run(tmp_path, tiny_data["peaks"], "sequence", {}, name="a")
    second = run(tmp_path, tiny_data["peaks"], "sequence", {}, name="b")
    assert (first.obs["split"] == second.obs["split"]).all()
    assert (first.obs["split"] == "test").sum() == 24


def test_mitochondrial_filter_counted(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.poisson(20, size=(30, 6))
    counts[:5, 0] = 500  # five cells dominated by a mitochondrial gene
    genes = ["mt-Co1", "g1", "g2", "g3", "g4", "g5"]
    table = tmp_path / "m.csv"
    table.write_text("cell," + ",".join(genes) + "\n" + "".join(
        f"c{i}," + ",".join(map(str, row)) + "\n" for i, row in enumerate(counts)))
    adata = run(tmp_path, table, "expression", {"max_pct_mito": 50, "n_top_genes": None})
    assert adata.n_obs == 25 and not any(name in adata.obs_names for name in ("c0", "c4"))
    removed = {r["step"]: r for r in json.loads(adata.uns["omicsgen"]["filtered"])}
    assert removed["max_pct_mito"]["removed_obs"] == 5
    with pytest.raises(InputError, match="no gene name starts with 'MT-X'"):
        run(tmp_path, table, "expression", {"max_pct_mito": 50, "mito_prefix": "MT-X"}, name="e")


def test_crop_and_window_keep_every_position(tmp_path):
    fasta = tmp_path / "w.fa"
    fasta.write_text(">long\nACGTACGTAC\n>short\nGGG\n>four\nCCCC\n")
    cropped = run(tmp_path, fasta, "sequence", {"length_mode": "crop", "fixed_length": 4}, name="c")
    assert cropped.obsm["tokens"].shape == (3, 4) and list(cropped.obs["length"]) == [4, 3, 4]
    windows = run(tmp_path, fasta, "sequence", {"length_mode": "window", "fixed_length": 4, "window_step": 3}, name="w")
    assert list(windows.obs["id"]) == ["long:1-4", "long:4-7", "long:7-10", "short:1-3", "four:1-4"]
    assert decode(windows.obsm["tokens"], windows.uns["alphabet"]["symbols"]) == ["ACGT", "TACG", "GTAC", "GGG", "CCCC"]
    assert list(windows.obs["source_id"]) == ["long"] * 3 + ["short", "four"]
    with pytest.raises(InputError, match="needs fixed_length"):
        run(tmp_path, fasta, "sequence", {"length_mode": "window"}, name="x")


def _16s_records(n):
    """Real 16S rRNA genes (tests/unseen, not shipped): (id, sequence) of the first n."""
    from Bio import SeqIO

    with gzip.open(UNSEEN / "bacteria_16s.fa.gz", "rt") as handle:
        return [(r.id, str(r.seq)) for r, _ in zip(SeqIO.parse(handle, "fasta"), range(n))]


def test_too_few_or_too_long_records_become_windows(tmp_path):
    """One or two records cannot be split into train, validation and test, and a contig cannot be
    one row: under the default `pad` they are cut into windows of 200, and the page says why.
    Three records stay whole, and so does whatever the config asks for."""
    genes = _16s_records(3)
    one = tmp_path / "contig.fa"
    one.write_text(">contig\n" + "".join(seq for _, seq in genes) + "\n")
    windows = run(tmp_path, one, "sequence", {}, name="one")
    total = sum(len(seq) for _, seq in genes)
    assert windows.n_obs == -(-total // 200) and windows.obsm["tokens"].shape[1] == 200
    assert set(windows.obs["split"]) == {"train", "val", "test"}
    said = json.loads(windows.uns["omicsgen"]["decisions"])
    assert any(d["what"] == "length_mode" and "1 record" in d["why"] for d in said)

    three = tmp_path / "three.fa"
    three.write_text("".join(f">{name}\n{seq}\n" for name, seq in genes))
    whole = run(tmp_path, three, "sequence", {}, name="three")
    assert whole.n_obs == 3 and "length_mode" not in whole.uns["omicsgen"]["decisions"]

    chromosome = tmp_path / "chromosome.fa"
    chromosome.write_text(three.read_text() + ">chr\n" + "".join(seq for _, seq in _16s_records(80)) + "\n")
    cut = run(tmp_path, chromosome, "sequence", {}, name="chr")
    assert cut.obsm["tokens"].shape[1] == 200 and "positions long" in cut.uns["omicsgen"]["decisions"]
    kept = run(tmp_path, one, "sequence", {"length_mode": "window", "fixed_length": 500}, name="asked")
    assert kept.obsm["tokens"].shape[1] == 500 and "length_mode" not in kept.uns["omicsgen"]["decisions"]

    tiny = tmp_path / "tiny.fa"
    tiny.write_text(">a\nACGTACGT\n>b\nGGCCA\n")
    with pytest.raises(InputError, match="only 2 rows.*need a row each"):
        run(tmp_path, tiny, "sequence", {}, name="tiny")


def test_deduplicate_removes_and_counts(tmp_path):
    fasta = tmp_path / "d.fa"
    fasta.write_text(">a\nACGT\n>b\nACGT\n>c\nTTTT\n>d\nGGGG\n")
    adata = run(tmp_path, fasta, "sequence", {"deduplicate": True})
    assert list(adata.obs["id"]) == ["a", "c", "d"]
    removed = {r["step"]: r for r in json.loads(adata.uns["omicsgen"]["filtered"])}
    assert removed["deduplicate"]["removed_obs"] == 1


def test_labels_from_header_regex_stratify_the_split(tmp_path):
    fasta = tmp_path / "l.fa"
    records = [(f"r{i}", "kind=" + ("a" if i < 30 else "b"), "ACGT" * (1 + i % 3)) for i in range(40)]
    fasta.write_text("".join(f">{r} {d}\n{s}\n" for r, d, s in records))
    ingest(fasta, tmp_path / "i.h5ad", "l", "sequence", label=r"kind=(\w+)")
    preprocess(tmp_path / "i.h5ad", tmp_path / "p.h5ad", {}, {"val": 0.1, "test": 0.2}, seed=0)
    adata = ad.read_h5ad(tmp_path / "p.h5ad")
    counts = adata.obs.groupby(["label", "split"], observed=False).size()
    assert counts[("a", "test")] == 6 and counts[("b", "test")] == 2
    with pytest.raises(InputError, match="record .r0.: label regex"):
        ingest(fasta, tmp_path / "x.h5ad", "l", "sequence", label=r"type=(\w+)")


def test_label_column_for_tables(tmp_path, tiny_data):
    ingest(tiny_data["flu"], tmp_path / "f.h5ad", "flu", "timecourse", label="condition")
    assert set(ad.read_h5ad(tmp_path / "f.h5ad").obs["label"]) == {"sx", "asx"}
    with pytest.raises(InputError, match="no annotation column named 'sex'"):
        ingest(tiny_data["flu"], tmp_path / "g.h5ad", "flu", "timecourse", label="sex")


def test_sparse_and_dense_inputs_give_the_same_values(tmp_path, tiny_data):
    params = {"min_genes": 10, "min_cells": 5, "n_top_genes": 100}
    from_sparse = run(tmp_path, tiny_data["cells"], "expression", params, name="s")
    ingested = ad.read_h5ad(tmp_path / "s.ingested.h5ad")  # ingest stores count data as CSR
    ingested.X = ingested.X.toarray()
    ingested.write_h5ad(tmp_path / "dense.h5ad")
    preprocess(tmp_path / "dense.h5ad", tmp_path / "dense.prepared.h5ad", params, SPLIT, seed=0)
    from_dense = ad.read_h5ad(tmp_path / "dense.prepared.h5ad")
    assert sp.issparse(from_sparse.X) and not sp.issparse(from_dense.X)
    assert list(from_sparse.var_names) == list(from_dense.var_names)
    np.testing.assert_allclose(dense(from_sparse.X), from_dense.X, rtol=1e-5, atol=1e-6)
    assert (from_sparse.obs["split"] == from_dense.obs["split"]).all()


def breast_cancer_table(path, missing_at=None):
    """The Wisconsin breast-cancer table that scikit-learn ships (569 x 30, not counts)."""
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.drop(columns="target")
    if missing_at is not None:
        frame.iat[missing_at] = np.nan
    frame.index = [f"s{i}" for i in range(len(frame))]
    frame.to_csv(path, index_label="sample")
    return frame


def test_minmax_scales_each_feature_onto_unit_interval(tmp_path):
    frame = breast_cancer_table(tmp_path / "bc.csv", missing_at=(4, 2))
    adata = run(tmp_path, tmp_path / "bc.csv", "expression", {"scale": "minmax", "n_top_genes": None},
                orientation="samples_as_rows")
    assert adata.uns["omicsgen"]["x_scale"] == "as_given_minmax"
    x = adata.X
    assert np.isnan(x).sum() == 1 and np.isnan(x[list(adata.obs_names).index("s4"), 2])
    assert np.nanmin(x, axis=0) == pytest.approx(0.0) and np.nanmax(x, axis=0) == pytest.approx(1.0)
    # min and range in var map X back onto the input's values
    restored = x * adata.var["minmax_range"].to_numpy() + adata.var["minmax_min"].to_numpy()
    truth = frame.loc[adata.obs_names, adata.var_names].to_numpy()
    np.testing.assert_allclose(restored, truth, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputError, match="unknown preprocess scale 'unit'"):
        run(tmp_path, tmp_path / "bc.csv", "expression", {"scale": "unit"}, name="u")


def test_minmax_keeps_sparse_counts_sparse(tmp_path, tiny_data):
    adata = run(tmp_path, tiny_data["cells"], "expression", {"n_top_genes": 50, "scale": "minmax"})
    assert sp.issparse(adata.X) and adata.X.min() == 0 and adata.X.max() == pytest.approx(1.0)
    assert dense(adata.X).max(axis=0) == pytest.approx(1.0, abs=1e-6)


def test_continuous_values_keep_every_feature_unless_asked(tmp_path):
    """min_cells / min_genes / HVG measure counts: a centred continuous table (negative values,
    a native NA) keeps every row and feature with the count filters set, and says so."""
    frame = breast_cancer_table(tmp_path / "bc.csv", missing_at=(4, 2))
    centred = frame - frame.mean()  # many values below 0: "detected in few samples" for every feature
    centred.to_csv(tmp_path / "bc.csv", index_label="sample")
    params = {"min_genes": 20, "min_cells": 400, "n_top_genes": 5}
    adata = run(tmp_path, tmp_path / "bc.csv", "expression", params, orientation="samples_as_rows")
    assert adata.shape == frame.shape and list(adata.var_names) == list(frame.columns)
    assert np.isnan(adata.X).sum() == 1
    decisions = json.loads(adata.uns["omicsgen"]["decisions"])
    assert decisions[-1]["value"] == "none" and "filter_continuous" in decisions[-1]["setting"]
    assert "min_cells=400" in decisions[-1]["why"]
    asked = run(tmp_path, tmp_path / "bc.csv", "expression", {"n_top_genes": 5, "filter_continuous": True},
                name="asked", orientation="samples_as_rows")
    assert asked.n_vars == 5


def test_counts_are_still_filtered(tmp_path, tiny_data):
    adata = run(tmp_path, tiny_data["cells"], "expression", {"min_cells": 5, "n_top_genes": 40})
    decided = [d["what"] for d in json.loads(adata.uns["omicsgen"].get("decisions", "[]"))]
    assert adata.n_vars == 40 and "feature and sample filters on continuous values" not in decided


# --- linear-scale intensities (GEO's GDS507: MAS5 values of an Affymetrix array, unshipped) --------


def test_unlogged_intensities_are_log2_transformed_and_mapped_back(tmp_path):
    """`values: auto` reads GDS507's MAS5 values (up to 10^5) as intensities: preprocess models
    log2(x + 1), the page's decision names GEO2R's test and the setting, and `complete` maps the
    model's scale back onto the input's (the round trip gives the input)."""
    from omicsgen.complete import to_input_scale

    source = UNSEEN / "renal_gds507.soft.gz"
    adata = run(tmp_path, source, "expression", {"scale": "zscore"})
    given = ad.read_h5ad(tmp_path / "d.ingested.h5ad")
    values = json.loads(given.uns["omicsgen"]["decisions"])
    decision = next(d for d in values if d["what"] == "values")
    assert decision["value"] == "intensities" and "GEO2R" in decision["why"] and "'normalised'" in decision["why"]
    assert "intensities" in decision["setting"]
    assert adata.uns["omicsgen"]["x_scale"] == "log2p1_intensities_scaled"
    raw = dense(given[adata.obs_names, adata.var_names].X).astype(np.float64)
    back = to_input_scale(dense(adata.X).astype(np.float64), adata)
    np.testing.assert_allclose(back, raw, rtol=1e-3, atol=1e-2)  # float32 z-scores of the log
    unscaled = run(tmp_path, source, "expression", {}, name="plain")
    assert unscaled.uns["omicsgen"]["x_scale"] == "log2p1_intensities"
    plain = dense(given[unscaled.obs_names, unscaled.var_names].X).astype(np.float64)
    np.testing.assert_allclose(dense(unscaled.X), np.log2(plain + 1), rtol=1e-6)


def test_records_without_a_sequence_are_removed_and_counted(tmp_path):
    """The 45 globins (unshipped) with two records' sequence lines deleted: ingest keeps them and
    says so, preprocess's length filter removes and counts them even at min_length 0; a file of
    headers only stops, saying so."""
    records = (UNSEEN / "globins45.fa").read_text().split(">")[1:]
    emptied = {2, 30}
    text = "".join(">" + (r.splitlines()[0] + "\n" if i in emptied else r) for i, r in enumerate(records))
    (tmp_path / "g.fa").write_text(text)
    ids = [records[i].split()[0] for i in sorted(emptied)]
    adata = run(tmp_path, tmp_path / "g.fa", "sequence", {"min_length": 0})
    ingested = ad.read_h5ad(tmp_path / "d.ingested.h5ad")
    decision = next(d for d in json.loads(ingested.uns["omicsgen"]["decisions"]) if d["what"] == "records without a sequence")
    assert decision["value"].startswith("2 kept") and all(f"'{i}'" in decision["why"] for i in ids)
    assert adata.n_obs == 43 and not set(ids) & set(adata.obs["id"])
    removed = json.loads(adata.uns["omicsgen"]["filtered"])[0]
    assert removed["removed_obs"] == 2 and "[1, any]" in removed["reason"]
    (tmp_path / "ids.fa").write_text("".join(">" + r.splitlines()[0] + "\n" for r in records[:3]))
    with pytest.raises(InputError, match="no record has a sequence"):
        ingest(tmp_path / "ids.fa", tmp_path / "ids.h5ad", "ids", "sequence")
    assert not (tmp_path / "ids.h5ad").exists()


def test_sparse_intensities_stay_sparse_through_the_log(tmp_path):
    """GDS507's values in a CSR h5ad with a tenth of them zero: log2(x + 1) of the stored values,
    zeros stay unstored, and the decision is the dense table's."""
    given = ad.read_h5ad(_ingested_gds507(tmp_path))
    values = dense(given.X)
    values[np.random.default_rng(0).random(values.shape) < 0.1] = 0.0
    ad.AnnData(sp.csr_matrix(values), obs=given.obs[[]], var=given.var[[]]).write_h5ad(tmp_path / "sparse.h5ad")
    adata = run(tmp_path, tmp_path / "sparse.h5ad", "expression", {}, name="sparse")
    assert sp.issparse(adata.X) and adata.uns["omicsgen"]["x_scale"] == "log2p1_intensities"
    assert adata.X.nnz == np.count_nonzero(values)
    rows, cols = given.obs_names.get_indexer(adata.obs_names), given.var_names.get_indexer(adata.var_names)
    np.testing.assert_allclose(dense(adata.X), np.log2(values[np.ix_(rows, cols)] + 1), rtol=1e-6)


def _ingested_gds507(tmp_path) -> Path:
    ingest(UNSEEN / "renal_gds507.soft.gz", tmp_path / "gds.h5ad", "gds", "expression")
    return tmp_path / "gds.h5ad"
