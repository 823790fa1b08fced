"""Run tables: CSV round trip, atomic writes, the pass/fail rule, and no heavy imports."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lucid_eval.reports import (
    COMPARISON_SCHEMA,
    EXAMPLES_SCHEMA,
    atomic_write_text,
    build_report,
    judge_comparison,
    load_run,
    write_run_tables,
)

REFERENCE = "torch-cpu"
RUNTIMES = ("torch-cpu", "ort-cpu", "ort-cpu-int8")
INJECTION = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def synthetic_run(n_pairs: int = 40, *, n_flips: int = 3, nsp_labels: bool = True) -> dict:
    """Keyword arguments for write_run_tables: three runtimes, the int8 one failing."""
    rng = np.random.default_rng(0)
    nan = float("nan")
    metrics = pd.DataFrame({
        "runtime": list(RUNTIMES),
        "n_pairs": [n_pairs] * 3,
        "n_failed": [0, 0, 1],
        "n_masked": [6 * n_pairs] * 3,
        "n_nsp": [n_pairs if nsp_labels else 0] * 3,
        "mlm_loss": [2.3412, 2.3412004, 2.4013],
        "mlm_perplexity": [10.394, 10.394004, 11.038],
        "mlm_accuracy": [0.5125, 0.5125, 0.4958],
        "mlm_accuracy_lo": [0.4679, 0.4679, 0.4512],
        "mlm_accuracy_hi": [0.5569, 0.5569, 0.5404],
        "nsp_loss": [0.4125, 0.4125, 0.4301] if nsp_labels else [nan] * 3,
        "nsp_accuracy": [0.85, 0.85, 0.825] if nsp_labels else [nan] * 3,
        "nsp_accuracy_lo": [0.7, 0.7, 0.68] if nsp_labels else [nan] * 3,
        "nsp_accuracy_hi": [0.93, 0.93, 0.91] if nsp_labels else [nan] * 3,
        "weighted_accuracy": [0.5457, 0.5457, 0.5289],
        "wall_s": [4.21, 1.93, 1.12],
        "pairs_per_second": [n_pairs / 4.21, n_pairs / 1.93, n_pairs / 1.12],
        "tokens_per_second": [1200.5, 2617.3, 4510.9],
        "p50_ms": [98.1, 44.5, 25.2],
        "p95_ms": [130.4, 61.0, 40.7],
        "providers": ["torch:cpu", "CPUExecutionProvider", "CPUExecutionProvider"],
        "threads": [8, 8, 8],
        "precision": ["fp32", "fp32", "int8"],
        "versions": ["torch 2.5.1", "onnxruntime 1.20.1", "onnxruntime 1.20.1"],
    })
    comparison = pd.DataFrame({
        "runtime": ["ort-cpu", "ort-cpu-int8"],
        "reference": [REFERENCE] * 2,
        "d_mlm_loss": [4e-7, 0.0601],
        "d_mlm_accuracy": [0.0, -0.0167],
        "d_nsp_loss": [1e-7, 0.0176] if nsp_labels else [nan, nan],
        "d_nsp_accuracy": [0.0, -0.025] if nsp_labels else [nan, nan],
        "d_weighted_accuracy": [0.0, -0.0168],
        "max_abs_mlm_logit_diff": [3.1e-5, 0.84],
        "mean_abs_mlm_logit_diff": [2.2e-6, 0.07],
        "max_abs_nsp_logit_diff": [1.4e-5, 0.12],
        "mean_abs_nsp_logit_diff": [3e-6, 0.03],
        "mlm_agreement": [1.0, 0.9875],
        "nsp_agreement": [1.0, 0.975],
        "n_mlm_flips": [0, n_flips - 1],
        "n_nsp_flips": [0, 1],
        "tol_logit": [1e-4, nan],
        "tol_agreement": [1.0, 0.99],
        "tol_loss": [0.05, 0.05],
        "passed": [True, False],
    })
    rows = []
    for runtime in RUNTIMES:
        scale = {"torch-cpu": 0.0, "ort-cpu": 1e-5, "ort-cpu-int8": 0.3}[runtime]
        for i in range(n_pairs):
            diff = 0.0 if runtime == REFERENCE or i % 4 == 0 else scale * rng.uniform(0.01, 3)
            failed = runtime == "ort-cpu-int8" and i == n_pairs - 1
            logits = rng.normal(size=2)
            rows.append({
                "index": i, "id": f"{i:04d}", "runtime": runtime, "n_tokens": int(rng.integers(20, 128)),
                "n_masked": 6, "mlm_loss_sum": float(rng.uniform(5, 20)), "mlm_correct": int(rng.integers(0, 7)),
                "nsp_logit_0": nan if failed else logits[0], "nsp_logit_1": nan if failed else logits[1],
                "nsp_pred": pd.NA if failed else int(logits.argmax()),
                "nsp_label": int(i % 2) if nsp_labels else pd.NA,
                "max_abs_mlm_logit_diff": nan if failed else diff, "failed": failed,
            })
    examples = pd.DataFrame(rows)
    examples["nsp_pred"] = examples["nsp_pred"].astype("Int64")
    examples["nsp_label"] = examples["nsp_label"].astype("Int64")
    flips = pd.DataFrame({
        "runtime": ["ort-cpu-int8"] * n_flips,
        "id": [f"{i:04d}" for i in range(n_flips)],
        "kind": ["nsp"] + ["mlm"] * (n_flips - 1),
        "position": pd.array([pd.NA] + list(range(3, n_flips + 2)), dtype="Int64"),
        "text_a": [INJECTION] + [f"the cat sat on the mat, \"line\"\nnumber {i}\r" for i in range(1, n_flips)],
        "text_b": ["NA"] + ['see <a href="https://example.com/x">link</a>'] * (n_flips - 1),
        "label": ["0"] + ["mat"] * (n_flips - 1),
        "reference_prediction": ["0"] + ["mat"] * (n_flips - 1),
        "prediction": ["1"] + ["rug"] * (n_flips - 1),
    })
    rejected = pd.DataFrame({
        "line": [7, 19],
        "reason": ["missing text_b", "invalid JSON"],
        "raw": ['{"text_a": "</td><script>alert(3)</script>"}', "{not json"],
    })
    run_info = {
        "command": "lucid-eval run --corpus corpus.jsonl --runtimes torch-cpu,ort-cpu,ort-cpu-int8",
        "seed": 1234,
        "corpus": {"path": "/data/corpus.jsonl", "sha256": "ab" * 32, "format": "jsonl"},
        "export": {"dir": "/exports/bert-tiny", "manifest_sha256": "cd" * 32},
        "reference": REFERENCE,
        "runtimes": list(RUNTIMES),
        "counts": {"read": n_pairs + 2, "scored": n_pairs, "truncated": 3, "rejected": 2},
        "versions": {"lucid_eval": "0.1.0", "torch": "2.5.1", "onnxruntime": "1.20.1"},
        "host": {"cpu": "AMD EPYC 7B13", "cores": 16, "os": "Linux"},
        "started": "2025-01-01T10:00:00+00:00",
        "finished": "2025-01-01T10:00:09+00:00",
        "max_length": 128,
    }
    return {"metrics": metrics, "comparison": comparison, "examples": examples, "flips": flips,
            "rejected": rejected, "run_info": run_info}


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
    assert run.comparison["passed"].dtype == bool and run.examples["failed"].dtype == bool
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


def _comparison(**overrides: list) -> pd.DataFrame:
    base = synthetic_run()["comparison"].iloc[:1]
    row = {c: base[c].tolist() for c in COMPARISON_SCHEMA}
    row.update(overrides)
    return pd.DataFrame(row)


def test_judge_fp32_fails_when_logit_diff_exceeds_tolerance() -> None:
    assert judge_comparison(_comparison())["passed"].tolist() == [True]
    assert judge_comparison(_comparison(max_abs_mlm_logit_diff=[2e-4]))["passed"].tolist() == [False]
    assert judge_comparison(_comparison(max_abs_nsp_logit_diff=[2e-4]))["passed"].tolist() == [False]


def test_judge_nan_tolerance_is_not_judged() -> None:
    nan = math.nan
    lenient = _comparison(max_abs_mlm_logit_diff=[5.0], tol_logit=[nan], tol_agreement=[nan], mlm_agreement=[0.1],
                          d_mlm_loss=[3.0], tol_loss=[nan], passed=[False])
    assert judge_comparison(lenient)["passed"].tolist() == [True]


def test_judge_agreement_loss_and_missing_measurements() -> None:
    assert not judge_comparison(_comparison(mlm_agreement=[0.9999]))["passed"].iloc[0]
    assert not judge_comparison(_comparison(d_mlm_loss=[-0.06]))["passed"].iloc[0]
    # A stated tolerance with nothing measured proves nothing: fail. NSP loss is NaN on unlabelled corpora.
    assert not judge_comparison(_comparison(max_abs_mlm_logit_diff=[math.nan]))["passed"].iloc[0]
    assert judge_comparison(_comparison(d_nsp_loss=[math.nan]))["passed"].iloc[0]


def test_judge_matches_the_synthetic_harness_verdicts() -> None:
    comparison = synthetic_run()["comparison"]
    judged = judge_comparison(comparison.assign(passed=[False, True]))
    assert judged["passed"].tolist() == [True, False]
    assert comparison["passed"].tolist() == [True, False]  # input left untouched


def _imports_in_subprocess(prelude: str) -> subprocess.CompletedProcess:
    code = (
        prelude
        + "import sys, lucid_eval.reports, lucid_eval.reports.html, lucid_eval.reports.plots\n"
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
