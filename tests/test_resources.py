"""The bundled data: every file documented, small, and readable by omicsgen as the default sheet says."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from omicsgen.io import read_dataset

ROOT = Path(__file__).resolve().parent.parent


def test_every_bundled_file_is_documented_and_the_folder_is_small():
    readme = (ROOT / "resources" / "README.md").read_text()
    files = [p for p in (ROOT / "resources").iterdir() if p.name != "README.md"]
    assert files
    for path in files:
        assert f"`{path.name}`" in readme, f"{path.name} missing from resources/README.md"
    assert sum(p.stat().st_size for p in files) < 15 * 2**20


def test_default_sheet_reads():
    sheet = pd.read_csv(ROOT / "config" / "datasets.tsv", sep="\t", dtype=str, comment="#").fillna("")
    expected = {"mouse_10x": (9000, 1000), "oct4_chipseq": (3897, 0), "mafk_chipseq": (3900, 0),
                "ww_domain": (4025, 0), "flu_challenge": (252, 4147)}
    for row in sheet.itertuples():
        adata = read_dataset(ROOT / row.path, row.modality, row.format or None, row.alphabet or "auto")
        n_obs, n_vars = expected[row.dataset]
        assert adata.n_obs >= n_obs and adata.n_vars == n_vars, row.dataset
