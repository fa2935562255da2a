"""Paper reproductions: the configs validate, a tiny real run of the GAIN config writes the page with
the published figures on it, and the aggregation of repeats matches the scores files it read."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest
import yaml

from omicsgen.errors import InputError
from omicsgen.papers import BASELINE, REFERENCE, aggregate, paper_report, summarise, table_to_h5ad
from test_workflow import SNAKEFILE, SNAKEMAKE, job_counts, snakemake

ROOT = Path(__file__).resolve().parent.parent
PAPERS = ROOT / "config" / "papers"
# the models each paper runs, nothing carried over from config/config.yaml
PAPER_MODELS = {"gain_breast_cancer": {"gain", "ae", "vae"}, "scgan_realism": {"wgan", "vae_nb"},
                "scvi_denoising": {"vae_nb", "dae"}}
REPEATS = ["tiny_r0", "tiny_r1"]


def tiny_gain_project(folder: Path) -> Path:
    """The GAIN paper config cut small: 2 repeats of the first 160 tumours, 3 epochs, GAIN and the AE."""
    (folder / "resources").mkdir(parents=True)
    (folder / "config" / "papers").mkdir(parents=True)
    table = pd.read_csv(ROOT / "resources" / "breast_cancer_wisconsin.csv", index_col=0)
    table.iloc[:160].to_csv(folder / "resources" / "breast_cancer_wisconsin.csv")
    sheet = pd.read_csv(PAPERS / "gain_breast_cancer.tsv", sep="\t", dtype=str).iloc[:2]
    sheet["dataset"] = REPEATS
    sheet.to_csv(folder / "config" / "papers" / "tiny.tsv", sep="\t", index=False)
    # the default config is read first, as in a real run, and the paper config updates it
    (folder / "config" / "config.yaml").write_text((ROOT / "config" / "config.yaml").read_text())
    config = yaml.safe_load((PAPERS / "gain_breast_cancer.yaml").read_text())
    config["datasets"] = "config/papers/tiny.tsv"
    config["models"] = {name: config["models"][name] for name in ("gain", "ae")}  # replaces the default models
    config["trainer"].update(max_epochs=3, patience=2)
    for spec in config["models"].values():  # a model's own trainer (GAIN's 10,000 steps) shrinks too
        spec.get("trainer", {}).update(max_epochs=3, patience=2)
    config["generate"]["n_samples"] = 40
    config.setdefault("evaluate", {})["c2st_rows"] = 0  # one c2st draw: the page's plumbing, not the c2st's stability
    (folder / "config" / "papers" / "tiny.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    folder = tiny_gain_project(tmp_path_factory.mktemp("paper"))
    result = snakemake(folder, "--configfile", str(folder / "config" / "papers" / "tiny.yaml"))
    assert result.returncode == 0, result.stderr[-5000:]
    return folder


def scores_files(folder: Path) -> tuple[list[Path], list[Path]]:
    models = sorted(p for p in (folder / "results").glob("tiny_r*/*/scores.json") if p.parent.name != "baselines")
    baselines = sorted((folder / "results").glob("tiny_r*/baselines/scores.json"))
    return models, baselines


def test_the_page_puts_the_published_figures_beside_ours(tiny_run):
    page = (tiny_run / "results" / "papers" / "gain_breast_cancer.html").read_text()
    summary = json.loads((tiny_run / "results" / "papers" / "gain_breast_cancer.json").read_text())
    assert summary["repeats"] == REPEATS and summary["n_repeats"] == 2
    gain_row = next(row for row in summary["comparison"] if row["method"] == "GAIN")
    assert gain_row["value"] == 0.055 and gain_row["ours_n"] == 2 and 0 < gain_row["ours_mean"] < 1
    assert "0.055" in page and "arXiv:1806.02920" in page and "Table 2" in page
    assert "(not verified)" in page  # unverified published figures say so
    assert "transductive vs inductive" in page  # where our protocol differs
    assert "<script" not in page and "http://" not in page  # self-contained


def test_aggregation_matches_the_scores_files(tiny_run):
    models, baselines = scores_files(tiny_run)
    assert len(models) == 4 and len(baselines) == 2  # gain and ae, two repeats
    metrics = [{"section": "imputation", "key": "rmse"}, {"section": "imputation", "key": "mae"}]
    ours = aggregate(models, baselines, metrics)
    for model in ("gain", "ae"):
        values = [json.loads(p.read_text())["imputation"]["rmse"] for p in models if p.parent.name == model]
        got = ours[model]["imputation.rmse"]
        assert got["n"] == 2 and got["mean"] == pytest.approx(statistics.fmean(values))
        assert got["sd"] == pytest.approx(statistics.stdev(values))
    methods = json.loads(baselines[0].read_text())["methods"]
    assert {BASELINE + name for name in methods if methods[name].get("imputation")} <= set(ours)
    mean_rmse = [json.loads(p.read_text())["methods"]["mean"]["imputation"]["rmse"] for p in baselines]
    assert ours[BASELINE + "mean"]["imputation.rmse"]["mean"] == pytest.approx(statistics.fmean(mean_rmse))
    assert REFERENCE not in ours  # imputation has no real-data control


def test_the_real_vs_real_control_is_aggregated_once_a_repeat(tiny_run):
    models, baselines = scores_files(tiny_run)
    ours = aggregate(models, baselines, [{"section": "generation", "key": "mmd2"}])
    control = ours[REFERENCE]["generation.mmd2"]
    assert control["n"] == 2 and set(control["values"]) == set(REPEATS)
    assert "gain" not in ours  # GAIN cannot sample: no generation scores, not a zero


def test_the_paper_rule_reruns_alone_when_the_paper_section_changes(tiny_run):
    config = yaml.safe_load((tiny_run / "config" / "papers" / "tiny.yaml").read_text())
    config["paper"]["published"][0]["value"] = 0.06
    (tiny_run / "changed.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tiny_run, "--dry-run", "--configfile", str(tiny_run / "changed.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert job_counts(result.stdout + result.stderr) == {"paper": 1, "all": 1}


def test_summary_of_one_repeat_has_no_sd():
    assert summarise({"a": 0.5}) == {"mean": 0.5, "sd": None, "n": 1, "values": {"a": 0.5}}
    assert summarise({})["mean"] is None


def test_table_with_a_label_column_becomes_h5ad(tmp_path):
    table_to_h5ad(ROOT / "resources" / "breast_cancer_wisconsin.csv", tmp_path / "bc.h5ad", label="diagnosis")
    adata = ad.read_h5ad(tmp_path / "bc.h5ad")
    assert adata.shape == (569, 30) and set(adata.obs["diagnosis"]) == {"malignant", "benign"}
    with pytest.raises(InputError, match="no text column named 'grade'"):
        table_to_h5ad(ROOT / "resources" / "breast_cancer_wisconsin.csv", tmp_path / "x.h5ad", label="grade")
    assert not (tmp_path / "x.h5ad").exists()


def test_a_paper_section_without_a_citation_is_refused(tmp_path):
    with pytest.raises(InputError, match="citation"):
        paper_report({"name": "x", "title": "x", "table": "x", "metrics": [{"section": "imputation", "key": "rmse"}]},
                     [], [], tmp_path / "x.html", tmp_path / "x.json")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_each_paper_config_validates_and_runs_only_its_models(name):
    """The paper's `models:` replaces the default models (test_choose proves the replacement in a
    real DAG); the dry run checks the config and sheet validate and the paper page is a target."""
    result = subprocess.run(
        [*SNAKEMAKE, "-s", str(SNAKEFILE), "--directory", str(ROOT), "--dry-run", "--nolock", "--cores", "1",
         "--configfile", str(PAPERS / f"{name}.yaml"), "--forceall"],
        capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert set(yaml.safe_load((PAPERS / f"{name}.yaml").read_text())["models"]) == PAPER_MODELS[name]
    assert f"results/papers/{name}.html" in output
