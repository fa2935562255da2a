"""The real `snakemake` command on tiny real data: every stage, all three modalities."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import yaml

from omicsgen import alphabet as alph

ROOT = Path(__file__).resolve().parent.parent
SNAKEFILE = ROOT / "workflow" / "Snakefile"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def tiny_config(sheet: str = "config/datasets.tsv") -> dict:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["datasets"] = sheet
    config["preprocess"]["expression"].update(min_genes=10, min_cells=5, n_top_genes=64)
    config["preprocess"]["timecourse"]["n_top_genes"] = 64
    config["trainer"].update(max_epochs=3, batch_size=64, size_to_data=False)  # the pipeline's plumbing, few steps
    for spec in config["models"].values():
        spec.pop("trainer", None)
    config["generate"]["n_samples"] = 60
    config["evaluate"]["c2st_rows"] = 0  # one c2st draw: the plumbing, not the c2st's stability on small splits
    return config


def make_project(folder: Path, tiny_data: dict, rows: list[tuple[str, ...]], config: dict | None = None) -> Path:
    """A project folder: the sheet from rows of (dataset, modality, path[, label]) and the config."""
    (folder / "config").mkdir(parents=True, exist_ok=True)
    sheet = "dataset\tmodality\tpath\tlabel\n" + "".join("\t".join((*row, "")[:4]) + "\n" for row in rows)
    (folder / "config" / "datasets.tsv").write_text(sheet)
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config or tiny_config()))
    return folder


def snakemake(folder: Path, *args: str) -> subprocess.CompletedProcess:
    # the rules call the `omicsgen` command installed beside this Python
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([*SNAKEMAKE, "-s", str(SNAKEFILE), "--directory", str(folder), "--cores", "2",
                           "--show-failed-logs", *args], capture_output=True, text=True, env=env)


def worker_processes() -> set[int]:
    """Processes running an omicsgen.worker (Linux)."""
    found = set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if b"omicsgen.worker import serve" in (entry / "cmdline").read_bytes():
                found.add(int(entry.name))
        except OSError:
            continue
    return found


LEFT_RUNNING = {}  # worker processes the finished run left behind


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data):
    folder = make_project(tmp_path_factory.mktemp("e2e"), tiny_data, [
        ("cells", "expression", str(tiny_data["cells"])),
        ("ww", "sequence", str(tiny_data["ww"])),
        ("flu", "timecourse", str(tiny_data["flu"]), "condition"),
    ])
    before = worker_processes()
    result = snakemake(folder)
    assert result.returncode == 0, result.stderr[-5000:]
    LEFT_RUNNING["after the run"] = worker_processes() - before
    return folder


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_local_jobs_ran_in_the_runs_worker_which_stopped_with_it(finished_run):
    logs = finished_run / "logs"
    for log in ("cells/vae/train.log", "cells/vae/generate.log", "ww/lstm/impute.log", "flu/gru/evaluate.log"):
        assert "in the run's worker" in (logs / log).read_text(), log
    assert LEFT_RUNNING["after the run"] == set()


def test_every_model_of_the_default_config_ran(finished_run):
    results = finished_run / "results"
    # chosen by what each dataset is: counts, a protein alignment, a labelled time course
    runs = {"cells": ["vae", "vae_nb", "dae_nb", "gain", "wgan"],
            "ww": ["vae_seq", "wgan", "lstm"],
            "flu": ["vae", "cvae", "gain", "gru", "lstm_forecast"]}
    cannot = {"gain": "samples.h5ad", "wgan": "imputed.h5ad"}
    for dataset, models in runs.items():
        for name in ("ingested.h5ad", "prepared.h5ad", "masked.h5ad", "report.html", "baselines/scores.json"):
            assert (results / dataset / name).is_file(), (dataset, name)
        for model in models:
            for name in ("model.ckpt", "metrics.csv", "samples.h5ad", "imputed.h5ad", "scores.json"):
                if cannot.get(model) != name:
                    assert (results / dataset / model / name).is_file(), (dataset, model, name)
    for dataset, models in runs.items():  # and no other model
        assert {p.name for p in (results / dataset).iterdir() if p.is_dir()} == {*models, "baselines"}, dataset
    assert (results / "report.html").is_file()


def test_pages_say_which_models_ran_and_why(finished_run):
    page = (finished_run / "results" / "flu" / "report.html").read_text()
    assert "Decisions made for you" in page and "Models run on this dataset" in page
    assert "vae_nb" in page and "skipped" in page and "counts" in page  # why the count models did not run
    facts = json.loads((finished_run / "results" / "flu" / "facts.json").read_text())
    assert facts["modality"] == "timecourse" and facts["values"] == "continuous" and facts["labels"] == 2


def test_expression_outputs_hold_what_they_say(finished_run):
    results = finished_run / "results" / "cells"
    masked = ad.read_h5ad(results / "masked.h5ad")
    assert masked.n_vars == 64 and "counts" in masked.layers
    samples = ad.read_h5ad(results / "vae" / "samples.h5ad")
    assert samples.shape == (60, 64) and list(samples.var_names) == list(masked.var_names)
    imputed = ad.read_h5ad(results / "vae" / "imputed.h5ad")
    assert sp.issparse(masked.X) and sp.issparse(masked.layers["heldout"])  # 10x counts stay sparse
    filled, held, truth = (_dense(m) for m in (imputed.layers["imputed"], masked.layers["heldout"], masked.X))
    np.testing.assert_array_equal(filled[~held], truth[~held])  # observed entries untouched
    scores = json.loads((results / "vae" / "scores.json").read_text())
    assert np.isfinite(scores["imputation"]["rmse"]) and scores["imputation"]["rmse"] > 0
    assert np.isfinite(scores["generation"]["mmd2"])
    baselines = json.loads((results / "baselines" / "scores.json").read_text())
    assert {"mean", "knn"} <= set(baselines["methods"])


def _dense(matrix):
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)


def test_sequence_outputs_include_fasta(finished_run):
    results = finished_run / "results" / "ww"
    residues = set(alph.RESIDUES["protein"])
    for model in ("lstm", "vae_seq", "wgan"):
        fasta = (results / model / "samples.fasta").read_text()
        assert fasta.count(">") == 60
        letters = set("".join(line for line in fasta.splitlines() if not line.startswith(">")))
        assert letters <= residues | {"-"} and len(letters & residues) > 10, (model, letters)
    samples = ad.read_h5ad(results / "lstm" / "samples.h5ad")
    assert set(np.unique(samples.obsm["tokens"])) <= {alph.PAD, alph.GAP, *range(alph.FIRST_RESIDUE, alph.FIRST_RESIDUE + 20)}
    scores = json.loads((results / "lstm" / "scores.json").read_text())
    assert 0 <= scores["generation"]["kmer_js_1"] <= 1


def test_timecourse_forecast_scored_against_last_value(finished_run):
    scores = json.loads((finished_run / "results" / "flu" / "gru" / "scores.json").read_text())
    assert np.isfinite(scores["forecast"]["rmse"])
    baselines = json.loads((finished_run / "results" / "flu" / "baselines" / "scores.json").read_text())
    assert "last_value" in baselines["methods"]


def test_conditional_vae_generates_the_sheet_labels(finished_run):
    flu = finished_run / "results" / "flu"
    real_labels = set(ad.read_h5ad(flu / "masked.h5ad").obs["label"].astype(str))
    assert real_labels == {"sx", "asx"}  # the sheet's label column names the `condition` annotation
    samples = ad.read_h5ad(flu / "cvae" / "samples.h5ad")
    assert set(samples.obs["label"].astype(str)) <= real_labels
    generation = json.loads((flu / "cvae" / "scores.json").read_text())["generation"]
    assert 0.0 <= generation["label_accuracy"] <= 1.0 and set(generation["per_label"]) <= real_labels


def test_reports_name_every_model(finished_run):
    page = (finished_run / "results" / "flu" / "report.html").read_text()
    assert "gru" in page and "vae" in page and "data:image/png;base64," in page
    board = (finished_run / "results" / "report.html").read_text()
    for dataset in ("cells", "ww", "flu"):
        assert f"{dataset}/report.html" in board


def test_snakemake_report_collects_the_flagged_outputs(finished_run):
    result = snakemake(finished_run, "--report", str(finished_run / "snakemake_report.html"))
    assert result.returncode == 0, result.stderr[-3000:]
    page = (finished_run / "snakemake_report.html").read_text(errors="replace")
    assert "metrics.csv" in page and "scores.json" in page


def test_rerun_has_nothing_to_do(finished_run):
    result = snakemake(finished_run, "--dry-run")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's 'Job stats' table as {rule: count}."""
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def test_changing_one_hyper_parameter_reruns_only_that_model(finished_run):
    config = yaml.safe_load((finished_run / "config" / "config.yaml").read_text())
    config["models"]["gru"]["hidden_dim"] = 32
    (finished_run / "changed.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(finished_run, "--dry-run", "--configfile", str(finished_run / "changed.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    # the gru on the one time course, its outputs, that dataset's completed table (which reads
    # every model's imputation), its page and the leaderboard
    assert counts == {"train": 1, "generate": 1, "impute": 1, "evaluate": 1, "complete": 1,
                      "report_dataset": 1, "report_leaderboard": 1, "all": 1}, counts
    assert "wildcards: dataset=flu, model=gru" in result.stdout + result.stderr


def reversed_keys(value):
    """`value` with every mapping's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reversed_keys(v) for k, v in reversed(value.items())}
    return value


def test_config_saved_with_its_keys_in_another_order_reruns_nothing(finished_run):
    # YAML tools re-save a config with sorted (or any) key order; only the models' order is
    # the user's to see (it is the page's order), so it is kept
    config = yaml.safe_load((finished_run / "config" / "config.yaml").read_text())
    models = {name: reversed_keys(spec) for name, spec in config.pop("models").items()}
    shuffled = {**reversed_keys(config), "models": models}
    assert list(shuffled["preprocess"]["expression"]) != list(config["preprocess"]["expression"])
    (finished_run / "reordered.yaml").write_text(yaml.safe_dump(shuffled, sort_keys=False))
    result = snakemake(finished_run, "--dry-run", "--configfile", str(finished_run / "reordered.yaml"))
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]


def test_retraining_reproduces_scores_byte_for_byte(finished_run):
    scores = finished_run / "results" / "cells" / "vae" / "scores.json"
    before, trained = scores.read_bytes(), (finished_run / "results" / "cells" / "vae" / "model.ckpt").stat().st_mtime
    result = snakemake(finished_run, "--forcerun", "results/cells/vae/model.ckpt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (finished_run / "results" / "cells" / "vae" / "model.ckpt").stat().st_mtime > trained
    assert scores.read_bytes() == before


def test_bad_input_reaches_the_terminal_and_leaves_nothing(tmp_path, tiny_data):
    bad = tmp_path / "bad.fa"
    bad.write_text(">a\nACGT\n>b\nAC7T\n")
    folder = make_project(tmp_path / "run", tiny_data, [("bad", "sequence", str(bad))])
    result = snakemake(folder)
    assert result.returncode != 0
    assert "record 'b', position 3" in result.stdout + result.stderr
    assert not any((folder / "results").rglob("*.h5ad"))


def test_wrong_config_key_is_named(tmp_path, tiny_data):
    config = tiny_config()
    config["trainer"]["max_epoch"] = 3
    folder = make_project(tmp_path, tiny_data, [("cells", "expression", str(tiny_data["cells"]))], config)
    result = snakemake(folder, "--dry-run")
    assert result.returncode != 0 and "max_epoch" in result.stdout + result.stderr


def test_unknown_modality_in_sheet_is_named(tmp_path, tiny_data):
    folder = make_project(tmp_path, tiny_data, [("cells", "proteome", str(tiny_data["cells"]))])
    result = snakemake(folder, "--dry-run")
    assert result.returncode != 0 and "proteome" in result.stdout + result.stderr


def test_lint_is_clean(tmp_path, tiny_data):
    folder = make_project(tmp_path, tiny_data, [("cells", "expression", str(tiny_data["cells"]))])
    result = snakemake(folder, "--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def ingest_through_the_sheet(folder: Path, tiny_data, path: Path, column: str, value: str) -> ad.AnnData:
    """One dataset `d` whose sheet row sets `column` to `value`, ingested by Snakemake."""
    make_project(folder, tiny_data, [])
    (folder / "config" / "datasets.tsv").write_text(f"dataset\tmodality\tpath\t{column}\nd\texpression\t{path}\t{value}\n")
    result = snakemake(folder, "results/d/ingested.h5ad")
    assert result.returncode == 0, result.stderr[-3000:]
    return ad.read_h5ad(folder / "results" / "d" / "ingested.h5ad")


def test_sheet_matrix_column_reaches_ingest(tmp_path, tiny_data):
    """A scanpy user's file: log values in X, counts in a layer; the sheet's `matrix` picks the layer."""
    cells = ad.read_h5ad(tiny_data["cells"])
    cells.layers["counts"] = cells.X.copy()
    cells.X = cells.X.log1p()
    cells.write_h5ad(tmp_path / "processed.h5ad")
    ingested = ingest_through_the_sheet(tmp_path / "run", tiny_data, tmp_path / "processed.h5ad", "matrix", "counts")
    assert ingested.uns["omicsgen"]["input_scale"] == "counts"
    assert '"what": "matrix", "value": "counts"' in ingested.uns["omicsgen"]["decisions"]


def test_sheet_values_estimated_counts_reaches_ingest(tmp_path, tiny_data):
    """The sheet's `values: estimated_counts` passes the sheet's schema and reaches ingest (here on
    whole counts in featureCounts' layout: nothing to round, and the page says so)."""
    table = Path(__file__).parent / "unseen" / "marioni_featurecounts.txt"
    ingested = ingest_through_the_sheet(tmp_path / "run", tiny_data, table, "values", "estimated_counts")
    assert ingested.uns["omicsgen"]["input_scale"] == "counts"
    assert "0 values with a fraction rounded" in ingested.uns["omicsgen"]["decisions"]
