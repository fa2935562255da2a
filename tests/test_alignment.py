"""Equal length is not alignment: columns must be conserved beyond what rotated records show."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import pytest

from omicsgen import alphabet as alph
from omicsgen.alignment import _rotated, alignment_facts, family_test
from omicsgen.decisions import decisions
from omicsgen.errors import InputError
from omicsgen.io import read_dataset
from omicsgen.preprocess.sequence import prepare_sequences

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


def residues(adata) -> list[str]:
    return [r.replace("-", "") for r in alph.decode(adata.obsm["tokens"], list(adata.uns["alphabet"]["symbols"]))]


def test_a_family_of_unaligned_genes_is_aligned_and_every_residue_kept():
    # 30 real 16S genes of 718-1,562 nt: one family, so preprocess aligns them (FAMSA)
    genes = read_dataset(UNSEEN / "bacteria_16s.fa.gz", "sequence")[:30].copy()
    assert not alignment_facts(genes.obsm["tokens"])["aligned"]
    before = residues(genes)
    prepared = prepare_sequences(genes.copy(), {}, [])
    tokens = prepared.obsm["tokens"]
    assert alignment_facts(tokens)["gapped"] and (tokens != alph.PAD).all()  # every row runs to the last column
    assert tokens.shape[1] > max(len(r) for r in before)
    assert residues(prepared) == before  # gaps added, nothing else changed
    assert prepared.obs["length"].tolist() == genes.obs["length"].tolist()
    [decision] = [d for d in decisions(prepared) if d["what"] == "multiple alignment"]
    assert decision["value"].startswith("aligned with FAMSA") and "preprocess.sequence.align" in decision["setting"]
    # the same records give the same alignment; `align: false` keeps them as they were
    assert np.array_equal(prepare_sequences(genes.copy(), {}, []).obsm["tokens"], tokens)
    kept = prepare_sequences(genes.copy(), {"align": False}, [])
    assert np.array_equal(kept.obsm["tokens"], genes.obsm["tokens"][:, : kept.obsm["tokens"].shape[1]])


def test_unrelated_peaks_are_not_one_family_and_stay_unaligned(tiny_data):
    peaks = read_dataset(tiny_data["peaks"], "sequence")
    test = family_test(residues(peaks))
    assert not test["family"] and test["identity"] < test["shuffled_identity"] + 0.05
    prepared = prepare_sequences(peaks.copy(), {}, [])
    assert np.array_equal(prepared.obsm["tokens"], peaks.obsm["tokens"])
    [decision] = [d for d in decisions(prepared) if d["what"] == "multiple alignment"]
    assert decision["value"] == "not aligned" and "not one family" in decision["why"]
    # the globins (other lengths, 45 proteins) are one family by the same test, with margin
    globins = residues(read_dataset(UNSEEN / "globins45.fa", "sequence"))
    test = family_test(globins)
    assert test["family"] and test["identity"] > test["shuffled_identity"] + 0.2


def test_align_takes_auto_true_or_false(tiny_data):
    peaks = read_dataset(tiny_data["peaks"], "sequence")[:20].copy()
    forced = prepare_sequences(peaks.copy(), {"align": True}, [])  # the user's call, even for unrelated records
    assert alignment_facts(forced.obsm["tokens"])["gapped"] and residues(forced) == residues(peaks)
    with pytest.raises(InputError, match="align must be auto, true or false"):
        prepare_sequences(peaks.copy(), {"align": "yes"}, [])


def test_rna_is_aligned_though_famsa_has_no_u(tmp_path):
    # the same real genes written as RNA: FAMSA's alphabet has no U, so it aligns them as DNA
    genes = read_dataset(UNSEEN / "bacteria_16s.fa.gz", "sequence")[:12]
    rna = tmp_path / "genes_rna.fa"
    rna.write_text("".join(f">{i}\n{r.replace('T', 'U')}\n" for i, r in zip(genes.obs["id"], residues(genes))))
    records = read_dataset(rna, "sequence")
    assert records.uns["alphabet"]["name"] == "rna"
    prepared = prepare_sequences(records.copy(), {}, [])
    assert alignment_facts(prepared.obsm["tokens"])["gapped"] and residues(prepared) == residues(records)
    assert "U" in residues(prepared)[0] and "T" not in "".join(residues(prepared))
