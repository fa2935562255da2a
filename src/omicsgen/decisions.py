"""Decisions the tool makes for the user, kept in `uns["omicsgen"]["decisions"]` and logged.

Each is `{"what", "value", "why", "setting"}`: what was decided, the outcome, the evidence, and
the sheet column or config key that overrides it. The list is kept as JSON text because h5ad
cannot store a list of dicts; `report.decisions.data_decisions` reads it back.
"""

from __future__ import annotations

import json
import logging

import anndata as ad

from .provenance import meta

log = logging.getLogger(__name__)


def record_decision(adata: ad.AnnData, what: str, value, why: str, setting: str) -> None:
    stored = meta(adata).get("decisions", "[]")
    decisions = json.loads(stored) if isinstance(stored, str) else list(stored)
    decisions.append({"what": what, "value": str(value), "why": why, "setting": setting})
    meta(adata)["decisions"] = json.dumps(decisions)
    log.info("decision: %s = %s (%s; setting: %s)", what, value, why, setting)


def decisions(adata: ad.AnnData) -> list[dict]:
    """The recorded decisions as a list of dicts."""
    stored = meta(adata).get("decisions", "[]")
    return json.loads(stored) if isinstance(stored, str) else [dict(d) for d in stored]
