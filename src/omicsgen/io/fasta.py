"""Sequence files (FASTA and what else Biopython reads) -> AnnData with a token matrix.

FASTA is streamed with Biopython's SimpleFastaParser and each record tokenised through a byte
lookup table into a preallocated int8 matrix: memory stays near the sequence bytes plus the
matrix, whatever the file's size.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from Bio import SeqIO
from Bio.SeqIO.FastaIO import SimpleFastaParser

from .. import alphabet as alph
from ..alignment import alignment_facts
from ..decisions import record_decision
from ..errors import InputError
from ..provenance import meta
from ._open import open_text

SEQUENCE_FORMATS = ("fasta", "fasta-blast", "fastq", "genbank", "stockholm")
_NUCLEOTIDE_LETTERS = set("ACGTUNRYSWKMBDHV")
_COMMENT = ("#", ";", "!")


def read_sequences(path: Path, fmt: str = "fasta", alphabet: str = "auto") -> ad.AnnData:
    with open_text(path) as handle:
        titles, sequences = _read_fasta(handle, path) if fmt in ("fasta", "fasta-blast") else _read_other(handle, path, fmt)
    if not titles:
        raise InputError(path, f"no {fmt} records found" if fmt not in ("fasta", "fasta-blast") else "the file is empty",
                         hint="check the 'path' and 'format' columns of the dataset sheet")
    ids, descriptions, renamed = _split_titles(titles, path)
    name, why = detect_alphabet(sequences) if alphabet == "auto" else (alphabet, "set in the sheet")
    if name not in alph.RESIDUES:
        raise InputError(path, f"unknown alphabet '{alphabet}'", hint="use dna, rna, protein or auto")
    stops = 0
    if name == "protein":  # translations end in '*' (transeq, Prodigal): a stop, not a residue
        stripped = [sequence.rstrip(b"*") if sequence.endswith(b"*") and len(sequence) > 1 else sequence
                    for sequence in sequences]
        stops = sum(len(a) != len(b) for a, b in zip(sequences, stripped))
        sequences = stripped
    tokens, lengths, gc = tokenize(path, ids, sequences, name)
    n_gapped = sum(b"-" in s or b"." in s for s in sequences)
    del sequences
    obs = pd.DataFrame({"id": ids, "description": descriptions, "length": lengths, "gc": gc},
                       index=pd.Index(ids, name="record"))
    adata = ad.AnnData(obs=obs, obsm={"tokens": tokens})
    adata.uns["alphabet"] = {"name": name, "symbols": alph.symbols(name)}
    record_decision(adata, "alphabet", name, why, "the sheet's 'alphabet' column (dna, rna or protein)")
    if renamed:
        record_decision(adata, "record ids", f"{len(renamed)} repeated ids renamed",
                        f"ids must be unique; a repeat gets .2, .3, ... ({', '.join(renamed[:3])}{', ...' if len(renamed) > 3 else ''})",
                        "none: give the records unique ids in the file")
    if stops:
        record_decision(adata, "stop codons", f"the final '*' of {stops} records removed",
                        "a translation ends at its stop codon: '*' there is not a residue (a '*' inside a record "
                        "is kept, as an unknown residue)", "none: remove the '*' in the file to silence this")
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        shown = ", ".join(f"'{ids[i]}'" for i in empty[:5]) + (", ..." if len(empty) > 5 else "")
        record_decision(adata, "records without a sequence", f"{len(empty):,} kept here, removed by preprocess",
                        f"their header is followed by no sequence line ({shown}); preprocess's length filter removes "
                        "and counts them, as nothing in them can be modelled", "none: remove them from the file")
    _record_alignment(adata, lengths, n_gapped)
    return adata


def _record_alignment(adata: ad.AnnData, lengths: np.ndarray, n_gapped: int) -> None:
    """`uns["omicsgen"]["aligned"]`: position i means the same site in every record (a gapped
    alignment, or equal-length records whose columns are conserved: omicsgen.alignment);
    `uns["omicsgen"]["gapped"]`: some record holds alignment gaps ('-' or '.'). Records without a
    sequence, which preprocess removes, are left out."""
    tokens = adata.obsm["tokens"]
    if not lengths.all():  # copies the matrix, so only when some record is empty
        tokens, lengths = tokens[lengths > 0], lengths[lengths > 0]
    facts = alignment_facts(tokens)
    info = meta(adata)
    info["aligned"], info["gapped"] = facts["aligned"], facts["gapped"]
    gaps = f"{n_gapped:,} of {len(lengths):,} records hold gaps ('-' or '.')" if n_gapped else "no record holds a gap"
    if facts["gapped"]:
        value, why = "aligned (gapped alignment)", f"{gaps}, all {int(lengths.max()):,} positions long"
    elif facts["equal_length"] and len(lengths) == 1:
        value, why = "unaligned", "a single record: nothing to align it with"
    elif facts["equal_length"]:
        value = "aligned (equal length, conserved columns)" if facts["aligned"] else "unaligned (equal length)"
        why = (f"every record is {int(lengths[0]):,} positions long; column conservation "
               f"{facts['conservation']:.3f} against {facts['rotated_conservation']:.3f} for the same records "
               f"rotated at random offsets ({'well' if facts['aligned'] else 'not'} above it): "
               + ("the columns line up" if facts["aligned"] else "windows at arbitrary offsets, not an alignment"))
    else:
        value = "unaligned"
        why = f"record lengths differ ({int(lengths.min()):,}-{int(lengths.max()):,}); {gaps}"
    record_decision(adata, "alignment", value, why,
                    "preprocess.sequence.align (auto: preprocess aligns one family's unaligned records with FAMSA)")


def _read_fasta(handle, path: Path) -> tuple[list[str], list[bytes]]:
    titles, sequences = [], []
    for title, sequence in SimpleFastaParser(_checked_lines(handle, path)):
        titles.append(title)
        sequences.append(sequence.encode("ascii", "replace"))
    return titles, sequences


def _checked_lines(handle, path: Path):
    """Lines, after checking that only blank or comment lines ('#', ';', '!', as in Pfam and BLAST
    exports) come before the first header; SimpleFastaParser would skip anything silently."""
    for number, line in enumerate(handle, start=1):
        if line.startswith(">"):
            yield line
            break
        if line.strip() and not line.startswith(_COMMENT):
            raise InputError(path, "does not start with a FASTA header ('>id')", where=f"line {number}",
                             hint="is this a FASTA file? otherwise set 'format' in the sheet")
    yield from handle


def _read_other(handle, path: Path, fmt: str) -> tuple[list[str], list[bytes]]:
    titles, sequences = [], []
    try:
        for record in SeqIO.parse(handle, fmt):
            titles.append(f"{record.id} {record.description.removeprefix(record.id).strip()}".strip())
            sequences.append(str(record.seq).encode("ascii", "replace"))
    except ValueError as err:
        raise InputError(path, f"not valid {fmt}: {str(err).splitlines()[0]}") from None
    return titles, sequences


def _split_titles(titles: list[str], path: Path) -> tuple[list[str], list[str], list[str]]:
    """id = the title's first word, as Biopython and every aligner take it. A repeated id
    (taxonomy-labelled 16S files repeat their headers) becomes `id.2`, `id.3`, ... and the
    renamed ids are returned third, to be shown as a decision."""
    parts = [t.split(None, 1) for t in titles]
    ids = [p[0] if p else "" for p in parts]
    descriptions = [p[1] if len(p) > 1 else "" for p in parts]
    seen: dict[str, int] = {}
    renamed = []
    for number, record_id in enumerate(ids, start=1):
        if not record_id:
            raise InputError(path, "a header with no id", where=f"record {number}")
        seen[record_id] = seen.get(record_id, 0) + 1
        if seen[record_id] > 1:
            ids[number - 1] = f"{record_id}.{seen[record_id]}"
            renamed.append(ids[number - 1])
    if len(set(ids)) != len(ids):  # a renamed id met a real one (a.2 in the file): say so
        duplicated = pd.Index(ids)[pd.Index(ids).duplicated()][0]
        raise InputError(path, f"duplicate record id '{duplicated}' after renaming repeated ids", hint="make the ids unique")
    return ids, descriptions, renamed


def detect_alphabet(sequences: list[bytes]) -> tuple[str, str]:
    """DNA/RNA when nucleotide letters make up nearly all of the content, else protein; and why."""
    sample = b"".join(sequences[:2000]).upper().replace(b"-", b"").replace(b".", b"")
    letters = set(sample.decode("ascii", "replace"))
    of = f"the first {min(len(sequences), 2000):,} records" if len(sequences) > 2000 else f"the {len(sequences):,} records"
    others = sorted(letters - _NUCLEOTIDE_LETTERS)
    if others or not sample:
        shown = ", ".join(repr(c) for c in others[:6])
        return "protein", f"letters that no nucleotide code uses ({shown}) in {of}" if others else "no letters"
    canonical = sum(sample.count(c) for c in b"ACGTUN") / len(sample)
    if canonical <= 0.9:
        return "protein", (f"only {canonical:.0%} of the letters in {of} are A, C, G, T/U or N; "
                           "the rest are IUPAC codes that are also amino acids")
    if b"U" in sample and b"T" not in sample:
        return "rna", f"{canonical:.0%} of the letters in {of} are A, C, G, U or N, with U and no T"
    return "dna", f"{canonical:.0%} of the letters in {of} are A, C, G, T or N"


def tokenize(path: Path, ids: list[str], sequences: list[bytes], name: str):
    """Each record through a byte lookup table into one preallocated, zero-padded int8 matrix.

    Returns the matrix, the record lengths and their GC fractions (over known bases; NaN for
    protein), the latter counted per record so no matrix-sized temporary is ever made.
    """
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    if not lengths.any():
        raise InputError(path, f"no record has a sequence (the {len(ids):,} headers are followed by no sequence line)",
                         hint="is this a FASTA file of ids only? each '>id' line needs its sequence below it")
    table = alph.lookup_table(name).astype(np.int8)
    symbols = alph.symbols(name)
    gc_tokens = [symbols.index("G"), symbols.index("C")] if name != "protein" else []
    tokens = np.zeros((len(sequences), int(lengths.max())), dtype=np.int8)
    gc = np.full(len(sequences), np.nan)
    for row, sequence in enumerate(sequences):
        encoded = table[np.frombuffer(sequence, dtype=np.uint8)]
        if encoded.min(initial=0) < 0:
            _raise_bad_character(path, ids[row], sequence, encoded, name)
        tokens[row, : len(sequence)] = encoded
        if gc_tokens:
            counts = np.bincount(encoded, minlength=len(symbols))
            known = counts[alph.FIRST_RESIDUE :].sum()
            gc[row] = counts[gc_tokens].sum() / known if known else np.nan
    return tokens, lengths, gc


def _raise_bad_character(path: Path, record_id: str, sequence: bytes, encoded: np.ndarray, name: str):
    position = int(np.argmax(encoded < 0))
    raise InputError(path, f"character '{chr(sequence[position])}' is not in the {name} alphabet",
                     where=f"record '{record_id}', position {position + 1}",
                     hint="set 'alphabet' in the sheet (dna, rna, protein) if it was detected wrongly")
