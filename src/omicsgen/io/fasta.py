"""Sequence files (FASTA and what else Biopython reads) -> AnnData with a token matrix."""

from __future__ import annotations

import io
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from Bio import SeqIO

from .. import alphabet as alph
from ..errors import InputError
from ._open import read_text

SEQUENCE_FORMATS = ("fasta", "fasta-blast", "fastq", "genbank", "stockholm")
_NUCLEOTIDE_LETTERS = set("ACGTUNRYSWKMBDHV")


def read_sequences(path: Path, fmt: str = "fasta", alphabet: str = "auto") -> ad.AnnData:
    ids, descriptions, sequences = _parse_records(path, fmt)
    name = detect_alphabet(sequences) if alphabet == "auto" else alphabet
    if name not in alph.RESIDUES:
        raise InputError(path, f"unknown alphabet '{alphabet}'", hint="use dna, rna, protein or auto")
    tokens, lengths = tokenize(path, ids, sequences, name)
    obs = pd.DataFrame({
        "id": ids,
        "description": descriptions,
        "length": lengths,
        "gc": gc_fraction(tokens, name),
    }, index=pd.Index(ids, name="record"))
    adata = ad.AnnData(obs=obs, obsm={"tokens": tokens})
    adata.uns["alphabet"] = {"name": name, "symbols": alph.symbols(name)}
    return adata


def _parse_records(path: Path, fmt: str):
    handle = read_text(path)
    if fmt in ("fasta", "fasta-blast"):
        handle, fmt = _skip_leading_comments(handle, path), "fasta"
    elif not handle.getvalue().strip():
        raise InputError(path, "the file is empty", hint="check the 'path' column of the dataset sheet")
    ids, descriptions, sequences, seen = [], [], [], {}
    try:
        for number, record in enumerate(SeqIO.parse(handle, fmt), start=1):
            if record.id in seen:
                raise InputError(path, f"duplicate record id '{record.id}'",
                                 where=f"records {seen[record.id]} and {number}",
                                 hint="record ids must be unique")
            seen[record.id] = number
            ids.append(record.id)
            descriptions.append(record.description.removeprefix(record.id).strip())
            sequences.append(str(record.seq).encode("ascii", "replace"))
    except ValueError as err:
        raise InputError(path, f"not valid {fmt}: {str(err).splitlines()[0]}") from None
    if not ids:
        raise InputError(path, f"no {fmt} records found", hint="check the file and its 'format'")
    return ids, descriptions, sequences


def _skip_leading_comments(handle: io.StringIO, path: Path) -> io.StringIO:
    """Drop '#', ';' or '!' comment lines before the first record (Pfam and BLAST exports have them).

    Done here rather than with Biopython's 'fasta-blast' parser, which in 1.88 repeats the first
    record's id for every record.
    """
    lines = handle.getvalue().splitlines(keepends=True)
    start = 0
    while start < len(lines) and (not lines[start].strip() or lines[start][:1] in "#;!"):
        start += 1
    if start == len(lines):
        raise InputError(path, "the file is empty", hint="check the 'path' column of the dataset sheet")
    if not lines[start].startswith(">"):
        raise InputError(path, "does not start with a FASTA header ('>id')", where=f"line {start + 1}",
                         hint="is this a FASTA file? otherwise set 'format' in the sheet")
    return io.StringIO("".join(lines[start:]))


def detect_alphabet(sequences: list[bytes]) -> str:
    """DNA/RNA when nucleotide letters make up nearly all of the content, else protein."""
    sample = b"".join(sequences[:2000]).upper().replace(b"-", b"").replace(b".", b"")
    letters = set(sample.decode("ascii", "replace"))
    if letters <= _NUCLEOTIDE_LETTERS and sample:
        canonical = sum(sample.count(c) for c in b"ACGTUN") / len(sample)
        if canonical > 0.9:
            return "rna" if b"U" in sample and b"T" not in sample else "dna"
    return "protein"


def tokenize(path: Path, ids: list[str], sequences: list[bytes], name: str):
    """Map all records at once through a byte lookup table into a padded int8 matrix."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise InputError(path, "the record has no sequence", where=f"record '{ids[empty[0]]}'")
    flat = alph.lookup_table(name)[np.frombuffer(b"".join(sequences), dtype=np.uint8)]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    bad = np.flatnonzero(flat < 0)
    if bad.size:
        record = int(np.searchsorted(starts, bad[0], side="right") - 1)
        position = int(bad[0] - starts[record] + 1)
        char = chr(sequences[record][position - 1])
        raise InputError(path, f"character '{char}' is not in the {name} alphabet",
                         where=f"record '{ids[record]}', position {position}",
                         hint="set 'alphabet' in the sheet (dna, rna, protein) if it was detected wrongly")
    rows = np.repeat(np.arange(len(sequences)), lengths)
    cols = np.arange(flat.size) - np.repeat(starts, lengths)
    tokens = np.zeros((len(sequences), int(lengths.max())), dtype=np.int8)
    tokens[rows, cols] = flat
    return tokens, lengths


def gc_fraction(tokens: np.ndarray, name: str) -> np.ndarray:
    """GC over known bases (ambiguity codes and gaps excluded); NaN for protein."""
    if name == "protein":
        return np.full(tokens.shape[0], np.nan)
    symbols = alph.symbols(name)
    gc = np.isin(tokens, [symbols.index("G"), symbols.index("C")]).sum(1)
    known = (tokens >= alph.FIRST_RESIDUE).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(known > 0, gc / np.maximum(known, 1), np.nan)
