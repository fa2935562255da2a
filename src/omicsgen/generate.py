"""Draw samples from a trained model into samples.h5ad (and a FASTA file for sequences).

Expression samples are drawn and written GENERATE_CHUNK rows at a time, straight into the
output's X, so a million generated cells never exist in memory at once. A conditional model
(`hparams.condition_on`) gets labels drawn at the training-label frequencies; they are written
as obs["label"].
"""

from __future__ import annotations

import itertools
import logging
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .alphabet import PAD, decode, gc_fraction
from .errors import InputError
from .models.base import Unsupported, data_rows, modality, split_rows
from .models.logscale import distinct_counts
from .models.registry import load_model_for, training_record
from .progress import Progress
from .provenance import atomic_path, meta, stamp, write_h5ad, write_text
from .rowwriter import RowWriter

LOG = logging.getLogger(__name__)

FASTA_WIDTH = 60
# Rows of expression samples drawn and written at a time: a few float64 temporaries of the
# count draws (65 MB each at 2,000 genes) bound the memory, whatever the number of samples.
GENERATE_CHUNK = 4096
# A feature whose train values take at most MAX_LEVELS distinct values, each seen LEVEL_ROWS
# times on average, is a code or a grade (0/1, stage 1-4, edema 0/0.5/1): its samples take the
# nearest of those values. A value between them is one no real row holds, and a classifier
# finds it at once (survival's pbc: bench/figures.md).
MAX_LEVELS = 10
LEVEL_ROWS = 4


def generate(data_path, checkpoint, out_path, n_samples: int, seed: int, fasta_path=None,
             whole_numbers: bool = True, train_range: bool = False, levels: bool = True) -> Path:
    """Write `n_samples` samples in the layout of the data at `data_path` (its modality, genes,
    alphabet); the same seed gives the same file contents. Returns `out_path`.
    `train_range`: each feature's samples are clipped to its train values' range.
    `whole_numbers`: features whose train values are all whole numbers get whole-number samples.
    `levels`: features with a few distinct train values get the nearest of them (MAX_LEVELS)."""
    data_path, checkpoint, out_path = Path(data_path), Path(checkpoint), Path(out_path)
    reference = ad.read_h5ad(data_path)
    data_modality = modality(reference)
    if fasta_path is not None and data_modality != "sequence":
        raise InputError(data_path, f"FASTA output needs sequence data, not {data_modality}")
    model = load_model_for(checkpoint, reference, data_path)
    if not model.can_sample:
        raise unsupported(checkpoint, model, "generate samples", model.cannot_sample)

    if hasattr(model, "fit_latent_density"):
        fit_latent_density(model, reference, seed)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    labels = draw_labels(model, reference, n_samples, generator, data_path)
    try:
        if data_modality == "expression":
            x_chunks = sample_chunks(model, n_samples, generator, labels)
            first = next(x_chunks, None)  # drawn here, so a family that cannot sample says so now
            x_chunks = itertools.chain([] if first is None else [first], x_chunks)
        else:
            samples = model.sample(n_samples, generator, **label_kwargs(labels))
    except Unsupported as err:
        raise unsupported(checkpoint, model, "generate samples", str(err)) from None
    support = None if data_modality == "sequence" else train_support(reference, train_range, whole_numbers, levels)
    if support is not None and data_modality == "expression":
        x_chunks = (support.apply(block) for block in x_chunks)
    elif support is not None:  # time course: a forecaster's (X, obs) or a row model's X
        samples = (support.apply(samples[0]), samples[1]) if isinstance(samples, tuple) else support.apply(samples)
    if data_modality == "expression":
        adata = expression_layout(n_samples, reference)
    elif data_modality == "sequence":
        adata = sequence_samples(samples, reference)
    elif data_modality == "timecourse":
        adata = timecourse_samples(samples, reference)
    if labels is not None:
        adata.obs["label"] = label_column(labels, model.hparams["label_names"])
    adata.obs["origin"] = "generated"

    adata.uns["omicsgen"] = {
        "modality": data_modality,
        "dataset": meta(reference).get("dataset", ""),
        "provenance": inherited_provenance(reference, checkpoint),
    }
    if support is not None and support.whole.any():
        adata.uns["omicsgen"]["whole_number_features"] = [str(v) for v in reference.var_names[support.whole]]
    if support is not None and support.levels:
        adata.uns["omicsgen"]["level_features"] = [str(reference.var_names[j]) for j in support.levels]
    params = {"checkpoint": str(checkpoint), "family": model.family, "n_samples": n_samples,
              "whole_numbers": whole_numbers, "train_range": train_range, "levels": levels}
    stamp(adata, "generate", params, inputs=[data_path, checkpoint], seed=seed)
    if fasta_path is not None:
        # records omicsgen aligned were unaligned in the user's file: the FASTA gives them back so
        write_text(fasta(adata, ungapped=bool(meta(reference).get("aligned_by"))), fasta_path)
    if data_modality == "expression":
        write_in_chunks(adata, x_chunks, out_path)
    else:
        write_h5ad(adata, out_path)
    if support is not None and train_range:
        support.log_clipped(n_samples * reference.n_vars)
    return out_path


# ---- the values real rows can hold -----------------------------------------------------------
class TrainSupport:
    """Per feature, the range of its train values, whether they are all whole numbers, and for
    features of a few distinct values (`levels`: feature index -> sorted values), those values.
    Whole-number features (codes, scores, ages) are rounded, within their range; a level
    feature's samples take the nearest of its values. With
    `train_range`, every feature's samples are clipped to its range (as SDV's
    `enforce_min_max_values`): no negative abundance, nothing past any value seen. Off by default:
    on log-normalised counts a Gaussian draw clipped at 0 puts values between 0 and the smallest
    nonzero count that real rows never hold (mouse_10x VAE c2st 0.59 -> 0.88), and on dense
    tables it changed the c2st within its noise (bench/figures.md)."""

    def __init__(self, low: np.ndarray, high: np.ndarray, whole: np.ndarray, levels: dict[int, np.ndarray] | None = None):
        self.low, self.high, self.whole, self.levels = low, high, whole, levels or {}
        self.clipped = {"below": 0, "above": 0}

    def apply(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        self.clipped["below"] += int((block < self.low).sum())
        self.clipped["above"] += int((block > self.high).sum())
        block = np.clip(block, self.low, self.high).astype(np.float32)
        block[:, self.whole] = np.round(block[:, self.whole])  # the bounds are whole: still within them
        for j, values in self.levels.items():
            block[:, j] = nearest(values, block[:, j])
        return block

    def log_clipped(self, n_values: int) -> None:
        LOG.info("clipped to the train range: %d of %d sampled values below a feature's smallest train value, "
                 "%d above its largest", self.clipped["below"], n_values, self.clipped["above"])


def nearest(values: np.ndarray, drawn: np.ndarray) -> np.ndarray:
    """Each drawn value replaced by the nearest of the sorted `values` (NaN stays NaN)."""
    right = np.clip(np.searchsorted(values, drawn), 1, len(values) - 1) if len(values) > 1 else np.zeros(len(drawn), int)
    left = np.maximum(right - 1, 0)
    pick = np.where(np.abs(drawn - values[left]) <= np.abs(values[right] - drawn), left, right)
    return np.where(np.isnan(drawn), drawn, values[pick]).astype(np.float32)


def level_features(x: np.ndarray, observed: np.ndarray) -> dict[int, np.ndarray]:
    """Feature index -> its sorted distinct train values, for features of at most MAX_LEVELS
    values seen LEVEL_ROWS times each on average. The distinct values of every column are
    counted in one sort; only the few candidates are then read one by one."""
    seen_counts = observed.sum(0)
    distinct = distinct_counts(np.where(observed, x, np.nan))
    candidates = np.flatnonzero((distinct > 1) & (distinct <= MAX_LEVELS) & (seen_counts >= LEVEL_ROWS * distinct))
    return {int(j): np.unique(x[observed[:, j], j]).astype(np.float32) for j in candidates}


def train_support(reference: ad.AnnData, train_range: bool = False, whole_numbers: bool = True,
                  levels: bool = True) -> TrainSupport | None:
    """The TrainSupport of the reference's train rows (the range only where `train_range`; the
    whole-number features only where `whole_numbers`, and kept within their range; the level
    features only where `levels`), or None when there is nothing to enforce. A feature with no
    train value is left as drawn."""
    if not (train_range or whole_numbers or levels) or (sp.issparse(reference.X) and not train_range):
        return None  # sparse X holds log-normalised counts: never whole numbers
    x = reference.X[split_rows(reference, "train")]
    if x.shape[0] == 0:
        return None
    if sp.issparse(x):
        low, high = x.min(axis=0).toarray().ravel(), x.max(axis=0).toarray().ravel()
        whole, level = np.zeros(x.shape[1], dtype=bool), {}
    else:
        x = np.asarray(x, dtype=np.float64)
        observed = ~np.isnan(x)
        with warnings.catch_warnings():  # a feature with no train value: NaN bounds, made infinite below
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = np.nanmin(x, axis=0), np.nanmax(x, axis=0)
        whole = np.where(observed, x == np.round(x), True).all(axis=0) & observed.any(axis=0)
        # log-normalised counts are measurements, not codes: a rarely detected gene's few values are its cells'
        level = level_features(x, observed) if levels and meta(reference).get("input_scale") != "counts" else {}
    whole &= whole_numbers
    if not (train_range or whole.any() or level):
        return None
    if not train_range:  # only the whole-number features keep to their range
        low, high = np.where(whole, low, np.nan), np.where(whole, high, np.nan)
    low, high = np.nan_to_num(low, nan=-np.inf), np.nan_to_num(high, nan=np.inf)
    if whole.any():
        names = [str(v) for v in reference.var_names[whole]]
        LOG.info("decision: %d feature(s) hold only whole numbers in the train rows (%s): samples are rounded to "
                 "whole numbers within their train range (setting: generate.whole_numbers: false)",
                 len(names), ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""))
    if level:
        names = [f"{reference.var_names[j]} ({', '.join(f'{v:g}' for v in values)})" for j, values in level.items()]
        LOG.info("decision: %d feature(s) take at most %d distinct values in the train rows (%s): samples take the "
                 "nearest of them (setting: generate.levels: false)", len(names), MAX_LEVELS,
                 "; ".join(names[:10]) + (" ..." if len(names) > 10 else ""))
    if train_range:
        LOG.info("samples are clipped to each feature's range in the train rows (generate.train_range: true)")
    return TrainSupport(low.astype(np.float32), high.astype(np.float32), whole, level)


# ---- where a latent model draws z ------------------------------------------------------------
def fit_latent_density(model, reference: ad.AnnData, seed: int) -> None:
    """Let a latent model fit the density `sample` draws z from to its train rows' posteriors
    (at most LATENT_FIT_ROWS of them, a seeded subset), and log what it chose."""
    from .models.vae import LATENT_FIT_ROWS

    rows = np.flatnonzero(split_rows(reference, "train"))
    if len(rows) > LATENT_FIT_ROWS:
        rows = np.sort(np.random.default_rng([seed, 7]).choice(rows, LATENT_FIT_ROWS, replace=False))
    values, observed = data_rows(reference, rows)
    LOG.info("decision: %s", model.fit_latent_density(values, observed, reference.obs.iloc[rows], seed))


# ---- conditional models ------------------------------------------------------------------
def draw_labels(model, reference: ad.AnnData, n: int, generator: torch.Generator, data_path) -> np.ndarray | None:
    """For a conditional model, `n` indices into `hparams.label_names` drawn at the frequencies
    of the labels of the reference's train rows; None for other models."""
    column = model.hparams.get("condition_on")
    if not column:
        return None
    names = [str(name) for name in model.hparams["label_names"]]
    if column not in reference.obs:
        raise InputError(data_path, f"the model is conditional on obs[{column!r}], which this data lacks",
                         hint="generate from the data the model was trained on")
    train_labels = reference.obs[column][split_rows(reference, "train")].dropna().astype(str)
    counts = train_labels.value_counts().reindex(names, fill_value=0).to_numpy(dtype=np.float64)
    if counts.sum() == 0:
        raise InputError(data_path, f"no train rows carry one of the model's labels {names}",
                         hint="generate from the data the model was trained on")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return torch.multinomial(torch.from_numpy(counts), n, replacement=True, generator=generator).numpy()


def label_kwargs(labels: np.ndarray | None, rows: slice = slice(None)) -> dict:
    return {} if labels is None else {"labels": labels[rows]}


def label_column(codes: np.ndarray, names) -> pd.Categorical:
    names = [str(name) for name in names]
    return pd.Categorical.from_codes(codes, categories=names)


# ---- expression, written in chunks -------------------------------------------------------------
def expression_layout(n: int, reference: ad.AnnData) -> ad.AnnData:
    """The samples' AnnData without X (obs, var): X is written chunk by chunk."""
    return ad.AnnData(obs=pd.DataFrame(index=sample_ids(n)), var=pd.DataFrame(index=reference.var_names.copy()))


def sample_chunks(model, n: int, generator: torch.Generator, labels):
    """Samples of GENERATE_CHUNK rows at a time, in row order, from one seeded generator."""
    progress = Progress(LOG, f"{model.family}: sampling {n:,} rows", n)
    for start in range(0, n, GENERATE_CHUNK):
        rows = slice(start, min(start + GENERATE_CHUNK, n))
        yield np.asarray(model.sample(rows.stop - rows.start, generator, **label_kwargs(labels, rows)), dtype=np.float32)
        progress.advance(rows.stop - rows.start)


def write_in_chunks(adata: ad.AnnData, blocks, out_path: Path) -> None:
    """`adata` (no X) written by anndata, then X added one block of rows at a time; the file
    appears at `out_path` only when complete."""
    with atomic_path(out_path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")
        with h5py.File(tmp, "a") as f:
            x = RowWriter(f, "X", adata.n_obs, adata.n_vars, np.float32)
            for block in blocks:
                x.append(block)
            x.close()


class FamilyCannot(InputError):
    """The model's family cannot do what was asked (sample, impute): a one-line error."""


def unsupported(checkpoint, model, action: str, why: str) -> FamilyCannot:
    return FamilyCannot(checkpoint, f"a {model.family} model cannot {action}", hint=why or None)


def inherited_provenance(source: ad.AnnData, checkpoint: Path) -> dict:
    """The steps that made the source data, plus the training record from the checkpoint."""
    provenance = dict(meta(source).get("provenance", {}))
    record = training_record(checkpoint)
    if record:
        provenance["train"] = record
    return provenance


def sample_ids(n: int) -> list[str]:
    return [f"sample_{i + 1}" for i in range(n)]


def timecourse_samples(samples, reference: ad.AnnData) -> ad.AnnData:
    """Series models return (X, obs with series/time). Row models (a VAE) draw independent
    profiles: each becomes a one-point series with an unknown (NaN) time."""
    if isinstance(samples, tuple):
        x, obs = samples
    else:
        x, obs = samples, pd.DataFrame({"series": sample_ids(len(samples)), "time": np.nan})
    step = obs.groupby("series", sort=False).cumcount()
    obs = obs.set_index(obs["series"].astype(str) + "_" + step.astype(str).to_numpy())
    obs.index.name = None
    adata = ad.AnnData(x.astype(np.float32), obs=obs)
    adata.var_names = reference.var_names
    return adata


def sequence_samples(tokens: np.ndarray, reference: ad.AnnData) -> ad.AnnData:
    ids = sample_ids(len(tokens))
    alphabet = dict(reference.uns["alphabet"])
    obs = pd.DataFrame(
        {
            "id": ids,
            "description": "",
            "length": _record_lengths(tokens),
            "gc": gc_fraction(tokens, alphabet["name"]),
            "padded_length": tokens.shape[1],
        },
        index=ids,
    )
    adata = ad.AnnData(np.zeros((len(tokens), 0), dtype=np.float32), obs=obs)
    adata.obsm["tokens"] = tokens.astype(np.int8)
    adata.uns["alphabet"] = alphabet
    return adata


def fasta(adata: ad.AnnData, ungapped: bool = False) -> str:
    records = decode(adata.obsm["tokens"], list(adata.uns["alphabet"]["symbols"]))
    if ungapped:
        records = [record.replace("-", "") for record in records]
    lines = []
    for record_id, sequence in zip(adata.obs["id"], records):
        lines.append(f">{record_id}")
        lines += [sequence[start : start + FASTA_WIDTH] for start in range(0, len(sequence), FASTA_WIDTH)]
    return "\n".join(lines) + "\n" if lines else ""


def _record_lengths(tokens: np.ndarray) -> np.ndarray:
    """Tokens before the first pad (a generated record never has a pad inside it)."""
    is_pad = tokens == PAD
    return np.where(is_pad.any(1), is_pad.argmax(1), tokens.shape[1])
