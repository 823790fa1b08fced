"""Streaming reader of text-pair corpora (TSV, CSV, JSONL) that survives dirty real-world files.

Every data row is either accepted as a `PairRecord` or rejected as a `RejectedRow` with a short
reason, so a run can report exactly which lines of a user's corpus were left out and why. Rules:

- Only regular files: a corpus is read more than once (header, hashing, every pass, resume), which
  a FIFO, /dev/stdin or another device cannot give, so they are refused when the reader is made.
- Memory per row is bounded: a text longer than MAX_FIELD_CHARS, an id longer than MAX_ID_CHARS,
  or a CSV/TSV row or JSONL line longer than MAX_ROW_CHARS rejects its row; an overlong line is
  read only that far and the rest of it is skipped in small pieces.
- Labels are never dropped silently: a corpus is labelled when its header has nsp_label (CSV/TSV)
  or when any JSONL object with both texts has a non-null one (construction reads up to the first
  such object, so an unlabelled JSONL is read through once more). In a labelled corpus, a row
  without a label is rejected, not scored as unlabelled.
- A text with nothing BERT's normaliser keeps (only control, format, private-use, space or
  combining characters, or U+FFFD) is rejected: it would be scored as an empty segment.
- `columns` maps our names (text_a, text_b, nsp_label, id) to the file's; an unmapped column that
  looks like a label adds a line to `warnings`.
"""

from __future__ import annotations

import csv
import json
import re
import stat
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from lucid_eval.data.pairs import PairRecord  # the record type; defined with the pair builder

REQUIRED_COLUMNS = ("text_a", "text_b")
LABEL_COLUMN = "nsp_label"
ID_COLUMN = "id"
FIELDS = (*REQUIRED_COLUMNS, LABEL_COLUMN, ID_COLUMN)
RAW_LIMIT = 2000
# Far above any real sentence pair; also the csv module's field limit, so no longer field is ever built.
MAX_FIELD_CHARS = 1_000_000
MAX_ID_CHARS = 1_000
# A CSV/TSV row or JSONL line is read at most this far (line ends and JSON escapes count).
MAX_ROW_CHARS = 4 * MAX_FIELD_CHARS
LABEL_LIKE = frozenset({"label", "labels", "is_next", "next_sentence_label", "nsp", "is_random_next"})
_SKIP_PIECE = 1 << 16
# Unicode categories BERT's normaliser removes or splits on; Mn/Me: combining marks carry no text alone.
_INVISIBLE = frozenset({"Cc", "Cf", "Co", "Cs", "Zs", "Zl", "Zp", "Mn", "Me"})
_FORMATS = {"tsv": "tsv", "csv": "csv", "jsonl": "jsonl", "json": "jsonl"}
_DELIMITERS = {"tsv": "\t", "csv": ","}
_SPECIAL_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISSOCK, "a socket"))
# surrogateescape turns undecodable bytes into lone surrogates; any surrogate marks invalid UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row left out of the corpus, with the reason and its raw text for the run report."""

    line: int
    reason: str
    raw: str


@dataclass
class CorpusStats:
    """Row counts of one pass; `read == accepted + rejected` always holds."""

    read: int = 0
    accepted: int = 0
    rejected: int = 0


class CorpusError(ValueError):
    """The corpus (or one row of it, with on_error="fail") cannot be used; names file, line, reason."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path} line {line}"
        super().__init__(f"{where}: {reason}")


def parse_columns(text: str) -> dict[str, str]:
    """Parse the --columns syntax, e.g. 'text_a=sentence1,text_b=sentence2,nsp_label=label'."""
    mapping: dict[str, str] = {}
    for item in text.split(","):
        ours, sep, theirs = (part.strip() for part in item.partition("="))
        if not (sep and ours and theirs):
            raise ValueError(f"columns: expected NAME=COLUMN pairs separated by commas, got {item.strip()!r}")
        if ours in mapping:
            raise ValueError(f"columns: {ours} is given twice")
        mapping[ours] = theirs
    _column_names(mapping)
    return mapping


def _column_names(columns: Mapping[str, str] | None) -> dict[str, str]:
    """Each of our field names mapped to the file's column (itself unless `columns` renames it)."""
    given = dict(columns or {})
    unknown = [name for name in given if name not in FIELDS]
    if unknown:
        raise ValueError(f"columns: unknown name(s) {', '.join(unknown)}; use {', '.join(FIELDS)}")
    names = {field: given.get(field, field) for field in FIELDS}
    readers: dict[str, str] = {}
    for field, column in names.items():
        if not isinstance(column, str) or not column:
            raise ValueError(f"columns: {field} must name a column, got {column!r}")
        if column in readers:
            raise ValueError(f"columns: {readers[column]} and {field} both read column {column!r}")
        readers[column] = field
    return names


def _check_regular_file(path: Path) -> None:
    """Refuse, before opening (opening a FIFO blocks), anything a second read would not see again."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise CorpusError(path, f"cannot open corpus: {exc.strerror or exc}") from exc
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):  # a directory fails to open with its own message
        return
    kind = next((name for test, name in _SPECIAL_KINDS if test(mode)), "a device")
    raise CorpusError(
        path,
        f"not a regular file ({kind}); scoring reads the corpus more than once (hashing, resume), "
        "so save it to a file first",
    )


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


def _too_long(what: str, length: int) -> str:
    return f"{what} is {length:,} characters; the limit is {MAX_ROW_CHARS:,} ({MAX_FIELD_CHARS:,} per text)"


def _has_tokens(text: str) -> bool:
    """Whether any character survives BERT's normaliser (see _INVISIBLE); U+FFFD is removed too."""
    return any(char != "\ufffd" and unicodedata.category(char) not in _INVISIBLE for char in text)


def _shown(value: object) -> str:
    """A value's repr, cut short so a reason stays one short line whatever the row held."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _printable_raw(text: str) -> str:
    """Raw row text with undecodable bytes shown as U+FFFD, cut to RAW_LIMIT characters."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:RAW_LIMIT]


def _csv_reason(exc: csv.Error) -> str:
    """Turn the csv module's terse messages into reasons a corpus author can act on."""
    message = str(exc)
    if message == "unexpected end of data":
        return "broken quoting: quoted field is never closed (runs to end of file)"
    if message.startswith("field larger than field limit"):
        return f"a field is longer than the limit of {MAX_FIELD_CHARS:,} characters (or its quote is never closed)"
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
    """Raised through csv.reader by `_LineTap` once a row passes MAX_ROW_CHARS."""

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length


class _LineTap:
    """Line iterator fed to csv.reader: counts physical lines, bounds each row's length and keeps
    the start of the current row's raw text."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle
        self.line = 0
        self._raw: list[str] = []
        self._raw_len = 0
        self._row_len = 0

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        text, length = _read_line(self._handle, MAX_ROW_CHARS - self._row_len)
        if not text:
            raise StopIteration
        self.line += 1
        self._row_len += length
        if self._raw_len < RAW_LIMIT:
            self._raw.append(text[: RAW_LIMIT - self._raw_len])
            self._raw_len += len(self._raw[-1])
        if self._row_len > MAX_ROW_CHARS:
            raise _RowTooLong(self._row_len)
        return text

    def start_row(self) -> int:
        """Forget the previous row; return the line the next row starts on."""
        self._raw.clear()
        self._raw_len = self._row_len = 0
        return self.line + 1

    def raw(self) -> str:
        return "".join(self._raw).rstrip("\r\n")


# A parsed row: its start line, raw text, and either the fields (list or JSON object) or a rejection reason.
_Row = tuple[int, str, list[str] | dict[str, object] | str]


class CorpusReader:
    """Streams `PairRecord`s from a TSV/CSV/JSONL text-pair file, rejecting bad rows with reasons.

    Construction checks the file and reads the header (JSONL: up to the first labelled object), so
    a missing column fails at once and `has_labels` and `warnings` are known before iterating.
    Each iteration re-reads the file and resets `stats` and `rejected`. Blank lines are skipped and
    not counted. Ids are not checked for uniqueness (that would need memory per row).
    """

    has_labels: bool
    stats: CorpusStats
    rejected: list[RejectedRow]
    warnings: list[str]

    def __init__(
        self,
        path: str | Path,
        fmt: str | None = None,
        on_error: Literal["skip", "fail"] = "skip",
        columns: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        name = (fmt or self.path.suffix.lstrip(".")).lower()
        if name not in _FORMATS:
            raise CorpusError(self.path, f"unknown corpus format {name!r}; use one of tsv, csv, jsonl, json")
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.fmt = _FORMATS[name]
        self.on_error = on_error
        self._names = _column_names(columns)
        self._given = set(columns or ())
        self.stats = CorpusStats()
        self.rejected = []
        self.warnings = []
        self._columns: list[str] = []
        self._label_line: int | None = None  # JSONL: the first labelled object
        with self._open() as handle:
            if self.fmt == "jsonl":
                self._scan_json(handle)
                self.has_labels = self._label_line is not None
            else:
                self._columns = self._read_header(self._csv_rows(handle))
                self.has_labels = self._names[LABEL_COLUMN] in self._columns
                if not self.has_labels:
                    self._warn_label_like(self._columns)

    def __iter__(self) -> Iterator[PairRecord]:
        self.stats = CorpusStats()
        self.rejected = []
        with self._open() as handle:
            rows = self._json_rows(handle) if self.fmt == "jsonl" else self._csv_rows(handle)
            if self.fmt != "jsonl" and self._read_header(rows) != self._columns:
                raise CorpusError(self.path, "the header changed after the corpus was opened", 1)
            for line, raw, payload in rows:
                self.stats.read += 1
                result = self._to_record(line, payload)
                if isinstance(result, str):
                    self._reject(line, raw, result)
                    continue
                self.stats.accepted += 1
                yield result
        if self.stats.accepted == 0:
            detail = f"{self.stats.read} data rows read, {self.stats.rejected} rejected"
            if self.rejected:
                first = self.rejected[0]
                detail += f"; first rejection line {first.line}: {first.reason}"
            raise CorpusError(self.path, f"no valid text pairs ({detail})")

    def chunks(self, size: int) -> Iterator[list[PairRecord]]:
        """Consecutive lists of up to `size` records, so callers can batch without loading the file."""
        if size < 1:
            raise ValueError(f"chunk size must be at least 1, got {size}")
        batch: list[PairRecord] = []
        for record in self:
            batch.append(record)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _open(self) -> IO[str]:
        _check_regular_file(self.path)
        # utf-8-sig strips a BOM; newline="" keeps line ends so csv sees quoted newlines verbatim.
        try:
            return open(self.path, encoding="utf-8-sig", errors="surrogateescape", newline="")
        except OSError as exc:
            raise CorpusError(self.path, f"cannot open corpus: {exc.strerror or exc}") from exc

    def _reject(self, line: int, raw: str, reason: str) -> None:
        self.stats.rejected += 1
        self.rejected.append(RejectedRow(line=line, reason=reason, raw=_printable_raw(raw)))
        if self.on_error == "fail":
            raise CorpusError(self.path, reason, line)

    def _warn_label_like(self, columns: Iterable[str]) -> None:
        """In an unlabelled corpus, point out columns that look like labels under another name."""
        used = set(self._names.values())
        for column in columns:
            if column.lower() in LABEL_LIKE and column not in used:
                self.warnings.append(f"column {column!r} is ignored; pass --columns nsp_label={column} to use it")

    def _csv_rows(self, handle: IO[str]) -> Iterator[_Row]:
        """Non-blank CSV/TSV rows (header first); an unparsable row is rejected and parsing resumes."""
        csv.field_size_limit(MAX_FIELD_CHARS)
        tap = _LineTap(handle)
        reader = csv.reader(tap, delimiter=_DELIMITERS[self.fmt], strict=True)
        while True:
            line = tap.start_row()
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield line, tap.raw(), _csv_reason(exc)
                continue
            except _RowTooLong as exc:
                yield line, tap.raw(), _too_long("row", exc.length)
                continue
            if row and not (len(row) == 1 and not row[0].strip()):
                yield line, tap.raw(), row

    def _read_header(self, rows: Iterator[_Row]) -> list[str]:
        """Validate the header row: required (and explicitly mapped) columns present, none duplicated."""
        first = next(rows, None)
        if first is None:
            raise CorpusError(self.path, "file is empty: no header row and no valid text pairs")
        line, _, payload = first
        if isinstance(payload, str):
            raise CorpusError(self.path, f"unreadable header row: {payload}", line)
        columns = [name.strip() for name in payload]
        found = ", ".join(_shown(name) for name in columns[:20]) + (", ..." if len(columns) > 20 else "")
        needed = [self._names[field] for field in FIELDS if field in REQUIRED_COLUMNS or field in self._given]
        missing = [name for name in needed if name not in columns]
        if missing:
            raise CorpusError(self.path, f"header lacks required column(s) {', '.join(missing)}; found {found}", line)
        if len(set(columns)) != len(columns):
            raise CorpusError(self.path, f"header repeats a column name; found {found}", line)
        return columns

    def _json_rows(self, handle: IO[str]) -> Iterator[_Row]:
        """Non-blank JSONL lines parsed to objects; anything else becomes a rejection reason."""
        number = 0
        while True:
            text, length = _read_line(handle, MAX_ROW_CHARS)
            if not text:
                return
            number += 1
            if not text.strip():
                continue
            raw = text[: RAW_LIMIT + 2].rstrip("\r\n")
            if length > MAX_ROW_CHARS:
                yield number, raw, _too_long("line", length)
            elif _SURROGATE.search(text):
                yield number, raw, "invalid UTF-8"
            else:
                yield number, raw, _parse_json(text)

    def _scan_json(self, handle: IO[str]) -> None:
        """Find the first object with both texts and a non-null label; if none has one, warn about label-like keys."""
        text_keys = [self._names[field] for field in REQUIRED_COLUMNS]
        label_key = self._names[LABEL_COLUMN]
        keys: list[str] = []
        for line, _, payload in self._json_rows(handle):
            if isinstance(payload, dict) and all(key in payload for key in text_keys):
                if payload.get(label_key) is not None:
                    self._label_line = line
                    return
                keys = keys or list(payload)
        if LABEL_COLUMN in self._given:
            raise CorpusError(self.path, f"no object has a non-null {label_key!r} (given for {LABEL_COLUMN})")
        self._warn_label_like(keys)

    def _to_record(self, line: int, payload: list[str] | dict[str, object] | str) -> PairRecord | str:
        """Build a record from a parsed row, or return why the row is rejected."""
        if isinstance(payload, str):
            return payload
        names = self._names
        if isinstance(payload, list):
            if len(payload) != len(self._columns):
                return f"expected {len(self._columns)} columns, got {len(payload)}"
            if _SURROGATE.search("\n".join(payload)):
                return "invalid UTF-8"
            values: Mapping[str, object] = dict(zip(self._columns, payload, strict=True))
        else:
            missing = [names[key] for key in REQUIRED_COLUMNS if names[key] not in payload]
            label_key = names[LABEL_COLUMN]
            if self.has_labels and payload.get(label_key) is None:
                if not missing:
                    return f"no {label_key}, but the corpus has labels (first labelled row: line {self._label_line})"
                missing.append(label_key)
            if missing:
                return f"missing key(s) {', '.join(missing)}"
            values = payload
        texts: dict[str, str] = {}
        for key in REQUIRED_COLUMNS:
            name, text = names[key], values[names[key]]
            if not isinstance(text, str):
                return f"{name} must be a string, got {type(text).__name__}"
            if len(text) > MAX_FIELD_CHARS:
                return f"{name} is {len(text):,} characters; the limit is {MAX_FIELD_CHARS:,}"
            if not text.strip():
                return f"{name} is empty or whitespace-only"
            if _SURROGATE.search(text):
                return f"{name} contains an unpaired surrogate escape"
            if not _has_tokens(text):
                return f"{name} has no tokens after normalisation (only invisible or combining characters)"
            texts[key] = text
        label = None
        if self.has_labels:
            raw_label = values[names[LABEL_COLUMN]]
            if raw_label in ("0", "1") or (type(raw_label) is int and raw_label in (0, 1)):
                label = int(raw_label)
            else:
                return f"{names[LABEL_COLUMN]} must be 0 or 1, got {_shown(raw_label)}"
        raw_id = values.get(names[ID_COLUMN])
        if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, str | int)):
            return f"{names[ID_COLUMN]} must be a string or integer, got {type(raw_id).__name__}"
        record_id = str(raw_id) if raw_id not in (None, "") else str(line)
        if len(record_id) > MAX_ID_CHARS:
            return f"{names[ID_COLUMN]} is {len(record_id):,} characters; the limit is {MAX_ID_CHARS:,}"
        return PairRecord(
            index=self.stats.accepted,
            id=record_id,
            line=line,
            text_a=texts["text_a"],
            text_b=texts["text_b"],
            nsp_label=label,
        )
