"""Which axis of a table holds the samples and which the features, decided from the names on
each axis first and the shape second (`orientation: auto`).

The shape alone misleads: a bulk table has far more genes than samples, but a qPCR or a
single-cell table often has far more cells than genes. The names say more. A feature axis
carries identifiers that are not plain numbers or sample ids: Ensembl ids, probe ids, gene
symbols of any organism (ACTB, Actb, YAL001C, AT1G01010, b0001, thrL), metabolite names
("1,3-dimethyluric acid"). A sample axis carries integer ids, cell barcodes, GEO/SRA/TCGA
accessions, or a few prefixes with running numbers (sample1, R1L2Liver, X0h.1). The index's own
name (the header's first field: gene_id, symbol, OTU / cell, sample, barcode) settles its axis.

Each axis gets a score from -2 (clearly samples) to +2 (clearly features). When the two axes
differ by 2 or more, the names decide; by 1, they decide unless the shape disagrees; when the
names do not lean either way, a shape of 5 to 1 or more decides. Otherwise: stop and ask.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import InputError

ORIENTATIONS = ("auto", "samples_as_rows", "genes_as_rows")
SHAPE_RATIO = 5  # one axis this many times longer than the other: the longer one holds the features
MAX_NAMES = 2000  # names looked at per axis (evenly spaced), so a 1M-cell table costs no more

# Names of the index column (the header's first field); letters only before the word, so
# "hgnc_symbol" and "ensembl_gene_id" match and "Xgene" does not.
_FEATURE_AXIS = re.compile(r"(?<![a-z])(gene|symbol|ensembl|entrez|feature|probe|transcript|protein|peptide|"
                           r"metabolite|compound|analyte|otu|asv|taxon|taxa|locus|orf|mirna|kegg|hmdb)", re.I)
_SAMPLE_AXIS = re.compile(r"(?<![a-z])(sample|cell|barcode|patient|donor|subject|specimen|individual|"
                          r"replicate|library|gsm|srr|run_id)", re.I)

# Identifiers that are features wherever they appear.
_FEATURE_ID = re.compile(
    r"ENS[A-Z]{0,6}[GTPER]\d{6,}(\.\d+)?"  # Ensembl genes / transcripts / proteins, any species
    r"|[NX][MRP]_\d+(\.\d+)?"  # RefSeq
    r"|(AFFX-)?[\w.-]*_at|\d{5,}_st"  # Affymetrix probe sets
    r"|ILMN_\d+|A_\d\d_P\d+"  # Illumina, Agilent probes
    r"|Y[A-P][LR]\d{3}[WC](-[A-Z])?"  # yeast ORFs (YAL001C)
    r"|AT[1-5CM]G\d{5}(\.\d+)?"  # Arabidopsis AGI codes (AT1G01010)
    r"|b\d{4}"  # E. coli b-numbers (b0001)
    r"|FBgn\d+|FBtr\d+|WBGene\d+|ZDB-GENE-[\d-]+|(HGNC|MGI|RGD|SGD|CHEBI|HMDB):?\w+"
    r"|LOC\d+|LINC\d+|[a-z]{3}-(mir|miR|let)-[\w-]+"  # uncharacterised loci, miRBase names
)
# Identifiers that are samples wherever they appear, by what they are.
_SAMPLE_IDS = {
    "integer ids": re.compile(r"\d+(\.0)?"),  # R's row numbers, pandas' default index
    "sample accessions": re.compile(r"(GSM|SRR|SRX|SRS|ERR|ERX|ERS|DRR|DRX|SAMN|SAMEA|SAMD)\d+|TCGA-\w\w-\w{4}.*"),
    "cell barcodes": re.compile(r"(.*[^A-Za-z])?[ACGTN]{8,}([^A-Za-z].*)?"),  # AAACCTGAGATAGGAG-1, lib1_ACGT...
}
# A running number after a generic word: s1, sample_2, Cell3, X0h (R's make.names), GENE1, g2.
# (Names with digits as '#'; the number is required.)
_SAMPLE_STEM = re.compile(r"(s|sample|smp|cell|c|rep|replicate|patient|pt|donor|subject|mouse|animal|"
                          r"well|lib|library|run|x|id)[^a-z#]*#[^a-z]*")
_FEATURE_STEM = re.compile(r"(g|gene|feature|feat|probe|transcript|otu|asv|protein|peak|metabolite|compound)[^a-z#]*#[^a-z]*")


class Evidence(NamedTuple):
    score: int  # -2 clearly samples ... +2 clearly features
    says: str  # what was seen, for the decision and the error message


class Orientation(NamedTuple):
    genes_as_rows: bool
    why: str


def decide(rows: pd.Index, columns: pd.Index, path: Path) -> Orientation:
    """Genes as rows or samples as rows, and why; InputError when names and shape cannot tell."""
    row, col = axis_evidence(rows, rows.name), axis_evidence(columns, None)
    names = row.score - col.score
    shape = int(np.sign(_shape_vote(len(rows), len(columns))))
    seen = f"row names: {row.says}; column names: {col.says}"
    shape_says = _shape_text(len(rows), len(columns))
    if abs(names) >= 2 or (abs(names) == 1 and shape in (0, np.sign(names))):
        agree = "; the shape agrees" if shape == np.sign(names) else ""
        return Orientation(names > 0, f"names ({seen}){agree}")
    if names == 0 and shape != 0:
        return Orientation(shape > 0, f"shape ({shape_says}); the names do not tell ({seen})")
    problem = ("the names and the shape disagree" if names else "neither the names nor the shape tell") + \
        " which axis holds the samples"
    raise InputError(path, f"{problem} ({seen}; {shape_says})",
                     hint="set 'orientation' in the sheet: samples_as_rows (one row a sample or cell) "
                          "or genes_as_rows (one row a gene or feature)")


def axis_evidence(names: pd.Index, axis_name) -> Evidence:
    """How clearly an axis's names are features (+) or samples (-)."""
    if axis_name is not None and str(axis_name).strip():
        label = str(axis_name).strip()
        if _FEATURE_AXIS.search(label):
            return Evidence(2, f"the index is named '{label}'")
        if _SAMPLE_AXIS.search(label):
            return Evidence(-2, f"the index is named '{label}'")
    values = _spread(names.astype(str))
    if not values:
        return Evidence(0, "none")
    e = _examples(values)
    if _share(values, _FEATURE_ID) > 0.5:
        return Evidence(2, f"feature identifiers ({e})")
    for kind, pattern in _SAMPLE_IDS.items():
        if _share(values, pattern) > 0.5:
            return Evidence(-2, f"{kind} ({e})")
    stems = [re.sub(r"\d+", "#", v.lower()) for v in values]
    if _share(stems, _FEATURE_STEM) >= 0.75:
        return Evidence(1, f"numbered feature names ({e})")
    if _share(stems, _SAMPLE_STEM) >= 0.75:
        return Evidence(-1, f"numbered sample names ({e})")
    if _running_numbers(values, stems):
        return Evidence(-1, f"a few prefixes with running numbers, like sample names ({e})")
    if len(set(stems)) >= 0.3 * len(stems):
        return Evidence(1, f"varied names like gene symbols or compounds ({e})")
    return Evidence(0, f"names that say neither ({e})")


def _running_numbers(values: list[str], stems: list[str]) -> bool:
    """Sample names: nearly all numbered, and either one shared prefix (CHK_6467_...) or a few
    stems covering most names (R1L1Kidney, R1L2Liver -> r#l#kidney, r#l#liver)."""
    if len(values) < 4 or np.mean([any(c.isdigit() for c in v) for v in values]) < 0.75:
        return False
    prefix = len(_common_prefix(values).rstrip("0123456789"))
    top = sum(n for _, n in Counter(stems).most_common(max(2, len(stems) // 10)))
    return prefix >= 3 or top >= 0.75 * len(stems)


def _common_prefix(values: list[str]) -> str:
    first, last = min(values), max(values)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _spread(names: pd.Index) -> list[str]:
    """At most MAX_NAMES names, evenly spread over the axis (deterministic)."""
    names = [n for n in names if n and n.lower() not in ("nan", "none")]
    if len(names) <= MAX_NAMES:
        return names
    return [names[i] for i in np.linspace(0, len(names) - 1, MAX_NAMES).astype(int)]


def _share(values: list[str], pattern: re.Pattern) -> float:
    return sum(bool(pattern.fullmatch(v)) for v in values) / len(values)


def _examples(values: list[str]) -> str:
    return ", ".join(f"'{v}'" for v in values[:3]) + (", ..." if len(values) > 3 else "")


def _shape_vote(n_rows: int, n_columns: int) -> int:
    if n_rows >= SHAPE_RATIO * n_columns:
        return 1
    if n_columns >= SHAPE_RATIO * n_rows:
        return -1
    return 0


def _shape_text(n_rows: int, n_columns: int) -> str:
    vote = _shape_vote(n_rows, n_columns)
    if vote > 0:
        return f"{n_rows} rows x {n_columns} columns: rows outnumber columns {n_rows / n_columns:.0f} to one, as genes do samples"
    if vote < 0:
        return f"{n_rows} rows x {n_columns} columns: columns outnumber rows {n_columns / n_rows:.0f} to one, as genes do samples"
    return f"{n_rows} rows x {n_columns} columns: the shape does not tell"
