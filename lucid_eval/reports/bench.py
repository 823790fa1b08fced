"""The benchmark's page: one table against the targets and one figure, from bench.csv and bench.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lucid_eval import __version__
from lucid_eval.harness.tables import atomic_write_text
from lucid_eval.reports.html import _environment
from lucid_eval.reports.plots import figure_to_data_uri, runtime_colors

SHOWN = {
    "name": "Runtime",
    "implementation": "Implementation",
    "precision": "Precision",
    "pairs_per_second": "Pairs/s",
    "tokens_per_second": "Tokens/s",
    "speedup": "× baseline",
    "vs_optimum": "× optimum",
    "mlm_loss": "MLM loss",
    "d_mlm_loss": "Δ MLM loss",
    "mlm_accuracy": "MLM acc",
    "nsp_accuracy": "NSP acc",
    "useful_gflops": "Useful GFLOP/s",
    "roofline": "of matmul rate",
    "peak_rss_mb": "Peak RSS MB",
}


def bench_figure(table: pd.DataFrame) -> str:
    table = table[table["pairs_per_second"].notna()]  # a peer that is not installed has no bar
    fig = Figure(figsize=(11, 1.2 + 0.5 * len(table)), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    colors = runtime_colors(list(table["name"]))
    y = np.arange(len(table))
    for ax, column, label in (
        (left, "pairs_per_second", "pairs / s"),
        (right, "roofline", "useful FLOP rate / fp32 matmul rate"),
    ):
        ax.barh(y, table[column], color=[colors[n] for n in table["name"]])
        for yi, v in zip(y, table[column], strict=True):
            ax.text(v, yi, f" {v:.2f}" if column == "roofline" else f" {v:.1f}", va="center", fontsize=9)
        ax.set_xlabel(label)
        ax.grid(axis="x", color="#e3e6ea")
        ax.set_axisbelow(True)
    right.axvline(0.75, color="#c44e52", linestyle="--", linewidth=1)
    left.set_yticks(y, table["name"])
    left.invert_yaxis()
    return figure_to_data_uri(fig)


def _fmt(column: str, value) -> str:
    if isinstance(value, str):
        return value
    if value is None or pd.isna(value):
        return "—"
    if column in ("roofline", "mlm_accuracy", "nsp_accuracy"):
        return f"{value:.1%}"
    if column in ("speedup", "vs_optimum"):
        return f"{value:.2f}×"
    if column == "d_mlm_loss":
        return f"{value:+.2e}"
    if column in ("mlm_loss",):
        return f"{value:.4f}"
    return f"{value:,.1f}"


def build_bench_report(out_dir: str | os.PathLike[str]) -> Path:
    out = Path(out_dir)
    table = pd.read_csv(out / "bench.csv")
    info = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    rows = [[_fmt(c, r[c]) for c in SHOWN] for _, r in table.iterrows()]
    html = (
        _environment()
        .get_template("bench.html.j2")
        .render(
            version=__version__,
            info=info,
            header=list(SHOWN.values()),
            rows=rows,
            figure=bench_figure(table),
            overhead_line=overhead_line,
            profile_line=profile_line,
            profiles=profiles(info),
            gemm_line=gemm_line,
            batches=_batches(info),
        )
    )
    path = out / "bench.html"
    atomic_write_text(path, html)
    atomic_write_text(out / "bench.md", bench_markdown(header=list(SHOWN.values()), rows=rows, info=info))
    return path


def bench_markdown(header: list[str], rows: list[list[str]], info: dict) -> str:
    """The same table as Markdown, for BENCHMARKS.md."""
    lines = [
        f"Model `{info['model']}`, {info['pairs']} pairs (mean {info['mean_tokens']:.0f} tokens), "
        f"{info['threads']} threads,{_batches(info)} {info['host']}; fp32 matmul rate {info['matmul_gflops']:.1f} GFLOP/s; "
        f"weights {info['model_mb']:.0f} MB.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        *([overhead_line(info["suite_overhead"]), ""] if info.get("suite_overhead") else []),
        *(line for name, profile in profiles(info).items() for line in (profile_line(name, profile), "")),
        *([gemm_line(info), ""] if info.get("ort_cpu_gemms") else []),
        f"Command: `{info['command']}`",
    ]
    return "\n".join(lines) + "\n"


def overhead_line(overhead: dict) -> str:
    """The suite's own time (everything `score` and its report do besides the runtime) per model second."""
    phases = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in overhead.items() if k.endswith("_s") and k != "model_s")
    return (f"Suite overhead: `score` and its report on {overhead['pairs']} pairs with {overhead['runtime']} spend "
            f"{overhead['share']:.1%} of the model's {overhead['model_s']:.2f} s besides it ({phases}).")  # fmt: skip


def _batches(info: dict) -> str:
    """' batches of at most N tokens / M pairs,' for bench.json files that record it, else ''."""
    b = info.get("batches")
    return f" batches of at most {b['token_budget']} tokens / {b['max_batch']} pairs," if b else ""


def gemm_line(info: dict) -> str:
    """How fast ort-cpu's GEMM operators run, how much of its time they take, and its padding."""
    g = info["ort_cpu_gemms"]
    return (f"ort-cpu's GEMM operators over its padded batches: MatMul {g['MatMul_gflops']:.0f} GFLOP/s, Attention "
            f"{g['Attention_gflops']:.0f} GFLOP/s (matmul rate {info['matmul_gflops']:.0f}), {g['gemm_share']:.1%} of "
            f"its time; {g['padding']:.3f} padded tokens per real token.")  # fmt: skip


def profiles(info: dict) -> dict[str, dict[str, float]]:
    """Each profiled runtime's seconds per operator type (bench.json before int8 was profiled too
    holds only ort-cpu's)."""
    return info.get("ort_profiles_s") or (
        {"ort-cpu": info["ort_cpu_profile_s"]} if info.get("ort_cpu_profile_s") else {}
    )


def profile_line(name: str, profile: dict[str, float]) -> str:
    """A runtime's time per operator type, from ONNX Runtime's profiler, largest first."""
    total = sum(profile.values())
    shares = ", ".join(f"{op} {seconds / total:.1%}" for op, seconds in profile.items() if seconds / total >= 0.005)
    return f"{name}'s time by operator (ONNX Runtime profiler, {total:.2f} s): {shares}."
