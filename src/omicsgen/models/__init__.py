"""Generative model families; see `registry.FAMILIES` for the names and `base.GenerativeModel`
for the interface they share."""

from .base import GenerativeModel
from .registry import FAMILIES, families_for, get_family, load_model

__all__ = ["FAMILIES", "GenerativeModel", "families_for", "get_family", "load_model"]
