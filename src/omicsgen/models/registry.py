"""Family name -> model class, and loading a trained model back from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import torch

from ..errors import InputError
from .ae import Autoencoder
from .base import GenerativeModel
from .forecaster import GRUForecaster
from .gain import GAIN
from .lstm import LSTMLanguageModel
from .vae import VAE
from .wgan import WGAN

FAMILIES: dict[str, type[GenerativeModel]] = {
    cls.family: cls for cls in (VAE, LSTMLanguageModel, GRUForecaster, Autoencoder, GAIN, WGAN)
}


def families_for(modality: str) -> list[str]:
    """The families that accept a modality."""
    return [name for name, cls in FAMILIES.items() if modality in cls.modalities]


def get_family(name: str) -> type[GenerativeModel]:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}") from None


def load_model(checkpoint: str | Path) -> GenerativeModel:
    """The model stored by `train`, on CPU, in eval mode; the family comes from its hparams."""
    contents = torch.load(checkpoint, map_location="cpu", weights_only=True)
    family = contents.get("hyper_parameters", {}).get("family")
    if family not in FAMILIES:
        raise InputError(checkpoint, f"not an omicsgen model checkpoint (family {family!r})",
                         hint=f"expected one of {sorted(FAMILIES)}, written by `omicsgen train`")
    model = FAMILIES[family].load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    return model.eval()


def load_model_for(checkpoint: str | Path, adata: ad.AnnData, data_path: str | Path) -> GenerativeModel:
    """`load_model`, refusing data the model cannot read (other modality, other sizes)."""
    model = load_model(checkpoint)
    problem = model.data_mismatch(adata)
    if problem:
        raise InputError(data_path, problem, hint=f"model {checkpoint} was trained on other data")
    return model


def training_record(checkpoint: str | Path) -> dict | None:
    """The `train` provenance record that `train` stored in the checkpoint."""
    return torch.load(checkpoint, map_location="cpu", weights_only=True).get("omicsgen")
