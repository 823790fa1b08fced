"""`lucid-eval score` end to end on a tiny export: every corpus format, CPU runtimes, all files."""

import csv
import json
import pydoc_data.topics
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from lucid_eval.cli import main
from lucid_eval.data.pairs import split_sentences
from lucid_eval.harness.run_info import RunInfo

SCRIPT = "<script>document.body.setAttribute('data-pwned','yes')</script>"


def pairs(n: int = 60) -> list[dict]:
    sents = [s for v in list(pydoc_data.topics.topics.values())[:8] for s in split_sentences(v) if 20 < len(s) < 400]
    rows = [{"id": f"p{i}", "text_a": sents[i], "text_b": sents[i + 1] if i % 2 == 0 else sents[-i], "nsp_label": i % 2}
            for i in range(n)]  # fmt: skip
    rows[3]["text_a"] = f"Untrusted {SCRIPT} text"
    return rows


def write_corpus(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


def score(tiny_export, corpus, out, *extra):
    args = ["score", "--export", str(tiny_export), "--corpus", str(corpus), "--out", str(out), "--threads", "1",
            "--runtime", "torch-cpu", "--runtime", "ort-cpu", "--runtime", "ort-cpu-int8", *extra]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
def test_score_every_format(tiny_export, tmp_path, suffix):
    corpus = write_corpus(tmp_path / f"corpus{suffix}", pairs())
    result = score(tiny_export, corpus, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("metrics.csv", "comparison.csv", "examples.csv", "flips.csv", "run.json", "report.html"):
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv").set_index("runtime")
    comparison = pd.read_csv(run / "comparison.csv").set_index("runtime")
    assert list(metrics.index) == ["torch-cpu", "ort-cpu", "ort-cpu-int8"]
    assert abs(metrics.loc["ort-cpu", "mlm_loss"] - metrics.loc["torch-cpu", "mlm_loss"]) <= 1e-4
    assert abs(metrics.loc["ort-cpu", "nsp_loss"] - metrics.loc["torch-cpu", "nsp_loss"]) <= 1e-4
    assert comparison.loc["ort-cpu", "mlm_agreement"] == 1.0 and comparison.loc["ort-cpu", "nsp_agreement"] == 1.0
    assert comparison.loc["ort-cpu", "verdict"] == "PASS"
    examples = pd.read_csv(run / "examples.csv")
    assert len(examples) == 3 * 60 and (metrics["n_pairs"] == 60).all()
    counts = RunInfo.load(run).counts
    assert counts.read == counts.scored + counts.rejected == 60
    assert "ort-cpu-int8" in result.output and "PASS" in result.output


def test_same_seed_same_reference_metrics_and_other_seed_other_masks(tiny_export, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.tsv", pairs())
    timing = ["wall_s", "pairs_per_second", "tokens_per_second", "p50_ms", "p95_ms"]
    runs = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        score(tiny_export, corpus, tmp_path / name, "--seed", seed)
        runs[name] = pd.read_csv(tmp_path / name / "metrics.csv").drop(columns=timing)
    pd.testing.assert_series_equal(runs["a"].iloc[0], runs["b"].iloc[0])
    assert (
        runs["a"].loc[0, "n_masked"] != runs["c"].loc[0, "n_masked"]
        or runs["a"].loc[0, "mlm_loss"] != runs["c"].loc[0, "mlm_loss"]
    )


def test_report_renders_and_corpus_script_does_not_run(tiny_export, tmp_path, browser):
    rejected = {"id": "bad", "text_a": SCRIPT, "text_b": "shown in the rejected rows", "nsp_label": "<b>7</b>"}
    corpus = write_corpus(tmp_path / "corpus.tsv", [*pairs(), rejected])
    score(tiny_export, corpus, tmp_path / "run")
    page = tmp_path / "run" / "report.html"
    assert SCRIPT not in page.read_text() and "&lt;script&gt;" in page.read_text()  # shown, escaped
    dom = browser(page, "--dump-dom").stdout
    assert "<table" in dom and "<img" in dom
    assert 'data-pwned="yes"' not in dom
    png = tmp_path / "report.png"
    browser(page, f"--screenshot={png}", "--window-size=1280,2400")
    assert png.read_bytes().startswith(b"\x89PNG")


def test_report_command_rebuilds_html(tiny_export, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.tsv", pairs(20))
    score(tiny_export, corpus, tmp_path / "run")
    (tmp_path / "run" / "report.html").unlink()
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0 and (tmp_path / "run" / "report.html").is_file()


def test_unavailable_cuda_runtime_is_a_clear_error(tiny_export, tmp_path):
    from lucid_eval.export.sessions import cuda_provider_status

    if cuda_provider_status()[0]:
        pytest.skip("CUDA works here")
    corpus = write_corpus(tmp_path / "corpus.tsv", pairs(10))
    result = CliRunner().invoke(main, ["score", "--export", str(tiny_export), "--corpus", str(corpus), "--out",
                                       str(tmp_path / "run"), "--runtime", "torch-cpu", "--runtime", "ort-cuda"])  # fmt: skip
    assert result.exit_code == 1 and "ort-cuda: CUDAExecutionProvider was requested" in result.output
