"""An Optimum `fill-mask` export (a real third-party graph, no NSP head) scored against its checkpoint.

optimum-onnx pins transformers 4.57, so it lives in its own environment (the `optimum` extra;
.ci/run makes one and runs `pytest -m optimum` there); elsewhere this test skips with the reason."""

import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from lucid_eval.cli import main
from lucid_eval.files import sha256_file
from lucid_eval.harness.run_info import RunInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))
from _score_dummy import write_corpus  # noqa: E402

pytestmark = pytest.mark.optimum


def test_an_optimum_fill_mask_graph_scores_end_to_end(tmp_path, tiny_checkpoint) -> None:
    exporters = pytest.importorskip(
        "optimum.exporters.onnx", reason="optimum-onnx is not installed (pip install -e '.[optimum]' in its own venv)"
    )
    exporters.main_export(str(tiny_checkpoint), output=tmp_path / "optimum", task="fill-mask")
    graph = tmp_path / "optimum" / "model.onnx"
    corpus = write_corpus(tmp_path / "pairs.tsv", 40)
    args = ["score", "--model", str(tiny_checkpoint), "--onnx", str(graph), "--corpus", str(corpus),
            "--out", str(tmp_path / "run"), "--threads", "1"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv").set_index("runtime")
    row = metrics.loc["ort-cpu:model"]
    assert row["verdict"] == "PASS" and row["tasks"] == "mlm" and pd.isna(row["nsp_accuracy"]), result.output
    reference = metrics.loc["torch-cpu"]
    assert abs(row["mlm_loss"] - reference["mlm_loss"]) <= 1e-4 and row["mlm_accuracy"] == reference["mlm_accuracy"]
    comparison = pd.read_csv(tmp_path / "run" / "comparison.csv", keep_default_na=False).iloc[0]
    assert comparison["nsp_compared"] == 0 and "NSP is not in this graph" in comparison["verdict_reasons"]
    assert float(comparison["max_abs_mlm_logit_diff"]) <= 1e-4
    graphs = RunInfo.load(tmp_path / "run").onnx_graphs
    assert graphs["ort-cpu:model"]["sha256"] == sha256_file(graph) and graphs["ort-cpu:model"]["mlm_output"] == "logits"
    assert "no head" in result.output
