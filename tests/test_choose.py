"""Models are chosen by what the data is (omicsgen.choose), never by a dataset's name."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from omicsgen.choose import choose_models, chosen, data_facts, parse_sheet_models, unmet
from omicsgen.cli import main

from test_workflow import ROOT

CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())

COUNTS = {"modality": "expression", "values": "counts", "rows": 300, "train_rows": 210, "features": 64, "labels": 0}
CONTINUOUS = {**COUNTS, "values": "continuous"}
LABELLED_SERIES = {"modality": "timecourse", "values": "continuous", "rows": 90, "train_rows": 60, "features": 64,
                   "labels": 2, "series": 6, "time_points": 15}
ALIGNED_PROTEIN = {"modality": "sequence", "alphabet": "protein", "aligned": True, "gapped": True, "rows": 120,
                   "train_rows": 84, "features": 40, "length": 40, "labels": 0}
UNALIGNED_DNA = {**ALIGNED_PROTEIN, "alphabet": "dna", "aligned": False, "gapped": False, "length": 1700}


def default_choice(facts, asked=None):
    return chosen(choose_models(CONFIG["models"], facts, "any_name", asked))


def test_the_shipped_config_names_no_dataset():
    assert all("datasets" not in spec for spec in CONFIG["models"].values())


def test_counts_get_count_models_and_continuous_values_do_not():
    on_counts, on_continuous = default_choice(COUNTS), default_choice(CONTINUOUS)
    assert {"vae", "vae_nb", "dae_nb", "gain", "wgan"} <= set(on_counts)
    assert "vae_nb" not in on_continuous and "dae_nb" not in on_continuous
    assert {"vae", "gain"} <= set(on_continuous)
    assert "cvae" not in on_counts  # no labels


def test_every_modality_gets_a_model_that_imputes_and_one_that_generates():
    from omicsgen.models.registry import FAMILIES

    for facts in (COUNTS, CONTINUOUS, LABELLED_SERIES, ALIGNED_PROTEIN, UNALIGNED_DNA):
        classes = [FAMILIES[CONFIG["models"][m]["family"]].model_class(facts["modality"]) for m in default_choice(facts)]
        assert any(c.can_impute for c in classes) and any(c.can_sample for c in classes), facts


def test_labels_time_and_alignment_decide():
    assert {"cvae", "gru", "lstm_forecast", "vae"} <= set(default_choice(LABELLED_SERIES))
    assert {"vae_seq", "wgan", "lstm"} <= set(default_choice(ALIGNED_PROTEIN))
    unaligned = default_choice(UNALIGNED_DNA)
    assert "lstm" in unaligned and "vae_seq" not in unaligned and "wgan" not in unaligned


def test_every_refusal_says_why():
    choices = {c.model: c for c in choose_models(CONFIG["models"], UNALIGNED_DNA, "d")}
    assert "aligned" in choices["vae_seq"].reason and "false" in choices["vae_seq"].reason
    assert "takes" in choices["gain"].reason and "sequence" in choices["gain"].reason
    assert all(c.reason for c in choices.values())


def test_when_bounds_and_the_per_model_datasets_override():
    models = {"big": {"family": "vae", "when": {"min_rows": 500}}, "named": {"family": "gain", "datasets": ["other"]}}
    choices = {c.model: c for c in choose_models(models, COUNTS, "mine")}
    assert not choices["big"].chosen and "min_rows: 500" in choices["big"].reason and "rows = 300" in choices["big"].reason
    assert not choices["named"].chosen and "other" in choices["named"].reason
    assert unmet({"aligned": True}, COUNTS) == []  # a fact the modality does not have does not apply


def test_the_sheet_column_names_the_models_but_cannot_force_what_a_model_cannot_read():
    picked = choose_models(CONFIG["models"], CONTINUOUS, "d", asked=["gain", "vae_nb"])
    assert chosen(picked) == ["gain"]
    reason = next(c.reason for c in picked if c.model == "vae_nb")
    assert "counts" in reason
    assert parse_sheet_models(" vae, gain  lstm") == ["vae", "gain", "lstm"]
    assert parse_sheet_models("auto") is None and parse_sheet_models("none") == []


def test_facts_of_prepared_data(tiny_data, tmp_path):
    from omicsgen.ingest import ingest
    from omicsgen.preprocess import preprocess

    ingest(tiny_data["ww"], tmp_path / "i.h5ad", "ww", "sequence")
    preprocess(tmp_path / "i.h5ad", tmp_path / "p.h5ad", {}, {"val": 0.1, "test": 0.2}, 0, facts_path=tmp_path / "facts.json")
    facts = json.loads((tmp_path / "facts.json").read_text())
    assert facts["modality"] == "sequence" and facts["aligned"] and facts["gapped"] and facts["alphabet"] == "protein"
    assert facts["rows"] == 120 and 0 < facts["train_rows"] < 120
    import anndata as ad

    assert data_facts(ad.read_h5ad(tmp_path / "p.h5ad")) == facts


def test_omicsgen_models_prints_the_rule_and_the_choice(tmp_path, capsys):
    (tmp_path / "facts.json").write_text(json.dumps(CONTINUOUS))
    assert main(["models", "--config", str(ROOT / "config" / "config.yaml"), "--facts", str(tmp_path / "facts.json")]) == 0
    out = capsys.readouterr().out
    assert "vae_nb\tvae\t" in out and 'values="counts"' in out
    assert "vae_nb\tskipped\tthe model needs values" in out


def dry_run(folder, *args, target=None):
    targets = [target] if target else []  # before --configfile, which takes every word after it
    return subprocess.run([sys.executable, "-m", "snakemake", *targets, "-s", str(ROOT / "workflow" / "Snakefile"),
                           "--directory", str(folder), "-n", "--cores", "1", *args], capture_output=True, text=True)


@pytest.fixture
def project(tmp_path, tiny_data):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((ROOT / "config" / "config.yaml").read_text())
    (tmp_path / "config" / "datasets.tsv").write_text(f"dataset\tmodality\tpath\nww\tsequence\t{tiny_data['ww']}\n")
    return tmp_path


def test_a_user_configfile_replaces_the_models_and_extra_models_add(project):
    (project / "mine.yaml").write_text(yaml.safe_dump({"models": {"only_lstm": {"family": "lstm"}}}))
    # the models the DAG knows are the user's: a default model's name is no valid model wildcard
    from_user = dry_run(project, "--configfile", str(project / "mine.yaml"), target="results/ww/only_lstm/model.ckpt")
    assert from_user.returncode == 0, from_user.stderr
    default = dry_run(project, "--configfile", str(project / "mine.yaml"), target="results/ww/vae_seq/model.ckpt")
    assert default.returncode != 0
    (project / "more.yaml").write_text(yaml.safe_dump({"extra_models": {"my_gru": {"family": "gru"}}}))
    for target in ("results/ww/my_gru/model.ckpt", "results/ww/vae_seq/model.ckpt"):
        added = dry_run(project, "--configfile", str(project / "more.yaml"), target=target)
        assert added.returncode == 0, added.stderr


@pytest.mark.parametrize("row, message", [
    ("ww\tprotein\tww.fa", "row 2 (dataset 'ww'): modality"),
    ("ww\tsequence\tww.fa\nww\tsequence\tww.fa", "row 3: dataset id 'ww' is used twice"),
])
def test_sheet_errors_name_the_sheet_and_the_row(project, row, message):
    (project / "config" / "datasets.tsv").write_text(f"dataset\tmodality\tpath\n{row}\n")
    run = dry_run(project)
    said = run.stdout + run.stderr
    assert run.returncode != 0 and "config/datasets.tsv" in said and message in said, said


def test_sheet_without_a_path_column_and_unknown_sheet_models(project):
    (project / "config" / "datasets.tsv").write_text("dataset\tmodality\nww\tsequence\n")
    run = dry_run(project)
    assert "no column 'path'" in run.stdout + run.stderr
    (project / "config" / "datasets.tsv").write_text("dataset\tmodality\tpath\tmodels\nww\tsequence\tww.fa\tlstm, nope\n")
    run = dry_run(project)
    assert "row 2 (dataset 'ww'): models column names nope" in run.stdout + run.stderr


def test_the_catalog_says_what_the_registered_classes_do():
    from omicsgen.models.catalog import CATALOG
    from omicsgen.models.registry import FAMILIES

    assert list(CATALOG) == list(FAMILIES)
    for name, family in FAMILIES.items():
        table = {m: (f"{c.__module__.rsplit('.', 1)[1]}.{c.__name__}", c.can_sample, c.can_impute) for m, c in family.classes.items()}
        assert table == {m: (a.model_class, a.can_sample, a.can_impute) for m, a in CATALOG[name].items()}
