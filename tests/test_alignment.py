"""Equal length is not alignment: columns must be conserved beyond what rotated records show."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from omicsgen.alignment import _rotated, alignment_facts
from omicsgen.io import read_dataset

UNSEEN = Path(__file__).parent / "unseen"


def test_equal_length_amplicon_reads_are_aligned_and_peaks_are_not(tiny_data):
    # real 16S V4 reads trimmed to 250 nt: one amplicon, so the columns line up
    reads = read_dataset(UNSEEN / "amplicon_reads.fastq.gz", "sequence").obsm["tokens"]
    facts = alignment_facts(reads)
    assert facts["equal_length"] and not facts["gapped"] and facts["aligned"]
    assert facts["conservation"] > 0.5 > facts["rotated_conservation"]
    # ChIP-seq peaks of 200 nt: the same length, columns no more conserved than the composition
    peaks = read_dataset(tiny_data["peaks"], "sequence").obsm["tokens"]
    facts = alignment_facts(peaks)
    assert facts["equal_length"] and not facts["aligned"] and facts["conservation"] < 0.05
    # the reads themselves, each rotated by a random offset, are no longer aligned
    assert not alignment_facts(_rotated(reads, np.random.default_rng(1)))["aligned"]


def test_few_records_are_judged_against_as_few_rotated_ones(tiny_data):
    """Five records make any column look conserved; the rotated baseline has the same bias."""
    reads = read_dataset(UNSEEN / "amplicon_reads.fastq.gz", "sequence").obsm["tokens"][:5]
    peaks = read_dataset(tiny_data["peaks"], "sequence").obsm["tokens"][:5]
    assert alignment_facts(reads)["aligned"] and not alignment_facts(peaks)["aligned"]
    assert alignment_facts(peaks)["rotated_conservation"] > 0.2  # the small-sample bias it corrects for
