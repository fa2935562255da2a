"""Generative model families; see `registry.FAMILIES` for the names and `base.GenerativeModel`
for the interface they share.

The names below load on first use (PEP 562), so `omicsgen.models.catalog`, which the Snakefile
reads to build the DAG, does not import torch.
"""

import importlib

_LAZY = {"GenerativeModel": "base", "FAMILIES": "registry", "families_for": "registry", "get_family": "registry",
         "load_model": "registry"}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
