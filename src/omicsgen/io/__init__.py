"""Readers that turn a user's files into AnnData, following docs/data-format.md."""

from __future__ import annotations

from pathlib import Path

import anndata as ad

from ..errors import InputError
from .expression import EXPRESSION_FORMATS, label_values, read_expression
from .fasta import SEQUENCE_FORMATS, read_sequences
from .timecourse import TIMECOURSE_FORMATS, read_timecourse

MODALITIES = ("sequence", "expression", "timecourse")


def guess_format(path: str | Path) -> str:
    """The format a file's name implies: `.fa.gz` -> fasta, `.tsv` -> tsv, `.h5` -> 10x-h5, ..."""
    path = Path(path)
    if path.is_dir():
        return "zarr" if path.suffix == ".zarr" else "10x-mtx"
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bgz")]
    suffix = suffixes[-1] if suffixes else ""
    by_suffix = {
        ".fa": "fasta", ".fasta": "fasta", ".fna": "fasta", ".faa": "fasta", ".fas": "fasta", ".fsa": "fasta",
        ".ffn": "fasta", ".frn": "fasta", ".mfa": "fasta", ".afa": "fasta",
        ".fq": "fastq", ".fastq": "fastq", ".gb": "genbank", ".gbk": "genbank", ".gbff": "genbank",
        ".sto": "stockholm", ".stk": "stockholm",
        ".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".tab": "tsv", ".soft": "tsv",  # GEO's GDS files
        ".sf": "tsv", ".results": "tsv",  # Salmon's and RSEM's per-sample tables (refused with what to do)
        ".h5ad": "h5ad", ".h5": "10x-h5",
    }
    if suffix in UNREADABLE:
        raise InputError(path, f"a {suffix} file cannot be read", hint=UNREADABLE[suffix])
    if suffix not in by_suffix:
        raise InputError(path, f"cannot tell the format from the file name (suffix '{suffix}')",
                         hint="add a 'format' column to the dataset sheet")
    return by_suffix[suffix]


_COMPRESSED = "omicsgen reads plain and gzip-compressed files: decompress it, or recompress it with gzip"
_CONVERT = "save it as h5ad (anndata), or write the matrix as CSV / tab-separated text"
# Suffixes users give that no format reads, with what to do instead.
UNREADABLE = {
    ".xlsx": "an Excel workbook: save the sheet as CSV or tab-separated text", ".xls": "an Excel workbook: save the "
    "sheet as CSV or tab-separated text", ".bz2": _COMPRESSED, ".xz": _COMPRESSED, ".zip": _COMPRESSED, ".zst": _COMPRESSED,
    ".mtx": "a Matrix Market file: give the folder that holds it with its barcodes and features (Cell Ranger's layout)",
    ".loom": _CONVERT, ".rds": _CONVERT, ".rda": _CONVERT, ".h5seurat": _CONVERT,
}


def read_dataset(path, modality: str, fmt: str | None = None, alphabet: str = "auto",
                 orientation: str = "auto", values: str = "auto", matrix: str = "X") -> ad.AnnData:
    """Read one dataset of the sheet into AnnData; raises InputError on anything malformed."""
    path = Path(path)
    if modality not in MODALITIES:
        raise InputError(path, f"unknown modality '{modality}'", hint=f"use one of {', '.join(MODALITIES)}")
    if not path.exists():
        raise InputError(path, "no such file or directory", hint="check the 'path' column of the dataset sheet")
    fmt = fmt or guess_format(path)
    formats = {"sequence": SEQUENCE_FORMATS, "expression": EXPRESSION_FORMATS, "timecourse": TIMECOURSE_FORMATS}
    if fmt not in formats[modality]:
        raise InputError(path, f"format '{fmt}' is not readable as {modality}",
                         hint=f"{modality} formats: {', '.join(formats[modality])}")
    if modality == "sequence":
        return read_sequences(path, fmt, alphabet)
    if modality == "expression":
        return read_expression(path, fmt, orientation, values, matrix)
    adata = read_timecourse(path, fmt)
    # Count time courses (RNA-seq or 16S counts over time) are log-normalised like count tables:
    # a Gaussian model on raw counts (mouse diet OTUs, 0 to 1,360) drew 345 where real rows hold 0.
    label_values(adata, values, path)
    return adata
