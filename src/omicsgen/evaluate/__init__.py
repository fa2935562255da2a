"""Scoring models and baselines on held-out data (keys documented in docs/scores.md)."""

from .scores import baselines, evaluate

__all__ = ["baselines", "evaluate"]
