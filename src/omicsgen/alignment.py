"""Whether sequence records are aligned: position i means the same residue site in every record.

Equal length alone does not say so. ChIP-seq peaks cut to 200 nt, or reads trimmed to one length,
are windows at arbitrary offsets, and a positional model (the sequence VAE, the sequence WGAN)
fitted to them learns nothing but composition. Records count as aligned when they carry gaps
(a multiple alignment), or when they are of one length and their columns are conserved: the
mean information of a column, relative to the residue composition, clearly exceeds what the
same records give once each is rotated by a random offset (which keeps the composition and the
number of records, so a 5-record alignment is judged against 5 rotated records).
"""

from __future__ import annotations

import numpy as np

from .alphabet import GAP, PAD

MARGIN = 0.1        # conservation above the rotated records' that counts as aligned
MAX_RECORDS = 2000  # a seeded sample is enough to judge, and keeps this cheap at any size


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
