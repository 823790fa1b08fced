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

Opening the file and splitting it into rows per format is in `corpus_formats`; this module gives
the rows their meaning. Every public name of both is importable from here.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from lucid_eval.data.pairs import PairRecord  # the record type; defined with the pair builder
from lucid_eval.harness.corpus_formats import (
    FORMATS,
    RAW_LIMIT,
    SURROGATE,
    CorpusError,
    Row,
    open_corpus,
    printable_raw,
    read_rows,
)

__all__ = [
    "FIELDS",
    "ID_COLUMN",
    "LABEL_COLUMN",
    "LABEL_LIKE",
    "MAX_FIELD_CHARS",
    "MAX_ID_CHARS",
    "MAX_ROW_CHARS",
    "RAW_LIMIT",
    "REQUIRED_COLUMNS",
    "CorpusError",
    "CorpusReader",
    "CorpusStats",
    "PairRecord",
    "RejectedRow",
    "parse_columns",
]

REQUIRED_COLUMNS = ("text_a", "text_b")
LABEL_COLUMN = "nsp_label"
ID_COLUMN = "id"
FIELDS = (*REQUIRED_COLUMNS, LABEL_COLUMN, ID_COLUMN)
# Far above any real sentence pair; also the csv module's field limit, so no longer field is ever built.
MAX_FIELD_CHARS = 1_000_000
MAX_ID_CHARS = 1_000
# A CSV/TSV row or JSONL line is read at most this far (line ends and JSON escapes count).
MAX_ROW_CHARS = 4 * MAX_FIELD_CHARS
# Rejections kept in memory for messages and tests; all of them go to `on_reject`.
KEPT_REJECTED = 1000
LABEL_LIKE = frozenset({"label", "labels", "is_next", "next_sentence_label", "nsp", "is_random_next"})
# Unicode categories BERT's normaliser removes or splits on; Mn/Me: combining marks carry no text alone.
_INVISIBLE = frozenset({"Cc", "Cf", "Co", "Cs", "Zs", "Zl", "Zp", "Mn", "Me"})


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


def _has_tokens(text: str) -> bool:
    """Whether any character survives BERT's normaliser (see _INVISIBLE); U+FFFD is removed too."""
    return any(char != "\ufffd" and unicodedata.category(char) not in _INVISIBLE for char in text)


def _shown(value: object) -> str:
    """A value's repr, cut short so a reason stays one short line whatever the row held."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class CorpusReader:
    """Streams `PairRecord`s from a TSV/CSV/JSONL text-pair file, rejecting bad rows with reasons.

    Construction checks the file and reads the header (JSONL: up to the first labelled object), so
    a missing column fails at once and `has_labels` and `warnings` are known before iterating.
    Each iteration re-reads the file and resets `stats` and `rejected`. Blank lines are skipped and
    not counted. Ids are not checked for uniqueness (that would need memory per row). `rejected`
    keeps the first KEPT_REJECTED rejections; `on_reject` receives every one (a run streams them
    to rejected.csv), so a corpus of bad rows costs no memory per row.
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
        on_reject: Callable[[RejectedRow], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.on_reject = on_reject
        name = (fmt or self.path.suffix.lstrip(".")).lower()
        if name not in FORMATS:
            raise CorpusError(self.path, f"unknown corpus format {name!r}; use one of tsv, csv, jsonl, json")
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.fmt = FORMATS[name]
        self.on_error = on_error
        self._names = _column_names(columns)
        self._given = set(columns or ())
        self.stats = CorpusStats()
        self.rejected = []
        self.warnings = []
        self._columns: list[str] = []
        self._label_line: int | None = None  # JSONL: the first labelled object
        with open_corpus(self.path) as handle:
            if self.fmt == "jsonl":
                self._scan_json(handle)
                self.has_labels = self._label_line is not None
            else:
                self._columns = self._read_header(self._rows(handle))
                self.has_labels = self._names[LABEL_COLUMN] in self._columns
                if not self.has_labels:
                    self._warn_label_like(self._columns)

    def __iter__(self) -> Iterator[PairRecord]:
        self.stats = CorpusStats()
        self.rejected = []
        with open_corpus(self.path) as handle:
            rows = self._rows(handle)
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

    def _rows(self, handle: IO[str]) -> Iterator[Row]:
        """The file's rows, bounded by this module's limits as they stand now."""
        return read_rows(handle, self.fmt, max_row_chars=MAX_ROW_CHARS, max_field_chars=MAX_FIELD_CHARS)

    def _reject(self, line: int, raw: str, reason: str) -> None:
        self.stats.rejected += 1
        row = RejectedRow(line=line, reason=reason, raw=printable_raw(raw))
        if len(self.rejected) < KEPT_REJECTED:
            self.rejected.append(row)
        if self.on_reject is not None:
            self.on_reject(row)
        if self.on_error == "fail":
            raise CorpusError(self.path, reason, line)

    def _warn_label_like(self, columns: Iterable[str]) -> None:
        """In an unlabelled corpus, point out columns that look like labels under another name."""
        used = set(self._names.values())
        for column in columns:
            if column.lower() in LABEL_LIKE and column not in used:
                self.warnings.append(f"column {column!r} is ignored; pass --columns nsp_label={column} to use it")

    def _read_header(self, rows: Iterator[Row]) -> list[str]:
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

    def _scan_json(self, handle: IO[str]) -> None:
        """Find the first object with both texts and a non-null label; if none has one, warn about label-like keys."""
        text_keys = [self._names[field] for field in REQUIRED_COLUMNS]
        label_key = self._names[LABEL_COLUMN]
        keys: list[str] = []
        for line, _, payload in self._rows(handle):
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
            if SURROGATE.search("\n".join(payload)):
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
            if SURROGATE.search(text):
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
