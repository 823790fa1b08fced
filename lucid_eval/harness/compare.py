"""Accumulated per-example scores -> the run's tables (metrics, comparison, examples, flips).

Metrics are token-weighted over the examples a runtime scored without failing. Comparisons use
only examples the reference scored; an example a runtime failed on counts as a disagreement in
its agreement shares (NaN output is not the same prediction), but never enters loss or logit
statistics. Agreement is judged on decisive reference predictions (tolerances.py margin).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lucid_eval.harness.scoring import Scores, flips_vs_reference
from lucid_eval.models.tokenizer import BERTTokenizerFast
from lucid_eval.reports.tables import (
    COMPARISON_SCHEMA,
    EXAMPLES_SCHEMA,
    FLIPS_SCHEMA,
    METRICS_SCHEMA,
    coerce_table,
    empty_table,
    judge_comparison,
)
from lucid_eval.runtimes.base import RuntimeInfo
from lucid_eval.tolerances import decisive, tolerance_for

Z_95 = 1.959963984540054
TASK_WEIGHTS = {"mlm": 1.0, "nsp": 1.0}


def wilson_interval(successes: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion; (NaN, NaN) when n is 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _runtime_metrics(shared: dict[str, np.ndarray], r: dict[str, np.ndarray], has_labels: bool) -> dict:
    ok = ~r["failed"]
    count = int(shared["n_masked"][ok].sum())
    correct = int(np.rint(r["mlm_correct"][ok]).sum())
    mlm_loss = _ratio(float(r["mlm_loss_sum"][ok].sum()), count)
    labelled = ok & (shared["nsp_label"] >= 0)
    n_nsp = int(labelled.sum())
    nsp_right = int((r["nsp_pred"][labelled] == shared["nsp_label"][labelled]).sum())
    nsp_acc = _ratio(nsp_right, n_nsp) if has_labels else math.nan
    mlm_acc = _ratio(correct, count)
    if has_labels:
        weighted = (TASK_WEIGHTS["mlm"] * mlm_acc + TASK_WEIGHTS["nsp"] * nsp_acc) / sum(TASK_WEIGHTS.values())
    else:
        weighted = mlm_acc
    wall_s = float(r["batch_ms"].sum()) / 1000.0
    n_pairs = len(ok)
    ms = r["batch_ms"] if len(r["batch_ms"]) else np.array([math.nan])
    return {
        "n_pairs": n_pairs,
        "n_failed": int(r["failed"].sum()),
        "n_masked": count,
        "n_nsp": n_nsp,
        "mlm_loss": mlm_loss,
        "mlm_perplexity": math.exp(mlm_loss) if math.isfinite(mlm_loss) and mlm_loss < 700 else math.nan,
        "mlm_accuracy": mlm_acc,
        "mlm_accuracy_lo": wilson_interval(correct, count)[0],
        "mlm_accuracy_hi": wilson_interval(correct, count)[1],
        "nsp_loss": _ratio(float(r["nsp_loss"][labelled].sum()), n_nsp) if has_labels else math.nan,
        "nsp_accuracy": nsp_acc,
        "nsp_accuracy_lo": wilson_interval(nsp_right, n_nsp)[0] if has_labels else math.nan,
        "nsp_accuracy_hi": wilson_interval(nsp_right, n_nsp)[1] if has_labels else math.nan,
        "weighted_accuracy": weighted,
        "wall_s": wall_s,
        "pairs_per_second": _ratio(n_pairs, wall_s),
        "tokens_per_second": _ratio(float(shared["n_tokens"].sum()), wall_s),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }


def metrics_table(scores: Scores, infos: dict[str, RuntimeInfo], has_labels: bool) -> pd.DataFrame:
    """One row per runtime (reference first) in METRICS_SCHEMA."""
    rows = []
    for name, r in scores.runtimes.items():
        info = infos[name]
        rows.append(
            {
                "runtime": name,
                **_runtime_metrics(scores.shared, r, has_labels),
                "providers": ", ".join(info.providers),
                "threads": info.threads,
                "precision": info.precision,
                "versions": "; ".join(f"{k} {v}" for k, v in info.versions.items()),
            }
        )
    return coerce_table(pd.DataFrame(rows), METRICS_SCHEMA, "metrics")


def _share(agree: np.ndarray, judged: np.ndarray) -> float:
    """Agreement over judged predictions: NaN with nothing to compare, 1.0 when none is decisive."""
    if agree.size == 0:
        return math.nan
    return float(agree[judged].mean()) if judged.any() else 1.0


def _comparison_row(scores: Scores, name: str, metrics: pd.DataFrame, precision: str) -> dict:
    shared, ref, got = scores.shared, scores.runtimes[scores.reference], scores.runtimes[name]
    tol = tolerance_for(precision)
    both_ok = ~ref["failed"] & ~got["failed"]
    ref_ok_slot = np.repeat(~ref["failed"], shared["n_masked"])
    got_ok_slot = np.repeat(~got["failed"], shared["n_masked"])
    slot_agree = (ref["slot_pred"] == got["slot_pred"]) & got_ok_slot
    slot_agree, slot_judged = slot_agree[ref_ok_slot], decisive_margin(ref["slot_margin"][ref_ok_slot], tol.margin)
    nsp_agree = ((ref["nsp_pred"] == got["nsp_pred"]) & ~got["failed"])[~ref["failed"]]
    nsp_judged = decisive(ref["nsp_logits"][~ref["failed"]], tol.margin)
    slot_flip, nsp_flip = flips_vs_reference(shared, ref, got)
    mlm_diffs = got["max_abs_mlm_diff"][both_ok]
    nsp_diff = np.abs(got["nsp_logits"][both_ok].astype(np.float64) - ref["nsp_logits"][both_ok])
    m = metrics.set_index("runtime")
    delta = {
        f"d_{k}": float(m.at[name, k] - m.at[scores.reference, k])
        for k in ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "weighted_accuracy")
    }
    return {
        "runtime": name,
        "reference": scores.reference,
        **delta,
        "max_abs_mlm_logit_diff": float(np.nanmax(mlm_diffs)) if np.isfinite(mlm_diffs).any() else math.nan,
        "mean_abs_mlm_logit_diff": _ratio(
            float(got["sum_abs_mlm_diff"][both_ok].sum()), got["n_mlm_diff"][both_ok].sum()
        ),
        "max_abs_nsp_logit_diff": float(nsp_diff.max()) if nsp_diff.size else math.nan,
        "mean_abs_nsp_logit_diff": float(nsp_diff.mean()) if nsp_diff.size else math.nan,
        "mlm_agreement": _share(slot_agree, slot_judged),
        "nsp_agreement": _share(nsp_agree, nsp_judged),
        "n_mlm_flips": int(slot_flip.sum()),
        "n_nsp_flips": int(nsp_flip.sum()),
        "tol_logit": math.nan if tol.logit is None else tol.logit,
        "tol_agreement": tol.agreement,
        "tol_loss": tol.loss,
        "passed": True,  # recomputed by judge_comparison
        "mlm_agreement_all": _share(slot_agree, np.ones_like(slot_agree)),
        "nsp_agreement_all": _share(nsp_agree, np.ones_like(nsp_agree)),
    }


def decisive_margin(margins: np.ndarray, margin: float) -> np.ndarray:
    """Slots whose reference top-1 beats top-2 by at least `margin` (all slots when margin <= 0)."""
    return np.ones(margins.shape, dtype=bool) if margin <= 0 else margins >= margin


def comparison_table(scores: Scores, metrics: pd.DataFrame, infos: dict[str, RuntimeInfo]) -> pd.DataFrame:
    """One row per non-reference runtime in COMPARISON_SCHEMA, judged with judge_comparison."""
    rows = [
        _comparison_row(scores, name, metrics, infos[name].precision)
        for name in scores.runtimes
        if name != scores.reference
    ]
    if not rows:
        return empty_table("comparison")
    return judge_comparison(coerce_table(pd.DataFrame(rows), COMPARISON_SCHEMA, "comparison"))


def _ints(values: np.ndarray, missing: np.ndarray) -> pd.arrays.IntegerArray:
    """Nullable integers: rounded `values`, <NA> where `missing`."""
    out = pd.array(np.rint(np.nan_to_num(values)).astype(np.int64), dtype="Int64")
    out[missing] = pd.NA
    return out


def examples_table(scores: Scores) -> pd.DataFrame:
    """One row per example and runtime, in corpus order, in EXAMPLES_SCHEMA (+ truncated, nsp_loss)."""
    shared = scores.shared
    unlabelled = shared["nsp_label"] < 0
    frames = [
        pd.DataFrame(
            {
                "index": shared["index"],
                "id": shared["id"],
                "runtime": name,
                "n_tokens": shared["n_tokens"],
                "n_masked": shared["n_masked"],
                "mlm_loss_sum": r["mlm_loss_sum"],
                "mlm_correct": _ints(r["mlm_correct"], r["failed"]),
                "nsp_logit_0": r["nsp_logits"][:, 0].astype(np.float64),
                "nsp_logit_1": r["nsp_logits"][:, 1].astype(np.float64),
                "nsp_pred": _ints(r["nsp_pred"], r["failed"]),
                "nsp_label": _ints(shared["nsp_label"], unlabelled),
                "max_abs_mlm_logit_diff": r["max_abs_mlm_diff"],
                "failed": r["failed"],
                "truncated": shared["truncated"],
                "nsp_loss": np.where(unlabelled, np.nan, r["nsp_loss"]),
            }
        )
        for name, r in scores.runtimes.items()
    ]
    table = pd.concat(frames, ignore_index=True).sort_values("index", kind="stable")
    return coerce_table(table, EXAMPLES_SCHEMA, "examples")


def flips_table(scores: Scores, tokenizer: BERTTokenizerFast) -> pd.DataFrame:
    """Every MLM slot and NSP prediction that differs from the reference, with the pair's texts
    (+ reference_margin: how decisive the reference's prediction was)."""
    shared, ref = scores.shared, scores.runtimes[scores.reference]
    texts = {
        int(i): (str(a), str(b))
        for i, a, b in zip(shared["flip_index"], shared["flip_text_a"], shared["flip_text_b"], strict=True)
    }
    slot_example = np.repeat(np.arange(len(shared["index"])), shared["n_masked"])

    def row(
        name: str, e: int, kind: str, position: int | None, label: str, want: str, have: str, margin: float
    ) -> dict:
        text_a, text_b = texts[int(shared["index"][e])]
        return {"runtime": name, "id": shared["id"][e], "kind": kind, "position": position, "text_a": text_a,
                "text_b": text_b, "label": label, "reference_prediction": want, "prediction": have,
                "reference_margin": margin}  # fmt: skip

    rows = []
    for name, got in scores.runtimes.items():
        if name == scores.reference:
            continue
        slot_flip, nsp_flip = flips_vs_reference(shared, ref, got)
        for s in np.flatnonzero(slot_flip):
            tokens = tokenizer.convert_ids_to_tokens(
                [shared["slot_label"][s], ref["slot_pred"][s], got["slot_pred"][s]]
            )
            rows.append(
                row(
                    name, slot_example[s], "mlm", int(shared["slot_position"][s]), *tokens, float(ref["slot_margin"][s])
                )
            )
        for e in np.flatnonzero(nsp_flip):
            label = "" if shared["nsp_label"][e] < 0 else str(shared["nsp_label"][e])
            margin = float(abs(ref["nsp_logits"][e, 0] - ref["nsp_logits"][e, 1]))
            rows.append(row(name, e, "nsp", None, label, str(ref["nsp_pred"][e]), str(got["nsp_pred"][e]), margin))
    if not rows:
        return empty_table("flips").assign(reference_margin=pd.Series([], dtype=float))
    return coerce_table(pd.DataFrame(rows), FLIPS_SCHEMA, "flips")


def _fmt(value: object, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    return format(value, spec)


def summary_table(metrics: pd.DataFrame, comparison: pd.DataFrame) -> str:
    """A compact fixed-width table for the terminal: quality, speed and verdict per runtime."""
    columns = [("runtime", 16, "s"), ("prec", 5, "s"), ("pairs", 8, ","), ("failed", 6, ","),
               ("mlm_loss", 8, ".4f"), ("mlm_acc", 7, ".2%"), ("nsp_acc", 7, ".2%"), ("pairs/s", 9, ",.1f"),
               ("p95_ms", 8, ".1f"), ("max|Δlogit|", 11, ".2e"), ("agree", 7, ".2%"), ("verdict", 9, "s")]  # fmt: skip
    verdicts = comparison.set_index("runtime") if not comparison.empty else None
    lines = [
        "  ".join(f"{title:>{width}}" if i else f"{title:<{width}}" for i, (title, width, _) in enumerate(columns))
    ]
    for _, m in metrics.iterrows():
        c = verdicts.loc[m["runtime"]] if verdicts is not None and m["runtime"] in verdicts.index else None
        verdict = "reference" if c is None else ("PASS" if c["passed"] else "FAIL")
        values = [m["runtime"], m["precision"], m["n_pairs"], m["n_failed"], m["mlm_loss"], m["mlm_accuracy"],
                  m["nsp_accuracy"], m["pairs_per_second"], m["p95_ms"],
                  None if c is None else c["max_abs_mlm_logit_diff"],
                  None if c is None else c["mlm_agreement"], verdict]  # fmt: skip
        cells = [_fmt(v, spec) for v, (_, _, spec) in zip(values, columns, strict=True)]
        lines.append(
            "  ".join(
                f"{cell:>{w}}" if i else f"{cell:<{w}}"
                for i, (cell, (_, w, _)) in enumerate(zip(cells, columns, strict=True))
            )
        )
    return "\n".join(lines)
