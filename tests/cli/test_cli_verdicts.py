"""Verdicts end to end: the same verdict in the terminal, the CSVs, the HTML and the exit code."""

import json
import shutil

import pandas as pd
import pytest
from click.testing import CliRunner
from test_cli_score import pairs, write_corpus

from lucid_eval.cli import main
from lucid_eval.export.sessions import cuda_provider_status
from lucid_eval.harness.run_info import RunInfo
from lucid_eval.verdict import EXIT_VERDICT


def score(export, corpus, out, runtimes, *extra):
    args = ["score", "--export", str(export), "--corpus", str(corpus), "--out", str(out), "--threads", "1",
            *(a for r in runtimes for a in ("--runtime", r)), *extra]  # fmt: skip
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus") / "pairs.tsv", pairs())


def test_random_init_int8_is_never_a_pass(tiny_export, corpus, tmp_path):
    """A random-init model has no decisive prediction: its int8 row is INCONCLUSIVE everywhere, with counts."""
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    assert manifest["variants"]["int8"]["verification"]["verdict"] == "INCONCLUSIVE"
    result = score(tiny_export, corpus, tmp_path / "run", ["torch-cpu", "ort-cpu", "ort-cpu-int8"])
    assert result.exit_code == 0, result.output  # INCONCLUSIVE fails a run only with --strict
    assert "ort-cpu-int8: INCONCLUSIVE: MLM: 0 decisive predictions (reference margin ≥ 0.5)" in result.output
    assert "verdict: not every runtime is shown to match: 1 PASS, 1 INCONCLUSIVE" in result.output
    comparison = pd.read_csv(tmp_path / "run" / "comparison.csv", keep_default_na=False).set_index("runtime")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv", keep_default_na=False).set_index("runtime")
    int8 = comparison.loc["ort-cpu-int8"]
    assert int8["verdict"] == metrics.at["ort-cpu-int8", "verdict"] == "INCONCLUSIVE"
    assert int8["mlm_decisive"] == 0 and int8["mlm_compared"] > 0 and int8["check_mlm_agreement"] == "INCONCLUSIVE"
    assert comparison.at["ort-cpu", "verdict"] == "PASS" and metrics.at["torch-cpu", "verdict"] == "REFERENCE"
    html = (tmp_path / "run" / "report.html").read_text()
    assert '<span class="badge na">INCONCLUSIVE</span>' in html and "All 2 runtimes match" not in html
    assert f"0 of {int8['mlm_compared'] * 0}" in html or "of 0" in html  # the decisive count is shown
    strict = score(tiny_export, corpus, tmp_path / "strict", ["torch-cpu", "ort-cpu-int8"], "--strict")
    assert strict.exit_code == EXIT_VERDICT, strict.output


def test_fp16_exported_without_cuda_is_not_verified(tiny_export):
    verification = json.loads((tiny_export / "manifest.json").read_text())["variants"]["fp16"]["verification"]
    if cuda_provider_status()[0]:
        pytest.skip("a CUDA provider works here, so the fp16 graphs were verified")
    assert verification["verdict"] == "NOT VERIFIED" and "passed" not in json.dumps(verification)
    result = CliRunner().invoke(main, ["runtimes", "--export", str(tiny_export)])
    assert result.exit_code == 0 and "fp16 graphs: NOT VERIFIED" in result.output
    assert "fused graphs: PASS" in result.output and "passed" not in result.output.lower()


def test_fallback_is_a_fallback_row_everywhere(tiny_export, corpus, tmp_path):
    if cuda_provider_status()[0]:
        pytest.skip("ONNX Runtime's CUDA provider works here: nothing falls back")
    result = score(tiny_export, corpus, tmp_path / "run", ["torch-cpu", "ort-cuda"], "--allow-fallback")
    assert result.exit_code == 0, result.output
    assert "ort-cuda: FALLBACK: FALLBACK: ort-cuda CUDAExecutionProvider was requested" in result.output
    assert "ort-cuda (reference)" not in result.output  # torch-cpu is the reference; ort-cuda is a compared runtime
    row = pd.read_csv(tmp_path / "run" / "comparison.csv", keep_default_na=False).iloc[0]
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv", keep_default_na=False).set_index("runtime")
    assert row["verdict"] == metrics.at["ort-cuda", "verdict"] == "FALLBACK" and metrics.at["ort-cuda", "fallback"]
    html = (tmp_path / "run" / "report.html").read_text()
    assert '<span class="badge warn">FALLBACK</span>' in html and "All 1 runtime match" not in html
    strict = score(tiny_export, corpus, tmp_path / "strict", ["torch-cpu", "ort-cuda"], "--allow-fallback", "--strict")
    assert strict.exit_code == EXIT_VERDICT


@pytest.fixture()
def unverified_export(tiny_export, tmp_path):
    """The tiny export with its fused graphs recorded as NOT VERIFIED (as fp16 is on a CPU-only machine)."""
    copy = tmp_path / "export"
    shutil.copytree(tiny_export, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["variants"]["fused"]["verification"] = {"verdict": "NOT VERIFIED", "reasons": ["not run"], "checks": []}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_unverified_graphs_are_verified_before_scoring(unverified_export, corpus, tmp_path):
    result = score(unverified_export, corpus, tmp_path / "run", ["torch-cpu", "ort-cpu"])
    assert result.exit_code == 0, result.output
    assert "verifying the fused graphs on cpu before scoring (not verified at export)" in result.output
    late = RunInfo.load(tmp_path / "run").late_verification
    assert (
        late["fused@cpu"]["verdict"] == "PASS" and late["fused@cpu"]["graphs"]["scoring"]["evidence"]["mlm"]["compared"]
    )


def test_unverified_graphs_that_fail_stop_the_run_with_numbers(unverified_export, corpus, tmp_path):
    result = score(
        unverified_export, corpus, tmp_path / "run", ["torch-cpu", "ort-cpu"], "--tolerance", "fp32.logit=1e-12"
    )
    assert result.exit_code == 1
    assert "the fused graphs failed verification on cpu before scoring" in result.output
    assert "max |Δ MLM logit|" in result.output and "> 1e-12" in result.output
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_tolerance_overrides_are_applied_recorded_and_shown(tiny_export, corpus, tmp_path):
    result = score(tiny_export, corpus, tmp_path / "run", ["torch-cpu", "ort-cpu-int8"],
                   "--tolerance", "int8.agreement_on=all", "--tolerance", "int8.agreement=0.5")  # fmt: skip
    assert result.exit_code == 0, result.output
    tolerances = RunInfo.load(tmp_path / "run").tolerances
    assert tolerances["int8"]["agreement"] == 0.5 and tolerances["int8"]["agreement_on"] == "all"
    row = pd.read_csv(tmp_path / "run" / "comparison.csv", keep_default_na=False).iloc[0]
    assert (
        row["tol_agreement"] == 0.5
        and row["tol_agreement_on"] == "all"
        and row["check_mlm_agreement"] != "INCONCLUSIVE"
    )
    assert "judged on all: tol ≥ 50.0 %" in (tmp_path / "run" / "report.html").read_text()
    bad = score(tiny_export, corpus, tmp_path / "bad", ["torch-cpu"], "--tolerance", "int8.agreement=2")
    assert bad.exit_code == 1 and "agreement must be in (0, 1]" in bad.output
