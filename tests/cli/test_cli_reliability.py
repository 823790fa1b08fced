"""Dirty corpora through `lucid-eval score`: counts reconcile, --on-error fail names the line,
hopeless corpora are clear errors; pair truncation never crashes on arbitrary text."""

import pandas as pd
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lucid_eval.cli import main
from lucid_eval.harness.run_info import Counts, RunInfo

GOOD = "The interpreter reads a line of input.\tIt then executes it.\t0\n"


def write(tmp_path, body: bytes):
    path = tmp_path / "corpus.tsv"
    path.write_bytes(b"text_a\ttext_b\tnsp_label\n" + body)
    return path


def score(tiny_export, corpus, out, *extra):
    return CliRunner().invoke(main, ["score", "--export", str(tiny_export), "--corpus", str(corpus), "--out", str(out),
                                     "--runtime", "torch-cpu", "--runtime", "ort-cpu", *extra])  # fmt: skip


def dirty_corpus(tmp_path):
    rows = [
        GOOD.encode(),
        b"only one column\n",
        b"\tempty text_a\t1\n",
        b"a text\tanother text\t7\n",
        b"bad bytes \xff\xfe here\tfine\t0\n",
        (
            "<script>alert(1)</script> \U0001f600 \u6771\u4eac \u05e9\u05dc\u05d5\u05dd e\u0301\tRTL and CJK\t1\r\n"
        ).encode(),
        ("long " * 5000 + "\tshort\t0\n").encode(),
        GOOD.encode(),
    ]
    return write(tmp_path, b"".join(rows))


def test_skip_scores_valid_rows_and_reconciles(tiny_export, tmp_path):
    result = score(tiny_export, dirty_corpus(tmp_path), tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "pairs read 8, scored 4, truncated 1, rejected 4 (see rejected.csv)" in result.output
    rejected = pd.read_csv(tmp_path / "run" / "rejected.csv")
    assert list(rejected["line"]) == [3, 4, 5, 6]
    assert any("invalid UTF-8" in r for r in rejected["reason"])
    assert any("nsp_label must be 0 or 1" in r for r in rejected["reason"])
    assert RunInfo.load(tmp_path / "run").counts == Counts(read=8, scored=4, truncated=1, rejected=4)
    assert (pd.read_csv(tmp_path / "run" / "metrics.csv")["n_pairs"] == 4).all()


def test_fail_stops_at_the_first_bad_row(tiny_export, tmp_path):
    result = score(tiny_export, dirty_corpus(tmp_path), tmp_path / "run", "--on-error", "fail")
    assert result.exit_code == 1
    assert "corpus.tsv line 3:" in result.output and "column" in result.output


def test_empty_and_all_rejected_corpora_are_clear_errors(tiny_export, tmp_path):
    empty = score(tiny_export, write(tmp_path, b""), tmp_path / "run1")
    assert empty.exit_code == 1 and "no valid text pairs" in empty.output
    (tmp_path / "bad").mkdir()
    hopeless = score(tiny_export, write(tmp_path / "bad", b"x\n\ty\t0\n"), tmp_path / "run2")
    assert hopeless.exit_code == 1 and "no valid text pairs" in hopeless.output


@settings(max_examples=200, deadline=None)
@given(a=st.text(max_size=400), b=st.text(max_size=400), max_length=st.integers(3, 64))
def test_pair_truncation_never_crashes(tiny_tokenizer, a, b, max_length):
    enc = tiny_tokenizer.encode_batch([a], [b], max_length=max_length)[0]
    assert len(enc.ids) <= max_length
    assert enc.ids[0] == tiny_tokenizer.cls_token_id and enc.ids[-1] == tiny_tokenizer.sep_token_id
    assert enc.ids.count(tiny_tokenizer.sep_token_id) >= 2
