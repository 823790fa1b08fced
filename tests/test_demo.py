"""`lucid-eval demo` end to end on a small slice of the held-out pairs, with the shipped checkpoint."""

import pandas as pd
import pytest
from click.testing import CliRunner

from lucid_eval.cli import main


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("LUCID_EVAL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--n-pairs", "120"])
    assert result.exit_code == 0, result.output
    assert f"report: {(out / 'report.html').resolve()}" in result.output
    metrics = pd.read_csv(out / "metrics.csv").set_index("runtime")
    assert {"torch-cpu", "ort-cpu", "ort-cpu-int8"} <= set(metrics.index)
    assert metrics.loc["torch-cpu", "n_pairs"] == 120
    comparison = pd.read_csv(out / "comparison.csv").set_index("runtime")
    assert comparison.loc["ort-cpu", "mlm_agreement"] == 1.0 and comparison.loc["ort-cpu", "nsp_agreement"] == 1.0
    assert metrics.loc["torch-cpu", "mlm_accuracy"] > 0.1, "a pretrained model, not random weights"
    again = CliRunner().invoke(main, ["demo", "--out", str(out), "--n-pairs", "120"])
    assert again.exit_code == 0 and "exporting" not in again.output, "the export is cached"


def test_heldout_mismatch_is_reported(tmp_path):
    import json

    from lucid_eval.demo import _heldout_mismatch

    corpus = {"source": "builtin", "python_version": "3.11.7", "heldout": {"fingerprint": "abc"}}
    (tmp_path / "training_log.json").write_text(json.dumps({"corpus": corpus}))
    meta = tmp_path / "pairs.tsv.json"
    meta.write_text(json.dumps({"corpus_fingerprint": "abc", "python_version": "3.11.7"}))
    assert _heldout_mismatch(tmp_path, meta) is None
    meta.write_text(json.dumps({"corpus_fingerprint": "def", "python_version": "3.12.1"}))
    assert "Python 3.12.1" in _heldout_mismatch(tmp_path, meta)
    (tmp_path / "training_log.json").unlink()
    assert _heldout_mismatch(tmp_path, meta) is None
