"""The CLI: thin commands, one-line errors with a non-zero exit and no traceback."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import pytest


def omicsgen(*args):
    return subprocess.run([sys.executable, "-m", "omicsgen.cli", *args], capture_output=True, text=True)


def test_ingest_writes_h5ad_with_provenance(tmp_path, tiny_data):
    out = tmp_path / "ingested.h5ad"
    result = omicsgen("ingest", "--input", str(tiny_data["peaks"]), "--output", str(out),
                      "--dataset", "peaks", "--modality", "sequence")
    assert result.returncode == 0, result.stderr
    adata = ad.read_h5ad(out)
    record = adata.uns["omicsgen"]["provenance"]["ingest"]
    assert str(tiny_data["peaks"]) in record["inputs"] and "sha256:" in record["inputs"]
    assert adata.uns["omicsgen"]["dataset"] == "peaks"


def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path):
    bad = tmp_path / "counts.csv"
    bad.write_text("cell,g1,g2\nc1,1,2\nc2,3,x\n")
    out = tmp_path / "ingested.h5ad"
    result = omicsgen("ingest", "--input", str(bad), "--output", str(out), "--dataset", "d", "--modality", "expression")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and "counts.csv: line 3, column 'g2'" in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".ingested*"))


def test_models_lists_the_registry():
    result = omicsgen("models")
    assert result.returncode == 0
    for family in ("vae", "lstm", "gru"):
        assert family in result.stdout


def test_the_command_exits_fast_but_a_profiler_still_gets_its_report():
    # `cli.run` leaves with os._exit after flushing (the stdout of `models` above is a pipe, so an
    # unflushed buffer would be lost); under a profiler it exits the usual way so the stats print.
    profiled = subprocess.run([sys.executable, "-m", "cProfile", "-m", "omicsgen.cli", "models"],
                              capture_output=True, text=True)
    assert profiled.returncode == 0, profiled.stderr
    assert "vae" in profiled.stdout and "function calls" in profiled.stdout


def test_provenance_prints_the_steps_in_order(tmp_path, tiny_data):
    out = tmp_path / "ingested.h5ad"
    omicsgen("ingest", "--input", str(tiny_data["peaks"]), "--output", str(out), "--dataset", "p", "--modality", "sequence")
    prepared = tmp_path / "prepared.h5ad"
    omicsgen("preprocess", "--input", str(out), "--output", str(prepared), "--seed", "3")
    result = omicsgen("provenance", str(prepared))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    steps = [line.split(":")[0] for line in lines if not line.startswith(" ")][1:]
    assert steps == ["ingest", "preprocess"]
    assert "seed 3" in result.stdout and "sha256:" in result.stdout and '"torch"' in result.stdout


def test_scoring_options_default_to_the_config_and_reach_the_settings():
    """evaluate/baselines flags: defaults match config.yaml's `evaluate:` section (what the rules
    pass) and Settings(); `--c2st-rows 0` reaches the scorers' Settings."""
    from pathlib import Path

    import yaml

    from omicsgen.cli import _scoring, build_parser
    from omicsgen.evaluate.scores import Settings

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())["evaluate"]
    for stage in ("evaluate", "baselines"):
        defaults = _scoring(build_parser().parse_args([stage, "--input", "m.h5ad", "--output", "s.json"]))
        assert defaults == Settings() == Settings(**config)
        one = _scoring(build_parser().parse_args([stage, "--input", "m.h5ad", "--output", "s.json", "--c2st-rows", "0"]))
        assert one == Settings(c2st_rows=0)
    result = omicsgen("baselines", "--input", "m.h5ad", "--output", "s.json", "--c2st-rows", "-1")
    assert result.returncode == 2 and "--c2st-rows" in result.stderr


FAULTS_PER_BLOCK = """
import resource, sys
import numpy as np
from omicsgen.cli import _reuse_freed_memory
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def per_block():
    np.ones(6 << 20)  # first one maps the heap in
    before = faults()
    for _ in range(5):
        np.ones(6 << 20)  # 48 MB, written and freed: a torch step's buffer
    return (faults() - before) / 5
default = per_block()
_reuse_freed_memory()
print(default, per_block())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_blocks_are_reused_not_faulted_in_again():
    """A 48 MB block freed and allocated again page-faults in afresh under glibc's defaults; the
    command's start keeps such blocks (a fifth of the LSTM's CPU was these faults)."""
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_BLOCK], capture_output=True, text=True, check=True)
    default, reused = map(float, out.stdout.split())
    assert default > 10  # up to 12,288 pages of 4 KB; fewer where the kernel gives huge pages
    assert reused < default / 10
