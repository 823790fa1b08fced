"""A run's totals -> its metrics and comparison tables; each chunk's scores -> its examples and flips.

Metrics are token-weighted over the examples a runtime scored without failing. Comparisons use
only examples the reference scored; an example a runtime failed on counts as a disagreement in
its agreement shares (NaN output is not the same prediction), but never enters loss or logit
statistics. Every verdict comes from lucid_eval.verdict.judge.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lucid_eval.harness.accumulate import RuntimeTotals, RunTotals
from lucid_eval.harness.scoring import Scores, flips_vs_reference
from lucid_eval.harness.tables import (
    COMPARISON_SCHEMA,
    EXAMPLES_SCHEMA,
    FLIPS_SCHEMA,
    METRICS_SCHEMA,
    coerce_table,
    empty_table,
)
from lucid_eval.models.tokenizer import BERTTokenizerFast
from lucid_eval.runtimes.base import RuntimeInfo
from lucid_eval.tolerances import Tolerance, Tolerances, tolerance_for
from lucid_eval.totals import ratio
from lucid_eval.verdict import Evidence, Verdict, describe_difference, judge

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


def _runtime_metrics(t: RuntimeTotals, has_labels: bool) -> dict:
    s = t.scores
    mlm_loss, mlm_acc = s.mlm_loss, s.mlm_accuracy
    nsp_acc = s.nsp_accuracy if has_labels else math.nan
    if has_labels:
        weighted = (TASK_WEIGHTS["mlm"] * mlm_acc + TASK_WEIGHTS["nsp"] * nsp_acc) / sum(TASK_WEIGHTS.values())
    else:
        weighted = mlm_acc
    ms = t.latencies_ms
    wall_s = float(ms.sum()) / 1000.0
    ms = ms if len(ms) else np.array([math.nan])
    mlm_lo, mlm_hi = wilson_interval(s.mlm_correct, s.mlm_count)
    nsp_lo, nsp_hi = wilson_interval(s.nsp_correct, s.nsp_count) if has_labels else (math.nan, math.nan)
    return {
        "tasks": "mlm nsp" if t.has_nsp else "mlm",
        "n_pairs": t.n_pairs,
        "n_failed": t.n_failed,
        "n_masked": s.mlm_count,
        "n_nsp": s.nsp_count,
        "mlm_loss": mlm_loss,
        "mlm_perplexity": math.exp(mlm_loss) if math.isfinite(mlm_loss) and mlm_loss < 700 else math.nan,
        "mlm_accuracy": mlm_acc,
        "mlm_accuracy_lo": mlm_lo,
        "mlm_accuracy_hi": mlm_hi,
        "nsp_loss": s.nsp_loss if has_labels else math.nan,
        "nsp_accuracy": nsp_acc,
        "nsp_accuracy_lo": nsp_lo,
        "nsp_accuracy_hi": nsp_hi,
        "weighted_accuracy": weighted,
        "wall_s": wall_s,
        "pairs_per_second": ratio(t.n_pairs, wall_s),
        "tokens_per_second": ratio(t.n_tokens, wall_s),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }


def metrics_table(totals: RunTotals, infos: dict[str, RuntimeInfo], has_labels: bool) -> pd.DataFrame:
    """One row per runtime (reference first) in METRICS_SCHEMA."""
    rows = []
    for name, t in totals.runtimes.items():
        info = infos[name]
        rows.append(
            {
                "runtime": name,
                **_runtime_metrics(t, has_labels),
                "providers": ", ".join(info.providers),
                "fallback": info.fallback or "",
                "threads": info.threads,
                "precision": info.precision,
                "versions": "; ".join(f"{k} {v}" for k, v in info.versions.items()),
            }
        )
    unjudged = {k: v for k, v in METRICS_SCHEMA.items() if k != "verdict"}  # with_verdicts adds it
    return coerce_table(pd.DataFrame(rows), unjudged, "metrics")


def margins(infos: dict[str, RuntimeInfo], tolerances: Tolerances) -> dict[str, float]:
    """Each runtime's decisive margin: the tol_margin of its precision."""
    return {name: tolerance_for(info.precision, tolerances).margin for name, info in infos.items()}


def _fallback(infos: dict[str, RuntimeInfo], name: str, reference: str) -> str:
    """Why this comparison is not about what was requested: the runtime or its reference fell back."""
    causes = [f"{n} {infos[n].fallback}" for n in dict.fromkeys((name, reference)) if infos[n].fallback]
    return "; ".join(causes)


def _comparison_row(
    totals: RunTotals, name: str, metrics: pd.DataFrame, infos: dict[str, RuntimeInfo], tol: Tolerance, has_labels: bool
) -> dict:
    c, reference = totals.comparisons[name], totals.reference
    if c.margin != tol.margin:
        raise ValueError(f"{name}: totals were summed with margin {c.margin}, the tolerance says {tol.margin}")
    m = metrics.set_index("runtime")
    delta = {
        f"d_{k}": float(m.at[name, k] - m.at[reference, k])
        for k in ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "weighted_accuracy")
    }
    evidence = Evidence(
        mlm=c.mlm.agreement(),
        nsp=c.nsp.agreement(),
        max_abs_mlm_logit_diff=c.mlm_diff.largest,
        max_abs_nsp_logit_diff=c.nsp_diff.largest,
        d_mlm_loss=delta["d_mlm_loss"],
        d_nsp_loss=delta["d_nsp_loss"] if has_labels else None,
        n_failed=c.n_failed,
        fallback=_fallback(infos, name, reference),
        absent=("NSP",) if c.nsp_absent else (),
    )
    verdict = judge(evidence, tol)
    mlm, nsp = c.mlm_paired.difference(), c.nsp_paired.difference()
    row = {
        "runtime": name,
        "reference": reference,
        "verdict": verdict.verdict.value,
        "verdict_reasons": " | ".join(verdict.reasons),
        **delta,
        "max_abs_mlm_logit_diff": evidence.max_abs_mlm_logit_diff,
        "mean_abs_mlm_logit_diff": c.mlm_diff.mean,
        "max_abs_nsp_logit_diff": evidence.max_abs_nsp_logit_diff,
        "mean_abs_nsp_logit_diff": c.nsp_diff.mean,
        "n_failed": evidence.n_failed,
    }
    for task, a, d, unit in (("mlm", evidence.mlm, mlm, "masked tokens"), ("nsp", evidence.nsp, nsp, "pairs")):
        lo, hi = verdict.flip_bounds[task]
        row |= {
            f"{task}_compared": a.compared,
            f"{task}_agreement": a.rate,
            f"n_{task}_flips": a.flips,
            f"{task}_decisive": a.decisive,
            f"{task}_decisive_agreement": a.decisive_rate,
            f"n_{task}_decisive_flips": a.decisive_flips,
            f"{task}_flip_rate_lo": lo,
            f"{task}_flip_rate_hi": hi,
            f"{task}_paired_n": d.n,
            f"{task}_gained": d.gained,
            f"{task}_lost": d.lost,
            f"{task}_accuracy_diff": d.difference,
            f"{task}_accuracy_diff_lo": d.lo,
            f"{task}_accuracy_diff_hi": d.hi,
            f"{task}_mcnemar_p": d.p_value,
            f"{task}_effect": f"{name}: {task.upper()} is not in this graph"
            if task.upper() in evidence.absent
            else describe_difference(name, task.upper(), d, unit),
        }
    row |= {f"tol_{k}": math.nan if v is None else v for k, v in tol.as_dict().items()}
    row |= {f"check_{c.name}": "" if c.verdict is None else c.verdict.value for c in verdict.checks}
    return row


def comparison_table(
    totals: RunTotals, metrics: pd.DataFrame, infos: dict[str, RuntimeInfo], tolerances: Tolerances, has_labels: bool
) -> pd.DataFrame:
    """One row per non-reference runtime in COMPARISON_SCHEMA, each judged by lucid_eval.verdict."""
    rows = [
        _comparison_row(totals, name, metrics, infos, tolerance_for(infos[name].precision, tolerances), has_labels)
        for name in totals.comparisons
    ]
    if not rows:
        return empty_table("comparison")
    return coerce_table(pd.DataFrame(rows), COMPARISON_SCHEMA, "comparison")


def with_verdicts(metrics: pd.DataFrame, comparison: pd.DataFrame) -> pd.DataFrame:
    """metrics with a `verdict` column: the comparison's verdict, REFERENCE (or FALLBACK) for the reference."""
    verdicts = dict(zip(comparison["runtime"], comparison["verdict"], strict=True))
    out = metrics.copy()
    out["verdict"] = [
        verdicts.get(r, Verdict.FALLBACK.value if f else "REFERENCE")
        for r, f in zip(metrics["runtime"], metrics["fallback"], strict=True)
    ]
    return coerce_table(out, METRICS_SCHEMA, "metrics")


def _ints(values: np.ndarray, missing: np.ndarray) -> pd.arrays.IntegerArray:
    """Nullable integers: rounded `values`, <NA> where `missing`."""
    out = pd.array(np.rint(np.nan_to_num(values)).astype(np.int64), dtype="Int64")
    out[missing] = pd.NA
    return out


def examples_table(scores: Scores) -> pd.DataFrame:
    """One row per example and runtime, in corpus order, in EXAMPLES_SCHEMA (+ truncated, nsp_loss)."""
    shared = scores.shared
    unlabelled = shared["nsp_label"] < 0
    no_nsp = {name: r["failed"] | ~r["nsp_present"] for name, r in scores.runtimes.items()}
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
                "nsp_pred": _ints(r["nsp_pred"], no_nsp[name]),
                "nsp_label": _ints(shared["nsp_label"], unlabelled),
                "max_abs_mlm_logit_diff": r["max_abs_mlm_diff"],
                "failed": r["failed"],
                "truncated": shared["truncated"],
                "nsp_loss": np.where(unlabelled | ~r["nsp_present"], np.nan, r["nsp_loss"]),
            }
        )
        for name, r in scores.runtimes.items()
    ]
    if len(frames) == 1:
        return coerce_table(frames[0], EXAMPLES_SCHEMA, "examples")
    table = pd.concat(frames, ignore_index=True)
    del frames  # one copy of a corpus-sized table at a time
    table = table.sort_values("index", kind="stable", ignore_index=True)
    return coerce_table(table, EXAMPLES_SCHEMA, "examples")


def flips_table(scores: Scores, tokenizer: BERTTokenizerFast) -> pd.DataFrame:
    """Every MLM slot and NSP prediction that differs from the reference, with the pair's texts
    (+ reference_margin: how decisive the reference's prediction was), in corpus order."""
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
                "reference_margin": margin, "_example": e}  # fmt: skip

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
    # Corpus order first (then runtime, kind, position): a run's flips do not depend on its chunking.
    order = np.argsort([r["_example"] for r in rows], kind="stable")
    table = pd.DataFrame([rows[i] for i in order]).drop(columns="_example")
    return coerce_table(table, FLIPS_SCHEMA, "flips")


def _fmt(value: object, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    return value if isinstance(value, str) else format(value, spec)


def _decisive(c: pd.Series) -> str:
    """MLM agreement on decisive predictions and how many there were ("-" when none)."""
    n = int(c["mlm_decisive"])
    return f"{_floor_pct(c['mlm_decisive_agreement'])} ({n:,})" if n else "- (0)"


def _floor_pct(value: float) -> str:
    """Percent rounded down, so 99.999 % agreement never reads as 100.00 %."""
    return "-" if math.isnan(value) else f"{math.floor(value * 10_000) / 100:.2f}%"


def summary_table(metrics: pd.DataFrame, comparison: pd.DataFrame) -> str:
    """A compact fixed-width table for the terminal (quality, speed, verdict per runtime), a banner
    that says "match" only when every verdict is PASS, the reasons for every other verdict, and
    whether each runtime changes accuracy. MLM agreement is shown over all masked predictions and
    over the decisive ones (reference margin ≥ tol_margin), with their count."""
    width = max([16, *map(len, metrics["runtime"])])
    columns = [("runtime", width, "s"), ("prec", 5, "s"), ("pairs", 8, ","), ("failed", 6, ","),
               ("mlm_loss", 8, ".4f"), ("mlm_acc", 7, ".2%"), ("nsp_acc", 7, ".2%"), ("pairs/s", 9, ",.1f"),
               ("p95_ms", 8, ".1f"), ("max|Δlogit|", 11, ".2e"), ("mlm_agree", 9, "s"), ("decisive (n)", 18, "s"),
               ("verdict", 12, "s")]  # fmt: skip
    rows = comparison.set_index("runtime") if not comparison.empty else None
    lines = [
        "  ".join(f"{title:>{width}}" if i else f"{title:<{width}}" for i, (title, width, _) in enumerate(columns))
    ]
    for _, m in metrics.iterrows():
        c = rows.loc[m["runtime"]] if rows is not None and m["runtime"] in rows.index else None
        values = [m["runtime"], m["precision"], m["n_pairs"], m["n_failed"], m["mlm_loss"], m["mlm_accuracy"],
                  m["nsp_accuracy"] if "nsp" in m["tasks"].split() else "no head", m["pairs_per_second"], m["p95_ms"],
                  None if c is None else c["max_abs_mlm_logit_diff"],
                  None if c is None else _floor_pct(c["mlm_agreement"]), None if c is None else _decisive(c), m["verdict"]]  # fmt: skip
        cells = [_fmt(v, spec) for v, (_, _, spec) in zip(values, columns, strict=True)]
        lines.append(
            "  ".join(
                f"{cell:>{w}}" if i else f"{cell:<{w}}"
                for i, (cell, (_, w, _)) in enumerate(zip(cells, columns, strict=True))
            )
        )
    return "\n".join(lines + [""] + verdict_lines(metrics, comparison))


def verdict_lines(metrics: pd.DataFrame, comparison: pd.DataFrame) -> list[str]:
    """The banner, each non-PASS verdict with its reasons, and each runtime's effect on accuracy."""
    counts = comparison["verdict"].value_counts()
    compared = set(comparison["runtime"])  # a compared runtime's FALLBACK is listed below with its reasons
    fallback_ref = [
        r for r in metrics.loc[metrics["verdict"] == Verdict.FALLBACK.value, "runtime"] if r not in compared
    ]
    if comparison.empty:
        banner = "no runtime was compared with the reference"
    elif (counts.get(Verdict.PASS.value, 0) == len(comparison)) and not fallback_ref:
        which = "the runtime matches" if len(comparison) == 1 else f"all {len(comparison)} runtimes match"
        banner = f"{which} the reference within the stated tolerances (PASS)"
    else:
        banner = "not every runtime is shown to match: " + ", ".join(f"{n} {v}" for v, n in counts.items())
    lines = [f"verdict: {banner}"]
    lines += [f"  {r} (reference): FALLBACK" for r in fallback_ref]
    for c in comparison.itertuples():
        if c.verdict != Verdict.PASS.value or c.verdict_reasons:  # a PASS may say what it does not cover
            lines.append(f"  {c.runtime}: {c.verdict}: {c.verdict_reasons}")
    lines += [f"  {effect}" for c in comparison.itertuples() for effect in (c.mlm_effect, c.nsp_effect)]
    return lines
