"""Draw samples from a trained model into samples.h5ad (and a FASTA file for sequences)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import torch

from .alphabet import PAD, decode, gc_fraction
from .errors import InputError
from .models.base import Unsupported, modality
from .models.registry import load_model_for, training_record
from .provenance import meta, stamp, write_h5ad, write_text

FASTA_WIDTH = 60


def generate(data_path, checkpoint, out_path, n_samples: int, seed: int, fasta_path=None) -> Path:
    """Write `n_samples` samples in the layout of the data at `data_path` (its modality, genes,
    alphabet); the same seed gives the same file contents. Returns `out_path`."""
    data_path, checkpoint, out_path = Path(data_path), Path(checkpoint), Path(out_path)
    reference = ad.read_h5ad(data_path)
    data_modality = modality(reference)
    if fasta_path is not None and data_modality != "sequence":
        raise InputError(data_path, f"FASTA output needs sequence data, not {data_modality}")
    model = load_model_for(checkpoint, reference, data_path)
    if not model.can_sample:
        raise unsupported(checkpoint, model, "generate samples", model.cannot_sample)

    torch.manual_seed(seed)
    try:
        samples = model.sample(n_samples, torch.Generator().manual_seed(seed))
    except Unsupported as err:
        raise unsupported(checkpoint, model, "generate samples", str(err)) from None
    if data_modality == "sequence":
        adata = sequence_samples(samples, reference)
    elif data_modality == "timecourse":
        adata = timecourse_samples(samples, reference)
    else:
        adata = expression_samples(samples, reference)
    adata.obs["origin"] = "generated"

    adata.uns["omicsgen"] = {
        "modality": data_modality,
        "dataset": meta(reference).get("dataset", ""),
        "provenance": inherited_provenance(reference, checkpoint),
    }
    params = {"checkpoint": str(checkpoint), "family": model.family, "n_samples": n_samples}
    stamp(adata, "generate", params, inputs=[data_path, checkpoint], seed=seed)
    if fasta_path is not None:
        write_text(fasta(adata), fasta_path)
    write_h5ad(adata, out_path)
    return out_path


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


def expression_samples(x: np.ndarray, reference: ad.AnnData) -> ad.AnnData:
    adata = ad.AnnData(x.astype(np.float32), obs=pd.DataFrame(index=sample_ids(len(x))))
    adata.var_names = reference.var_names
    return adata


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


def fasta(adata: ad.AnnData) -> str:
    records = decode(adata.obsm["tokens"], list(adata.uns["alphabet"]["symbols"]))
    lines = []
    for record_id, sequence in zip(adata.obs["id"], records):
        lines.append(f">{record_id}")
        lines += [sequence[start : start + FASTA_WIDTH] for start in range(0, len(sequence), FASTA_WIDTH)]
    return "\n".join(lines) + "\n" if lines else ""


def _record_lengths(tokens: np.ndarray) -> np.ndarray:
    """Tokens before the first pad (a generated record never has a pad inside it)."""
    is_pad = tokens == PAD
    return np.where(is_pad.any(1), is_pad.argmax(1), tokens.shape[1])
