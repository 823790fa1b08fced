"""report.html: one self-contained page that puts every runtime beside the reference.

All values are formatted here into plain strings and rendered by an autoescaping
Jinja2 template, so text from untrusted corpora can only ever appear as text. Every
string that comes from the user (corpus text, ids, labels, reasons, paths, the command)
passes through `shown`, so it is bounded in length and cannot reorder the page with
bidi controls; the CSVs keep the full values.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from lucid_eval import __version__
from lucid_eval.harness.run_info import RunInfo
from lucid_eval.harness.tables import REPORT_FILE, RunTables, atomic_write_text, load_run
from lucid_eval.reports.plots import accuracy_figure, logit_diff_figure, throughput_figure
from lucid_eval.verdict import VERDICT_HELP, Verdict

FLIPS_SHOWN = 200
REJECTED_SHOWN = 20
REASONS_SHOWN = 10  # distinct rejection reasons listed; one per bad value can mean 100 k of them
# Characters of one user string shown: names, ids and tokens; reasons, raw rows and paths; free text.
NAME_CHARS = 80
REASON_CHARS = 200
TEXT_CHARS = 400
DASH = "—"
NO_HEAD = "no head in this graph"
# Bidi controls (ALM, LRM, RLM, embeddings, overrides, isolates): U+202E in a file name
# would otherwise reverse the text around it.
_BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(value: object, limit: int) -> str:
    """User text as the page shows it: the first `limit` characters, with a note of how many
    were cut, and bidi controls spelled out as visible "\\u202e" escapes so they cannot
    reorder the surrounding text. The template also isolates such strings in <bdi>."""
    text = str(value)
    cut = len(text) - limit
    if cut > 0:
        text = f"{text[:limit]}… (+{cut:,} char{'s' if cut != 1 else ''})"
    return _BIDI_CONTROLS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


@lru_cache(maxsize=1)
def _environment() -> Environment:
    """The autoescaping environment of both pages; templates get `shown` as a filter, with its limits."""
    env = Environment(
        loader=PackageLoader("lucid_eval.reports", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["shown"] = shown
    env.globals.update(NAME_CHARS=NAME_CHARS, REASON_CHARS=REASON_CHARS, TEXT_CHARS=TEXT_CHARS)
    return env


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _num(value: Any, spec: str) -> str:
    return DASH if _missing(value) else format(value, spec)


def _pct(value: Any, decimals: int = 2) -> str:
    return DASH if _missing(value) else f"{value * 100:.{decimals}f} %"


def _agreement(value: Any) -> str:
    """Percent rounded down, so 99.999 % agreement never reads as a perfect 100 %."""
    if _missing(value):
        return DASH
    if value == 1:
        return "100 %"
    return f"{math.floor(value * 1e4) / 100:.2f} %"


def _sci(value: Any) -> str:
    if _missing(value):
        return DASH
    return "0" if value == 0 else f"{value:.2e}"


def _signed(value: Any) -> str:
    if _missing(value):
        return DASH
    if value == 0:
        return "±0"
    return f"{value:+.2e}" if abs(value) < 1e-3 else f"{value:+.4f}"


def _pp(value: Any) -> str:
    """An accuracy difference in percentage points."""
    if _missing(value):
        return DASH
    return "±0 pp" if value == 0 else f"{value * 100:+.3f} pp"


def _interval(lo: Any, hi: Any) -> str:
    return "" if _missing(lo) or _missing(hi) else f"{_pct(lo)} – {_pct(hi)}"


def _summary(info: RunInfo, reference: str | None) -> dict[str, Any]:
    corpus, counts = info.corpus, info.counts
    export = info.export or {}
    checkpoint = info.checkpoint or {}
    graphs = [
        (
            f"ONNX graph {name}",
            f"{g.get('path')} · sha256 {g.get('sha256')} · {g.get('precision')} · inputs "
            + ", ".join(f"{k} {v}" for k, v in (g.get("inputs") or {}).items())
            + " · outputs "
            + "; ".join(f"{k} {v}" for k, v in (g.get("how") or {}).items())
            + ("" if g.get("nsp_output") else " · no NSP head")
            + "".join(f" · warning: {w}" for w in g.get("warnings") or []),
        )
        for name, g in info.onnx_graphs.items()
    ]
    rows = [
        ("Command", info.command),
        ("Corpus", corpus.path),
        ("Corpus sha256", corpus.sha256),
        ("Corpus format", corpus.format),
        ("Export", export.get("dir")),
        ("Export manifest sha256", export.get("manifest_sha256")),
        ("Reference checkpoint", checkpoint.get("path")),
        ("Reference checkpoint sha256", checkpoint.get("sha256")),
        *graphs,
        ("Reference runtime", reference),
        ("Runtimes", ", ".join(map(str, info.runtimes))),
        ("Seed", info.seed),
        (
            "Tolerances",
            "; ".join(f"{p}: " + ", ".join(f"{k} {v}" for k, v in t.items()) for p, t in info.tolerances.items()),
        ),
        (
            "Verified before scoring",
            "; ".join(f"{k}: {v.get('verdict')}" for k, v in info.late_verification.items()),
        ),
        ("Max length", info.max_length),
        ("Started", info.started),
        ("Finished", info.finished),
    ]
    return {
        "rows": [(k, DASH if v in (None, "") else shown(v, TEXT_CHARS)) for k, v in rows],
        "counts": [(k, shown(getattr(counts, k), NAME_CHARS)) for k in ("read", "scored", "truncated", "rejected")],
        "versions": [(shown(k, NAME_CHARS), shown(v, REASON_CHARS)) for k, v in info.versions.items()],
        "host": [(shown(k, NAME_CHARS), shown(v, REASON_CHARS)) for k, v in info.host.items()],
    }


def _metric_rows(metrics: pd.DataFrame, reference: str | None) -> list[dict[str, Any]]:
    rows = []
    for m in metrics.to_dict("records"):
        rows.append(
            {
                "runtime": shown(m["runtime"], NAME_CHARS),
                "verdict": m["verdict"],
                "badge": _badge(m["verdict"]),
                "fallback": shown(m["fallback"], TEXT_CHARS),
                "is_reference": m["runtime"] == reference,
                "precision": shown(m["precision"], NAME_CHARS) or DASH,
                "n_pairs": _num(m["n_pairs"], ","),
                "n_failed": _num(m["n_failed"], ","),
                "has_failures": not _missing(m["n_failed"]) and m["n_failed"] > 0,
                "n_masked": _num(m["n_masked"], ","),
                "n_nsp": _num(m["n_nsp"], ","),
                "mlm_loss": _num(m["mlm_loss"], ".4f"),
                "mlm_perplexity": _num(m["mlm_perplexity"], ",.3f"),
                "mlm_accuracy": _pct(m["mlm_accuracy"]),
                "mlm_interval": _interval(m["mlm_accuracy_lo"], m["mlm_accuracy_hi"]),
                **(
                    {"nsp_loss": NO_HEAD, "nsp_accuracy": NO_HEAD, "nsp_interval": ""}
                    if "nsp" not in str(m["tasks"]).split()
                    else {
                        "nsp_loss": _num(m["nsp_loss"], ".4f"),
                        "nsp_accuracy": _pct(m["nsp_accuracy"]),
                        "nsp_interval": _interval(m["nsp_accuracy_lo"], m["nsp_accuracy_hi"]),
                    }
                ),
                "weighted_accuracy": _pct(m["weighted_accuracy"]),
                "wall_s": _num(m["wall_s"], ",.2f"),
                "pairs_per_second": _num(m["pairs_per_second"], ",.1f"),
                "tokens_per_second": _num(m["tokens_per_second"], ",.0f"),
                "p50_ms": _num(m["p50_ms"], ",.2f"),
                "p95_ms": _num(m["p95_ms"], ",.2f"),
                "providers": shown(m["providers"], REASON_CHARS) or DASH,
                "threads": _num(m["threads"], "d"),
                "versions": shown(m["versions"], REASON_CHARS) or DASH,
            }
        )
    return rows


_BADGE = {"PASS": "pass", "FAIL": "fail", "FALLBACK": "warn", "REFERENCE": "ref"}


def _badge(verdict: str) -> str:
    """CSS class of a verdict as recorded by the judge (INCONCLUSIVE and NOT VERIFIED are grey)."""
    return _BADGE.get(verdict, "na")


def _status(check: str) -> str:
    """CSS class of a recorded check result; empty means not judged."""
    return {"": "na", "PASS": "pass", "FAIL": "fail"}.get(check, "inconclusive")


def _tol(prefix: str, tol: Any, fmt: Callable[[float], str]) -> str:
    return "not judged" if _missing(tol) else f"tol {prefix} {fmt(tol)}"


def _logit_cell(c: pd.Series, task: str) -> dict[str, Any]:
    tol = _tol("≤", c["tol_logit"], lambda t: f"{t:.0e}")
    return {
        "value": _sci(c[f"max_abs_{task}_logit_diff"]),
        "details": [f"mean {_sci(c[f'mean_abs_{task}_logit_diff'])}", tol],
        "status": _status(c[f"check_{task}_logit"]),
    }


def _agreement_cell(c: pd.Series, task: str) -> dict[str, Any]:
    bounds = f"flip rate ≤ {_pct(c[f'{task}_flip_rate_hi'])} ({_pct(c['tol_confidence'], 0)} bound)"
    return {
        "value": _agreement(c[f"{task}_agreement"]),
        "details": [
            f"all: {_num(c[f'n_{task}_flips'], ',')} flips of {_num(c[f'{task}_compared'], ',')}",
            f"decisive (margin ≥ {_num(c['tol_margin'], 'g')}): {_agreement(c[f'{task}_decisive_agreement'])}, "
            f"{_num(c[f'n_{task}_decisive_flips'], ',')} of {_num(c[f'{task}_decisive'], ',')}",
            f"judged on {c['tol_agreement_on']}: {_tol('≥', c['tol_agreement'], lambda t: _pct(t, 1))}; {bounds}",
        ],
        "status": _status(c[f"check_{task}_agreement"]),
    }


def _loss_cell(c: pd.Series, task: str) -> dict[str, Any]:
    return {
        "value": _signed(c[f"d_{task}_loss"]),
        "details": [_tol("|Δ| ≤", c["tol_loss"], lambda t: f"{t:g}")],
        "status": _status(c[f"check_{task}_loss"]),
    }


def _comparison_rows(comparison: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for _, c in comparison.iterrows():
        rows.append(
            {
                "runtime": shown(c["runtime"], NAME_CHARS),
                "reference": shown(c["reference"], NAME_CHARS),
                "verdict": c["verdict"],
                "badge": _badge(c["verdict"]),
                "reasons": [shown(r, TEXT_CHARS) for r in c["verdict_reasons"].split(" | ") if r],
                "checks": [
                    _logit_cell(c, "mlm"),
                    _logit_cell(c, "nsp"),
                    _agreement_cell(c, "mlm"),
                    _agreement_cell(c, "nsp"),
                    _loss_cell(c, "mlm"),
                    _loss_cell(c, "nsp"),
                ],
                "effects": [shown(c["mlm_effect"], TEXT_CHARS), shown(c["nsp_effect"], TEXT_CHARS)],
                "d_accuracy": [
                    ("MLM", _pp(c["d_mlm_accuracy"])),
                    ("NSP", _pp(c["d_nsp_accuracy"])),
                    ("weighted", _pp(c["d_weighted_accuracy"])),
                ],
            }
        )
    return rows


def _banner(metrics: pd.DataFrame, comparison: pd.DataFrame, reference: str) -> dict[str, Any]:
    """The page's headline, from the recorded verdicts: "match" only when every one is PASS.
    `reference` is the reference's name as shown."""
    verdicts = [v for v in metrics["verdict"] if v != "REFERENCE"] if "verdict" in metrics else []
    n = len(comparison)
    if not n:
        return {
            "badge": "na",
            "label": "NO COMPARISON",
            "text": "No runtime was compared with the reference.",
            "runtimes": [],
        }
    if all(v == Verdict.PASS.value for v in verdicts):
        return {"badge": "pass", "label": "PASS", "runtimes": [],
                "text": f"All {n} runtime{'s' if n != 1 else ''} match {reference} within the stated tolerances."}  # fmt: skip
    others = [
        (shown(r, NAME_CHARS), v)
        for r, v in zip(metrics["runtime"], metrics["verdict"], strict=True)
        if v not in ("PASS", "REFERENCE")
    ]
    worst = next(v for v in ("FAIL", "FALLBACK", "INCONCLUSIVE", "NOT VERIFIED") if v in verdicts)
    return {"badge": _badge(worst), "label": worst, "runtimes": others,
            "text": f"Not every runtime is shown to match {reference}:"}  # fmt: skip


def _more(total: int, shown_rows: int) -> str:
    """How many rows the page leaves to the CSV, formatted; empty when it shows them all."""
    return f"{total - shown_rows:,}" if total > shown_rows else ""


def _flips(flips: pd.DataFrame) -> dict[str, Any]:
    """The first FLIPS_SHOWN flips; the per-runtime counts cover all of them."""
    counts = flips.groupby(["runtime", "kind"], sort=False).size().reset_index(name="n")
    rows = [
        {
            "runtime": shown(f["runtime"], NAME_CHARS),
            "kind": shown(f["kind"].upper(), NAME_CHARS),
            "id": shown(f["id"], NAME_CHARS),
            "position": _num(f["position"], "d") if f["kind"] == "mlm" else "",
            "text_a": shown(f["text_a"], TEXT_CHARS),
            "text_b": shown(f["text_b"], TEXT_CHARS),
            "label": shown(f["label"], NAME_CHARS),
            "reference_prediction": shown(f["reference_prediction"], NAME_CHARS),
            "prediction": shown(f["prediction"], NAME_CHARS),
        }
        for f in flips.head(FLIPS_SHOWN).to_dict("records")
    ]
    return {
        "total": f"{len(flips):,}",
        "rows": rows,
        "more": _more(len(flips), len(rows)),
        "counts": [
            (shown(r.runtime, NAME_CHARS), shown(r.kind.upper(), NAME_CHARS), f"{r.n:,}") for r in counts.itertuples()
        ],
    }


def _rejected(rejected: pd.DataFrame) -> dict[str, Any]:
    """The REASONS_SHOWN most common reasons and the first REJECTED_SHOWN rows: a bad value
    quoted in each reason makes every reason distinct, so neither list may grow with the corpus."""
    reasons = rejected["reason"].value_counts()
    other = reasons.iloc[REASONS_SHOWN:]
    rows = [
        {"line": _num(r["line"], "d"), "reason": shown(r["reason"], REASON_CHARS), "raw": shown(r["raw"], REASON_CHARS)}
        for r in rejected.head(REJECTED_SHOWN).to_dict("records")
    ]
    return {
        "total": f"{len(rejected):,}",
        "reasons": [(shown(reason, REASON_CHARS), f"{n:,}") for reason, n in reasons.head(REASONS_SHOWN).items()],
        "other_reasons": (f"{len(other):,}", f"{other.sum():,}") if len(other) else None,
        "rows": rows,
        "more": _more(len(rejected), len(rows)),
    }


def _reference(run: RunTables) -> str | None:
    ref = run.run_info.reference
    if not ref and not run.comparison.empty:
        ref = run.comparison["reference"].iloc[0]
    return str(ref) if ref else None


def report_context(run: RunTables) -> dict[str, Any]:
    """Everything the template shows, already formatted as strings (and figures as data URIs);
    `localize` is the section of RUN_DIR/localize, when `lucid-eval localize` wrote one there."""
    from lucid_eval.reports.localize import run_localize_section  # it builds on this module's environment

    reference = _reference(run)
    shown_reference = shown(reference, NAME_CHARS) if reference else DASH
    comparison = _comparison_rows(run.comparison)
    corpus = run.run_info.corpus.path
    plots = [
        (
            "Accuracy per runtime",
            "Points are accuracies, bars their 95 % intervals (sampling "
            "uncertainty). Every runtime scores the same pairs, so any gap comes from flipped predictions.",
            accuracy_figure(run.metrics, reference),
        ),
        (
            "Numeric distance from the reference",
            "Cumulative share of examples whose largest "
            "|Δ MLM logit| is at most x. Curves further left are closer to the reference.",
            logit_diff_figure(run.examples, run.comparison, reference),
        ),
        ("Speed", "Throughput over the whole run and latency percentiles.", throughput_figure(run.metrics, reference)),
    ]
    return {
        "title": "lucid-eval report",
        "corpus_name": shown(Path(corpus).name, REASON_CHARS) if corpus else "",
        "version": __version__,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "reference": shown_reference,
        "summary": _summary(run.run_info, reference),
        "metrics": _metric_rows(run.metrics, reference),
        "comparison": comparison,
        "banner": _banner(run.metrics, run.comparison, shown_reference),
        "verdict_help": [(v.value, _badge(v.value), text) for v, text in VERDICT_HELP.items()],
        "plots": [{"title": t, "caption": c, "uri": u} for t, c, u in plots if u is not None],
        "flips": _flips(run.flips),
        "rejected": _rejected(run.rejected),
        "localize": run_localize_section(run.run_dir, run.run_info),
    }


def render_report(run: RunTables) -> str:
    """Render the report page for an already loaded run."""
    return _environment().get_template("report.html.j2").render(**report_context(run))


def build_report(run_dir: str | os.PathLike[str]) -> Path:
    """Read a run directory, write RUN_DIR/report.html atomically, return its path."""
    run = load_run(run_dir, report_only=True)
    path = run.run_dir / REPORT_FILE
    atomic_write_text(path, render_report(run))
    return path
