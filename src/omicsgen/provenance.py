"""Provenance and safe writing: every file says how it was made, and no partial file is left."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import anndata as ad

from . import __version__

# The packages whose versions decide the numbers a file holds.
_TRACKED = ("omicsgen", "torch", "lightning", "scanpy", "anndata", "numpy", "scikit-learn", "biopython")


@functools.cache  # installed versions do not change within a process; each lookup reads metadata files
def _package_versions() -> tuple[tuple[str, str], ...]:
    versions = {}
    for name in _TRACKED:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = __version__ if name == "omicsgen" else "not installed"
    return tuple(versions.items())


def package_versions() -> dict[str, str]:
    return dict(_package_versions())


def checksum(path: str | Path) -> str:
    """sha256 of a file, or of every file under a directory (zarr, 10x mtx folders). A file is
    hashed once per process while its size and modification time stay the same (train asks for
    its input's twice: the resume key and the provenance; large inputs take seconds each)."""
    path = Path(path)
    if path.is_file():
        status = path.stat()
        return _file_checksum(str(path), str(path.resolve()), status.st_size, status.st_mtime_ns)
    return _checksum(path)


@functools.lru_cache(maxsize=64)
def _file_checksum(path: str, resolved: str, size: int, mtime_ns: int) -> str:
    return _checksum(Path(path))  # the name as given is part of the digest


def _checksum(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


def meta(adata: ad.AnnData) -> dict:
    """The omicsgen section of `uns`, created on first use."""
    return adata.uns.setdefault("omicsgen", {})


def stamp(adata: ad.AnnData, step: str, params: dict | None = None, inputs=(), seed: int | None = None) -> None:
    """Record in `uns['omicsgen']['provenance'][step]` how this step made the data.

    Params are stored as JSON text so any nesting round-trips through h5ad unchanged.
    """
    record = {
        "params": json.dumps(params or {}, sort_keys=True, default=str),
        "inputs": json.dumps({str(p): checksum(p) for p in inputs}, sort_keys=True),
        "versions": json.dumps(package_versions(), sort_keys=True),
        "seed": -1 if seed is None else int(seed),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    meta(adata).setdefault("provenance", {})[step] = record


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; outputs follow the user's umask
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def write_h5ad(adata: ad.AnnData, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")


def write_json(obj, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def describe(path: str | Path) -> str:
    """Human-readable provenance of an omicsgen output (.h5ad or model checkpoint)."""
    path = Path(path)
    if path.suffix == ".ckpt":
        from .models.registry import training_record

        records = {"train": training_record(path) or {}}
    else:
        adata = ad.read_h5ad(path, backed="r")
        records = dict(adata.uns.get("omicsgen", {}).get("provenance", {}))
        adata.file.close()
    lines = [str(path)]
    for step, record in sorted(records.items(), key=lambda item: str(item[1].get("time", ""))):
        lines.append(f"{step}: seed {record.get('seed')}, at {record.get('time')}")
        for key in ("params", "inputs", "versions"):
            value = record.get(key)
            if value:
                parsed = json.loads(value) if isinstance(value, str) else value
                lines.append(f"  {key}: {json.dumps(parsed, sort_keys=True)}")
    return "\n".join(lines)
