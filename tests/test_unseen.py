"""A new user's data, run as the README says: real datasets omicsgen does not ship (tests/unseen/,
sources in its README), one sheet, `snakemake --cores 2 --config datasets=<sheet>` from a project
folder with the shipped config. The only other config is a --configfile of trainer/generate/evaluate sizes,
so the run stays short: it picks no model and no dataset.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
UNSEEN = ROOT / "tests" / "unseen"

# dataset -> (modality, file, samples (rows) and features the input holds, or None where the reader may
# legitimately drop or reshape, e.g. sequence positions). The sheet gives no format, alphabet or
# orientation: a new user leaves them to the tool.
CORPUS = {
    "globins45": ("sequence", "globins45.fa", 45),
    "fn3_pfam": ("sequence", "fn3.sto", 98),
    "made1_dfam": ("sequence", "made1.sto", 100),
    "bacteria_16s": ("sequence", "bacteria_16s.fa.gz", 100),
    "amplicon_reads": ("sequence", "amplicon_reads.fastq.gz", 200),
    "tp53_msa": ("sequence", "tp53_protein_msa.fasta", 5),
    "cor6_genbank": ("sequence", "cor6_6.gb", 6),
    "guo_qpcr": ("expression", "guo_qpcr.csv", (428, 48)),
    "khan_srbct": ("expression", "khan_srbct.csv.gz", (63, 500)),
    "marioni_counts": ("expression", "marioni_counts.tsv", (10, 1500)),
    # featureCounts' layout: a comment line, then Chr, Start, End, Strand, Length before the samples
    "marioni_featurecounts": ("expression", "marioni_featurecounts.txt", (10, 600)),
    # GEO's GDS SOFT file: 104 lines of metadata, the table with a gene-symbol column, an end marker
    "renal_gds507": ("expression", "renal_gds507.soft.gz", (17, 400)),
    "metabolites_cold": ("expression", "metabolites_cold.csv", (52, 154)),
    "lung_clinical": ("expression", "lung_clinical.csv", (228, 10)),
    # `sex` is text (f / m): kept as a sample annotation, so 18 numeric features
    "pbc_clinical": ("expression", "pbc_clinical.csv", (418, 18)),
    # OTU counts, OTUs as rows, a median of one detected OTU per sample: the single-cell detection
    # filters would leave 10 x 1, so they are not applied (filter_max_removed)
    "lung_otus": ("expression", "lung_otus.tsv", (78, 500)),
    "mouse_diet": ("timecourse", "mouse_diet_timecourse.tsv", (139, 40)),
    # one measurement, no sample-name column: the first column is the measurement
    "sleepstudy": ("timecourse", "sleepstudy_timecourse.tsv", (180, 1)),
}
# What the user writes in the sheet after a first run stopped and said to: lung_clinical holds whole
# numbers and a negative weight loss, which `values: auto` refuses to guess about (the message names
# the cell; test_whole_numbers_with_a_negative_stop_with_the_cell below).
# renal_gds507: GEO's subsets become sample annotations, and the user names one as the label.
SHEET_EXTRA = {"lung_clinical": {"values": "normalised"}, "renal_gds507": {"label": "disease state"}}
# what the values are, as any reader of the file can tell (negative values are never counts)
VALUE_KIND = {"guo_qpcr": "normalised", "khan_srbct": "normalised", "metabolites_cold": "normalised",
              "marioni_counts": "counts", "lung_otus": "counts", "marioni_featurecounts": "counts",
              "renal_gds507": "intensities"}
# sizes only: fewer epochs and samples (and no lengthening of training for small data), the c2st
# as one balanced draw (evaluate.c2st_rows), nothing about which models or datasets run
SIZES = {"trainer": {"max_epochs": 3, "patience": 2, "batch_size": 64, "size_to_data": False}, "generate": {"n_samples": 40},
         "evaluate": {"c2st_rows": 0}}


def run_as_new_user(folder: Path) -> subprocess.CompletedProcess:
    """The shipped config in the project folder, the user's files under data/, a sheet naming them."""
    (folder / "config").mkdir(parents=True)
    shutil.copy(ROOT / "config" / "config.yaml", folder / "config" / "config.yaml")
    shutil.copytree(UNSEEN, folder / "data", ignore=shutil.ignore_patterns("README.md"))
    sheet = "dataset\tmodality\tpath\tvalues\tlabel\n" + "".join(
        f"{name}\t{modality}\tdata/{file}\t{SHEET_EXTRA.get(name, {}).get('values', '')}"
        f"\t{SHEET_EXTRA.get(name, {}).get('label', '')}\n" for name, (modality, file, _) in CORPUS.items())
    (folder / "my.tsv").write_text(sheet)
    (folder / "sizes.yaml").write_text(yaml.safe_dump(SIZES))
    # the rules call the `omicsgen` command installed beside this Python
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile"),
                           "--cores", "2", "--keep-going",
                           "--configfile", "sizes.yaml", "--config", "datasets=my.tsv"],
                          cwd=folder, capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def unseen_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unseen")
    result = run_as_new_user(folder)
    (folder / "snakemake.out").write_text(result.stdout + result.stderr)
    return folder, result


def test_the_readme_command_finishes(unseen_run):
    folder, result = unseen_run
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def test_no_log_holds_a_traceback(unseen_run):
    folder, _ = unseen_run
    crashed = {str(log.relative_to(folder)): _traceback_tail(log) for log in (folder / "logs").rglob("*")
               if log.is_file() and "Traceback" in log.read_text(errors="replace")}
    assert not crashed, json.dumps(crashed, indent=1)


def _traceback_tail(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


@pytest.mark.parametrize("dataset", CORPUS)
def test_every_dataset_gets_its_page(unseen_run, dataset):
    folder, _ = unseen_run
    assert (folder / "results" / dataset / "report.html").is_file(), _why_missing(folder, dataset)


@pytest.mark.parametrize("dataset", [name for name, (modality, _, _) in CORPUS.items() if modality != "sequence"])
def test_every_table_comes_back_completed_and_its_page_says_how(unseen_run, dataset):
    folder, _ = unseen_run
    completed = folder / "results" / dataset / "completed.h5ad"
    assert completed.is_file(), _why_missing(folder, dataset)
    record = json.loads(ad.read_h5ad(completed, backed="r").uns["omicsgen"]["completion"])
    page = (folder / "results" / dataset / "report.html").read_text()
    assert "Your table, completed" in page
    assert f"<b>{record['chosen']}</b>" in page if record["chosen"] != "none" else "no missing value" in page


@pytest.mark.parametrize("dataset", CORPUS)
def test_every_dataset_gets_a_trained_model_scored_on_imputation(unseen_run, dataset):
    folder, _ = unseen_run
    scored = {}
    for scores in (folder / "results" / dataset).glob("*/scores.json"):
        if scores.parent.name == "baselines" or not (scores.parent / "model.ckpt").is_file():
            continue
        imputation = json.loads(scores.read_text()).get("imputation") or {}
        finite = [k for k, v in imputation.items()  # a score, not a count of scored entries
                  if not k.startswith("n_") and isinstance(v, (int, float)) and math.isfinite(v)]
        if finite:
            scored[scores.parent.name] = finite
    assert scored, f"{dataset}: no trained model with imputation scores; {_why_missing(folder, dataset)}"


@pytest.mark.parametrize("dataset", ["bacteria_16s", "globins45"])
def test_unaligned_families_are_aligned_and_the_positional_models_fit_them(unseen_run, dataset):
    """Records of other lengths that are one family get a multiple alignment in preprocess, so the
    sequence VAE and the WGAN run; the samples come back in FASTA as the user gave them: no gaps."""
    folder, _ = unseen_run
    results = folder / "results" / dataset
    facts = json.loads((results / "facts.json").read_text())
    assert facts["aligned"] and facts["gapped"], _why_missing(folder, dataset)
    page = (results / "report.html").read_text()
    assert "aligned with FAMSA" in page
    assert (results / "vae_seq" / "scores.json").is_file(), _why_missing(folder, dataset)
    # the WGAN fits alignments of up to 1,000 columns (the globins); 16S genes make ~1,900
    wide = facts["length"] > 1000
    assert (results / "wgan" / "scores.json").is_file() != wide
    assert ("max_length: 1000 (the data has length = " in page) == wide
    records = (results / "vae_seq" / "samples.fasta").read_text().split(">")[1:]
    assert len(records) == SIZES["generate"]["n_samples"]
    assert all("-" not in "".join(record.splitlines()[1:]) for record in records)


@pytest.mark.parametrize("dataset", [d for d, (_, _, shape) in CORPUS.items() if shape is not None])
def test_ingest_reads_every_sample_and_feature_the_right_way_round(unseen_run, dataset):
    folder, _ = unseen_run
    ingested = folder / "results" / dataset / "ingested.h5ad"
    assert ingested.is_file(), _why_missing(folder, dataset)
    adata = ad.read_h5ad(ingested, backed="r")
    expected = CORPUS[dataset][2]
    if isinstance(expected, tuple):
        assert adata.shape == expected, f"{dataset}: read as {adata.shape}, the file holds {expected} (samples, features)"
    else:
        assert adata.n_obs == expected, f"{dataset}: {adata.n_obs} records read, the file holds {expected}"


@pytest.mark.parametrize("dataset", VALUE_KIND)
def test_values_are_read_as_what_they_are(unseen_run, dataset):
    folder, _ = unseen_run
    ingested = folder / "results" / dataset / "ingested.h5ad"
    assert ingested.is_file(), _why_missing(folder, dataset)
    scale = ad.read_h5ad(ingested, backed="r").uns["omicsgen"].get("input_scale")
    assert scale == VALUE_KIND[dataset], f"{dataset}: read as {scale}"


@pytest.mark.parametrize("dataset, skipped", [("marioni_featurecounts", "1 skipped (line 1)"),
                                              ("renal_gds507", "104 skipped (lines 1-104)")])
def test_the_page_says_which_lines_were_not_data(unseen_run, dataset, skipped):
    folder, _ = unseen_run
    page = folder / "results" / dataset / "report.html"
    assert page.is_file(), _why_missing(folder, dataset)
    assert "lines before the header" in page.read_text() and skipped in page.read_text()


def test_a_geo_subset_named_as_the_label_conditions_the_models(unseen_run):
    """GDS507's 'disease state' subset (RCC / normal), named in the sheet's label column: the
    conditional VAE runs and generates both labels."""
    folder, _ = unseen_run
    samples = folder / "results" / "renal_gds507" / "cvae" / "samples.h5ad"
    assert samples.is_file(), _why_missing(folder, "renal_gds507")
    assert set(ad.read_h5ad(samples).obs["label"].astype(str)) == {"RCC", "normal"}


def _why_missing(folder: Path, dataset: str) -> str:
    """The last line of each of the dataset's logs that ended in an error, for the failure message."""
    logs = sorted(p for p in (folder / "logs").rglob("*") if p.is_file() and dataset in str(p))
    errors = {str(p.relative_to(folder)): _traceback_tail(p) for p in logs
              if "Error" in p.read_text(errors="replace")}
    return f"logs with errors: {json.dumps(errors)}" if errors else "no log holds an error"


def test_whole_numbers_with_a_negative_stop_with_the_cell(tmp_path):
    """Without `values` in the sheet, the clinical table stops at ingest with one line naming the
    file, the row and column of a negative whole number, and the setting that says what it is."""
    result = subprocess.run([str(Path(sys.executable).parent / "omicsgen"), "ingest", "--input",
                             str(UNSEEN / "lung_clinical.csv"), "--output", str(tmp_path / "out.h5ad"),
                             "--dataset", "lung_clinical", "--modality", "expression"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and not (tmp_path / "out.h5ad").exists()
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "lung_clinical.csv" in message and "wt.loss" in message and "-5" in message and "normalised" in message
