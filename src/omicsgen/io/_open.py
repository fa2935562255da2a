"""Opening plain, gzip and bgzip files alike, streaming, with clear errors for damaged ones."""

from __future__ import annotations

import contextlib
import gzip
import io
import zlib
from pathlib import Path

from ..errors import InputError

DAMAGED = (EOFError, gzip.BadGzipFile, zlib.error)


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _open_binary(path: Path):
    # bgzip is a series of gzip members, which gzip reads as one stream
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


@contextlib.contextmanager
def open_text(path: Path):
    """A text handle over the (decompressed) file; binary, non-UTF-8 or truncated input -> InputError."""
    with _open_binary(path) as raw:
        try:
            head = raw.peek(65536)[:65536] if hasattr(raw, "peek") else b""
            if b"\x00" in head:
                raise InputError(path, "the file holds binary data, not text",
                                 hint="check that the sheet points at the right file and format")
            # utf-8-sig drops the byte-order mark Excel and Windows tools write; newline=None
            # reads Windows (CRLF) and old Mac (CR) line endings as "\n"
            yield io.TextIOWrapper(raw, encoding="utf-8-sig", newline=None)
        except DAMAGED as err:
            raise InputError(path, f"the gzip file is damaged or truncated ({err})",
                             hint="download or compress the file again") from None
        except UnicodeDecodeError:
            line, byte = _first_non_utf8(path)
            raise InputError(path, f"bytes that are not UTF-8 text (byte 0x{byte:02x})", where=f"line {line}",
                             hint="a spreadsheet's or an old tool's text may be Windows-1252 or Latin-1 (an accent in a "
                                  "name): save it as 'CSV UTF-8'; else check that the sheet points at the right file "
                                  "and format") from None


def _first_non_utf8(path: Path) -> tuple[int, int]:
    """The line and the value of the first byte that is not UTF-8 (reads the file again: errors only)."""
    with _open_binary(path) as raw:
        data = raw.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return data.count(b"\n", 0, err.start) + 1, data[err.start]
    return 1, 0
