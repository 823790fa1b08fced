"""Report figures, rendered off-screen with Agg and returned as PNG data URIs.

Figures are built with `matplotlib.figure.Figure` (no pyplot), so importing this
module neither switches a user's backend nor keeps global figure state.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, PercentFormatter

_PALETTE = (
    "#4c72b0",
    "#dd8452",
    "#55a868",
    "#c44e52",
    "#8172b3",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
)
_DPI = 144
_WIDTH_IN = 11.0
_TEXT = "#222222"
_GRID = "#e3e6ea"


def runtime_colors(runtimes: list[str]) -> dict[str, str]:
    """A stable colour per runtime, so a runtime looks the same in every figure."""
    return {r: _PALETTE[i % len(_PALETTE)] for i, r in enumerate(runtimes)}


def figure_to_data_uri(fig: Figure) -> str:
    """Encode a figure as a self-contained `data:image/png;base64,...` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _new_figure(n_rows: int, n_cols: int, height_in: float) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(_WIDTH_IN, height_in), layout="constrained")
    axes = fig.subplots(1, n_cols, sharey=True, squeeze=False)[0]
    for ax in axes:
        ax.set_ylim(n_rows - 0.5, -0.5)  # first runtime (the reference) on top
        ax.grid(axis="x", color=_GRID, linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.tick_params(colors=_TEXT, labelsize=9)
    return fig, list(axes)


def _height(n_rows: int) -> float:
    return 1.4 + 0.42 * n_rows


def plain(text: str) -> str:
    """Text matplotlib shows as written: a `$` would start mathtext (and can fail the whole figure)."""
    return text.replace("$", r"\$")


def _runtime_labels(runtimes: list[str], reference: str | None) -> list[str]:
    return [plain(f"{r} (reference)" if r == reference else r) for r in runtimes]


def accuracy_figure(metrics: pd.DataFrame, reference: str | None) -> str | None:
    """MLM and NSP accuracy per runtime as points with 95 % interval error bars."""
    if metrics.empty:
        return None
    runtimes = list(metrics["runtime"])
    colors = runtime_colors(runtimes)
    fig, axes = _new_figure(len(runtimes), 2, _height(len(runtimes)))
    for ax, task in zip(axes, ("mlm", "nsp"), strict=True):
        acc = metrics[f"{task}_accuracy"].to_numpy(float)
        lo = metrics[f"{task}_accuracy_lo"].to_numpy(float)
        hi = metrics[f"{task}_accuracy_hi"].to_numpy(float)
        ax.set_title(f"{task.upper()} accuracy (95 % interval)", fontsize=11, color=_TEXT, loc="left")
        if np.isnan(acc).all():
            ax.text(
                0.5,
                0.5,
                "no NSP labels in this corpus",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="#777777",
                fontsize=10,
            )
            ax.set_xticks([])
            continue
        for i, runtime in enumerate(runtimes):
            if math.isnan(acc[i]):
                continue
            err = None
            if not (math.isnan(lo[i]) or math.isnan(hi[i])):
                err = [[max(acc[i] - lo[i], 0.0)], [max(hi[i] - acc[i], 0.0)]]
            ax.errorbar(
                acc[i],
                i,
                xerr=err,
                fmt="o",
                color=colors[runtime],
                ecolor=colors[runtime],
                capsize=5,
                markersize=7,
                elinewidth=2,
            )
            ax.annotate(
                f"{acc[i]:.2%}",
                (acc[i], i),
                xytext=(0, 8),
                textcoords="offset points",
                ha="center",
                fontsize=8,
                color=_TEXT,
            )
        if reference in runtimes:
            ref = runtimes.index(reference)
            if not math.isnan(acc[ref]):
                ax.axvline(acc[ref], color="#999999", linestyle="--", linewidth=1, zorder=0)
        ax.xaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=1))
        ax.margins(x=0.25)
        ax.set_xlabel("accuracy (dashed line: reference)", fontsize=9, color=_TEXT)
    axes[0].set_yticks(range(len(runtimes)), _runtime_labels(runtimes, reference))
    return figure_to_data_uri(fig)


def _ecdf(values: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Step coordinates of the ECDF; exact zeros sit at `floor` so a log axis can show them."""
    ordered = np.sort(values)
    n = len(ordered)
    zeros = int((ordered <= 0).sum())
    positives = ordered[zeros:]
    x = np.concatenate([[floor], positives])
    y = np.concatenate([[zeros / n], np.arange(zeros + 1, n + 1) / n])
    return x, y


def logit_diff_figure(examples: pd.DataFrame, comparison: pd.DataFrame, reference: str | None) -> str | None:
    """ECDF of per-example max |Δ MLM logit| vs the reference, log x-axis, per runtime."""
    scored = examples[(examples["runtime"] != reference) & ~examples["failed"]]
    scored = scored.dropna(subset=["max_abs_mlm_logit_diff"])
    if scored.empty:
        return None
    runtimes = list(dict.fromkeys(scored["runtime"]))
    all_runtimes = list(dict.fromkeys([reference, *runtimes] if reference else runtimes))
    colors = runtime_colors(all_runtimes)
    diffs = {r: scored.loc[scored["runtime"] == r, "max_abs_mlm_logit_diff"].to_numpy(float) for r in runtimes}
    positive = np.concatenate([d[d > 0] for d in diffs.values()])
    tolerances = sorted({float(t) for t in comparison.get("tol_logit", pd.Series(dtype=float)).dropna()})
    low = min([*positive.tolist(), *tolerances], default=1e-6)
    floor = 10 ** (math.floor(math.log10(low)) - 1)

    fig = Figure(figsize=(_WIDTH_IN, 4.2), layout="constrained")
    ax = fig.subplots()
    for runtime in runtimes:
        d = diffs[runtime]
        x, y = _ecdf(d, floor)
        share_zero = float((d <= 0).mean())
        label = plain(f"{runtime}: max {d.max():.2g}, {share_zero:.0%} exactly 0 (n={len(d)})")
        ax.step(x, y, where="post", color=colors[runtime], linewidth=2, label=label)
        ax.plot([x[-1], x[-1] * 3], [1, 1], color=colors[runtime], linewidth=2)
    for tol in tolerances:
        ax.axvline(tol, color="#c44e52", linestyle="--", linewidth=1.2, label=f"logit tolerance {tol:.0e}")
    ax.axvspan(floor / 3, floor * 3, color="#eeeeee", zorder=0)
    ax.set_xscale("log")
    ax.set_xlim(floor / 3, None)
    ax.set_ylim(0, 1.02)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "0" if math.isclose(v, floor) else f"{v:.0e}"))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    ax.set_xlabel(
        "per-example max |Δ MLM logit| vs reference (log scale; grey band = exactly 0)", fontsize=9, color=_TEXT
    )
    ax.set_ylabel("share of examples ≤ x", fontsize=9, color=_TEXT)
    ax.set_title(
        f"How far each runtime's MLM logits are from {reference or 'the reference'}",
        fontsize=11,
        color=_TEXT,
        loc="left",
    )
    ax.grid(color=_GRID, linewidth=0.8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    return figure_to_data_uri(fig)


def _bar_labels(ax: Axes, values: np.ndarray, fmt: str) -> None:
    for i, v in enumerate(values):
        if not math.isnan(v):
            ax.annotate(
                format(v, fmt), (v, i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8, color=_TEXT
            )


def throughput_figure(metrics: pd.DataFrame, reference: str | None) -> str | None:
    """Pairs/s and tokens/s bars per runtime, plus p50 (solid) and p95 (light) latency."""
    if metrics.empty:
        return None
    runtimes = list(metrics["runtime"])
    colors = [runtime_colors(runtimes)[r] for r in runtimes]
    rows = np.arange(len(runtimes))
    fig, axes = _new_figure(len(runtimes), 3, _height(len(runtimes)))
    for ax, column, title, fmt in (
        (axes[0], "pairs_per_second", "pairs / s (higher is better)", ",.1f"),
        (axes[1], "tokens_per_second", "tokens / s (higher is better)", ",.0f"),
    ):
        values = metrics[column].to_numpy(float)
        ax.barh(rows, np.nan_to_num(values), color=colors, height=0.6)
        _bar_labels(ax, values, fmt)
        ax.set_title(title, fontsize=11, color=_TEXT, loc="left")
        ax.margins(x=0.3)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    p50 = metrics["p50_ms"].to_numpy(float)
    p95 = metrics["p95_ms"].to_numpy(float)
    ax = axes[2]
    ax.barh(rows, np.nan_to_num(p95), color=colors, alpha=0.35, height=0.6)
    ax.barh(rows, np.nan_to_num(p50), color=colors, height=0.6)
    for i in rows:
        if not math.isnan(p95[i]):
            ax.annotate(
                f"p50 {p50[i]:.1f} · p95 {p95[i]:.1f} ms",
                (p95[i], i),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                color=_TEXT,
            )
    ax.set_title("latency, ms (lower is better)", fontsize=11, color=_TEXT, loc="left")
    ax.margins(x=0.6)
    legend = [Patch(color="#888888", label="p50"), Patch(color="#888888", alpha=0.35, label="p95")]
    ax.legend(handles=legend, fontsize=8, frameon=False, loc="lower right")
    axes[0].set_yticks(rows, _runtime_labels(runtimes, reference))
    return figure_to_data_uri(fig)
