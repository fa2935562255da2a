"""Sequences: length filter, fixed length by cropping or windowing, duplicates counted or removed.

Records of different lengths are handled one of three ways (`length_mode`):
- pad:    keep every record whole, padded to the longest kept one (the record length is in obs);
- crop:   cut records longer than `fixed_length` to their first `fixed_length` positions;
- window: cut records into overlapping windows of `fixed_length`, `window_step` apart (the last
          window ends at the record's end, so no position is lost); obs keeps `source_id`, `start`.

Unaligned records kept whole (`pad`) are aligned with FAMSA when they are one family (`align`:
auto, the default; true aligns any set; false never): the positional models then fit them
(omicsgen.alignment). obs["length"] stays each record's own length; the tokens hold the alignment.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .. import alphabet as alph
from ..alignment import ALIGN_MAX_RECORDS, FAMILY_MARGIN, align_sequences, alignment_facts, family_test
from ..decisions import record_decision
from ..errors import InputError
from ..provenance import meta
from .removed import record_removed

LENGTH_MODES = ("pad", "crop", "window")
# Records are cut into windows by default (`pad` asked for whole records) when whole records cannot
# be the rows: fewer than MIN_RECORDS (train, validation and test need one each), or a record
# longer than LONG_RECORD (a contig or chromosome: no model here reads one as a single row).
MIN_RECORDS = 3
LONG_RECORD = 100_000
AUTO_WINDOW = 200  # positions a window, and the step between windows (no overlap across splits)


def prepare_sequences(adata: ad.AnnData, params: dict, removed: list[dict]) -> ad.AnnData:
    source = meta(adata).get("source", "input")
    adata = _filter_length(adata, params, removed, source)
    mode = params.get("length_mode", "pad")
    if mode not in LENGTH_MODES:
        raise InputError(source, f"unknown length_mode '{mode}'", hint=f"use one of {', '.join(LENGTH_MODES)}")
    if mode == "pad" and (why := _why_windows(adata)):
        mode = "window"
        record_decision(adata, "length_mode", f"window: non-overlapping windows of {AUTO_WINDOW} positions", why,
                        "preprocess.sequence.length_mode (pad keeps whole records when there are 3 or more; "
                        "window or crop with fixed_length and window_step)")
        adata = _windows(adata, AUTO_WINDOW, AUTO_WINDOW, removed)
    elif mode == "crop":
        adata = _crop(adata, _fixed_length(params, source), removed)
    elif mode == "window":
        adata = _windows(adata, _fixed_length(params, source), int(params.get("window_step") or _fixed_length(params, source)), removed)
    adata.obsm["tokens"] = adata.obsm["tokens"][:, : int(_content_length(adata.obsm["tokens"]).max())]
    if mode == "pad":
        _align_family(adata, params.get("align", "auto"), source)
    adata.obs["padded_length"] = adata.obsm["tokens"].shape[1]
    return _duplicates(adata, bool(params.get("deduplicate", False)), removed)


def _why_windows(adata: ad.AnnData) -> str | None:
    """Why whole records cannot be the rows, when they cannot and windows can."""
    lengths = adata.obs["length"].to_numpy()
    if adata.n_obs < MIN_RECORDS and lengths.sum() >= MIN_RECORDS * AUTO_WINDOW:
        return (f"{adata.n_obs} record{'s' * (adata.n_obs != 1)} ({int(lengths.sum()):,} positions): too few to "
                f"split into train, validation and test records, so windows of the records are the rows")
    if lengths.max() > LONG_RECORD:
        return f"records up to {int(lengths.max()):,} positions long (a contig or chromosome) are too long to model as one row"
    return None


def _filter_length(adata, params, removed, source):
    lengths = adata.obs["length"].to_numpy()
    min_length, max_length = max(int(params.get("min_length", 1)), 1), params.get("max_length")  # empty records never stay
    keep = lengths >= min_length
    if max_length:
        keep &= lengths <= int(max_length)
    record_removed(removed, "length", int((~keep).sum()), 0, f"length outside [{min_length}, {max_length or 'any'}]")
    if not keep.any():
        raise InputError(source, "no record passes the length filter",
                         hint="change min_length / max_length in the config's preprocess section")
    return adata[keep].copy()


def _align_family(adata: ad.AnnData, align, source) -> None:
    """Replace unaligned records by their FAMSA alignment when `align` is true, or "auto" and
    they are one family (`family_test`); the choice is recorded as a decision either way."""
    if align not in ("auto", True, False):
        raise InputError(source, f"preprocess.sequence.align must be auto, true or false, not {align!r}")
    tokens = adata.obsm["tokens"]
    if align is False or adata.n_obs < 3 or alignment_facts(tokens)["aligned"]:
        return
    setting = "preprocess.sequence.align: auto | true | false"
    if adata.n_obs > ALIGN_MAX_RECORDS:
        record_decision(adata, "multiple alignment", "not aligned",
                        f"{adata.n_obs:,} records, more than the {ALIGN_MAX_RECORDS:,} omicsgen aligns (FAMSA's time "
                        "grows with their square): align them yourself to fit the positional models", setting)
        return
    name = adata.uns["alphabet"]["name"]
    sequences = alph.decode(tokens, list(adata.uns["alphabet"]["symbols"]))
    if align == "auto":
        test = family_test(sequences, rna=name == "rna")
        evidence = (f"aligned, {test['probe']} records match at {test['identity']:.2f} pairwise identity against "
                    f"{test['shuffled_identity']:.2f} with their residues shuffled")
        if not test["family"]:
            record_decision(adata, "multiple alignment", "not aligned",
                            f"not one family: {evidence} (a family is {FAMILY_MARGIN} above); the positional models do not run", setting)
            return
    else:
        evidence = "asked for in the config"
    rows = align_sequences(sequences, rna=name == "rna")
    changed = next((i for i, (row, record) in enumerate(zip(rows, sequences)) if row.replace("-", "") != record), None)
    if changed is not None:  # the aligner may only add gaps: never a user's residue changed
        raise InputError(source, f"record {adata.obs['id'].iloc[changed]}: its alignment changed its residues",
                         hint="set preprocess.sequence.align: false, or align the records yourself")
    aligned = alph.lookup_table(name)[np.frombuffer("".join(rows).encode(), dtype=np.uint8)]
    aligned = aligned.reshape(len(rows), -1).astype(np.int8)
    adata.obsm["tokens"] = aligned
    meta(adata).update(aligned_by="famsa", aligned=True, gapped=True)
    record_decision(adata, "multiple alignment", f"aligned with FAMSA: {aligned.shape[1]:,} columns",
                    f"one family ({evidence}); samples are written to FASTA without the gaps", setting)


def _fixed_length(params: dict, source) -> int:
    if not params.get("fixed_length"):
        raise InputError(source, f"length_mode '{params.get('length_mode')}' needs fixed_length",
                         hint="set preprocess.sequence.fixed_length in the config")
    return int(params["fixed_length"])


def _content_length(tokens: np.ndarray) -> np.ndarray:
    return (tokens != alph.PAD).sum(axis=1)


def _crop(adata, length: int, removed):
    cropped = int((adata.obs["length"] > length).sum())
    record_removed(removed, "crop", 0, 0, f"{cropped} records cropped to their first {length} positions")
    adata.obsm["tokens"] = adata.obsm["tokens"][:, :length]
    adata.obs["length"] = np.minimum(adata.obs["length"].to_numpy(), length)
    return adata


def _windows(adata, length: int, step: int, removed):
    """All windows of all records in one fancy-indexing gather."""
    lengths = adata.obs["length"].to_numpy()
    starts = [_window_starts(n, length, step) for n in lengths]
    rows = np.repeat(np.arange(adata.n_obs), [len(s) for s in starts])
    offsets = np.concatenate(starts)
    tokens = np.pad(adata.obsm["tokens"], ((0, 0), (0, length)))
    windows = tokens[rows[:, None], offsets[:, None] + np.arange(length)]
    source = adata.obs.iloc[rows].reset_index(drop=True)
    obs = pd.DataFrame({"id": [f"{i}:{s + 1}-{s + min(length, n)}" for i, s, n in zip(source["id"], offsets, source["length"])],
                        "source_id": source["id"].to_numpy(), "start": offsets + 1})
    for column in source.columns.drop(["id", "length"], errors="ignore"):
        obs[column] = source[column].to_numpy()
    obs["length"] = _content_length(windows)
    obs.index = pd.Index(obs["id"].to_numpy(), name="record")
    record_removed(removed, "window", 0, 0, f"{adata.n_obs} records cut into {len(obs)} windows of {length}, step {step}")
    out = ad.AnnData(obs=obs, obsm={"tokens": windows.astype(np.int8)}, uns=adata.uns)
    return out


def _window_starts(n: int, length: int, step: int) -> np.ndarray:
    if n <= length:
        return np.array([0])
    starts = np.arange(0, n - length + 1, step)
    return starts if starts[-1] == n - length else np.append(starts, n - length)


def _duplicates(adata, remove: bool, removed):
    """Records identical to an earlier one: always counted, removed when the config says so."""
    tokens = np.ascontiguousarray(adata.obsm["tokens"])
    _, first = np.unique(tokens.view(f"V{tokens.shape[1]}").ravel(), return_index=True)
    n_duplicates = adata.n_obs - first.size
    meta(adata)["duplicate_sequences"] = int(n_duplicates)
    if not remove:
        return adata
    record_removed(removed, "deduplicate", n_duplicates, 0, "identical to an earlier record")
    keep = np.zeros(adata.n_obs, dtype=bool)
    keep[first] = True
    return adata[keep].copy()
