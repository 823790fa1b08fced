"""`--columns` maps a corpus's own column names; a label column under another name is never ignored silently."""

import csv

from click.testing import CliRunner

from lucid_eval.cli import main
from lucid_eval.harness.run_info import RunInfo


def write(path, n=8):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["idx", "sentence1", "sentence2", "label"])
        writer.writerows([f"r{i}", f"The cat sat on mat number {i}.", "It was a warm day.", i % 2] for i in range(n))
    return path


def score(export, corpus, out, *extra):
    args = [
        "score",
        "--export",
        str(export),
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--runtime",
        "torch-cpu",
        *extra,
    ]
    return CliRunner().invoke(main, args)


def test_columns_map_the_corpus_names(tiny_export, tmp_path):
    corpus = write(tmp_path / "glue.csv")
    result = score(
        tiny_export, corpus, tmp_path / "run", "--columns", "text_a=sentence1,text_b=sentence2,nsp_label=label,id=idx"
    )
    assert result.exit_code == 0, result.output
    info = RunInfo.load(tmp_path / "run")
    assert info.counts.scored == 8 and info.corpus.columns["nsp_label"] == "label"
    assert "warning" not in result.output


def test_missing_columns_and_bad_mappings_are_one_line_errors(tiny_export, tmp_path):
    corpus = write(tmp_path / "glue.csv")
    unmapped = score(tiny_export, corpus, tmp_path / "a")
    assert unmapped.exit_code == 1 and "Error:" in unmapped.output and "text_a" in unmapped.output
    bad = score(tiny_export, corpus, tmp_path / "b", "--columns", "text_a")
    assert bad.exit_code == 2 and "Invalid value for '--columns'" in bad.output


def test_a_label_column_under_another_name_is_named_in_a_warning(tiny_export, tmp_path):
    corpus = write(tmp_path / "glue.csv")
    result = score(tiny_export, corpus, tmp_path / "run", "--columns", "text_a=sentence1,text_b=sentence2")
    assert result.exit_code == 0, result.output
    assert "warning: column 'label' is ignored; pass --columns nsp_label=label to use it" in result.output
