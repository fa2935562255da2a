"""Opening plain, gzip and bgzip files alike, with a clear error for a truncated one."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path

from ..errors import InputError


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """The whole file, decompressed (bgzip is a gzip stream of blocks, so gzip reads it)."""
    try:
        if is_gzip(path):
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise InputError(path, f"the gzip file is damaged or truncated ({err})",
                         hint="download or compress the file again") from None


def read_text(path: Path) -> io.StringIO:
    data = read_bytes(path)
    if b"\x00" in data[:65536]:
        raise InputError(path, "the file holds binary data, not text",
                         hint="check that the sheet points at the right file and format")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(path, "bytes that are not UTF-8 text", where=f"line {line}",
                         hint="check that the sheet points at the right file and format") from None
    return io.StringIO(text)
