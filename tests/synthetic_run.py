"""A synthetic finished run (three runtimes, the int8 one failing) for the run-table and report tests."""

import numpy as np
import pandas as pd

from lucid_eval.harness.run_info import CorpusInfo, Counts, RunInfo

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
            "tasks": ["mlm nsp", "mlm nsp", "mlm nsp"],
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
    run_info = RunInfo(
        command="lucid-eval run --corpus corpus.jsonl --runtimes torch-cpu,ort-cpu,ort-cpu-int8",
        seed=1234,
        corpus=CorpusInfo(path="/data/corpus.jsonl", sha256="ab" * 32, format="jsonl"),
        export={"dir": "/exports/bert-tiny", "manifest_sha256": "cd" * 32},
        reference=REFERENCE,
        runtimes=list(RUNTIMES),
        counts=Counts(read=n_pairs + 2, scored=n_pairs, truncated=3, rejected=2),
        versions={"lucid_eval": "0.1.0", "torch": "2.5.1", "onnxruntime": "1.20.1"},
        host={"cpu": "AMD EPYC 7B13", "cores": 16, "os": "Linux"},
        started="2025-01-01T10:00:00+00:00",
        finished="2025-01-01T10:00:09+00:00",
        max_length=128,
    )
    return {
        "metrics": metrics,
        "comparison": comparison,
        "examples": examples,
        "flips": flips,
        "rejected": rejected,
        "run_info": run_info,
    }
