"""The file side of reading a corpus: opening it safely and splitting it into rows, per format.

`read_rows` turns a TSV, CSV or JSONL file into `Row`s (start line, raw text, and either the
parsed fields or why the row cannot be parsed) without ever holding more than a bounded piece of
one row; `CorpusReader` (corpus.py) decides what the fields mean. The row and field limits are
arguments because they are the reader's policy, set in corpus.py.
"""

from __future__ import annotations

import csv
import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

RAW_LIMIT = 2000  # characters of a row's raw text kept for the run report
_SKIP_PIECE = 1 << 16
FORMATS = {"tsv": "tsv", "csv": "csv", "jsonl": "jsonl", "json": "jsonl"}
_DELIMITERS = {"tsv": "\t", "csv": ","}
_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISSOCK, "a socket"))
# surrogateescape turns undecodable bytes into lone surrogates; any surrogate marks invalid UTF-8.
SURROGATE = re.compile("[\ud800-\udfff]")

# A parsed row: its start line, raw text, and either the fields (list or JSON object) or a rejection reason.
Row = tuple[int, str, list[str] | dict[str, object] | str]


class CorpusError(ValueError):
    """The corpus (or one row of it, with on_error="fail") cannot be used; names file, line, reason."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path} line {line}"
        super().__init__(f"{where}: {reason}")


def open_corpus(path: Path) -> IO[str]:
    """Open a corpus for one pass; refuse, before opening (opening a FIFO blocks), anything a second
    read would not see again."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CorpusError(path, f"cannot open corpus: {exc.strerror or exc}") from exc
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a directory fails to open with its own message
        kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "a device")
        raise CorpusError(
            path,
            f"not a regular file ({kind}); scoring reads the corpus more than once (hashing, resume), "
            "so save it to a file first",
        )
    # utf-8-sig strips a BOM; newline="" keeps line ends so csv sees quoted newlines verbatim.
    try:
        return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise CorpusError(path, f"cannot open corpus: {exc.strerror or exc}") from exc


def printable_raw(text: str) -> str:
    """Raw row text with undecodable bytes shown as U+FFFD, cut to RAW_LIMIT characters."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:RAW_LIMIT]


def read_rows(handle: IO[str], fmt: str, *, max_row_chars: int, max_field_chars: int) -> Iterator[Row]:
    """Non-blank rows of an open corpus in format `fmt` (a value of FORMATS); CSV/TSV header first.

    A row or line longer than `max_row_chars`, or a CSV/TSV field longer than `max_field_chars`,
    comes back as a rejection reason, and reading resumes after it.
    """
    if fmt == "jsonl":
        return _json_rows(handle, max_row_chars, max_field_chars)
    return _csv_rows(handle, _DELIMITERS[fmt], max_row_chars, max_field_chars)


def _read_line(handle: IO[str], limit: int) -> tuple[str, int]:
    """The next physical line and its length; a line longer than `limit` is read past in small
    pieces and only its first RAW_LIMIT characters come back. ("", 0) at the end of the file."""
    text = handle.readline(limit + 1)
    length = len(text)
    if length <= limit:
        return text, length
    head, end = text[:RAW_LIMIT], text[-1]
    del text
    while end not in "\r\n":
        piece = handle.readline(_SKIP_PIECE)
        if not piece:
            break
        length, end = length + len(piece), piece[-1]
    return head, length


def _too_long(what: str, length: int, max_row_chars: int, max_field_chars: int) -> str:
    return f"{what} is {length:,} characters; the limit is {max_row_chars:,} ({max_field_chars:,} per text)"


def _csv_reason(exc: csv.Error, max_field_chars: int) -> str:
    """Turn the csv module's terse messages into reasons a corpus author can act on."""
    message = str(exc)
    if message == "unexpected end of data":
        return "broken quoting: quoted field is never closed (runs to end of file)"
    if message.startswith("field larger than field limit"):
        return f"a field is longer than the limit of {max_field_chars:,} characters (or its quote is never closed)"
    return "broken quoting: " + message.replace("\t", "tab")


def _parse_json(text: str) -> dict[str, object] | str:
    """One JSONL line as an object, or why it is not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} (column {exc.colno})"
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        return f"invalid JSON: {str(exc).split(':')[0]}"
    except RecursionError:
        return "invalid JSON: nested too deeply"
    if not isinstance(value, dict):
        return f"line is not a JSON object (got {type(value).__name__})"
    return value


class _RowTooLong(Exception):
    """Raised through csv.reader by `_LineTap` once a row passes its length limit."""

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length


class _LineTap:
    """Line iterator fed to csv.reader: counts physical lines, bounds each row's length and keeps
    the start of the current row's raw text."""

    def __init__(self, handle: IO[str], max_row_chars: int) -> None:
        self._handle = handle
        self._max_row_chars = max_row_chars
        self.line = 0
        self._raw: list[str] = []
        self._raw_len = 0
        self._row_len = 0

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        text, length = _read_line(self._handle, self._max_row_chars - self._row_len)
        if not text:
            raise StopIteration
        self.line += 1
        self._row_len += length
        if self._raw_len < RAW_LIMIT:
            self._raw.append(text[: RAW_LIMIT - self._raw_len])
            self._raw_len += len(self._raw[-1])
        if self._row_len > self._max_row_chars:
            raise _RowTooLong(self._row_len)
        return text

    def start_row(self) -> int:
        """Forget the previous row; return the line the next row starts on."""
        self._raw.clear()
        self._raw_len = self._row_len = 0
        return self.line + 1

    def raw(self) -> str:
        return "".join(self._raw).rstrip("\r\n")


def _csv_rows(handle: IO[str], delimiter: str, max_row_chars: int, max_field_chars: int) -> Iterator[Row]:
    """Non-blank CSV/TSV rows (header first); an unparsable row is rejected and parsing resumes."""
    csv.field_size_limit(max_field_chars)
    tap = _LineTap(handle, max_row_chars)
    reader = csv.reader(tap, delimiter=delimiter, strict=True)
    while True:
        line = tap.start_row()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield line, tap.raw(), _csv_reason(exc, max_field_chars)
            continue
        except _RowTooLong as exc:
            yield line, tap.raw(), _too_long("row", exc.length, max_row_chars, max_field_chars)
            continue
        if row and not (len(row) == 1 and not row[0].strip()):
            yield line, tap.raw(), row


def _json_rows(handle: IO[str], max_row_chars: int, max_field_chars: int) -> Iterator[Row]:
    """Non-blank JSONL lines parsed to objects; anything else becomes a rejection reason."""
    number = 0
    while True:
        text, length = _read_line(handle, max_row_chars)
        if not text:
            return
        number += 1
        if not text.strip():
            continue
        raw = text[: RAW_LIMIT + 2].rstrip("\r\n")
        if length > max_row_chars:
            yield number, raw, _too_long("line", length, max_row_chars, max_field_chars)
        elif SURROGATE.search(text):
            yield number, raw, "invalid UTF-8"
        else:
            yield number, raw, _parse_json(text)
