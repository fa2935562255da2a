"""Opening plain, gzip and bgzip files alike, streaming, with clear errors for damaged ones."""

from __future__ import annotations

import codecs
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


def _first_non_utf8(path: Path, chunk: int = 1 << 20) -> tuple[int, int]:
    """The line and the value of the first byte that is not UTF-8 (reads the file again, a chunk at
    a time: errors only)."""
    decoder, lines = codecs.getincrementaldecoder("utf-8")(), 1
    with _open_binary(path) as raw:
        while data := raw.read(chunk):
            pending = len(decoder.getstate()[0])  # bytes of a character split across chunks
            try:
                decoder.decode(data)
            except UnicodeDecodeError as err:
                at = max(0, err.start - pending)
                return lines + data.count(b"\n", 0, at), data[at]
            lines += data.count(b"\n")
    return lines, 0
