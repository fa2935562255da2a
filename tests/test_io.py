"""Readers: real formats parsed right, malformed input refused with a message naming the place."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from omicsgen import alphabet as alph
from omicsgen.errors import InputError
from omicsgen.io import guess_format, read_dataset


def write(path, text):
    path.write_text(text)
    return path


# --- sequences -------------------------------------------------------------------------------

def test_fasta_multiline_crlf_lowercase_and_ambiguity(tmp_path):
    path = write(tmp_path / "x.fa", ">r1 first record\r\nACGT\r\nacgn\r\n\r\n>r2\r\nGGCC\r\n")
    adata = read_dataset(path, "sequence")
    assert adata.uns["alphabet"]["name"] == "dna"
    assert list(adata.obs["id"]) == ["r1", "r2"]
    assert adata.obs.loc["r1", "description"] == "first record"
    assert list(adata.obs["length"]) == [8, 4]
    symbols = adata.uns["alphabet"]["symbols"]
    assert alph.decode(adata.obsm["tokens"], symbols) == ["ACGTACGN", "GGCC"]
    assert adata.obsm["tokens"][0, 7] == alph.MISSING
    # GC over known bases only: r1 has A C G T A C G (N excluded) -> 4/7
    assert adata.obs.loc["r1", "gc"] == pytest.approx(4 / 7)


def test_fasta_gzip_and_bgzip_read_alike(tmp_path, tiny_data):
    text = tiny_data["peaks"].read_text()
    with gzip.open(tmp_path / "x.fa.gz", "wt") as handle:
        handle.write(text)
    plain = read_dataset(tiny_data["peaks"], "sequence")
    gzipped = read_dataset(tmp_path / "x.fa.gz", "sequence")
    np.testing.assert_array_equal(plain.obsm["tokens"], gzipped.obsm["tokens"])
    assert plain.n_obs == 120 and plain.obsm["tokens"].shape[1] == 200


def test_protein_alignment_keeps_gaps_and_skips_comments(tiny_data):
    adata = read_dataset(tiny_data["ww"], "sequence")
    assert adata.uns["alphabet"]["name"] == "protein"
    assert adata.n_obs == 120
    tokens = adata.obsm["tokens"]
    assert (tokens == alph.GAP).any() and tokens.shape[1] == 44
    assert adata.obs["id"].is_unique


def test_rna_detected(tmp_path):
    adata = read_dataset(write(tmp_path / "r.fa", ">a\nACGUACGU\n>b\nUUUGGG\n"), "sequence")
    assert adata.uns["alphabet"]["name"] == "rna"


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("ACGT\nACGT\n", "does not start with a FASTA header"),
    (">a\nACGT\n>a\nACGA\n>a.2\nACGA\n", "duplicate record id 'a.2' after renaming"),
    (">a\nACGT\n>b\nAC7T\n", "record 'b', position 3"),
    (">a\n\n>b\n", "no record has a sequence"),  # an empty record among others: removed by preprocess
])
def test_malformed_fasta(tmp_path, text, message):
    with pytest.raises(InputError, match=message) as err:
        read_dataset(write(tmp_path / "bad.fa", text), "sequence")
    assert "bad.fa" in str(err.value)


def test_repeated_ids_are_renamed_and_said(tmp_path):
    adata = read_dataset(write(tmp_path / "t.fa", ">Bacteria;Firmicutes;\nACGT\n>x\nACGA\n>Bacteria;Firmicutes;\nACCA\n"), "sequence")
    assert list(adata.obs_names) == ["Bacteria;Firmicutes;", "x", "Bacteria;Firmicutes;.2"]
    decisions = json.loads(adata.uns["omicsgen"]["decisions"])
    assert any(d["what"] == "record ids" and "1 repeated" in d["value"] for d in decisions)


def test_protein_letters_in_dna_file(tmp_path):
    path = write(tmp_path / "p.fa", ">a\nMKVLEQ\n")
    # M, K and V are IUPAC nucleotide codes; L is the first letter no DNA file can hold
    with pytest.raises(InputError, match="record 'a', position 4: character 'L' is not in the dna alphabet"):
        read_dataset(path, "sequence", alphabet="dna")


def test_translations_lose_their_final_stop(tmp_path):
    """Proteins as transeq or Prodigal write them (the unshipped globins, each ending in '*'): the
    final stop is removed and counted on the page; a '*' inside a record stays, as an unknown residue."""
    records = (Path(__file__).parent / "unseen" / "globins45.fa").read_text().split(">")[1:6]
    title_and_residues = [(r.split("\n", 1)[0], r.split("\n", 1)[1].replace("\n", "")) for r in records]
    text = "".join(f">{title}\n{residues}*\n" for title, residues in title_and_residues)
    adata = read_dataset(write(tmp_path / "t.faa", text.replace("*", "*A*", 1)), "sequence")
    assert adata.obs["length"].tolist() == [len(r) + 2 * (i == 0) for i, (_, r) in enumerate(title_and_residues)]
    decisions = {d["what"]: d["value"] for d in json.loads(adata.uns["omicsgen"]["decisions"])}
    assert decisions["stop codons"] == "the final '*' of 5 records removed"
    first = adata.obsm["tokens"][0]
    assert first[len(title_and_residues[0][1])] == alph.MISSING  # the inner '*'


def test_binary_and_truncated_gzip(tmp_path):
    junk = tmp_path / "junk.fa"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="binary"):
        read_dataset(junk, "sequence")
    good = gzip.compress(b">a\n" + b"ACGT" * 5000 + b"\n")
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_dataset(cut, "sequence")


# --- expression --------------------------------------------------------------------------------

def test_table_orientation_detected_and_missing_kept(tmp_path):
    cells_as_rows = write(tmp_path / "c.csv", "cell,g1,g2,g3\nc1,1,0,NA\nc2,3,,5\n")
    adata = read_dataset(cells_as_rows, "expression")
    assert list(adata.var_names) == ["g1", "g2", "g3"] and list(adata.obs_names) == ["c1", "c2"]
    assert np.isnan(adata.X[0, 2]) and np.isnan(adata.X[1, 1]) and adata.X[0, 1] == 0
    genes_as_rows = write(tmp_path / "g.tsv", "gene_id\ts1\ts2\ng1\t1\t2\ng2\t0\t4\n")
    adata = read_dataset(genes_as_rows, "expression")
    assert list(adata.obs_names) == ["s1", "s2"] and adata.X[1, 1] == 4
    assert adata.uns["omicsgen"]["orientation"] == "genes_as_rows"
    assert adata.uns["omicsgen"]["input_scale"] == "counts"


def test_r_style_header_without_row_name_column(tmp_path):
    adata = read_dataset(write(tmp_path / "r.tsv", "g1\tg2\nc1\t1\t2\nc2\t3\t4\n"), "expression")
    assert list(adata.var_names) == ["g1", "g2"] and adata.X[1, 0] == 3


def test_declared_counts_are_checked(tmp_path):
    path = write(tmp_path / "c.csv", "cell,g1,g2\nc1,1,2\nc2,-3,4\n")
    with pytest.raises(InputError, match="sample 'c2', feature 'g1': declared counts, but -3 is negative"):
        read_dataset(path, "expression", values="counts")
    assert read_dataset(path, "expression", values="normalised").uns["omicsgen"]["input_scale"] == "normalised"
    fractional = write(tmp_path / "f.csv", "cell,g1,g2\nc1,1,2.5\nc2,0,4.4\n")
    with pytest.raises(InputError, match="2.5 is not a whole number.*estimated_counts"):
        read_dataset(fractional, "expression", values="counts")
    auto = read_dataset(fractional, "expression")
    why = json.loads(auto.uns["omicsgen"]["decisions"])[-1]["why"]
    assert auto.uns["omicsgen"]["input_scale"] == "normalised" and "estimated_counts" in why
    # Salmon / RSEM / kallisto estimated counts: rounded (half to even, as R's round), then counts
    estimated = read_dataset(fractional, "expression", values="estimated_counts")
    assert estimated.uns["omicsgen"]["input_scale"] == "counts"
    np.testing.assert_array_equal(estimated.X.toarray() if sp.issparse(estimated.X) else estimated.X, [[1, 2], [0, 4]])
    assert "2 values with a fraction rounded" in json.loads(estimated.uns["omicsgen"]["decisions"])[-1]["why"]
    with pytest.raises(InputError, match="declared estimated counts, but -3 is negative"):
        read_dataset(path, "expression", values="estimated_counts")


def test_normalised_input_flagged(tmp_path):
    adata = read_dataset(write(tmp_path / "n.csv", "cell,g1,g2\nc1,0.5,-1.2\nc2,2.25,0\n"), "expression")
    assert adata.uns["omicsgen"]["input_scale"] == "normalised"


@pytest.mark.parametrize("text, message", [
    ("cell,g1,g2\nc1,1,2\nc2,3,abc\n", "line 3, column 'g2': 'abc' is not a number"),
    ("cell,g1,g2\nc1,1,inf\nc2,3,4\n", "line 2, column 'g2': infinite value"),
    ("cell,Actb,Gapdh\ncell1,1,2\ncell2,3,4\ncell3,5,6\ncell1,7,8\n", "duplicate sample name 'cell1'"),
    ("cell;g1;g2\nc1;1,5;2\n", "single column.*separated by ';'"),
    ("cell,g1,g2\n", "header but no rows"),
    ("", "the file is empty"),
    ("cell,g1,g2\nc1,1,2,3,4\n", "line 2: rows of different lengths"),
    ("cell,g1,g2\nc1,1,2\nc2,3\n", "line 3: rows of different lengths: 2 fields, the header has 3"),
])
def test_malformed_tables(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        read_dataset(write(tmp_path / "bad.csv", text), "expression")


def test_truncated_gzip_table(tmp_path):
    rows = "".join(f"c{i},{i},{i + 1}\n" for i in range(20000))
    data = gzip.compress(("cell,g1,g2\n" + rows).encode())
    (tmp_path / "cut.csv.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.csv.gz: the gzip file is damaged or truncated"):
        read_dataset(tmp_path / "cut.csv.gz", "expression")


def test_h5ad_and_10x_h5(tmp_path, tiny_data):
    adata = read_dataset(tiny_data["cells"], "expression")
    assert adata.shape == (300, 1000) and adata.uns["omicsgen"]["input_scale"] == "counts"
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    write_10x_h5(path, sp.csc_matrix(np.array([[1, 0, 2], [0, 3, 0]], dtype=np.int32)),
                 ["AAAC-1", "AAAG-1", "AAAT-1"], ["ENSG1", "ENSG2"], ["GeneA", "GeneB"])
    tenx = read_dataset(path, "expression")
    assert list(tenx.var_names) == ["GeneA", "GeneB"] and tenx.n_obs == 3
    np.testing.assert_array_equal(tenx.X.toarray(), [[1, 0], [0, 3], [2, 0]])
    # a symbol two gene ids share: both kept, the second renamed, and the page says so
    write_10x_h5(path, sp.csc_matrix(np.array([[1, 0, 2], [0, 3, 0]], dtype=np.int32)),
                 ["AAAC-1", "AAAG-1", "AAAT-1"], ["ENSG1", "ENSG2"], ["GeneA", "GeneA"])
    tenx = read_dataset(path, "expression")
    assert list(tenx.var_names) == ["GeneA", "GeneA-1"] and list(tenx.var["gene_ids"]) == ["ENSG1", "ENSG2"]
    decisions = {d["what"]: d["value"] for d in json.loads(tenx.uns["omicsgen"]["decisions"])}
    assert decisions["repeated feature names"].startswith("1 renamed")


def test_h5ad_matrix_chosen_among_x_raw_and_layers(tmp_path, tiny_data):
    """scanpy's own shipped pbmc68k_reduced keeps scaled values in X and log-normalised ones in
    .raw; a scanpy user's file often keeps counts in a layer. X is modelled unless the sheet's
    `matrix` names another, and the page says which matrices there were."""
    import scanpy

    shipped = Path(scanpy.__file__).parent / "datasets" / "10x_pbmc68k_reduced.h5ad"
    adata = read_dataset(shipped, "expression")
    said = {d["what"]: d for d in json.loads(adata.uns["omicsgen"]["decisions"])}
    assert said["matrix"]["value"] == "X" and "raw (700 x 765)" in said["matrix"]["why"]
    assert "'matrix' column" in said["matrix"]["setting"] and adata.uns["omicsgen"]["input_scale"] == "normalised"
    raw = read_dataset(shipped, "expression", matrix="raw")
    assert raw.X.min() >= 0 and adata.X.min() < 0  # log-normalised, not scaled
    with pytest.raises(InputError, match=r"no matrix 'counts'.*X \(700 x 765\), raw \(700 x 765\)"):
        read_dataset(shipped, "expression", matrix="counts")

    cells = read_dataset(tiny_data["cells"], "expression")
    assert "matrix" not in {d["what"] for d in json.loads(cells.uns["omicsgen"]["decisions"])}  # X alone
    counts = cells.X.copy()
    cells.layers["counts"] = counts
    cells.X = np.log1p(counts.toarray())
    del cells.uns["omicsgen"]
    cells.write_h5ad(tmp_path / "processed.h5ad")
    chosen = read_dataset(tmp_path / "processed.h5ad", "expression", matrix="counts")
    assert chosen.uns["omicsgen"]["input_scale"] == "counts" and (chosen.X != counts).nnz == 0
    del cells.X  # layers only (X None): named, not a traceback
    cells.write_h5ad(tmp_path / "layers_only.h5ad")
    with pytest.raises(InputError, match=r"no matrix 'X'.*layer counts \(300 x 1000\): name one"):
        read_dataset(tmp_path / "layers_only.h5ad", "expression")
    assert read_dataset(tmp_path / "layers_only.h5ad", "expression", matrix="counts").n_obs == 300
    with pytest.raises(InputError, match="holds one matrix"):
        read_dataset(tiny_data["flu"], "expression", matrix="raw")


def write_10x_h5(path, genes_by_cells, barcodes, ids, names):
    """The Cell Ranger v3 layout: a genes x cells CSC matrix under /matrix."""
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m["barcodes"] = np.array(barcodes, dtype="S")
        m["data"], m["indices"], m["indptr"] = genes_by_cells.data, genes_by_cells.indices, genes_by_cells.indptr
        m["shape"] = np.array(genes_by_cells.shape, dtype=np.int32)
        feats = m.create_group("features")
        feats["id"], feats["name"] = np.array(ids, dtype="S"), np.array(names, dtype="S")
        feats["feature_type"] = np.array(["Gene Expression"] * len(ids), dtype="S")
        feats["genome"] = np.array(["GRCh38"] * len(ids), dtype="S")
        feats["_all_tag_keys"] = np.array([b"genome"])


# --- time courses ------------------------------------------------------------------------------

def test_timecourse_sorted_with_annotations(tiny_data):
    adata = read_dataset(tiny_data["flu"], "timecourse")
    assert adata.n_vars == 200 and "condition" in adata.obs
    assert adata.obs["series"].nunique() == 6
    for _, rows in adata.obs.groupby("series", observed=True):
        assert rows["time"].is_monotonic_increasing


def test_timecourse_values_decided_as_for_tables(tiny_data):
    """Counts over time (a mouse diet study's OTU counts, not shipped) are counts, so preprocess
    log-normalises them; log expression stays as given; a declared kind is checked."""
    from pathlib import Path

    otus = read_dataset(Path(__file__).parent / "unseen" / "mouse_diet_timecourse.tsv", "timecourse")
    assert otus.uns["omicsgen"]["input_scale"] == "counts" and "diet" in otus.obs
    flu = read_dataset(tiny_data["flu"], "timecourse")
    assert flu.uns["omicsgen"]["input_scale"] == "normalised"
    decisions = {d["what"]: d for d in json.loads(flu.uns["omicsgen"]["decisions"])}
    assert decisions["values"]["value"] == "normalised"
    assert decisions["text columns"]["value"] == "kept as sample annotations, not modelled: condition"
    with pytest.raises(InputError, match="declared counts"):
        read_dataset(tiny_data["flu"], "timecourse", values="counts")
    for modality, path in (("timecourse", tiny_data["flu"]), ("expression", Path(__file__).parent / "unseen" / "guo_qpcr.csv")):
        with pytest.raises(InputError, match="unknown values 'logs'"):
            read_dataset(path, modality, values="logs")


def test_timecourse_without_sample_names(tmp_path):
    """A long time course written without row names (R's `row.names = FALSE`, pandas'
    `index=False`): lme4's sleepstudy (not shipped) has its measurement first; others start with
    `series`. Either way every row and the measurement are kept, the rows numbered in file order,
    and the page's decisions say so."""
    from pathlib import Path

    sleep = read_dataset(Path(__file__).parent / "unseen" / "sleepstudy_timecourse.tsv", "timecourse")
    assert sleep.shape == (180, 1) and list(sleep.var_names) == ["Reaction"]
    assert sleep.obs["series"].nunique() == 18 and sleep.obs["time"].max() == 9
    assert sleep.X[0, 0] == pytest.approx(249.56) and sleep.obs_names[0] == "1"
    decision = json.loads(sleep.uns["omicsgen"]["decisions"])[0]
    assert decision["what"] == "row names" and "'Reaction'" in decision["why"]
    series_first = read_dataset(write(tmp_path / "s.tsv", "series\ttime\tg1\tg2\np1\t0\t1.5\t2\np1\t1\t2.5\t3\n"
                                                          "p2\t0\t1\t4\n"), "timecourse")
    assert series_first.shape == (3, 2) and list(series_first.obs["series"]) == ["p1", "p1", "p2"]
    assert "'series'" in json.loads(series_first.uns["omicsgen"]["decisions"])[0]["why"]
    named = read_dataset(write(tmp_path / "n.tsv", "sample\tseries\ttime\tg1\ns1\tp1\t0\t1\ns2\tp1\t1\t2\n"), "timecourse")
    assert list(named.obs_names) == ["s1", "s2"]
    assert all(d["what"] != "row names" for d in json.loads(named.uns["omicsgen"]["decisions"]))


def test_timecourse_errors(tmp_path):
    with pytest.raises(InputError, match="no column named 'time'"):
        read_dataset(write(tmp_path / "a.tsv", "sample\tseries\tg1\ns1\tp1\t1.0\n"), "timecourse")
    with pytest.raises(InputError, match="line 3, column 'time'"):
        read_dataset(write(tmp_path / "b.tsv", "sample\tseries\ttime\tg1\ns1\tp1\t0\t1\ns2\tp1\tlate\t2\n"), "timecourse")
    with pytest.raises(InputError, match="two samples at time 0"):
        read_dataset(write(tmp_path / "c.tsv", "sample\tseries\ttime\tg1\ns1\tp1\t0\t1\ns2\tp1\t0\t2\n"), "timecourse")
    # lines before the header are counted in the line an error names, and said on the page
    commented = "# exported from a LIMS\n# units: hours\nsample\tseries\ttime\tg1\ns1\tp1\t0\t1\ns2\tp1\t{}\t2\n"
    with pytest.raises(InputError, match="line 5, column 'time'"):
        read_dataset(write(tmp_path / "d.tsv", commented.format("late")), "timecourse")
    adata = read_dataset(write(tmp_path / "e.tsv", commented.format("1")), "timecourse")
    decisions = {d["what"]: d["value"] for d in json.loads(adata.uns["omicsgen"]["decisions"])}
    assert decisions["lines before the header"] == "2 skipped (lines 1-2)" and adata.n_obs == 2
    # a gene measured twice (two probes) stays two features; a repeated time column cannot be read
    twice = read_dataset(write(tmp_path / "f.tsv", "sample\tseries\ttime\tg1\tg1\ns1\tp1\t0\t1\t5\ns2\tp1\t1\t2\t6\n"),
                         "timecourse")
    assert list(twice.var_names) == ["g1", "g1-1"] and twice.X[:, 1].tolist() == [5, 6]
    with pytest.raises(InputError, match="duplicate column name 'time'"):
        read_dataset(write(tmp_path / "g.tsv", "sample\tseries\ttime\ttime\tg1\ns1\tp1\t0\t0\t1\n"), "timecourse")


# --- dispatch ----------------------------------------------------------------------------------

def test_format_from_name_and_dispatch_errors(tmp_path):
    assert guess_format("x.fa.gz") == "fasta" and guess_format("x.tsv.gz") == "tsv"
    assert guess_format("GDS507_full.soft.gz") == "tsv"
    assert guess_format("x.h5") == "10x-h5"
    assert guess_format("GCF_000005845.2_genomic.gbff.gz") == "genbank" and guess_format("x.fsa") == "fasta"
    with pytest.raises(InputError, match="cannot tell the format"):
        guess_format(tmp_path / "x.weird")
    for name, what_to_do in [("counts.xlsx", "save the sheet as CSV"), ("peaks.fa.bz2", "recompress it with gzip"),
                             ("matrix.mtx", "the folder that holds it"), ("pbmc.loom", "save it as h5ad")]:
        with pytest.raises(InputError, match=what_to_do):
            guess_format(tmp_path / name)
    with pytest.raises(InputError, match="no such file"):
        read_dataset(tmp_path / "absent.fa", "sequence")
    with pytest.raises(InputError, match="unknown modality 'proteome'"):
        read_dataset(write(tmp_path / "x.fa", ">a\nA\n"), "proteome")
    with pytest.raises(InputError, match="format 'fasta' is not readable as expression"):
        read_dataset(tmp_path / "x.fa", "expression")


def test_fastq_genbank_stockholm(tmp_path):
    fastq = write(tmp_path / "r.fastq", "@read1\nACGTN\n+\nIIIII\n@read2\nGGCA\n+\nIIII\n")
    assert list(read_dataset(fastq, "sequence").obs["length"]) == [5, 4]
    stockholm = write(tmp_path / "a.sto", "# STOCKHOLM 1.0\nseq1 AC-DE\nseq2 ACGD.\n//\n")
    adata = read_dataset(stockholm, "sequence", alphabet="protein")
    assert alph.decode(adata.obsm["tokens"], adata.uns["alphabet"]["symbols"]) == ["AC-DE", "ACGD-"]
    from Bio import SeqIO
    from Bio.Seq import Seq
    from Bio.SeqRecord import SeqRecord
    record = SeqRecord(Seq("ATGAAATTTGGG"), id="gene1", description="a gene", annotations={"molecule_type": "DNA"})
    SeqIO.write([record], tmp_path / "g.gb", "genbank")
    genbank = read_dataset(tmp_path / "g.gb", "sequence")
    assert genbank.obs["id"].tolist() == ["gene1"] and genbank.uns["alphabet"]["name"] == "dna"


def test_matrix_market_folder_and_zarr(tmp_path, tiny_data):
    import anndata as ad
    import scipy.io

    folder = tmp_path / "filtered_feature_bc_matrix"
    folder.mkdir()
    genes_by_cells = sp.coo_matrix(np.array([[1, 0, 2], [0, 3, 0]]))
    scipy.io.mmwrite(folder / "matrix.mtx", genes_by_cells)
    for name, text in [("barcodes.tsv", "AAAC-1\nAAAG-1\nAAAT-1\n"),
                       ("features.tsv", "ENSG1\tGeneA\tGene Expression\nENSG2\tGeneB\tGene Expression\n")]:
        write(folder / name, text)
    for name in ("matrix.mtx", "barcodes.tsv", "features.tsv"):
        (folder / f"{name}.gz").write_bytes(gzip.compress((folder / name).read_bytes()))
        (folder / name).unlink()
    adata = read_dataset(folder, "expression")
    assert list(adata.var_names) == ["GeneA", "GeneB"] and adata.X[2, 0] == 2
    cells = ad.read_h5ad(tiny_data["cells"])[:20, :50].copy()
    cells.write_zarr(tmp_path / "cells.zarr")
    zarr_read = read_dataset(tmp_path / "cells.zarr", "expression")
    np.testing.assert_array_equal(zarr_read.X.toarray(), cells.X.toarray())


def test_wide_timecourse_matches_long(tmp_path, tiny_data):
    long = read_dataset(tiny_data["flu"], "timecourse")
    import pandas as pd
    table = pd.read_csv(tiny_data["flu"], sep="\t", index_col=0)
    table.T.to_csv(tmp_path / "wide.tsv", sep="\t")
    wide = read_dataset(tmp_path / "wide.tsv", "timecourse")
    np.testing.assert_array_equal(wide.X, long.X)
    assert (wide.obs[["series", "time", "condition"]] == long.obs[["series", "time", "condition"]]).all().all()
    bad = table.T.copy()
    bad.iloc[1, 3] = "late"  # the 'time' row, fourth sample
    bad.to_csv(tmp_path / "bad.tsv", sep="\t")
    with pytest.raises(InputError, match=f"line 3, column '{bad.columns[3]}': time 'late' is not a number"):
        read_dataset(tmp_path / "bad.tsv", "timecourse")


def test_irregular_times_and_missing_samples_kept(tmp_path):
    path = write(tmp_path / "t.tsv", "sample\tseries\ttime\tg1\n"
                 "a3\tA\t12.5\t3\na1\tA\t0\t1\nb1\tB\t0\t5\nb2\tB\t36\tNA\na2\tA\t2\t2\n")
    adata = read_dataset(path, "timecourse")
    assert list(adata.obs_names) == ["a1", "a2", "a3", "b1", "b2"]
    assert list(adata.obs["time"]) == [0, 2, 12.5, 0, 36] and np.isnan(adata.X[4, 0])
