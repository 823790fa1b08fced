"""Run tables: CSV round trip, atomic writes, and no heavy imports."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from synthetic_run import INJECTION, REFERENCE, RUNTIMES, synthetic_run  # noqa: F401

from lucid_eval.reports import (
    EXAMPLES_SCHEMA,
    atomic_write_text,
    build_report,
    load_run,
    write_run_tables,
)


def test_round_trip(tmp_path: Path) -> None:
    frames = synthetic_run()
    write_run_tables(tmp_path, **frames)
    run = load_run(tmp_path)
    for name in ("metrics", "comparison", "examples", "flips", "rejected"):
        expected = frames[name]
        loaded = getattr(run, name)
        assert list(loaded.columns) == list(expected.columns), name
        pd.testing.assert_frame_equal(loaded, expected, check_dtype=False, obj=name)
    assert run.run_info == frames["run_info"]
    # Types a reader relies on: ids stay strings, flags stay bools, text like "NA" stays text.
    assert run.examples["id"].iloc[0] == "0000"
    assert run.comparison["verdict"].tolist() == ["PASS", "FAIL"] and run.examples["failed"].dtype == bool
    assert run.examples["nsp_pred"].dtype == "Int64"
    assert run.flips["text_b"].iloc[0] == "NA"
    assert run.flips["text_a"].iloc[1].endswith("\r")


def test_round_trip_without_nsp_labels_or_optional_files(tmp_path: Path) -> None:
    frames = synthetic_run(nsp_labels=False)
    write_run_tables(tmp_path, **{**frames, "rejected": None})
    (tmp_path / "flips.csv").unlink()
    run = load_run(tmp_path)
    assert run.metrics["nsp_accuracy"].isna().all()
    assert run.examples["nsp_label"].isna().all()
    assert run.rejected.empty and list(run.rejected.columns) == ["line", "reason", "raw"]
    assert run.flips.empty and run.flips["position"].dtype == "Int64"
    assert build_report(tmp_path).is_file()


def test_contract_columns_are_enforced(tmp_path: Path) -> None:
    frames = synthetic_run()
    with pytest.raises(ValueError, match="tol_logit"):
        write_run_tables(tmp_path, **{**frames, "comparison": frames["comparison"].drop(columns="tol_logit")})
    with pytest.raises(FileNotFoundError, match="not a lucid-eval run directory"):
        load_run(tmp_path / "nowhere")


def test_columns_are_written_in_contract_order(tmp_path: Path) -> None:
    frames = synthetic_run()
    shuffled = frames["examples"][list(reversed(EXAMPLES_SCHEMA))]
    write_run_tables(tmp_path, **{**frames, "examples": shuffled})
    header = (tmp_path / "examples.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == list(EXAMPLES_SCHEMA)


def test_parquet_examples(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    frames = synthetic_run()
    write_run_tables(tmp_path, **frames)
    write_run_tables(tmp_path, **frames, examples_format="parquet")
    assert not (tmp_path / "examples.csv").exists()
    pd.testing.assert_frame_equal(load_run(tmp_path).examples, frames["examples"], check_dtype=False)


def test_atomic_write_text_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_atomic_write_text_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.csv"
    atomic_write_text(target, "old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "bad \ud800 surrogate")
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def _imports_in_subprocess(prelude: str) -> subprocess.CompletedProcess:
    code = (
        prelude + "import sys, lucid_eval.reports, lucid_eval.reports.html, lucid_eval.reports.plots\n"
        "heavy = [m for m in ('torch', 'onnxruntime') if m in sys.modules]\n"
        "assert not heavy, f'importing lucid_eval.reports loaded {heavy}'\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_reports_package_does_not_import_torch_or_onnxruntime() -> None:
    result = _imports_in_subprocess("")
    assert result.returncode == 0, (
        result.stderr + "\nIf the reports subtree test passes, the heavy import comes from "
        "lucid_eval/__init__.py (or another parent): make its model exports lazy."
    )


def test_reports_subtree_alone_does_not_import_torch_or_onnxruntime() -> None:
    """Same check with lucid_eval/__init__.py bypassed, to tell the culprit apart."""
    prelude = (
        "import importlib.util, sys, types\n"
        "spec = importlib.util.find_spec('lucid_eval')\n"
        "pkg = types.ModuleType('lucid_eval')\n"
        "pkg.__path__, pkg.__version__ = list(spec.submodule_search_locations), '0'\n"
        "sys.modules['lucid_eval'] = pkg\n"
    )
    result = _imports_in_subprocess(prelude)
    assert result.returncode == 0, result.stderr
