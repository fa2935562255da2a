"""Conditional generation scores on real labelled sequences: Oct4 and Mafk ChIP-seq peaks (the
bundled FASTA files) in one dataset, labelled from the header. The "generated" records are real
held-out records with a requested label, so the scorer is checked without a model."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from conftest import RESOURCES, head_fasta
from test_evaluate import ONE_DRAW
from omicsgen.evaluate import data, evaluate, metrics
from omicsgen.ingest import ingest
from omicsgen.mask import mask
from omicsgen.preprocess import preprocess


@pytest.fixture(scope="module")
def peaks(tmp_path_factory):
    """masked.h5ad of 150 Oct4 and 150 Mafk peaks, obs["label"] from `kind=` in the header."""
    folder = tmp_path_factory.mktemp("labelled_peaks")
    lines = []
    for kind in ("oct4", "mafk"):
        records = head_fasta(RESOURCES / f"{kind}_peaks.fa.gz", 150).splitlines()
        lines += [f"{line} kind={kind}" if line.startswith(">") else line for line in records]
    (folder / "peaks.fa").write_text("\n".join(lines) + "\n")
    ingest(folder / "peaks.fa", folder / "ingested.h5ad", "peaks", "sequence", None, "dna", "auto", r"kind=(\w+)", "auto")
    preprocess(folder / "ingested.h5ad", folder / "prepared.h5ad", {}, {"val": 0.1, "test": 0.3}, 0)
    mask(folder / "prepared.h5ad", folder / "masked.h5ad", 0.1, "mcar", 0)
    return folder


def relabelled_test_records(folder, swap: bool) -> tuple:
    """samples.h5ad: the real test records, each 'asked for' its own label (or the other one)."""
    adata = data.read(folder / "masked.h5ad")
    test = adata[data.split_rows(adata, "test")]
    labels = test.obs["label"].astype(str).to_numpy()
    if swap:
        labels = np.where(labels == "oct4", "mafk", "oct4")
    samples = ad.AnnData(X=np.zeros((test.n_obs, 0), dtype=np.float32))
    samples.obsm["tokens"] = np.asarray(test.obsm["tokens"])
    samples.uns["alphabet"] = dict(adata.uns["alphabet"])
    samples.obs["label"] = labels
    path = folder / ("swapped.h5ad" if swap else "asked.h5ad")
    samples.write_h5ad(path)
    return path, labels


def test_label_accuracy_of_real_records_matches_the_reference_and_falls_when_labels_are_swapped(peaks):
    adata = data.read(peaks / "masked.h5ad")
    assert set(adata.obs["label"].astype(str)) == {"oct4", "mafk"}
    asked, _ = relabelled_test_records(peaks, swap=False)
    swapped, _ = relabelled_test_records(peaks, swap=True)
    right = evaluate(peaks / "masked.h5ad", None, asked, peaks / "right.json", model="relabelled", settings=ONE_DRAW)["generation"]
    wrong = evaluate(peaks / "masked.h5ad", None, swapped, peaks / "wrong.json", model="relabelled", settings=ONE_DRAW)["generation"]
    reference = right["reference_train_vs_test"]["label_accuracy"]
    assert reference > 0.6  # Oct4 and Mafk peaks differ in their 3-mers (the motifs)
    assert right["label_accuracy"] == pytest.approx(reference)
    assert wrong["label_accuracy"] == pytest.approx(1 - reference)


def test_per_label_scores_compare_each_label_with_its_own_real_records(peaks):
    asked, labels = relabelled_test_records(peaks, swap=False)
    swapped, _ = relabelled_test_records(peaks, swap=True)
    right = evaluate(peaks / "masked.h5ad", None, asked, peaks / "right.json", model="relabelled", settings=ONE_DRAW)["generation"]["per_label"]
    wrong = evaluate(peaks / "masked.h5ad", None, swapped, peaks / "wrong.json", model="relabelled", settings=ONE_DRAW)["generation"]["per_label"]
    assert set(right) == {"oct4", "mafk"}
    for label in right:
        assert right[label]["n_generated"] == int((labels == label).sum())
        # real records of the asked label are closer to that label's test records than the other label's
        assert right[label]["kmer_js_mean"] < wrong[label]["kmer_js_mean"]
        assert right[label]["kmer_js_mean"] == pytest.approx(0, abs=1e-9)  # they are those records
        assert right[label]["label_accuracy"] > wrong[label]["label_accuracy"]


def test_scores_without_imputation_say_why(peaks):
    asked, _ = relabelled_test_records(peaks, swap=False)
    scores = evaluate(peaks / "masked.h5ad", None, asked, peaks / "only_samples.json", model="relabelled", settings=ONE_DRAW)
    assert "imputation" not in scores and "no imputed.h5ad" in scores["not_scored"]["imputation"]
    # real test records copy no training record exactly, and sit at the reference distance
    generation = scores["generation"]
    assert generation["novelty"] == 1.0
    assert generation["nearest_train_distance_mean"] == pytest.approx(
        generation["reference_train_vs_test"]["nearest_train_distance_mean"])


def test_c2st_rows_reaches_every_c2st_per_label_too_and_the_protocol(peaks, monkeypatch):
    """evaluate.c2st_rows = 0: every c2st (the whole set, each label, and their real-vs-real
    references) is one balanced draw, and protocol.c2st_rows says so."""
    calls = []
    test = metrics.classifier_two_sample_test

    def spy(*args, **kwargs):
        result = test(*args, **kwargs)
        calls.append((kwargs.get("rows"), result["repeats"]))
        return result

    monkeypatch.setattr(metrics, "classifier_two_sample_test", spy)
    asked, _ = relabelled_test_records(peaks, swap=False)
    scores = evaluate(peaks / "masked.h5ad", None, asked, peaks / "one_draw.json", model="relabelled", settings=ONE_DRAW)
    assert scores["protocol"]["c2st_rows"] == 0
    assert len(calls) == 6 and set(calls) == {(0, 1)}  # whole set + reference, and 2 labels x (scores + reference)
    assert metrics.c2st_repeats(90, 0) == 1 and metrics.c2st_repeats(90, 90) == metrics.c2st_repeats(90, 60) == 1
    assert metrics.c2st_repeats(90) == metrics.c2st_repeats(90, metrics.C2ST_ROWS) == 6  # round(500 / 90)
