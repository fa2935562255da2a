"""Hyper-parameter sweeps: a list of values in a model's config expands into one model per value."""

from __future__ import annotations

import itertools


def expand_models(models: dict[str, dict]) -> dict[str, dict]:
    """`{"vae": {"family": "vae", "beta": [0.5, 4]}}` -> `vae_beta-0.5`, `vae_beta-4`.

    Several listed hyper-parameters expand into every combination. Trainer overrides and the
    `datasets` a model is limited to are not swept (they say how and where to train, not which model).
    """
    expanded = {}
    for name, spec in models.items():
        swept = {key: value for key, value in spec.items() if isinstance(value, list) and key not in ("trainer", "datasets")}
        if not swept:
            expanded[name] = spec
            continue
        for values in itertools.product(*swept.values()):
            suffix = "_".join(f"{key}-{value}" for key, value in zip(swept, values))
            expanded[f"{name}_{suffix}"] = {**spec, **dict(zip(swept, values))}
    return expanded
