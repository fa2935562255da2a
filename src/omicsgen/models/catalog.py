"""What each family can do, without importing torch: the Snakefile and model selection read this.

Building the DAG must not pay for importing torch and Lightning (seconds on a laptop, tens of
seconds under load, for every `snakemake` call). `registry.FAMILIES` holds the classes;
`tests/test_choose.py` checks that this table says the same as they do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ability:
    model_class: str  # omicsgen.models.<module>.<Class>
    can_sample: bool
    can_impute: bool


# family -> modality -> what its class for that modality can do, in the registry's listing order
CATALOG: dict[str, dict[str, Ability]] = {
    "vae": {
        "expression": Ability("vae.VAE", True, True),
        "timecourse": Ability("vae.VAE", True, True),
        "sequence": Ability("seqvae.SequenceVAE", True, True),
    },
    "lstm": {
        "sequence": Ability("lstm.LSTMLanguageModel", True, True),
        "timecourse": Ability("forecaster.LSTMForecaster", True, True),
    },
    "gru": {
        "timecourse": Ability("forecaster.GRUForecaster", True, True),
        "sequence": Ability("lstm.GRULanguageModel", True, True),
    },
    "ae": {
        "expression": Ability("ae.Autoencoder", True, True),
        "timecourse": Ability("ae.Autoencoder", True, True),
    },
    "gain": {
        "expression": Ability("gain.GAIN", False, True),
        "timecourse": Ability("gain.GAIN", False, True),
    },
    "wgan": {
        "expression": Ability("wgan.WGAN", True, False),
        "sequence": Ability("wgan.SequenceWGAN", True, False),
    },
}


def modalities(family: str) -> tuple[str, ...]:
    return tuple(CATALOG[family])


def can(family: str, modality: str, action: str) -> bool:
    """Whether `family` can `sample` or `impute` on `modality` data."""
    return getattr(CATALOG[family][modality], f"can_{action}")
