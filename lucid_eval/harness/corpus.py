"""Streaming reader of text-pair corpora (TSV, CSV, JSONL) that survives dirty real-world files.

Every data row is either accepted as a `PairRecord` or rejected as a `RejectedRow` with a short
reason, so a run can report exactly which lines of a user's corpus were left out and why.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

REQUIRED_COLUMNS = ("text_a", "text_b")
LABEL_COLUMN = "nsp_label"
ID_COLUMN = "id"
RAW_LIMIT = 2000
# Far above any real sentence pair, yet bounds memory when an unterminated quote swallows the file.
FIELD_SIZE_LIMIT = 1 << 26
_FORMATS = {"tsv": "tsv", "csv": "csv", "jsonl": "jsonl", "json": "jsonl"}
_DELIMITERS = {"tsv": "\t", "csv": ","}
# surrogateescape turns undecodable bytes into lone surrogates; any surrogate marks invalid UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class PairRecord:
    """One accepted text pair; `index` counts accepted records, `line` is where the row starts."""

    index: int
    id: str
    line: int
    text_a: str
    text_b: str
    nsp_label: int | None


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


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in blocks, so run provenance can pin the exact corpus."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _printable_raw(text: str) -> str:
    """Raw row text with undecodable bytes shown as U+FFFD, cut to RAW_LIMIT characters."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:RAW_LIMIT]


def _csv_reason(exc: csv.Error) -> str:
    """Turn the csv module's terse messages into reasons a corpus author can act on."""
    message = str(exc)
    if message == "unexpected end of data":
        return "broken quoting: quoted field is never closed (runs to end of file)"
    if message.startswith("field larger than field limit"):
        return f"broken quoting: field longer than {FIELD_SIZE_LIMIT} characters (unclosed quote?)"
    return "broken quoting: " + message.replace("\t", "tab")


class _LineTap:
    """Line iterator fed to csv.reader that counts physical lines and keeps the current row's raw text."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle
        self.line = 0
        self._raw: list[str] = []
        self._raw_len = 0

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        text = next(self._handle)
        self.line += 1
        if self._raw_len < RAW_LIMIT:
            self._raw.append(text[: RAW_LIMIT - self._raw_len])
            self._raw_len += len(self._raw[-1])
        return text

    def start_row(self) -> int:
        """Forget the previous row's raw text; return the line the next row starts on."""
        self._raw.clear()
        self._raw_len = 0
        return self.line + 1

    def raw(self) -> str:
        return "".join(self._raw).rstrip("\r\n")


# A parsed row: its start line, raw text, and either the fields (list or JSON object) or a rejection reason.
_Row = tuple[int, str, list[str] | dict[str, object] | str]


class CorpusReader:
    """Streams `PairRecord`s from a TSV/CSV/JSONL text-pair file, rejecting bad rows with reasons.

    The header (or, for JSONL, the first object with text_a and text_b) is read on construction,
    so a missing required column fails at once and `has_labels` is known before iterating.
    Each iteration re-reads the file and resets `stats` and `rejected`. Labels are all-or-nothing:
    when the corpus has no labels, a stray `nsp_label` in a JSONL row is ignored. Blank lines are
    skipped and not counted. Ids are not checked for uniqueness (that would need memory per row).
    """

    has_labels: bool
    stats: CorpusStats
    rejected: list[RejectedRow]

    def __init__(
        self,
        path: str | Path,
        fmt: str | None = None,
        on_error: Literal["skip", "fail"] = "skip",
    ) -> None:
        self.path = Path(path)
        name = (fmt or self.path.suffix.lstrip(".")).lower()
        if name not in _FORMATS:
            raise CorpusError(self.path, f"unknown corpus format {name!r}; use one of tsv, csv, jsonl, json")
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.fmt = _FORMATS[name]
        self.on_error = on_error
        self.stats = CorpusStats()
        self.rejected = []
        self._columns: list[str] = []
        with self._open() as handle:
            if self.fmt == "jsonl":
                self.has_labels = self._peek_json_labels(handle)
            else:
                self._columns = self._read_header(self._csv_rows(handle))
                self.has_labels = LABEL_COLUMN in self._columns

    def __iter__(self) -> Iterator[PairRecord]:
        self.stats = CorpusStats()
        self.rejected = []
        with self._open() as handle:
            if self.fmt == "jsonl":
                rows = self._json_rows(handle)
            else:
                rows = self._csv_rows(handle)
                next(rows)  # the header, validated in __init__
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

    def _csv_rows(self, handle: IO[str]) -> Iterator[_Row]:
        """Non-blank CSV/TSV rows (header first); a csv.Error rejects that row and parsing resumes."""
        csv.field_size_limit(FIELD_SIZE_LIMIT)
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
            if row and not (len(row) == 1 and not row[0].strip()):
                yield line, tap.raw(), row

    def _read_header(self, rows: Iterator[_Row]) -> list[str]:
        """Validate the header row: required columns present, none duplicated."""
        first = next(rows, None)
        if first is None:
            raise CorpusError(self.path, "file is empty: no header row and no valid text pairs")
        line, _, payload = first
        if isinstance(payload, str):
            raise CorpusError(self.path, f"unreadable header row: {payload}", line)
        columns = [name.strip() for name in payload]
        found = ", ".join(repr(name) for name in columns)
        missing = [name for name in REQUIRED_COLUMNS if name not in columns]
        if missing:
            raise CorpusError(
                self.path, f"header lacks required column(s) {', '.join(missing)}; found {found}", line
            )
        if len(set(columns)) != len(columns):
            raise CorpusError(self.path, f"header repeats a column name; found {found}", line)
        return columns

    def _json_rows(self, handle: IO[str]) -> Iterator[_Row]:
        """Non-blank JSONL lines parsed to objects; anything else becomes a rejection reason."""
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            raw = text[: RAW_LIMIT + 2].rstrip("\r\n")
            if _SURROGATE.search(text):
                yield number, raw, "invalid UTF-8"
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, raw, f"invalid JSON: {exc.msg} (column {exc.colno})"
                continue
            except RecursionError:
                yield number, raw, "invalid JSON: nested too deeply"
                continue
            if not isinstance(value, dict):
                yield number, raw, f"line is not a JSON object (got {type(value).__name__})"
                continue
            yield number, raw, value

    def _peek_json_labels(self, handle: IO[str]) -> bool:
        """True when the first object carrying text_a and text_b also carries a non-null nsp_label."""
        for _, _, payload in self._json_rows(handle):
            if isinstance(payload, dict) and all(key in payload for key in REQUIRED_COLUMNS):
                return payload.get(LABEL_COLUMN) is not None
        return False

    def _to_record(self, line: int, payload: list[str] | dict[str, object] | str) -> PairRecord | str:
        """Build a record from a parsed row, or return why the row is rejected."""
        if isinstance(payload, str):
            return payload
        if isinstance(payload, list):
            if len(payload) != len(self._columns):
                return f"expected {len(self._columns)} columns, got {len(payload)}"
            if _SURROGATE.search("\n".join(payload)):
                return "invalid UTF-8"
            values: Mapping[str, object] = dict(zip(self._columns, payload, strict=True))
        else:
            missing = [key for key in REQUIRED_COLUMNS if key not in payload]
            if self.has_labels and payload.get(LABEL_COLUMN) is None:
                missing.append(LABEL_COLUMN)
            if missing:
                return f"missing key(s) {', '.join(missing)}"
            values = payload
        texts: dict[str, str] = {}
        for key in REQUIRED_COLUMNS:
            text = values[key]
            if not isinstance(text, str):
                return f"{key} must be a string, got {type(text).__name__}"
            if not text.strip():
                return f"{key} is empty or whitespace-only"
            if _SURROGATE.search(text):
                return f"{key} contains an unpaired surrogate escape"
            texts[key] = text
        label = None
        if self.has_labels:
            raw_label = values[LABEL_COLUMN]
            if raw_label in ("0", "1") or (type(raw_label) is int and raw_label in (0, 1)):
                label = int(raw_label)
            else:
                return f"nsp_label must be 0 or 1, got {raw_label!r}"
        raw_id = values.get(ID_COLUMN)
        if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, str | int)):
            return f"id must be a string or integer, got {type(raw_id).__name__}"
        record_id = str(raw_id) if raw_id not in (None, "") else str(line)
        return PairRecord(
            index=self.stats.accepted,
            id=record_id,
            line=line,
            text_a=texts["text_a"],
            text_b=texts["text_b"],
            nsp_label=label,
        )
