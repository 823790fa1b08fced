"""CorpusReader against hostile corpora: special files, huge rows, label mixes, renamed columns, invisible text."""

import json
import os
import threading
import tracemalloc
from pathlib import Path

import pytest

from lucid_eval.harness import corpus
from lucid_eval.harness.corpus import CorpusError, CorpusReader, PairRecord, parse_columns

HEADER = "id\ttext_a\ttext_b\tnsp_label\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def tsv(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    return write(tmp_path / "corpus.tsv", header + "".join(row + "\n" for row in rows))


def jsonl(tmp_path: Path, *objects: dict) -> Path:
    return write(tmp_path / "corpus.jsonl", "".join(json.dumps(o) + "\n" for o in objects))


def read_all(path: Path, **kwargs) -> tuple[list[PairRecord], CorpusReader]:
    reader = CorpusReader(path, **kwargs)
    records = list(reader)
    assert reader.stats.read == reader.stats.accepted + reader.stats.rejected
    assert all(len(row.raw) <= corpus.RAW_LIMIT and len(row.reason) < 200 for row in reader.rejected)
    return records, reader


def rejections(reader: CorpusReader) -> list[tuple[int, str]]:
    return [(row.line, row.reason) for row in reader.rejected]


# --- special files -------------------------------------------------------------------------------

REFUSAL = (
    "not a regular file ({}); scoring reads the corpus more than once (hashing, resume), so save it to a file first"
)


def construction_error(path: Path) -> BaseException | None:
    """Build a reader in a thread; if that blocks (opening a FIFO waits for a writer), unblock it and fail."""
    outcome: list[BaseException | None] = []

    def construct() -> None:
        try:
            CorpusReader(path, fmt="tsv")
            outcome.append(None)
        except Exception as exc:
            outcome.append(exc)

    worker = threading.Thread(target=construct, daemon=True)
    worker.start()
    worker.join(timeout=1.5)
    if worker.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # a writer that closes at once: reader sees EOF
        worker.join(timeout=1.5)
        pytest.fail(f"CorpusReader blocked on {path}")
    return outcome[0]


def test_fifo_refused_at_construction_without_blocking(tmp_path):
    fifo = tmp_path / "corpus.tsv"
    os.mkfifo(fifo)
    error = construction_error(fifo)
    assert isinstance(error, CorpusError)
    assert str(error) == f"{fifo}: " + REFUSAL.format("a FIFO")


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_character_device_refused(tmp_path):
    error = construction_error(Path("/dev/null"))
    assert isinstance(error, CorpusError)
    assert str(error) == "/dev/null: " + REFUSAL.format("a character device")


def test_symlink_to_regular_file_and_directory(tmp_path):
    target = tsv(tmp_path, "1\ta\tb\t0")
    (tmp_path / "link.tsv").symlink_to(target)
    assert [r.id for r in CorpusReader(tmp_path / "link.tsv")] == ["1"]
    with pytest.raises(CorpusError, match="cannot open corpus"):
        CorpusReader(tmp_path, fmt="tsv")


# --- bounded memory per row ----------------------------------------------------------------------


def test_huge_id_rejected_among_many_rows(tmp_path):
    rows = [f"{i}\tsentence a {i}\tsentence b {i}\t{i % 2}" for i in range(5000)]
    rows[2500] = "x" * 100_000 + "\ta\tb\t0"
    records, reader = read_all(tsv(tmp_path, *rows))
    assert len(records) == 4999 and "2500" not in {r.id for r in records}
    assert rejections(reader) == [(2502, "id is 100,000 characters; the limit is 1,000")]
    assert reader.rejected[0].raw == "x" * corpus.RAW_LIMIT


def test_id_at_the_limit_accepted_and_huge_json_integer_rejected(tmp_path):
    good = {"text_a": "a", "text_b": "b"}
    path = jsonl(tmp_path, {**good, "id": "i" * 1000}, {**good, "id": "1" * 2000})
    path.write_text(path.read_text() + '{"text_a": "a", "text_b": "b", "id": 1' + "0" * 5000 + "}\n")
    records, reader = read_all(path)
    assert [len(r.id) for r in records] == [1000]
    assert rejections(reader) == [
        (2, "id is 2,000 characters; the limit is 1,000"),
        (3, "invalid JSON: Exceeds the limit (4300 digits) for integer string conversion"),
    ]


def huge_corpus(tmp_path: Path, fmt: str, size: int) -> Path:
    """Three pairs; the middle one's text_a has `size` characters."""
    texts = [("a", "b", 0), ("x" * size, "b", 1), ("c", "d", 0)]
    if fmt == "tsv":
        return tsv(tmp_path, *(f"{i}\t{a}\t{b}\t{label}" for i, (a, b, label) in enumerate(texts)))
    return jsonl(tmp_path, *({"id": i, "text_a": a, "text_b": b, "nsp_label": n} for i, (a, b, n) in enumerate(texts)))


@pytest.mark.parametrize(
    ("fmt", "size", "reason"),
    [
        ("tsv", 5_000_000, "row is 5,000,007 characters; the limit is 4,000,000 (1,000,000 per text)"),
        ("jsonl", 5_000_000, "line is 5,000,055 characters; the limit is 4,000,000 (1,000,000 per text)"),
        ("tsv", 1_500_000, "a field is longer than the limit of 1,000,000 characters (or its quote is never closed)"),
        ("jsonl", 1_500_000, "text_a is 1,500,000 characters; the limit is 1,000,000"),
    ],
)
def test_huge_field_rejected_and_reading_goes_on(tmp_path, fmt, size, reason):
    records, reader = read_all(huge_corpus(tmp_path, fmt, size))
    assert [r.id for r in records] == ["0", "2"]
    line = 3 if fmt == "tsv" else 2
    assert rejections(reader) == [(line, reason)]
    with pytest.raises(CorpusError) as info:
        list(CorpusReader(huge_corpus(tmp_path, fmt, size), on_error="fail"))
    assert (info.value.path, info.value.line, info.value.reason) == (str(tmp_path / f"corpus.{fmt}"), line, reason)


@pytest.mark.parametrize("fmt", ["tsv", "jsonl"])
def test_huge_field_read_in_bounded_memory(tmp_path, fmt):
    path = huge_corpus(tmp_path, fmt, 5_000_000)
    tracemalloc.start()
    try:
        records, _ = read_all(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(records) == 2
    # At most one MAX_ROW_CHARS piece (and its join) is held; reading the row whole peaked at ~35 MB.
    assert peak < 16_000_000


def test_row_limit_counts_every_line_of_a_quoted_field(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "MAX_ROW_CHARS", 1000)
    many_lines = '"' + "twenty characters..\n" * 100 + '"'
    records, reader = read_all(tsv(tmp_path, "1\ta\tb\t0", f"2\t{many_lines}\tb\t1", "3\tc\td\t1"))
    assert rejections(reader)[0] == (3, "row is 1,003 characters; the limit is 1,000 (1,000,000 per text)")
    assert [r.id for r in records] == ["1"]  # the rest of the field is read as bad rows, its end quote opens another


def test_long_bad_label_shown_short(tmp_path):
    records, reader = read_all(tsv(tmp_path, "1\ta\tb\t" + "7" * 10_000, "2\ta\tb\t1"))
    assert rejections(reader) == [(2, "nsp_label must be 0 or 1, got '" + "7" * 36 + "...")]


# --- labels --------------------------------------------------------------------------------------

PAIR = {"text_a": "a", "text_b": "b"}


def test_jsonl_first_row_unlabelled_later_rows_labelled(tmp_path):
    records, reader = read_all(jsonl(tmp_path, PAIR, {**PAIR, "nsp_label": 1}, {**PAIR, "nsp_label": 0}))
    assert reader.has_labels
    assert [(r.line, r.nsp_label) for r in records] == [(2, 1), (3, 0)]
    assert rejections(reader) == [(1, "no nsp_label, but the corpus has labels (first labelled row: line 2)")]


def test_jsonl_first_row_labelled_later_row_unlabelled(tmp_path):
    records, reader = read_all(jsonl(tmp_path, {**PAIR, "nsp_label": 1}, PAIR, {**PAIR, "nsp_label": None}))
    assert reader.has_labels and [r.line for r in records] == [1]
    reason = "no nsp_label, but the corpus has labels (first labelled row: line 1)"
    assert rejections(reader) == [(2, reason), (3, reason)]
    with pytest.raises(CorpusError, match="line 2: no nsp_label"):
        list(CorpusReader(tmp_path / "corpus.jsonl", on_error="fail"))


def test_jsonl_without_labels(tmp_path):
    records, reader = read_all(jsonl(tmp_path, PAIR, PAIR))
    assert not reader.has_labels and reader.warnings == []
    assert [r.nsp_label for r in records] == [None, None] and reader.rejected == []


# --- columns -------------------------------------------------------------------------------------

GLUE = {"text_a": "sentence1", "text_b": "sentence2", "nsp_label": "label", "id": "idx"}


def test_columns_rename_tsv_fields(tmp_path):
    path = tsv(tmp_path, "7\tHi.\tThere.\t1", "8\tA.\tB.\tx", header="idx\tsentence1\tsentence2\tlabel\n")
    records, reader = read_all(path, columns=GLUE)
    assert reader.has_labels and reader.warnings == []
    assert records == [PairRecord(index=0, id="7", line=2, text_a="Hi.", text_b="There.", nsp_label=1)]
    assert rejections(reader) == [(3, "label must be 0 or 1, got 'x'")]


def test_columns_rename_jsonl_keys(tmp_path):
    path = jsonl(tmp_path, {"sentence1": "a", "sentence2": "b", "label": 0, "idx": 3}, {"sentence1": "c", "label": 1})
    records, reader = read_all(path, columns=GLUE)
    assert [(r.id, r.text_a, r.nsp_label) for r in records] == [("3", "a", 0)]
    assert rejections(reader) == [(2, "missing key(s) sentence2")]


def test_mapped_column_missing_from_header(tmp_path):
    path = tsv(tmp_path, header="id\tsentence1\tsentence2\n")
    with pytest.raises(CorpusError) as info:
        CorpusReader(path, columns=GLUE)
    message = "line 1: header lacks required column(s) label, idx; found 'id', 'sentence1', 'sentence2'"
    assert str(info.value) == f"{path} {message}"


def test_mapped_label_absent_from_every_jsonl_object(tmp_path):
    with pytest.raises(CorpusError, match="no object has a non-null 'label' \\(given for nsp_label\\)"):
        CorpusReader(jsonl(tmp_path, PAIR, PAIR), columns={"nsp_label": "label"})


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"text": "s1"}, "columns: unknown name(s) text; use text_a, text_b, nsp_label, id"),
        ({"text_a": ""}, "columns: text_a must name a column, got ''"),
        ({"text_a": "text_b"}, "columns: text_a and text_b both read column 'text_b'"),
    ],
)
def test_bad_columns_argument(tmp_path, columns, message):
    with pytest.raises(ValueError) as info:
        CorpusReader(tsv(tmp_path), columns=columns)
    assert str(info.value) == message


def test_label_like_column_warns(tmp_path):
    header = "id\ttext_a\ttext_b\tLabel\tis_next\n"
    reader = CorpusReader(tsv(tmp_path, "1\ta\tb\t1\t0", header=header))
    assert not reader.has_labels
    assert reader.warnings == [
        "column 'Label' is ignored; pass --columns nsp_label=Label to use it",
        "column 'is_next' is ignored; pass --columns nsp_label=is_next to use it",
    ]
    reader = CorpusReader(jsonl(tmp_path, {**PAIR, "next_sentence_label": 1}))
    assert reader.warnings == [
        "column 'next_sentence_label' is ignored; pass --columns nsp_label=next_sentence_label to use it"
    ]
    assert CorpusReader(tsv(tmp_path, header="text_a\ttext_b\tnsp_label\tlabel\n")).warnings == []


def test_parse_columns():
    assert parse_columns(" text_a = sentence1 ,text_b=sentence2,nsp_label=label,id=idx") == GLUE
    assert parse_columns("nsp_label=a=b") == {"nsp_label": "a=b"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "columns: expected NAME=COLUMN pairs separated by commas, got ''"),
        ("text_a=s1,", "columns: expected NAME=COLUMN pairs separated by commas, got ''"),
        ("text_a", "columns: expected NAME=COLUMN pairs separated by commas, got 'text_a'"),
        ("text_a=", "columns: expected NAME=COLUMN pairs separated by commas, got 'text_a='"),
        ("text_a=s1,text_a=s2", "columns: text_a is given twice"),
        ("label=nsp", "columns: unknown name(s) label; use text_a, text_b, nsp_label, id"),
        ("text_a=s,text_b=s", "columns: text_a and text_b both read column 's'"),
    ],
)
def test_parse_columns_rejects(text, message):
    with pytest.raises(ValueError) as info:
        parse_columns(text)
    assert str(info.value) == message and "\n" not in message


# --- text that normalises to nothing -------------------------------------------------------------

INVISIBLE = {
    "zero-width space": "\u200b\u200b",
    "combining marks": "\u0301\u0308",
    "enclosing mark": "\u20dd",
    "byte order mark": "\ufeff",
    "control characters": "\x00\x01\x7f\x1b",
    "line and paragraph separators": "\u2028\u2029 \u200b",
    "soft hyphen and tag": "\u00ad\U000e0001",
    "private use": "\ue000",
    "replacement character": "\ufffd",
}


@pytest.mark.parametrize("text", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_text_without_tokens_rejected(tmp_path, text):
    reason = "text_b has no tokens after normalisation (only invisible or combining characters)"
    records, reader = read_all(tsv(tmp_path, f"1\ta\t{text}\t0", "2\ta\tb\t1"))
    assert [r.id for r in records] == ["2"] and rejections(reader) == [(2, reason)]
    records, reader = read_all(jsonl(tmp_path, {"text_a": "a", "text_b": text}, PAIR))
    assert [r.line for r in records] == [2] and rejections(reader) == [(1, reason)]


@pytest.mark.parametrize("text", ["e\u0301", "\u200bword", "\u0903", "\ufffdx"])
def test_text_with_a_visible_character_accepted(tmp_path, text):
    records, _ = read_all(jsonl(tmp_path, {"text_a": text, "text_b": text}))
    assert records[0].text_a == text


def test_rejections_are_streamed_not_kept(tmp_path, monkeypatch) -> None:
    """A corpus of bad rows costs no memory per row: the reader keeps the first few, on_reject gets all."""
    monkeypatch.setattr(corpus, "KEPT_REJECTED", 5)
    path = tmp_path / "bad.tsv"
    path.write_text("id\ttext_a\ttext_b\n" + "".join(f"r{i}\tonly two\n" for i in range(50)) + "ok\ta b\tc d\n")
    seen: list = []
    reader = corpus.CorpusReader(path, on_reject=seen.append)
    assert len(list(reader)) == 1 and reader.stats.rejected == 50 and len(seen) == 50
    assert reader.rejected == seen[:5] and [r.line for r in seen] == list(range(2, 52))
