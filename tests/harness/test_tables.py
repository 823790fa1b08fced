"""Run tables: CSV round trip, atomic writes, and no heavy imports."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lucid_eval.reports import (
    EXAMPLES_SCHEMA,
    atomic_write_text,
    build_report,
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
    metrics = pd.DataFrame(
        {
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
            "fallback": ["", "", ""],
            "verdict": ["REFERENCE", "PASS", "FAIL"],
            "threads": [8, 8, 8],
            "precision": ["fp32", "fp32", "int8"],
            "versions": ["torch 2.5.1", "onnxruntime 1.20.1", "onnxruntime 1.20.1"],
        }
    )
    comparison = pd.DataFrame(
        {
            "runtime": ["ort-cpu", "ort-cpu-int8"],
            "reference": [REFERENCE] * 2,
            "verdict": ["PASS", "FAIL"],
            "verdict_reasons": [
                "",
                "1 NaN/Inf results where the reference had none | MLM: 2 of 240 predictions flipped",
            ],
            "d_mlm_loss": [4e-7, 0.0601],
            "d_mlm_accuracy": [0.0, -0.0167],
            "d_nsp_loss": [1e-7, 0.0176] if nsp_labels else [nan, nan],
            "d_nsp_accuracy": [0.0, -0.025] if nsp_labels else [nan, nan],
            "d_weighted_accuracy": [0.0, -0.0168],
            "max_abs_mlm_logit_diff": [3.1e-5, 0.84],
            "mean_abs_mlm_logit_diff": [2.2e-6, 0.07],
            "max_abs_nsp_logit_diff": [1.4e-5, 0.12],
            "mean_abs_nsp_logit_diff": [3e-6, 0.03],
            "n_failed": [0, 1],
            **{
                k: v
                for task, n in (("mlm", 6 * n_pairs), ("nsp", n_pairs))
                for k, v in {
                    f"{task}_compared": [n, n],
                    f"{task}_agreement": [1.0, 1 - 2 / n],
                    f"n_{task}_flips": [0, 2],
                    f"{task}_decisive": [n, n // 2],
                    f"{task}_decisive_agreement": [1.0, 1 - 1 / (n // 2)],
                    f"n_{task}_decisive_flips": [0, 1],
                    f"{task}_flip_rate_lo": [0.0, 0.0004],
                    f"{task}_flip_rate_hi": [0.0124, 0.0231],
                    f"{task}_paired_n": [n, n],
                    f"{task}_gained": [0, 1],
                    f"{task}_lost": [0, 3],
                    f"{task}_accuracy_diff": [0.0, -2 / n],
                    f"{task}_accuracy_diff_lo": [0.0, -0.02],
                    f"{task}_accuracy_diff_hi": [0.0, 0.005],
                    f"{task}_mcnemar_p": [1.0, 0.625],
                    f"{task}_effect": [
                        f"ort-cpu leaves {task.upper()} accuracy unchanged",
                        f"ort-cpu-int8 changes {task.upper()} accuracy; not significant (exact McNemar p = 0.625)",
                    ],
                }.items()
            },
            "tol_logit": [1e-4, nan],
            "tol_agreement": [1.0, 0.99],
            "tol_loss": [1e-4, 0.05],
            "tol_agreement_on": ["decisive", "decisive"],
            "tol_margin": [2e-4, 0.5],
            "tol_confidence": [0.95, 0.95],
            "check_outputs": ["PASS", "FAIL"],
            "check_mlm_logit": ["PASS", ""],
            "check_nsp_logit": ["PASS", ""],
            "check_mlm_agreement": ["PASS", "INCONCLUSIVE"],
            "check_nsp_agreement": ["PASS", "INCONCLUSIVE"],
            "check_mlm_loss": ["PASS", "FAIL"],
            "check_nsp_loss": ["PASS", "PASS"] if nsp_labels else ["", ""],
        }
    )
    rows = []
    for runtime in RUNTIMES:
        scale = {"torch-cpu": 0.0, "ort-cpu": 1e-5, "ort-cpu-int8": 0.3}[runtime]
        for i in range(n_pairs):
            diff = 0.0 if runtime == REFERENCE or i % 4 == 0 else scale * rng.uniform(0.01, 3)
            failed = runtime == "ort-cpu-int8" and i == n_pairs - 1
            logits = rng.normal(size=2)
            rows.append(
                {
                    "index": i,
                    "id": f"{i:04d}",
                    "runtime": runtime,
                    "n_tokens": int(rng.integers(20, 128)),
                    "n_masked": 6,
                    "mlm_loss_sum": float(rng.uniform(5, 20)),
                    "mlm_correct": int(rng.integers(0, 7)),
                    "nsp_logit_0": nan if failed else logits[0],
                    "nsp_logit_1": nan if failed else logits[1],
                    "nsp_pred": pd.NA if failed else int(logits.argmax()),
                    "nsp_label": int(i % 2) if nsp_labels else pd.NA,
                    "max_abs_mlm_logit_diff": nan if failed else diff,
                    "failed": failed,
                }
            )
    examples = pd.DataFrame(rows)
    examples["nsp_pred"] = examples["nsp_pred"].astype("Int64")
    examples["nsp_label"] = examples["nsp_label"].astype("Int64")
    flips = pd.DataFrame(
        {
            "runtime": ["ort-cpu-int8"] * n_flips,
            "id": [f"{i:04d}" for i in range(n_flips)],
            "kind": ["nsp"] + ["mlm"] * (n_flips - 1),
            "position": pd.array([pd.NA] + list(range(3, n_flips + 2)), dtype="Int64"),
            "text_a": [INJECTION] + [f'the cat sat on the mat, "line"\nnumber {i}\r' for i in range(1, n_flips)],
            "text_b": ["NA"] + ['see <a href="https://example.com/x">link</a>'] * (n_flips - 1),
            "label": ["0"] + ["mat"] * (n_flips - 1),
            "reference_prediction": ["0"] + ["mat"] * (n_flips - 1),
            "prediction": ["1"] + ["rug"] * (n_flips - 1),
        }
    )
    rejected = pd.DataFrame(
        {
            "line": [7, 19],
            "reason": ["missing text_b", "invalid JSON"],
            "raw": ['{"text_a": "</td><script>alert(3)</script>"}', "{not json"],
        }
    )
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
    return {
        "metrics": metrics,
        "comparison": comparison,
        "examples": examples,
        "flips": flips,
        "rejected": rejected,
        "run_info": run_info,
    }


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
