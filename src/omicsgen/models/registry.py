"""Family name -> the model class for each modality it accepts, and loading a trained model back.

A family (`vae`, `lstm`, ...) is what the config names; the class that trains depends on the
data: the `lstm` family is a language model on sequences and a forecaster on time courses, the
`vae` family a Gaussian / count VAE on matrices and a categorical VAE on sequences. `Family`
answers for the family as a whole (`modalities`, `defaults`, `can_sample`, `can_impute`) and
hands out the class for one modality (`model_class`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import torch

from ..errors import InputError
from .ae import Autoencoder
from .base import GenerativeModel, modality
from .forecaster import GRUForecaster, LSTMForecaster
from .gain import GAIN
from .lstm import GRULanguageModel, LSTMLanguageModel
from .seqvae import SequenceVAE
from .vae import VAE
from .wgan import WGAN, SequenceWGAN

# Checkpoint key naming the modality the model was trained on; checkpoints from before a family
# had several classes lack it and load as the family's first class.
MODALITY_KEY = "modality"


@dataclass(frozen=True)
class Family:
    name: str
    classes: dict[str, type[GenerativeModel]]  # modality -> class, in listing order

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.classes)

    @property
    def defaults(self) -> dict:
        """Every hyper-parameter the family takes on some modality; where the modalities'
        defaults differ, the first modality's (see `defaults_for`)."""
        merged: dict = {}
        for cls in self.classes.values():
            for name, value in cls.defaults.items():
                merged.setdefault(name, value)
        return merged

    def defaults_for(self, data_modality: str) -> dict:
        return dict(self.model_class(data_modality).defaults)

    @property
    def can_sample(self) -> bool:
        return any(cls.can_sample for cls in self.classes.values())

    @property
    def can_impute(self) -> bool:
        return any(cls.can_impute for cls in self.classes.values())

    def model_class(self, data_modality: str) -> type[GenerativeModel]:
        try:
            return self.classes[data_modality]
        except KeyError:
            raise ValueError(f"the {self.name} family takes {' or '.join(self.modalities)} data, "
                             f"not {data_modality}") from None

    def distinct_classes(self) -> dict[type[GenerativeModel], list[str]]:
        """class -> the modalities it serves (for listings)."""
        served: dict[type[GenerativeModel], list[str]] = {}
        for data_modality, cls in self.classes.items():
            served.setdefault(cls, []).append(data_modality)
        return served

    # Data-facing class methods, dispatched on the data's modality.
    def from_data(self, adata: ad.AnnData, **hparams) -> GenerativeModel:
        return self.model_class(modality(adata)).from_data(adata, **hparams)

    def tensors(self, adata: ad.AnnData, split) -> dict[str, torch.Tensor]:
        return self.model_class(modality(adata)).tensors(adata, split)

    def checkpoint_class(self, contents: dict) -> type[GenerativeModel]:
        trained_on = contents.get("hyper_parameters", {}).get(MODALITY_KEY)
        return self.classes.get(trained_on) or next(iter(self.classes.values()))


def _family(name: str, *classes: type[GenerativeModel]) -> Family:
    by_modality: dict[str, type[GenerativeModel]] = {}
    for cls in classes:
        assert cls.family == name, (cls, name)
        for data_modality in cls.modalities:
            by_modality.setdefault(data_modality, cls)
    return Family(name, by_modality)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        _family("vae", VAE, SequenceVAE),
        _family("lstm", LSTMLanguageModel, LSTMForecaster),
        _family("gru", GRUForecaster, GRULanguageModel),
        _family("ae", Autoencoder),
        _family("gain", GAIN),
        _family("wgan", WGAN, SequenceWGAN),
    )
}


def families_for(data_modality: str) -> list[str]:
    """The families that accept a modality."""
    return [name for name, family in FAMILIES.items() if data_modality in family.modalities]


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}") from None


def load_model(checkpoint: str | Path) -> GenerativeModel:
    """The model stored by `train`, on CPU, in eval mode; the family (and, for families with
    a class per modality, the modality) comes from its hparams."""
    contents = torch.load(checkpoint, map_location="cpu", weights_only=True)
    family = contents.get("hyper_parameters", {}).get("family")
    if family not in FAMILIES:
        raise InputError(checkpoint, f"not an omicsgen model checkpoint (family {family!r})",
                         hint=f"expected one of {sorted(FAMILIES)}, written by `omicsgen train`")
    return _rebuild(FAMILIES[family].checkpoint_class(contents), contents).eval()


def _rebuild(cls: type[GenerativeModel], contents: dict) -> GenerativeModel:
    """What Lightning's `load_from_checkpoint` does with these checkpoints, without importing
    Lightning: `cls` from the saved hyper-parameters that its `__init__` takes (the checkpoint
    adds `family` and `modality`), its `on_load_checkpoint` (older checkpoints), then the
    weights, strictly."""
    takes = inspect.signature(cls.__init__).parameters
    model = cls(**{name: value for name, value in contents["hyper_parameters"].items() if name in takes})
    model.on_load_checkpoint(contents)
    model.load_state_dict(contents["state_dict"])
    return model


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
