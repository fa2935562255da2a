"""Whether sequence records are aligned: position i means the same residue site in every record.

Equal length alone does not say so. ChIP-seq peaks cut to 200 nt, or reads trimmed to one length,
are windows at arbitrary offsets, and a positional model (the sequence VAE, the sequence WGAN)
fitted to them learns nothing but composition. Records count as aligned when they carry gaps
(a multiple alignment), or when they are of one length and their columns are conserved: the
mean information of a column, relative to the residue composition, clearly exceeds what the
same records give once each is rotated by a random offset (which keeps the composition and the
number of records, so a 5-record alignment is judged against 5 rotated records).

Unaligned records of one family (16S genes, globins of other lengths) can be aligned here with
FAMSA (`family_test`, `align_sequences`; preprocess decides), so the positional models (the sequence VAE, the WGAN) can fit them. A set
counts as one family when a seeded probe of its records, aligned, matches far better than the
same records with their residues shuffled and aligned the same way: 16S genes 0.75 pairwise
identity against 0.33 shuffled, globins 0.47 against 0.09, Pfam's fn3 domains 0.19 against 0.07;
ChIP-seq peaks 0.33 against 0.30 (unrelated windows; bench/figures.md).
"""

from __future__ import annotations

import numpy as np

from .alphabet import GAP, PAD

MARGIN = 0.1        # conservation above the rotated records' that counts as aligned
MAX_RECORDS = 2000  # a seeded sample is enough to judge, and keeps this cheap at any size
FAMILY_PROBE = 100          # records aligned to judge whether a set is one family (~10 CPU s at 2 kb)
FAMILY_MARGIN = 0.1         # the probe's pairwise identity above its shuffled records' that makes a family
ALIGN_MAX_RECORDS = 10_000  # more records are not aligned: FAMSA's time grows with their square
IDENTITY_PAIRS = 2000       # record pairs whose identity is averaged


def positional_conservation(tokens: np.ndarray) -> float:
    """1 - mean column entropy / entropy of the overall composition (0: columns look like the
    composition, 1: every column holds one residue); pads are ignored."""
    tokens = np.asarray(tokens, dtype=np.int64)
    n_symbols = int(tokens.max()) + 1 if tokens.size else 1
    column = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    real = tokens != PAD
    counts = np.bincount(column[real] * n_symbols + tokens[real],
                         minlength=tokens.shape[1] * n_symbols).reshape(tokens.shape[1], n_symbols)
    background = _entropy(counts.sum(axis=0, keepdims=True))[0]
    filled = counts.sum(axis=1) > 0
    if background <= 0 or not filled.any():
        return 0.0
    return float(1.0 - _entropy(counts[filled]).mean() / background)


def _entropy(counts: np.ndarray) -> np.ndarray:
    p = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(axis=1)


def _rotated(tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = tokens.copy()
    lengths = (tokens != PAD).sum(axis=1)
    for i, length in enumerate(lengths):
        if length > 1:
            out[i, :length] = np.roll(tokens[i, :length], rng.integers(length))
    return out


def alignment_facts(tokens: np.ndarray, seed: int = 0) -> dict:
    """{"aligned", "gapped", "equal_length", "conservation", "rotated_conservation"}."""
    tokens = np.asarray(tokens)
    lengths = (tokens != PAD).sum(axis=1)
    gapped = bool((tokens == GAP).any())
    equal_length = bool(lengths.size and lengths.min() == lengths.max())
    facts = {"gapped": gapped, "equal_length": equal_length, "aligned": gapped}
    if equal_length and not gapped and lengths.size > 1:
        rng = np.random.default_rng(seed)
        sample = tokens if len(tokens) <= MAX_RECORDS else tokens[rng.choice(len(tokens), MAX_RECORDS, replace=False)]
        conservation = positional_conservation(sample)
        rotated = positional_conservation(_rotated(sample, rng))
        facts.update(aligned=bool(conservation >= rotated + MARGIN), conservation=round(conservation, 3),
                     rotated_conservation=round(rotated, 3))
    return facts


# ---- aligning one family ---------------------------------------------------------------------
def align_sequences(sequences: list[str], rna: bool = False) -> list[str]:
    """FAMSA's multiple alignment of `sequences` (residue letters), in their order, gaps as '-'.
    One thread: the same input gives the same alignment. FAMSA's alphabet has no U: RNA is
    aligned as DNA (`rna`: U read as T and written back)."""
    import pyfamsa

    if rna:
        sequences = [s.replace("U", "T") for s in sequences]
    tree = "upgma" if len(sequences) <= 1000 else "sl"  # UPGMA is the more accurate; its memory grows with n^2
    aligner = pyfamsa.Aligner(threads=1, guide_tree=tree, keep_duplicates=True)
    aligned = aligner.align([pyfamsa.Sequence(str(i).encode(), s.encode()) for i, s in enumerate(sequences)])
    by_index = {int(row.id): row.sequence.decode() for row in aligned}
    rows = [by_index[i] for i in range(len(sequences))]
    return [row.replace("T", "U") for row in rows] if rna else rows


def pairwise_identity(rows: list[str], seed: int = 0) -> float:
    """Mean identity of aligned rows over the columns where both hold a residue (IDENTITY_PAIRS
    seeded pairs at most); NaN when no pair shares a column."""
    table = np.frombuffer("".join(rows).encode(), dtype=np.uint8).reshape(len(rows), -1)
    rng = np.random.default_rng(seed)
    n = len(rows)
    first, second = rng.integers(0, n, IDENTITY_PAIRS), rng.integers(0, n, IDENTITY_PAIRS)
    pairs = first != second
    a, b = table[first[pairs]], table[second[pairs]]
    both = (a != ord("-")) & (b != ord("-"))
    shared = both.sum(axis=1)
    identity = ((a == b) & both).sum(axis=1)[shared > 0] / shared[shared > 0]
    return float(identity.mean()) if identity.size else float("nan")


def family_test(sequences: list[str], seed: int = 0, rna: bool = False) -> dict:
    """Whether `sequences` are one family: {"family", "identity", "shuffled_identity", "probe"}.
    A seeded probe of at most FAMILY_PROBE records is aligned as they are and with each record's
    residues shuffled (same lengths and composition); a family's identity is FAMILY_MARGIN above."""
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(sequences), min(FAMILY_PROBE, len(sequences)), replace=False))
    probe = [sequences[i] for i in picked]
    shuffled = ["".join(rng.permutation(list(s))) for s in probe]
    identity = pairwise_identity(align_sequences(probe, rna), seed)
    control = pairwise_identity(align_sequences(shuffled, rna), seed)
    return {"family": bool(identity >= control + FAMILY_MARGIN), "identity": round(identity, 3),
            "shuffled_identity": round(control, 3), "probe": len(probe)}
