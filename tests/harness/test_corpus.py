"""CorpusReader against the dirty corpora real users bring: every rejection asserts its reason."""

import csv
import hashlib
import io
import json
import sys
import tempfile
import tracemalloc
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lucid_eval.files import sha256_file
from lucid_eval.harness import corpus
from lucid_eval.harness.corpus import CorpusError, CorpusReader, PairRecord, RejectedRow

HEADER = "id\ttext_a\ttext_b\tnsp_label\n"


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def tsv(tmp_path: Path, *rows: str, header: str = HEADER, name: str = "corpus.tsv") -> Path:
    return write(tmp_path / name, header + "".join(row + "\n" for row in rows))


def jsonl(tmp_path: Path, *lines: str | dict) -> Path:
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return write(tmp_path / "corpus.jsonl", text)


def read_all(path: Path, **kwargs) -> tuple[list[PairRecord], CorpusReader]:
    reader = CorpusReader(path, **kwargs)
    return list(reader), reader


def only_rejection(path: Path, **kwargs) -> RejectedRow:
    """Read a corpus holding one good row and exactly one bad row; return the bad row."""
    records, reader = read_all(path, **kwargs)
    assert len(records) == 1
    assert reader.stats.read == reader.stats.accepted + reader.stats.rejected
    assert len(reader.rejected) == reader.stats.rejected == 1
    return reader.rejected[0]


def test_tsv_with_labels_ids_and_multiline_field(tmp_path):
    records, reader = read_all(tsv(tmp_path, "a1\tHello.\tWorld.\t0", '\t"Two\nlines."\tBar.\t1', "a3\tx\ty\t0"))
    assert reader.has_labels
    assert records == [
        PairRecord(index=0, id="a1", line=2, text_a="Hello.", text_b="World.", nsp_label=0),
        PairRecord(index=1, id="3", line=3, text_a="Two\nlines.", text_b="Bar.", nsp_label=1),  # empty id
        PairRecord(index=2, id="a3", line=5, text_a="x", text_b="y", nsp_label=0),
    ]
    assert reader.stats == corpus.CorpusStats(read=3, accepted=3, rejected=0)


def test_csv_without_label_or_id_columns(tmp_path):
    path = write(tmp_path / "pairs.csv", 'text_a,text_b,extra\n"One, two",three,x\nfour,five,y\n')
    records, reader = read_all(path)
    assert not reader.has_labels
    assert [(r.id, r.text_a, r.text_b, r.nsp_label) for r in records] == [
        ("2", "One, two", "three", None),
        ("3", "four", "five", None),
    ]


def test_jsonl_blank_lines_skipped_uncounted_and_lines_physical(tmp_path):
    path = jsonl(
        tmp_path,
        {"text_a": "a", "text_b": "b", "nsp_label": 1, "id": 7},
        "",
        "   ",
        {"text_a": "c", "text_b": "d", "nsp_label": "0"},
    )
    records, reader = read_all(path)
    assert [(r.id, r.line, r.nsp_label) for r in records] == [("7", 1, 1), ("4", 4, 0)]
    assert reader.stats.read == 2 and reader.stats.rejected == 0


def test_format_from_extension_or_argument(tmp_path):
    path = write(tmp_path / "c.json", json.dumps({"text_a": "a", "text_b": "b"}) + "\n")
    assert [r.text_a for r in CorpusReader(path)] == ["a"]  # .json means JSON lines
    path = write(tmp_path / "corpus.txt", "text_a,text_b\nx,y\n")
    assert [r.text_b for r in CorpusReader(path, fmt="csv")] == ["y"]
    with pytest.raises(CorpusError, match="unknown corpus format 'txt'"):
        CorpusReader(path)


def test_bom_stripped_and_crlf_line_ends(tmp_path):
    path = write(tmp_path / "c.tsv", "\ufeffid\ttext_a\ttext_b\tnsp_label\r\nx\tA.\tB.\t1\r\ny\tC.\tD.\t0\r\n")
    records, reader = read_all(path)
    assert reader.has_labels
    assert [(r.id, r.line, r.text_a, r.text_b, r.nsp_label) for r in records] == [
        ("x", 2, "A.", "B.", 1),
        ("y", 3, "C.", "D.", 0),
    ]


def test_text_of_the_field_limit_accepted(tmp_path):
    long_text = "word " * (corpus.MAX_FIELD_CHARS // 5)
    records, _ = read_all(tsv(tmp_path, f"1\t{long_text}\tshort\t0"))
    assert records[0].text_a == long_text


VERBATIM = [
    "<script>alert('x')</script> <b>bold</b> &amp;",
    "emoji 👩‍👩‍👧 🇯🇵 and CJK 日本語のテキスト",
    "RTL עברית العربية mixed",
    "combining e\u0301 a\u0308 Z\u0351\u0352",
]


@pytest.mark.parametrize("text", VERBATIM)
def test_markup_and_unicode_accepted_verbatim(tmp_path, text):
    tsv_records, _ = read_all(tsv(tmp_path, f"1\t{text}\t{text}\t1"))
    json_records, _ = read_all(jsonl(tmp_path, {"text_a": text, "text_b": text, "nsp_label": 0}))
    assert tsv_records[0].text_a == tsv_records[0].text_b == json_records[0].text_a == text


def test_wrong_column_count_with_raw_truncated(tmp_path):
    bad = only_rejection(tsv(tmp_path, "1\ta\tb", "2\ta\tb\t0"))
    assert (bad.line, bad.reason, bad.raw) == (2, "expected 4 columns, got 3", "1\ta\tb")
    bad = only_rejection(tsv(tmp_path, "1\t" + "x" * 5000 + "\tb", "2\ta\tb\t1"))
    assert (bad.reason, bad.raw) == ("expected 4 columns, got 3", "1\t" + "x" * 1998)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("1\t\tb\t0", "text_a is empty or whitespace-only"),
        ("1\ta\t \t0", "text_b is empty or whitespace-only"),
        ("1\t\u3000\u00a0\tb\t0", "text_a is empty or whitespace-only"),
    ],
)
def test_empty_or_whitespace_text(tmp_path, row, reason):
    assert only_rejection(tsv(tmp_path, row, "2\ta\tb\t1")).reason == reason


@pytest.mark.parametrize(
    ("label", "shown"),
    [("2", "'2'"), ("x", "'x'"), ("", "''"), ("0.0", "'0.0'"), (" 1", "' 1'"), ("true", "'true'")]
    + [(2, "2"), (0.0, "0.0"), (True, "True"), ([1], "[1]")],
)
def test_bad_label(tmp_path, label, shown):
    reason = f"nsp_label must be 0 or 1, got {shown}"
    if isinstance(label, str):
        assert only_rejection(tsv(tmp_path, f"1\ta\tb\t{label}", "2\ta\tb\t1")).reason == reason
    good, bad = ({"text_a": "a", "text_b": "b", "nsp_label": value} for value in (1, label))
    assert only_rejection(jsonl(tmp_path, good, bad)).reason == reason


def test_invalid_utf8_rejected_and_raw_shows_replacement(tmp_path):
    path = write(tmp_path / "c.tsv", HEADER.encode() + b"1\tbad \xff\xfe bytes\tb\t0\n2\ta\tb\t1\n")
    bad = only_rejection(path)
    assert (bad.line, bad.reason, bad.raw) == (2, "invalid UTF-8", "1\tbad \ufffd\ufffd bytes\tb\t0")
    good = json.dumps({"text_a": "a", "text_b": "b"}).encode()
    path = write(tmp_path / "c.jsonl", good + b'\n{"text_a": "\xc3(", "text_b": "b"}\n')
    assert only_rejection(path).reason == "invalid UTF-8"


@pytest.mark.parametrize(
    ("row", "line", "reason"),
    [
        ('2\t"quoted" tail\tb\t1', 3, "broken quoting: 'tab' expected after '\"'"),
        ('2\t"never closed\tb\t1', 3, "broken quoting: quoted field is never closed (runs to end of file)"),
    ],
)
def test_broken_quoting(tmp_path, row, line, reason):
    records, reader = read_all(tsv(tmp_path, "1\ta\tb\t0", row, "3\tc\td\t1"))
    assert [(r.line, r.reason) for r in reader.rejected] == [(line, reason)]
    # After a stray quote the reader resumes on the next line; an unclosed one swallows the rest.
    assert [r.id for r in records] == (["1", "3"] if "tail" in row else ["1"])


def test_field_size_limit_bounds_an_unclosed_quote(tmp_path, monkeypatch):
    original = csv.field_size_limit()
    monkeypatch.setattr(corpus, "MAX_FIELD_CHARS", 50)
    rows = ["1\ta\tb\t0", '2\t"unclosed' + " x" * 40, "3\tc\td\t1"]
    try:
        records, reader = read_all(tsv(tmp_path, *rows))
    finally:
        csv.field_size_limit(original)
    assert [r.id for r in records] == ["1", "3"]
    reason = "a field is longer than the limit of 50 characters (or its quote is never closed)"
    assert reader.rejected[0].reason == reason


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 2]", "line is not a JSON object (got list)"),
        ('"text"', "line is not a JSON object (got str)"),
        ("{bad json", "invalid JSON: Expecting property name enclosed in double quotes (column 2)"),
        ('{"text_a": "a"}', "missing key(s) text_b, nsp_label"),
        (
            '{"text_a": "a", "text_b": "b", "nsp_label": null}',
            "no nsp_label, but the corpus has labels (first labelled row: line 1)",
        ),
        ('{"text_a": 5, "text_b": "b", "nsp_label": 0}', "text_a must be a string, got int"),
        (
            '{"text_a": "a", "text_b": "b", "nsp_label": 0, "id": [1]}',
            "id must be a string or integer, got list",
        ),
        (
            '{"text_a": "\\ud800", "text_b": "b", "nsp_label": 0}',
            "text_a contains an unpaired surrogate escape",
        ),
        ("[" * 100_000 + "]" * 100_000, "invalid JSON: nested too deeply"),
    ],
)
def test_bad_jsonl_lines(tmp_path, line, reason):
    bad = only_rejection(jsonl(tmp_path, {"text_a": "a", "text_b": "b", "nsp_label": 0}, line))
    assert (bad.line, bad.reason) == (2, reason)


def test_jsonl_labelled_when_any_row_is(tmp_path):
    path = jsonl(tmp_path, "not json", {"text_a": "a", "text_b": "b"}, {"text_a": "c", "text_b": "d", "nsp_label": 1})
    records, reader = read_all(path)
    assert reader.has_labels
    assert [(r.line, r.nsp_label) for r in records] == [(3, 1)]
    assert [r.reason for r in reader.rejected] == [
        "invalid JSON: Expecting value (column 1)",
        "no nsp_label, but the corpus has labels (first labelled row: line 3)",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "id\tsentence_a\ttext_b\tlabel\n1\ta\t0\n",
            " line 1: header lacks required column(s) text_a; found 'id', 'sentence_a', 'text_b', 'label'",
        ),
        (
            "text_a\ttext_b\ttext_a\n",
            " line 1: header repeats a column name; found 'text_a', 'text_b', 'text_a'",
        ),
        ('"text_a"x\ttext_b\n', " line 1: unreadable header row: broken quoting: 'tab' expected after '\"'"),
        ("", ": file is empty: no header row and no valid text pairs"),
    ],
)
def test_unusable_header_fails_at_construction(tmp_path, content, message):
    path = write(tmp_path / "c.tsv", content)
    with pytest.raises(CorpusError) as info:
        CorpusReader(path)
    assert str(info.value) == f"{path}{message}"


@pytest.mark.parametrize(
    ("name", "content", "detail"),
    [
        ("c.tsv", HEADER, "0 data rows read, 0 rejected)"),
        ("c.jsonl", "\n \n", "0 data rows read, 0 rejected)"),
        (
            "c.tsv",
            HEADER + "1\ta\tb\t9\n2\t\tb\t0\n",
            "2 data rows read, 2 rejected; first rejection line 2: ",
        ),
    ],
)
def test_no_valid_pairs_raised_when_iteration_ends(tmp_path, name, content, detail):
    reader = CorpusReader(write(tmp_path / name, content))
    with pytest.raises(CorpusError) as info:
        list(reader)
    assert f"no valid text pairs ({detail}" in str(info.value)
    assert reader.stats.read == reader.stats.accepted + reader.stats.rejected


def test_fail_mode_raises_at_first_bad_row(tmp_path):
    path = tsv(tmp_path, "1\ta\tb\t0", "2\ta\tb\tx", "3\ta\tb\t7")
    reader = CorpusReader(path, on_error="fail")
    seen = []
    with pytest.raises(CorpusError) as info:
        seen.extend(reader)
    assert str(info.value) == f"{path} line 3: nsp_label must be 0 or 1, got 'x'"
    assert (info.value.line, info.value.reason) == (3, "nsp_label must be 0 or 1, got 'x'")
    assert [r.id for r in seen] == ["1"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="on_error must be"):
        CorpusReader(tsv(tmp_path), on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(CorpusError, match="cannot open corpus"):
        CorpusReader(tmp_path / "nope.tsv")


def test_reiteration_resets_stats_and_rejections(tmp_path):
    reader = CorpusReader(tsv(tmp_path, "1\ta\tb\t0", "2\ta\tb"))
    first, second = list(reader), list(reader)
    assert first == second
    assert reader.stats == corpus.CorpusStats(read=2, accepted=1, rejected=1)
    assert len(reader.rejected) == 1


def test_chunks(tmp_path):
    rows = [f"{i}\ta{i}\tb{i}\t{i % 2}" for i in range(7)]
    chunks = list(CorpusReader(tsv(tmp_path, *rows)).chunks(3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert [r.index for c in chunks for r in c] == list(range(7))
    with pytest.raises(ValueError, match="chunk size must be at least 1"):
        next(CorpusReader(tsv(tmp_path, *rows)).chunks(0))


def test_streaming_memory_stays_flat(tmp_path):
    path = tmp_path / "big.tsv"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(HEADER)
        handle.writelines(f"{i}\tsentence a {i}\tsentence b {i}\t{i % 2}\n" for i in range(200_000))
    reader = CorpusReader(path)
    chunks = reader.chunks(1000)
    # Bytes: tracemalloc (slow, so only over the first 20 chunks) sees about one chunk live at a time.
    tracemalloc.start()
    try:
        seen = sum(len(next(chunks)) for _ in range(20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_500_000  # 20k records held at once would be ~5 MB
    # Objects over the whole file: live allocator blocks stay flat (holding all rows adds ~1M).
    blocks = []
    for chunk in chunks:
        seen += len(chunk)
        blocks.append(sys.getallocatedblocks())
    assert max(blocks) - blocks[0] < 20_000
    assert seen == reader.stats.accepted == reader.stats.read == 200_000


def test_sha256_file(tmp_path):
    data = b"x" * 3_000_000
    path = write(tmp_path / "blob", data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def collect(path: Path, fmt: str | None = None) -> tuple[CorpusReader, list[PairRecord]]:
    """Read everything, tolerating only the documented error; check the stats invariant."""
    reader = CorpusReader(path, fmt=fmt)
    accepted: list[PairRecord] = []
    try:
        accepted.extend(reader)
    except CorpusError:
        assert reader.stats.accepted == 0
    assert reader.stats.read == reader.stats.accepted + reader.stats.rejected
    assert reader.stats.accepted == len(accepted)
    return reader, accepted


pair_rows = st.lists(st.tuples(st.text(), st.text(), st.sampled_from([0, 1])), min_size=1, max_size=8)


def has_tokens(text: str) -> bool:
    """Whether BERT's normaliser keeps a character: not control, format, space, mark or U+FFFD."""
    dropped = {"Cc", "Cf", "Co", "Cs", "Zs", "Zl", "Zp", "Mn", "Me"}
    return any(c != "\ufffd" and unicodedata.category(c) not in dropped for c in text)


def expect_roundtrip(path: Path, rows: list[tuple[str, str, int]]) -> None:
    """Each row reads back equal, or is rejected exactly when one of its texts has no tokens."""
    reader, accepted = collect(path)
    by_id = {r.id: r for r in accepted}
    for i, (text_a, text_b, label) in enumerate(rows):
        if has_tokens(text_a) and has_tokens(text_b):
            record = by_id[str(i)]
            assert (record.text_a, record.text_b, record.nsp_label) == (text_a, text_b, label)
        else:
            assert str(i) not in by_id
    assert reader.stats.read == len(rows)


@settings(max_examples=150, deadline=None)
@given(rows=pair_rows, delimiter=st.sampled_from([",", "\t"]), lineterminator=st.sampled_from(["\r\n", "\n"]))
def test_property_csv_roundtrip(rows, delimiter, lineterminator):
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=lineterminator)
    writer.writerow(["id", "text_a", "text_b", "nsp_label"])
    writer.writerows([i, a, b, label] for i, (a, b, label) in enumerate(rows))
    if lineterminator == "\n" and "\r" in buffer.getvalue():
        return  # the csv writer leaves a bare "\r" unquoted with this terminator: not well-formed
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder) / ("c.tsv" if delimiter == "\t" else "c.csv"), buffer.getvalue())
        expect_roundtrip(path, rows)


@settings(max_examples=150, deadline=None)
@given(rows=pair_rows, ensure_ascii=st.booleans())
def test_property_jsonl_roundtrip(rows, ensure_ascii):
    lines = [
        json.dumps({"id": i, "text_a": a, "text_b": b, "nsp_label": label}, ensure_ascii=ensure_ascii)
        for i, (a, b, label) in enumerate(rows)
    ]
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder) / "c.jsonl", "\n".join(lines) + "\n")
        expect_roundtrip(path, rows)


# Byte fragments that hit quoting, line ends, bad UTF-8 and JSON structure far more often than noise.
FRAGMENTS = [bytes([byte]) for byte in b'\t,"\n\r01x \xff\xc3\x00{}[:']
FRAGMENTS += [b'""', b"\r\n", b"\xef\xbb\xbf", b'"text_a"', b'"text_b"', b'"nsp_label"', "é😀".encode()]
any_bytes = st.one_of(st.binary(max_size=400), st.lists(st.sampled_from(FRAGMENTS), max_size=80).map(b"".join))


@settings(max_examples=400, deadline=None)
@given(body=any_bytes, with_header=st.booleans(), fmt=st.sampled_from(["tsv", "csv", "jsonl"]))
def test_property_arbitrary_bytes_never_crash(body, with_header, fmt):
    header = HEADER.encode() if with_header and fmt != "jsonl" else b""
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder) / "c.tsv", header + body)
        try:
            reader, _ = collect(path, fmt=fmt)
        except CorpusError:
            return
        assert all(row.reason and len(row.raw) <= corpus.RAW_LIMIT for row in reader.rejected)
