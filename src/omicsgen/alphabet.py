"""Token tables for DNA, RNA and protein; see docs/data-format.md for the id layout."""

from __future__ import annotations

import numpy as np

PAD, MISSING, GAP = 0, 1, 2
FIRST_RESIDUE = 3

RESIDUES = {"dna": "ACGT", "rna": "ACGU", "protein": "ACDEFGHIKLMNPQRSTVWY"}
MISSING_SYMBOL = {"dna": "N", "rna": "N", "protein": "X"}
# IUPAC ambiguity codes: information is lost at these positions, so they are "missing".
AMBIGUOUS = {
    "dna": "NRYSWKMBDHV",
    "rna": "NRYSWKMBDHV",
    "protein": "XBZJUO*",  # U (selenocysteine), O (pyrrolysine) and stop are not modelled residues
}


def symbols(name: str) -> list[str]:
    return ["<pad>", MISSING_SYMBOL[name], "-", *RESIDUES[name]]


def lookup_table(name: str) -> np.ndarray:
    """A 256-entry byte -> token table; -1 marks bytes outside the alphabet."""
    table = np.full(256, -1, dtype=np.int16)
    for case in (str.upper, str.lower):
        for i, residue in enumerate(RESIDUES[name]):
            table[ord(case(residue))] = FIRST_RESIDUE + i
        for code in AMBIGUOUS[name]:
            table[ord(case(code))] = MISSING
    table[ord("-")] = table[ord(".")] = GAP
    return table


def decode(tokens: np.ndarray, symbol_list: list[str]) -> list[str]:
    """Token rows -> strings; a row ends at its first pad."""
    chars = np.array([s if i else "" for i, s in enumerate(symbol_list)], dtype=object)
    out = []
    for row in np.asarray(tokens):
        end = np.flatnonzero(row == PAD)
        row = row[: end[0]] if end.size else row
        out.append("".join(chars[row]))
    return out


def gc_fraction(tokens: np.ndarray, name: str) -> np.ndarray:
    """G+C over the known bases of each record (gaps, pads, ambiguity codes excluded); NaN for
    protein and for records without a known base."""
    if name == "protein":
        return np.full(len(tokens), np.nan)
    table = symbols(name)
    known = (tokens >= FIRST_RESIDUE).sum(axis=1)
    gc = ((tokens == table.index("G")) | (tokens == table.index("C"))).sum(axis=1)
    return np.divide(gc, known, out=np.full(len(tokens), np.nan), where=known > 0)
