"""Tables as spreadsheets, R and pandas write them, read right; orientation and value kind
decided from the data and recorded; sequences' alphabet and alignment recorded.

Every table is real data (cells of the shipped 10x mouse counts, the flu time course,
scikit-learn's bundled tables) written here the way a user's tools write it."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omicsgen import alphabet as alph
from omicsgen.errors import InputError
from omicsgen.io import read_dataset
from omicsgen.io.orientation import axis_evidence


@pytest.fixture(scope="module")
def cells(tiny_data) -> pd.DataFrame:
    """60 real cells (barcodes) x 40 real genes, raw UMI counts, as a DataFrame."""
    adata = ad.read_h5ad(tiny_data["cells"])
    genes = np.flatnonzero((adata.X > 0).sum(axis=0).A1 >= 30)[:40]
    return pd.DataFrame(adata.X[:60, genes].toarray().astype(np.int64), index=adata.obs_names[:60],
                        columns=adata.var_names[genes])


def decided(adata) -> dict[str, dict]:
    return {d["what"]: d for d in json.loads(adata.uns["omicsgen"]["decisions"])}


def assert_reads_as(path, frame: pd.DataFrame, **kwargs):
    adata = read_dataset(path, "expression", **kwargs)
    assert list(adata.obs_names) == list(frame.index.astype(str))
    assert list(adata.var_names) == list(frame.columns.astype(str))
    x = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    np.testing.assert_allclose(x, frame.to_numpy(dtype=float), rtol=1e-6, equal_nan=True)
    return adata


# --- quoting, byte-order marks, line endings ---------------------------------------------------

@pytest.mark.parametrize("encoding, ending", [("utf-8", "\n"), ("utf-8-sig", "\n"), ("utf-8", "\r\n"), ("utf-8-sig", "\r\n")])
def test_quoted_separators_bom_and_crlf(tmp_path, cells, encoding, ending):
    """Feature names holding the separator ("Xkr4, ENSMUSG..." as a spreadsheet column joins
    them) are quoted by pandas, as RFC 4180 says; the old check counted their commas as fields."""
    frame = cells.copy()
    frame.columns = [f"{g}, gene {i}" for i, g in enumerate(frame.columns)]
    frame.index.name = "cell"
    path = tmp_path / "quoted.csv"
    frame.to_csv(path, encoding=encoding, lineterminator=ending)
    raw = path.read_bytes()
    assert b'"' in raw and raw.startswith(b"\xef\xbb\xbf") == (encoding == "utf-8-sig")
    adata = assert_reads_as(path, frame)
    assert adata.uns["omicsgen"]["orientation"] == "samples_as_rows"
    gz = tmp_path / "quoted.csv.gz"
    gz.write_bytes(gzip.compress(raw))
    assert_reads_as(gz, frame)


def test_r_write_csv_and_write_table_layouts(tmp_path, cells):
    """R's write.csv quotes every name and leaves the header's first cell empty (""); its
    write.table leaves the row-name column out of the header altogether."""
    frame = cells.T  # genes as rows, as R users often keep them
    frame.to_csv(tmp_path / "r.csv", quoting=csv.QUOTE_NONNUMERIC, index_label="")
    assert (tmp_path / "r.csv").read_text().startswith('"",')
    adata = assert_reads_as(tmp_path / "r.csv", cells)
    assert adata.uns["omicsgen"]["orientation"] == "genes_as_rows"
    text = (tmp_path / "r.csv").read_text().split("\n", 1)
    (tmp_path / "r_table.txt").write_text("\t".join(f'"{c}"' for c in frame.columns) + "\n"
                                          + text[1].replace(",", "\t"))
    assert_reads_as(tmp_path / "r_table.txt", cells)


def test_line_breaks_and_doubled_quotes_inside_quoted_fields(tmp_path, cells):
    frame = cells.iloc[:12, :6].copy()
    frame.columns = [*frame.columns[:4], 'Actb "beta actin"', "Gapdh\n(housekeeping)"]
    frame.index.name = "cell"
    frame.to_csv(tmp_path / "multi.csv")
    assert '""beta actin""' in (tmp_path / "multi.csv").read_text()
    assert_reads_as(tmp_path / "multi.csv", frame)
    # a bad cell after the two-line header is named by its line in the file (one more than its row)
    frame = frame.astype(object)
    frame.iat[5, 2] = "n.d."
    frame.to_csv(tmp_path / "bad.csv")
    with pytest.raises(InputError, match=rf"line 8, column '{frame.columns[2]}': 'n.d.' is not a number"):
        read_dataset(tmp_path / "bad.csv", "expression")


def test_ragged_rows_still_named_by_line(tmp_path, cells):
    frame = cells.iloc[:8, :5].copy()
    frame.columns = [f"{g}, id {i}" for i, g in enumerate(frame.columns)]
    lines = frame.to_csv(index_label="cell").splitlines(keepends=True)
    lines[4] = lines[4].rstrip("\n").rsplit(",", 1)[0] + "\n"  # one value short, behind quoted names
    (tmp_path / "short.csv").write_text("".join(lines))
    with pytest.raises(InputError, match="short.csv: line 5: rows of different lengths: 5 fields, the header has 6"):
        read_dataset(tmp_path / "short.csv", "expression")
    lines = frame.to_csv(index_label="cell").splitlines(keepends=True)
    lines[3] = '"' + lines[3]  # a quote opened and never closed
    (tmp_path / "open.csv").write_text("".join(lines))
    with pytest.raises(InputError, match=r"line 4: rows of different lengths: .*is a quote \(\"\) left open"):
        read_dataset(tmp_path / "open.csv", "expression")


def test_stray_quote_inside_an_unquoted_name_is_literal(tmp_path):
    """Not RFC 4180, but pandas and R read it as a letter, so we do too."""
    path = tmp_path / "stray.tsv"
    path.write_text('gene\tS1\tS2\tS3\nHoxa1 5"UTR\t1\t2\t3\nActb\t4\t5\t6\n')
    adata = read_dataset(path, "expression")
    assert list(adata.var_names) == ['Hoxa1 5"UTR', "Actb"]


# --- orientation -----------------------------------------------------------------------------

def test_qpcr_layout_cells_as_integer_rows_symbols_as_columns(tmp_path, tiny_data):
    """428 cells with integer ids x 48 gene symbols: rows outnumber columns nine to one, yet
    the names say the rows are cells (the layout that was read transposed)."""
    adata = ad.read_h5ad(tiny_data["cells"])
    frame = pd.DataFrame(adata.X[:300, :48].toarray(), index=range(1, 301), columns=adata.var_names[:48])
    frame = pd.concat([frame, frame.iloc[:128].set_axis(range(301, 429))])  # 428 rows
    frame = np.log2(frame + 1) - 2.5  # delta-Ct-like continuous values
    frame.to_csv(tmp_path / "qpcr.csv")
    read = assert_reads_as(tmp_path / "qpcr.csv", frame)
    assert read.shape == (428, 48)
    decision = decided(read)["orientation"]
    assert decision["value"] == "samples_as_rows" and decision["why"].startswith("names")
    assert "integer ids" in decision["why"] and "orientation" in decision["setting"]
    assert decided(read)["values"]["value"] == "normalised"


def test_bulk_genes_as_rows_by_id_by_symbol_and_by_accession(tmp_path, tiny_data):
    adata = ad.read_h5ad(tiny_data["cells"])
    groups = np.arange(adata.n_obs) % 12
    bulk = pd.DataFrame({f"sample{g + 1}": adata.X[groups == g].sum(axis=0).A1.astype(int) for g in range(12)},
                        index=pd.Index(adata.var["gene_ids"], name="gene_id"))
    bulk.to_csv(tmp_path / "bulk.tsv", sep="\t")
    read = assert_reads_as(tmp_path / "bulk.tsv", bulk.T)
    assert decided(read)["orientation"]["value"] == "genes_as_rows" and decided(read)["values"]["value"] == "counts"
    bulk.index = pd.Index(adata.var_names)  # symbols, index unnamed
    bulk.to_csv(tmp_path / "symbols.csv")
    assert read_dataset(tmp_path / "symbols.csv", "expression").uns["omicsgen"]["orientation"] == "genes_as_rows"
    flu = pd.read_csv(tiny_data["flu"], sep="\t", index_col=0).iloc[:12, 3:]  # GSM samples x symbols
    flu.T.rename_axis(None).to_csv(tmp_path / "flu_T.csv")
    read = assert_reads_as(tmp_path / "flu_T.csv", flu)
    assert "feature identifiers" not in decided(read)["orientation"]["why"] and "GSM" in decided(read)["orientation"]["why"]


@pytest.mark.parametrize("loader", ["load_iris", "load_wine", "load_breast_cancer", "load_diabetes"])
def test_sklearn_tables_either_way_round(tmp_path, loader):
    """pandas' default integer index marks the samples, whichever axis it lands on."""
    from sklearn import datasets

    frame = getattr(datasets, loader)(as_frame=True).frame
    frame.to_csv(tmp_path / "t.csv")
    assert_reads_as(tmp_path / "t.csv", frame).uns["omicsgen"]["orientation"] == "samples_as_rows"
    frame.T.to_csv(tmp_path / "t_T.csv")
    assert_reads_as(tmp_path / "t_T.csv", frame).uns["omicsgen"]["orientation"] == "genes_as_rows"


def test_orientation_stops_when_it_cannot_tell(tmp_path, cells):
    """Integer ids on both axes and a near-square shape: nothing tells. Integer rows against
    numbered sample-like columns, rows ten times the columns: names and shape disagree."""
    square = cells.iloc[:40, :40].set_axis(range(40), axis=0).set_axis(range(100, 140), axis=1)
    square.to_csv(tmp_path / "square.csv")
    with pytest.raises(InputError, match="neither the names nor the shape tell.*set 'orientation' in the sheet") as err:
        read_dataset(tmp_path / "square.csv", "expression")
    assert "square.csv" in str(err.value) and "40 rows x 40 columns" in str(err.value)
    assert_reads_as(tmp_path / "square.csv", square.T, orientation="genes_as_rows")
    tall = pd.concat([cells] * 7).iloc[:, :30].set_axis(range(420)).set_axis([f"S{i}" for i in range(30)], axis=1)
    tall.to_csv(tmp_path / "tall.csv")
    with pytest.raises(InputError, match="the names and the shape disagree.*rows outnumber columns 14 to one"):
        read_dataset(tmp_path / "tall.csv", "expression")
    read = assert_reads_as(tmp_path / "tall.csv", tall, orientation="samples_as_rows")
    assert decided(read)["orientation"]["why"] == "set in the sheet"


FEATURES = {
    "human symbols": ["ACTB", "GAPDH", "TP53", "HLA-A", "MT-CO1", "CD8A", "IL6"],
    "mouse symbols": ["Actb", "Gapdh", "Trp53", "Cd8a", "Il6", "mt-Co1", "0610005C13Rik"],
    "yeast ORFs": ["YAL001C", "YAL002W", "YBR160W", "YFL039C"],
    "Arabidopsis AGI": ["AT1G01010", "AT1G01020", "AT3G18780", "ATCG00490"],
    "E. coli": ["b0001", "b0002", "b0003", "thrL", "thrA", "thrB", "dnaK", "lacZ"],
    "Ensembl": ["ENSG00000141510", "ENSMUSG00000029580.14", "ENSDARG00000037746"],
    "probes": ["1007_s_at", "1053_at", "117_at", "AFFX-BioB-5_at"],
    "metabolites": ["1,3-dimethyluric acid", "L-glutamine", "citric acid", "2-hydroxybutyric acid",
                    "glycerol 3-phosphate", "N-acetylaspartate"],
}
SAMPLES = {
    "integers": [str(i) for i in range(1, 30)],
    "barcodes": ["AAACCTGAGATAGGAG-1", "AAACCTGAGCGGCTTC-1", "AAACCTGAGGAATCGC-1"],
    "GEO": ["GSM757899", "GSM757900", "GSM757901"],
    "numbered": ["sample1", "sample2", "sample3", "sample4"],
    "R make.names": ["X0h", "X0h.1", "X1h", "X1h.1", "X4h", "X4h.1"],
    "groups": ["R1L1Kidney", "R1L2Liver", "R1L3Kidney", "R1L4Liver", "R2L2Kidney", "R2L3Liver"],
}


@pytest.mark.parametrize("kind", FEATURES)
def test_feature_names_of_many_organisms_lean_feature(kind):
    assert axis_evidence(pd.Index(FEATURES[kind]), None).score > 0


@pytest.mark.parametrize("kind", SAMPLES)
def test_sample_names_lean_sample(kind):
    assert axis_evidence(pd.Index(SAMPLES[kind]), None).score < 0


# --- value kind ------------------------------------------------------------------------------

def test_negative_whole_numbers_under_auto_stop_naming_the_cell(tmp_path, cells):
    """Centred counts (each gene minus its rounded mean) are whole numbers below zero: not
    counts, and not silently taken as normalised either."""
    centred = cells - cells.mean().round().astype(int)
    centred.index.name = "cell"
    centred.to_csv(tmp_path / "centred.csv")
    row, col = np.argwhere(centred.to_numpy() < 0)[0]
    with pytest.raises(InputError) as err:
        read_dataset(tmp_path / "centred.csv", "expression")
    message = str(err.value)
    assert f"sample '{centred.index[row]}', feature '{centred.columns[col]}'" in message
    assert f"{centred.iat[row, col]} is negative" in message and "set values to 'normalised'" in message
    read = assert_reads_as(tmp_path / "centred.csv", centred, values="normalised")
    assert decided(read)["values"] == {"what": "values", "value": "normalised", "why": "set in the sheet",
                                       "setting": decided(read)["values"]["setting"]}


def test_value_kind_decision_says_why(tmp_path, cells):
    cells.rename_axis("cell").to_csv(tmp_path / "counts.csv")
    counts = decided(read_dataset(tmp_path / "counts.csv", "expression"))["values"]
    assert counts["value"] == "counts" and "whole number" in counts["why"] and "values" in counts["setting"]
    logged = np.log1p(cells).rename_axis("cell")
    logged.to_csv(tmp_path / "log.csv")
    why = decided(read_dataset(tmp_path / "log.csv", "expression"))["values"]["why"]
    first = np.argwhere((logged.to_numpy() % 1) != 0)[0]
    assert f"sample '{logged.index[first[0]]}', feature '{logged.columns[first[1]]}'" in why


# --- sequences: alphabet and alignment ---------------------------------------------------------

def test_alphabet_and_alignment_recorded(tmp_path, tiny_data):
    ww = read_dataset(tiny_data["ww"], "sequence")
    info = ww.uns["omicsgen"]
    assert info["aligned"] is True and info["gapped"] is True
    assert decided(ww)["alignment"]["value"] == "aligned (gapped alignment)"
    assert decided(ww)["alphabet"]["value"] == "protein" and "alphabet" in decided(ww)["alphabet"]["setting"]
    peaks = read_dataset(tiny_data["peaks"], "sequence")
    # ChIP-seq peaks cut to one length are windows at arbitrary offsets, not an alignment
    assert (peaks.uns["omicsgen"]["aligned"], peaks.uns["omicsgen"]["gapped"]) == (False, False)
    assert decided(peaks)["alignment"]["value"] == "unaligned (equal length)"
    assert decided(peaks)["alphabet"]["value"] == "dna" and "A, C, G, T or N" in decided(peaks)["alphabet"]["why"]
    # the same WW domains with their gaps removed: real, unaligned protein sequences
    ungapped = "".join(line if line.startswith(">") else line.replace("-", "").replace(".", "")
                       for line in tiny_data["ww"].read_text().splitlines(keepends=True))
    (tmp_path / "ww_raw.fa").write_text(ungapped)
    raw = read_dataset(tmp_path / "ww_raw.fa", "sequence")
    assert (raw.uns["omicsgen"]["aligned"], raw.uns["omicsgen"]["gapped"]) == (False, False)
    assert decided(raw)["alignment"]["value"] == "unaligned" and "lengths differ" in decided(raw)["alignment"]["why"]
    assert not (raw.obsm["tokens"] == alph.GAP).any()
    # the flags survive the h5ad round trip the pipeline makes
    raw.write_h5ad(tmp_path / "raw.h5ad")
    back = ad.read_h5ad(tmp_path / "raw.h5ad").uns["omicsgen"]
    assert not bool(back["aligned"]) and not bool(back["gapped"]) and json.loads(back["decisions"])


# --- row names -------------------------------------------------------------------------------

def test_missing_row_names_are_kept_and_named_by_line(tmp_path, cells):
    """R writes NA for a missing row name (Khan's SRBCT genes have some), pandas an empty cell."""
    frame = cells.T.iloc[:10].copy()  # genes as rows
    names = frame.index.to_numpy(dtype=object).copy()  # not a view of the shared fixture's names
    names[3], names[7] = np.nan, np.nan
    frame.index = pd.Index(names, name="gene")
    text = frame.to_csv()
    (tmp_path / "pandas.csv").write_text(text)
    (tmp_path / "r.csv").write_text(text.replace("\n,", "\nNA,"))
    for path in (tmp_path / "pandas.csv", tmp_path / "r.csv"):
        adata = read_dataset(path, "expression")
        assert adata.n_vars == 10 and adata.var_names[3] == "unnamed (line 5)" and adata.var_names[7] == "unnamed (line 9)"
        np.testing.assert_array_equal(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, frame.T.to_numpy())
        assert decided(adata)["unnamed rows"]["value"].startswith("2 named by their line")


def test_table_written_without_row_names(tmp_path):
    """pandas' to_csv(index=False): the first column is a measurement (repeats, fractions), so
    every column is data and the rows are numbered."""
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    frame.to_csv(tmp_path / "wine.csv", index=False)
    adata = read_dataset(tmp_path / "wine.csv", "expression")
    assert adata.shape == frame.shape and list(adata.var_names) == list(frame.columns)
    assert list(adata.obs_names[:3]) == ["1", "2", "3"]
    np.testing.assert_allclose(adata.X, frame.to_numpy(), rtol=1e-6)
    assert "'alcohol'" in decided(adata)["row names"]["why"]


def test_table_without_a_header_line(tmp_path):
    """scikit-learn's digits file as it ships (numbers only, no header, gzip): line 1 is a row of
    data, the columns are named V1.. as R names them, one row a sample; each choice is recorded.
    Tab-separated, with a ragged row, the line it names counts the first line as data."""
    import sklearn

    shipped = Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"
    expected = np.loadtxt(shipped, delimiter=",")
    adata = read_dataset(shipped, "expression")
    assert adata.shape == expected.shape == (1797, 65)
    np.testing.assert_array_equal(adata.X, expected)
    assert list(adata.var_names[:2]) == ["V1", "V2"] and list(adata.obs_names[:2]) == ["1", "2"]
    choices = decided(adata)
    assert "no header line" in choices["orientation"]["why"] and adata.uns["omicsgen"]["orientation"] == "samples_as_rows"
    assert "line 1 holds only numbers" in choices["column names"]["why"]
    assert "header line" in choices["column names"]["setting"]
    rows = ["\t".join(map(str, row)) for row in expected[:6].astype(int)]
    rows[3] += "\t7"
    (tmp_path / "ragged.tsv").write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError, match="line 4"):
        read_dataset(tmp_path / "ragged.tsv", "expression")


def test_space_separated_tables_as_r_writes_them(tmp_path, cells):
    """R's write.table() default: fields separated by spaces, names quoted (one may hold a space),
    the header without the row-name column; and scikit-learn's shipped diabetes file (spaces, no
    header). A ragged row is named by its line."""
    import sklearn

    frame = cells.iloc[:12, :8].copy()
    frame.index = [f"cell {i}" for i in range(12)]
    lines = [" ".join(f'"{c}"' for c in frame.columns)]
    lines += [f'"{name}"  ' + " ".join(map(str, row)) for name, row in zip(frame.index, frame.to_numpy())]
    (tmp_path / "counts.txt").write_text("\n".join(lines) + "\n")
    assert_reads_as(tmp_path / "counts.txt", frame, orientation="samples_as_rows")

    shipped = Path(sklearn.__file__).parent / "datasets" / "data" / "diabetes_data_raw.csv.gz"
    diabetes = read_dataset(shipped, "expression")
    np.testing.assert_allclose(diabetes.X, np.loadtxt(shipped), rtol=1e-6)
    assert diabetes.shape == (442, 10) and "column names" in decided(diabetes)

    lines[5] += " 3"
    (tmp_path / "ragged.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="line 6"):
        read_dataset(tmp_path / "ragged.txt", "expression")


# --- files as tools write them: featureCounts, GEO, QIIME, HTSeq ----------------------------------

UNSEEN_DIR = Path(__file__).parent / "unseen"


def test_featurecounts_annotation_columns_are_not_samples():
    """featureCounts' comment line is skipped and its Chr, Start, End, Strand and Length columns
    are gene annotations: Length holds numbers (fractions, in NOISeq's gene lengths) and would
    otherwise be read as an eleventh sample and turn the counts into 'normalised' values."""
    adata = read_dataset(UNSEEN_DIR / "marioni_featurecounts.txt", "expression")
    assert "Length" not in adata.obs_names and list(adata.var.columns) == ["Chr", "Start", "End", "Strand", "Length"]
    assert adata.var["Length"].astype(float).mod(1).gt(0).any()
    steps = decided(adata)
    assert steps["values"]["value"] == "counts" and steps["lines before the header"]["value"] == "1 skipped (line 1)"
    assert "Chr, Start, End, Strand, Length" in steps["featureCounts columns"]["value"]
    first = pd.read_csv(UNSEEN_DIR / "marioni_featurecounts.txt", sep="\t", skiprows=1, index_col=0).iloc[:, 5:]
    np.testing.assert_array_equal(adata.X, first.to_numpy(dtype=float).T)


def test_geo_gds_file_reads_its_one_table(tmp_path):
    """GEOquery's GDS507 (cut): 104 lines of '^' / '!' / '#' metadata, the table, GEO's end marker.
    A second table after the end (a family SOFT file) is an error naming its line."""
    path = UNSEEN_DIR / "renal_gds507.soft.gz"
    adata = read_dataset(path, "expression")
    steps = decided(adata)
    assert steps["lines before the header"]["value"] == "104 skipped (lines 1-104)"
    assert steps["end of the table"]["value"] == "line 506" and list(adata.var.columns) == ["IDENTIFIER"]
    assert "estimated_counts" not in steps["values"]["why"]  # intensities without a zero are no read counts
    assert adata.obs_names[0] == "GSM11815" and adata.var_names[0] == "200000_s_at"
    # its subsets are sample annotations, so the sheet's label can name one
    rcc = "GSM11815,GSM11832,GSM12069,GSM12083,GSM12101,GSM12106,GSM12274,GSM12299,GSM12412".split(",")
    assert sorted(adata.obs_names[adata.obs["disease state"] == "RCC"]) == sorted(rcc)
    assert set(adata.obs["disease state"]) == {"RCC", "normal"} and "individual" in adata.obs
    assert "disease state, individual" in steps["GEO sample annotations"]["value"]
    from omicsgen.ingest import read_labels

    assert list(read_labels(adata, "disease state", "expression", path)[:2]) == ["RCC", "RCC"]
    with gzip.open(path, "rt") as handle:
        text = handle.read()
    (tmp_path / "family.soft").write_text(text + "^SAMPLE = GSM11815\n!sample_table_begin\nID_REF\tVALUE\n")
    with pytest.raises(InputError, match="line 507: a second table follows") as error:
        read_dataset(tmp_path / "family.soft", "expression")
    assert "series matrix" in str(error.value)


def test_hash_header_under_a_comment_and_errors_name_the_file_line(tmp_path, cells):
    """QIIME writes '# Constructed from biom file' and then the header '#OTU ID', OTUs as rows. A
    word in a cell is named by its line in the file, the skipped line counted."""
    frame = cells.T.iloc[:20, :12].copy()
    lines = ["# Constructed from biom file", "\t".join(["#OTU ID", *frame.columns])]
    lines += ["\t".join([name, *map(str, row)]) for name, row in zip(frame.index, frame.to_numpy())]
    (tmp_path / "feature-table.tsv").write_text("\n".join(lines) + "\n")
    adata = read_dataset(tmp_path / "feature-table.tsv", "expression", orientation="genes_as_rows")
    assert list(adata.var_names) == list(frame.index) and list(adata.obs_names) == list(frame.columns)
    np.testing.assert_array_equal(adata.X, frame.to_numpy(dtype=float).T)
    assert decided(adata)["lines before the header"]["value"] == "1 skipped (line 1)"
    lines[6] = lines[6].replace("\t", "\tlow\t", 1).rsplit("\t", 1)[0]
    (tmp_path / "typo.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="line 7, column .*: 'low' is not a number"):
        read_dataset(tmp_path / "typo.tsv", "expression", orientation="genes_as_rows")


def test_geo_series_matrix_and_a_spreadsheets_trailing_delimiter(tmp_path, cells):
    """A GEO series matrix: '!' metadata with blank lines between, quoted names, the end line. A
    spreadsheet's CSV ends every line with a comma: that column, without a name or a value, is
    left out and counted, not read as an empty sample."""
    frame = cells.T.iloc[:15, :10].copy()
    frame.columns = [f"GSM{100 + i}" for i in range(10)]
    quoted = "\t".join(f'"{c}"' for c in frame.columns)
    tissues = "\t".join(f'"tissue: {t}"' for t in ["liver", "kidney"] * 5)
    text = (f'!Series_title\t"LPS time course"\n\n!Sample_geo_accession\t{quoted}\n'
            f'!Sample_characteristics_ch1\t{tissues}\n!series_matrix_table_begin\n'
            f'"ID_REF"\t{quoted}\n' + "".join(f'"{g}"\t' + "\t".join(map(str, row)) + "\n"
                                         for g, row in zip(frame.index, frame.to_numpy())) + "!series_matrix_table_end\n")
    (tmp_path / "GSE1_series_matrix.txt").write_text(text)
    adata = assert_reads_as(tmp_path / "GSE1_series_matrix.txt", frame.T)
    assert decided(adata)["lines before the header"]["value"] == "5 skipped (lines 1-5)"
    assert decided(adata)["end of the table"]["value"] == "line 22"
    assert list(adata.obs["tissue"][:3]) == ["liver", "kidney", "liver"]
    lines = ["gene," + ",".join(frame.columns) + ","] + [f"{g}," + ",".join(map(str, row)) + ","
                                                        for g, row in zip(frame.index, frame.to_numpy())]
    (tmp_path / "excel.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    adata = assert_reads_as(tmp_path / "excel.csv", frame.T)
    assert decided(adata)["empty columns"]["value"] == "1 left out"


def test_windows_1252_text_is_named_by_its_line(tmp_path, cells):
    """A spreadsheet's plain 'CSV' on Windows writes an accented name in Windows-1252: the error names
    the line and the byte, and says how to save it."""
    frame = cells.iloc[:6, :5].copy()
    frame.index = [*frame.index[:3], "tissue_é", *frame.index[4:]]
    frame.to_csv(tmp_path / "cp1252.csv", encoding="cp1252")
    with pytest.raises(InputError, match=r"line 5: bytes that are not UTF-8 text \(byte 0xe9\).*CSV UTF-8"):
        read_dataset(tmp_path / "cp1252.csv", "expression")


def test_htseq_read_counters_are_removed_and_named(tmp_path, cells):
    """A table merged from htseq-count outputs keeps its five summary lines beside the genes: they
    count reads, so they are removed, and the page names them."""
    frame = cells.T.iloc[:, :12].copy()
    counters = ["__no_feature", "__ambiguous", "__too_low_aQual", "__not_aligned", "__alignment_not_unique"]
    table = pd.concat([frame, pd.DataFrame(900, index=counters, columns=frame.columns)])
    table.to_csv(tmp_path / "htseq.tsv", sep="\t")
    adata = read_dataset(tmp_path / "htseq.tsv", "expression", orientation="genes_as_rows")
    assert list(adata.var_names) == list(frame.index)
    np.testing.assert_array_equal(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X,
                                  frame.to_numpy(dtype=float).T)
    assert decided(adata)["read counters"]["value"] == f"5 rows removed: {', '.join(counters)}"


def test_a_header_of_unique_whole_numbers_stays_a_header(tmp_path):
    """pandas writes its default column labels 0..n-1 so: names, not a row of data."""
    frame = pd.DataFrame(np.arange(12.0).reshape(4, 3) / 7)
    frame.to_csv(tmp_path / "t.csv", index=False)
    adata = read_dataset(tmp_path / "t.csv", "expression", orientation="samples_as_rows")
    assert list(adata.var_names) == ["0", "1", "2"] and adata.n_obs == 4 and "column names" not in decided(adata)


def test_text_columns_are_kept_as_annotations(tmp_path):
    """A clinical table with a text column (survival's pbc, not shipped: `sex` as f / m): the
    column is kept as a sample annotation, not modelled and not refused, and the page says so; a
    word among numbers is still an error naming its cell; genes as rows keep a text column (a
    description) as a gene annotation; a table of words alone has nothing to model."""
    from pathlib import Path

    path = Path(__file__).parent / "unseen" / "pbc_clinical.csv"
    frame = pd.read_csv(path, index_col=0)
    adata = read_dataset(path, "expression")
    assert adata.shape == (418, 18) and "sex" not in adata.var_names
    assert list(adata.obs["sex"]) == list(frame["sex"])
    numbers = frame.drop(columns="sex")
    np.testing.assert_allclose(adata.X, numbers.to_numpy(dtype=np.float32), equal_nan=True)
    assert decided(adata)["text columns"]["value"] == "kept as sample annotations, not modelled: sex"
    assert "'label'" in decided(adata)["text columns"]["setting"]
    typo = frame.astype(object)
    typo.iloc[4, 3] = "58,1"
    typo.to_csv(tmp_path / "typo.csv")
    with pytest.raises(InputError, match=r"line 6, column 'age': '58,1' is not a number"):
        read_dataset(tmp_path / "typo.csv", "expression")
    genes = numbers.iloc[:40].T
    genes.insert(0, "description", [f"clinical variable {name}" for name in genes.index])
    genes.columns = ["description"] + [f"patient_{i}" for i in genes.columns[1:]]
    genes.to_csv(tmp_path / "genes.csv", na_rep="NA")
    wide = read_dataset(tmp_path / "genes.csv", "expression", orientation="genes_as_rows")
    assert wide.shape == (40, 18) and wide.var["description"].iloc[0] == "clinical variable time"
    (tmp_path / "words.csv").write_text("sample,sex,stage\np1,f,early\np2,m,late\n")
    with pytest.raises(InputError, match="no column of numbers"):
        read_dataset(tmp_path / "words.csv", "expression")


def test_a_category_written_first_without_row_names(tmp_path):
    """scikit-learn's iris with the species first, written with index=False: a column whose words
    repeat throughout is a category, not row names (names are unique), so the rows are numbered and
    the species kept as an annotation; gene symbols that repeat a few times are names, made unique
    as scanpy does, on either axis; a repeated sample name still stops."""
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    frame = iris.frame.drop(columns="target")
    frame.insert(0, "species", iris.target_names[iris.target])
    frame.to_csv(tmp_path / "iris.csv", index=False)
    adata = read_dataset(tmp_path / "iris.csv", "expression")
    assert adata.shape == (150, 4) and list(adata.obs_names[:2]) == ["1", "2"]
    assert list(adata.obs["species"]) == list(frame["species"])
    np.testing.assert_allclose(adata.X, frame.iloc[:, 1:].to_numpy(), rtol=1e-6)
    assert "'species'" in decided(adata)["row names"]["why"] and "species" in decided(adata)["text columns"]["value"]
    genes = frame.iloc[:12, 1:].T.set_axis(["TP53", "TP53", "MYC", "EGFR"])
    genes.columns = [f"s{i}" for i in range(12)]
    genes.to_csv(tmp_path / "genes.csv")
    for orientation, path in (("genes_as_rows", tmp_path / "genes.csv"), ("samples_as_rows", tmp_path / "samples.csv")):
        genes.T.to_csv(tmp_path / "samples.csv")
        adata = read_dataset(path, "expression", orientation=orientation)
        assert list(adata.var_names) == ["TP53", "TP53-1", "MYC", "EGFR"] and adata.n_obs == 12
        np.testing.assert_allclose(adata.X, genes.T.to_numpy(), rtol=1e-6)
        assert decided(adata)["repeated feature names"]["value"].startswith("1 renamed")
    genes.T.set_axis(["s0", "s0", *genes.columns[2:]]).to_csv(tmp_path / "twice.csv")
    with pytest.raises(InputError, match="duplicate sample name 's0'"):
        read_dataset(tmp_path / "twice.csv", "expression", orientation="samples_as_rows")


# --- a new user's real tables (tests/unseen, see its README) -----------------------------------

UNSEEN = {  # file -> (samples, features), orientation, values
    "guo_qpcr.csv": ((428, 48), "samples_as_rows", "normalised"),
    "metabolites_cold.csv": ((52, 154), "samples_as_rows", "normalised"),
    "khan_srbct.csv.gz": ((63, 500), "genes_as_rows", "normalised"),
    "marioni_counts.tsv": ((10, 1500), "genes_as_rows", "counts"),
    "lung_otus.tsv": ((78, 500), "genes_as_rows", "counts"),
    "marioni_featurecounts.txt": ((10, 600), "genes_as_rows", "counts"),
    "renal_gds507.soft.gz": ((17, 400), "genes_as_rows", "intensities"),  # MAS5, not logged
}


@pytest.mark.parametrize("name", UNSEEN)
def test_unseen_tables_read_the_right_way_round(name):
    from pathlib import Path

    path = Path(__file__).parent / "unseen" / name
    if not path.exists():
        pytest.skip(f"{path} not built")
    adata = read_dataset(path, "expression")
    shape, orientation, values = UNSEEN[name]
    assert adata.shape == shape
    assert decided(adata)["orientation"]["value"] == orientation and decided(adata)["values"]["value"] == values


def test_clinical_table_with_negative_whole_numbers_asks_for_values(tmp_path):
    """lifelines' lung table: whole numbers, weight loss negative for some patients."""
    from pathlib import Path

    path = Path(__file__).parent / "unseen" / "lung_clinical.csv"
    if not path.exists():
        pytest.skip(f"{path} not built")
    with pytest.raises(InputError, match=r"sample '\d+', feature 'wt.loss': every value is a whole number.*-\d+ is negative"):
        read_dataset(path, "expression")
    assert read_dataset(path, "expression", values="normalised").shape == (228, 10)


def _gds507_values() -> pd.DataFrame:
    adata = read_dataset(UNSEEN_DIR / "renal_gds507.soft.gz", "expression")
    return pd.DataFrame(adata.X, index=adata.obs_names, columns=adata.var_names)


def test_only_unlogged_values_on_one_scale_are_read_as_intensities(tmp_path):
    """GEO2R's test for values not yet logged decides, on tables of LINEAR_MIN_FEATURES features or
    more: GDS507's MAS5 values are intensities; the same values logged, or 40 of its probes (as
    few features as a clinical table, whose columns need not share a scale), stay normalised."""
    from omicsgen.io.expression import LINEAR_MIN_FEATURES

    table = _gds507_values()
    cases = {"mas5": table, "logged": np.log2(table + 1), "few": table.iloc[:, : LINEAR_MIN_FEATURES - 10]}
    kinds = {}
    for name, frame in cases.items():
        frame.to_csv(tmp_path / f"{name}.csv")
        kinds[name] = decided(read_dataset(tmp_path / f"{name}.csv", "expression"))["values"]
    assert kinds["mas5"]["value"] == "intensities" and "99th percentile" in kinds["mas5"]["why"]
    assert kinds["logged"]["value"] == "normalised" and "GEO2R" not in kinds["logged"]["why"]
    assert kinds["few"]["value"] == "normalised"


def test_a_gds_files_declared_value_type_decides_the_scale(tmp_path):
    """GDS507 declares `!dataset_value_type = count` (MAS5 signal): intensities, and the page cites
    the line. The same file declaring `transformed count` with its values logged is used as given.
    The sheet's `values` still wins."""
    with gzip.open(UNSEEN_DIR / "renal_gds507.soft.gz", "rt") as handle:
        lines = handle.read().splitlines()
    linear = decided(read_dataset(UNSEEN_DIR / "renal_gds507.soft.gz", "expression"))["values"]
    assert linear["value"] == "intensities" and "!dataset_value_type = count, a linear scale" in linear["why"]
    begin, end = lines.index("!dataset_table_begin"), lines.index("!dataset_table_end")
    logged = [line.replace("!dataset_value_type = count", "!dataset_value_type = transformed count") for line in lines[: begin + 2]]
    for line in lines[begin + 2 : end]:
        fields = line.split("\t")
        logged.append("\t".join(fields[:2] + [f"{np.log2(float(v) + 1):.4f}" for v in fields[2:]]))
    (tmp_path / "logged.soft").write_text("\n".join(logged + lines[end:]) + "\n")
    steps = decided(read_dataset(tmp_path / "logged.soft", "expression"))
    assert steps["values"]["value"] == "normalised" and "transformed count: on a log scale already" in steps["values"]["why"]
    # Declared `count` but told otherwise in the sheet: the sheet wins.
    told = decided(read_dataset(UNSEEN_DIR / "renal_gds507.soft.gz", "expression", values="normalised"))["values"]
    assert told["value"] == "normalised" and "dataset_value_type" not in told["why"]


def test_sparse_intensities_are_read_as_the_dense_ones(tmp_path):
    """An h5ad holding the MAS5 values in a CSR matrix, with a tenth of them zero (unstored):
    the same decision as the dense table with those zeros."""
    table = _gds507_values().to_numpy()
    table[np.random.default_rng(0).random(table.shape) < 0.1] = 0.0
    frame = pd.DataFrame(table, index=[f"s{i}" for i in range(len(table))], columns=_gds507_values().columns)
    ad.AnnData(sp.csr_matrix(table), obs=pd.DataFrame(index=frame.index), var=pd.DataFrame(index=frame.columns)).write_h5ad(tmp_path / "t.h5ad")
    frame.to_csv(tmp_path / "t.csv")
    sparse, dense = (decided(read_dataset(tmp_path / f"t.{ext}", "expression"))["values"] for ext in ("h5ad", "csv"))
    assert sparse["value"] == dense["value"] == "intensities" and sparse["why"].split(":")[-1] == dense["why"].split(":")[-1]


def test_declared_intensities_refuse_a_negative_value(tmp_path):
    frame = _gds507_values()
    frame.iloc[3, 5] = -12.5
    frame.to_csv(tmp_path / "t.csv")
    with pytest.raises(InputError, match=r"declared intensities, but -12.5 is negative") as err:
        read_dataset(tmp_path / "t.csv", "expression", values="intensities")
    assert frame.index[3] in str(err.value) and frame.columns[5] in str(err.value)


def _marioni_long(first: str) -> tuple[pd.DataFrame, ad.AnnData]:
    """200 genes of the Marioni counts (unshipped) melted to one row per (gene, sample) pair."""
    wide = read_dataset(UNSEEN_DIR / "marioni_counts.tsv", "expression")[:, :200]
    frame = pd.DataFrame(wide.X, index=wide.obs_names.rename("sample"), columns=wide.var_names)
    long = frame.reset_index().melt(id_vars="sample", var_name="gene", value_name="count")
    columns = ["gene", "sample", "count"] if first == "gene" else ["sample", "gene", "count"]
    return long[columns], wide


@pytest.mark.parametrize("first", ["gene", "sample"])
def test_a_long_table_is_pivoted_into_its_matrix(tmp_path, first):
    """One row per (gene, sample) pair, either column first: the matrix the pairs list, the axes
    told apart by their names; pairs not listed are missing values, and the page says so."""
    long, wide = _marioni_long(first)
    long.drop(index=[3, 50, 777]).to_csv(tmp_path / "long.tsv", sep="\t", index=False)
    adata = read_dataset(tmp_path / "long.tsv", "expression")
    assert adata.shape == wide.shape and set(adata.obs_names) == set(wide.obs_names)
    expected = wide[adata.obs_names, adata.var_names].X.copy()
    for row in (3, 50, 777):
        sample, gene = long.loc[row, "sample"], long.loc[row, "gene"]
        expected[adata.obs_names.get_loc(sample), adata.var_names.get_loc(gene)] = np.nan
    np.testing.assert_array_equal(adata.X, expected)
    steps = decided(adata)
    assert steps["layout"]["value"].startswith("long") and "3 pairs not listed are missing values" in steps["layout"]["why"]
    assert steps["values"]["value"] == "counts"


def test_a_long_table_that_lists_a_pair_twice_names_both_lines(tmp_path):
    """Replicates or a bad join: a pair on two rows of an otherwise long table is not read as one
    feature of thousands of samples; ingest stops, names the pair and both lines, and writes nothing."""
    long, _ = _marioni_long("gene")
    doubled = pd.concat([long, long.iloc[[40]]], ignore_index=True)  # row 40 again, as the last line
    doubled.to_csv(tmp_path / "long.tsv", sep="\t", index=False)
    gene, sample = long.iloc[40]["gene"], long.iloc[40]["sample"]
    from omicsgen.ingest import ingest

    with pytest.raises(InputError) as caught:
        ingest(tmp_path / "long.tsv", tmp_path / "ingested.h5ad", "long", "expression")
    assert not (tmp_path / "ingested.h5ad").exists()
    message = str(caught.value)
    assert "long.tsv" in message and "lists a pair twice" in message and repr(gene) in message and repr(sample) in message
    assert f"on line {40 + 2} and again on line {len(doubled) + 1}" in message  # the header is line 1
    assert "1 row repeats an earlier pair" in message


def test_two_text_columns_whose_pairs_repeat_are_annotations_not_a_long_table(tmp_path):
    """The PBC trial's sex and status (as words) beside bilirubin: the pairs repeat, so each row is
    a patient with two annotations, as before."""
    pbc = pd.read_csv(UNSEEN_DIR / "pbc_clinical.csv")
    table = pd.DataFrame({"sex": pbc["sex"], "status": pbc["status"].map({0: "censored", 1: "transplant", 2: "dead"}),
                          "bili": pbc["bili"]})
    table.to_csv(tmp_path / "t.csv", index=False)
    adata = read_dataset(tmp_path / "t.csv", "expression", orientation="samples_as_rows")
    assert adata.shape == (len(pbc), 1) and list(adata.obs[["sex", "status"]].columns) == ["sex", "status"]
    assert "layout" not in decided(adata)


@pytest.mark.parametrize("name, header, counts", [
    ("quant.sf", "Name\tLength\tEffectiveLength\tTPM\tNumReads", "NumReads"),
    ("abundance.tsv", "target_id\tlength\teff_length\test_counts\ttpm", "est_counts"),
    ("s1.genes.results", "gene_id\ttranscript_id(s)\tlength\teffective_length\texpected_count\tTPM\tFPKM", "expected_count"),
])
def test_one_samples_quantification_is_refused_with_what_to_do(tmp_path, name, header, counts):
    """Salmon's, kallisto's and RSEM's per-sample files (their own headers) would read as a table
    whose 'samples' are lengths, TPM and counts: ingest stops, names the tool and says to merge."""
    width = len(header.split("\t"))
    rows = "".join(f"ENST0000000000{i}" + "\tENSG1" * (width == 7) + f"\t{1500 + i}\t{1320.5 + i}" +
                   "\t12.5\t40.0" + "\t3.1" * (width == 7) + "\n" for i in range(3))
    (tmp_path / name).write_text(header + "\n" + rows)
    with pytest.raises(InputError, match=rf"one sample's quantification .*'{counts}' columns into one table") as err:
        read_dataset(tmp_path / name, "expression")
    assert "estimated_counts" in str(err.value)
