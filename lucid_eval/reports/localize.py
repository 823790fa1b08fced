"""localize.html: error vs depth per runtime, and each boundary's numbers and how it was found.

Reads OUT/localize.csv and OUT/localize.json as `lucid-eval localize` wrote them. Flags and shares
come from the harness; this module only draws and formats them. `localize_section` is the HTML
fragment (a <section>), for embedding in other pages: `run_localize_section` gives a score run's
report.html the one in RUN_DIR/localize. `build_localize_report` writes the page.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lucid_eval import __version__
from lucid_eval.harness.run_info import RunInfo
from lucid_eval.harness.tables import LOCALIZE_DIR, atomic_write_text
from lucid_eval.reports.html import _environment
from lucid_eval.reports.plots import _GRID, _TEXT, _WIDTH_IN, figure_to_data_uri, plain, runtime_colors

RUN_FOLDER = LOCALIZE_DIR  # RUN_DIR/localize, where `localize --examples-from RUN_DIR` writes
SECTION = """\
<section id="localize">
<h2>Where does it diverge?</h2>
<p class="muted">{{ info.pairs }} pairs{% if flipped %}, those with a flipped prediction in this run{% endif %}, the
same masked inputs as scoring (seed {{ info.seed }}, max length {{ info.max_length }}), against
<bdi>{{ info.reference }}</bdi>. Errors over unpadded positions (pooler and NSP logits: per example).
{{ info.session }}.</p>
<p class="muted">Rule: {{ info.rule }}</p>
{% if graphs %}<p class="muted">Foreign graphs:</p>
<ul>{% for name, text in graphs %}<li><bdi>{{ name | shown(NAME_CHARS) }}</bdi>: <bdi>{{ text | shown(TEXT_CHARS) }}</bdi></li>
{% endfor %}</ul>{% endif %}
<ul>{% for line in lines %}<li><bdi>{{ line | shown(TEXT_CHARS) }}</bdi></li>{% endfor %}</ul>
{% if figure %}<img alt="relative error and max |Δ| vs depth per runtime" src="{{ figure }}">{% endif %}
{% for runtime, rows in tables %}
<h3><bdi>{{ runtime | shown(NAME_CHARS) }}</bdi></h3>
<div class="scroll"><table>
<thead><tr><th>Boundary</th><th>Depth</th><th>max |Δ|</th><th>Rel. error</th><th>Share</th><th>Cosine</th>
<th>Over share</th><th>How it was found</th></tr></thead>
<tbody>{% for r in rows %}<tr{% if r.flagged %} class="flagged"{% endif %}><td><code>{{ r.boundary }}</code></td>
<td>{{ r.depth }}</td><td>{{ r.max_abs }}</td><td>{{ r.rel_err }}</td><td>{{ r.share }}</td><td>{{ r.cosine }}</td>
<td>{{ r.flag }}</td><td class="how"><bdi>{{ r.how_found | shown(REASON_CHARS) }}</bdi></td></tr>{% endfor %}</tbody>
</table></div>
{% endfor %}
</section>
"""

PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="lucid-eval {{ version }}">
<title>lucid-eval localize</title>
<style>
body { margin: 0; color: #1f2328; overflow-wrap: break-word; font: 14px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 22px; } h2 { font-size: 17px; border-bottom: 1px solid #d8dee4; padding-bottom: 4px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 8px; border-bottom: 1px solid #d8dee4; text-align: right; }
th:first-child, td:first-child, td.how, th:last-child { text-align: left; }
td { white-space: nowrap; } td code { overflow-wrap: normal; }
td.how { color: #656d76; font-size: 12px; white-space: normal; }
tr.flagged td { background: #ffebe9; }
thead th { background: #f6f8fa; }
code { background: #f6f8fa; padding: 1px 4px; border-radius: 4px; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
img { max-width: 100%; }
.muted { color: #656d76; }
</style>
</head>
<body><main>
<h1>lucid-eval localize</h1>
<p class="muted">{{ source }} <code><bdi>{{ model | shown(REASON_CHARS) }}</bdi></code>, corpus
<code><bdi>{{ info.corpus.path | shown(REASON_CHARS) }}</bdi></code>.
Command: <code><bdi>{{ info.command | shown(TEXT_CHARS) }}</bdi></code></p>
{{ section }}
</main></body>
</html>
"""


def _e(value: Any) -> str:
    return "—" if value is None or pd.isna(value) else ("0" if value == 0 else f"{value:.2e}")


def _path(rows: pd.DataFrame, branch: str) -> pd.DataFrame:
    """The boundaries on one head's path, by depth: the encoder's, then the head's."""
    trunk = rows[rows["branch"] == "trunk"]
    head = rows[rows["branch"] == branch]
    last = trunk.tail(1) if branch == "nsp" else trunk
    return pd.concat([last, head]).sort_values("depth", kind="stable")


def localize_figure(table: pd.DataFrame) -> str | None:
    """Relative error (with each runtime's share, dotted) and max |Δ| vs depth, log scale; the MLM
    path solid, the NSP head dashed; a ring on each runtime's first boundary over its share."""
    measured = table.dropna(subset=["rel_err"])
    if measured.empty:
        return None
    runtimes = list(dict.fromkeys(table["runtime"]))
    colors = runtime_colors(runtimes)
    positive = measured[["rel_err", "max_abs"]].to_numpy(float)
    positive = positive[np.isfinite(positive) & (positive > 0)]
    floor = 10 ** (math.floor(math.log10(positive.min())) - 1) if positive.size else 1e-12
    fig = Figure(figsize=(_WIDTH_IN, 4.4), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    for ax, column, title in (
        (axes[0], "rel_err", "relative error ‖Δ‖ / ‖ref‖"),
        (axes[1], "max_abs", "max |Δ|"),
    ):
        for runtime in runtimes:
            rows = measured[measured["runtime"] == runtime]
            for branch, style in (("mlm", "-"), ("nsp", "--")):
                if not (rows["branch"] == branch).any():  # a graph without that head (no NSP head)
                    continue
                path = _path(rows, branch)
                y = np.maximum(path[column].to_numpy(float), floor)
                ax.plot(path["depth"], y, style, marker="o", markersize=4, color=colors[runtime], linewidth=1.8)
            if column == "rel_err":
                share = _path(table[table["runtime"] == runtime], "mlm")
                ax.plot(share["depth"], share["share"], ":", color=colors[runtime], linewidth=1.2)
            first = rows[rows["flagged"]].sort_values("depth", kind="stable").head(1)
            ax.plot(first["depth"], np.maximum(first[column].to_numpy(float), floor), "o", markersize=12,
                    markerfacecolor="none", markeredgecolor="#c44e52", markeredgewidth=2)  # fmt: skip
        ax.set_yscale("log")
        ax.set_title(title, fontsize=11, color=_TEXT, loc="left")
        ax.grid(color=_GRID, linewidth=0.8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    ticks = table.drop_duplicates("boundary").groupby("depth", sort=True)["label"].agg(" /\n".join)
    for ax in axes:
        ax.set_xticks(list(ticks.index), list(ticks), fontsize=7, rotation=90)
        ax.set_xlabel("depth (boundary)", fontsize=9, color=_TEXT)
    handles = [Line2D([], [], color=colors[r], linewidth=2, label=plain(r)) for r in runtimes] + [
        Line2D([], [], color="#777777", linestyle="--", label="NSP head"),
        Line2D([], [], color="#777777", linestyle=":", label="share of the budget\n(encoder and MLM head)"),
        Line2D([], [], color="#c44e52", marker="o", markerfacecolor="none", linestyle="", label="first over share"),
    ]
    fig.legend(handles=handles, fontsize=8, frameon=False, loc="outside right upper")
    return figure_to_data_uri(fig)


_STATUS = {"absent": "absent", "not mapped": "not mapped"}


def _graph_line(g: dict[str, Any]) -> str:
    """A foreign graph as localize.json records it: file, fingerprint, how it is fed and read."""
    inputs = ", ".join(f"{k} {v}" for k, v in (g.get("inputs") or {}).items())
    outputs = "; ".join(f"{k} {v}" for k, v in (g.get("how") or {}).items())
    return (
        f"{g.get('path')} · sha256 {g.get('sha256')} · {g.get('precision')} · inputs {inputs} · outputs {outputs}"
        + ("" if g.get("nsp_output") else " · no NSP head")
        + "".join(f" · warning: {w}" for w in g.get("warnings") or [])
    )


def localize_section(table: pd.DataFrame, info: dict[str, Any]) -> Markup:
    """The <section> of a localisation: rule, foreign graphs, summary lines, figure, and one table per runtime."""
    tables = []
    for runtime, rows in table.groupby("runtime", sort=False):
        formatted = [
            {
                "boundary": r["boundary"],
                "depth": int(r["depth"]),
                "max_abs": _e(r["max_abs"]),
                "rel_err": _e(r["rel_err"]),
                "share": _e(r["share"]),
                "cosine": "—" if pd.isna(r["cosine"]) else f"{r['cosine']:.8f}",
                "flagged": bool(r["flagged"]),
                "flag": "yes" if r["flagged"] else _STATUS.get(r["status"], ""),
                "how_found": r["how_found"],
            }
            for _, r in rows.iterrows()
        ]
        tables.append((runtime, formatted))
    lines = [s["text"] for s in info.get("runtimes", [])]
    graphs = [(name, _graph_line(g)) for name, g in (info.get("onnx_graphs") or {}).items()]
    template = _environment().from_string(SECTION)
    return Markup(
        template.render(
            info=info,
            lines=lines,
            tables=tables,
            graphs=graphs,
            flipped=bool(info.get("run")),
            figure=localize_figure(table),
        )  # fmt: skip
    )


def load_localize(out_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    out = Path(out_dir)
    table = pd.read_csv(out / "localize.csv", keep_default_na=True)
    table["how_found"] = table["how_found"].fillna("")
    table["flagged"] = table["flagged"].astype(str).isin(("True", "true", "1"))
    if "status" not in table:  # written before graphs could lack a head
        table["status"] = np.where(table["tensor"].isna(), "not mapped", "mapped")
    return table, json.loads((out / "localize.json").read_text(encoding="utf-8"))


STALE = """\
<section id="localize">
<h2>Where does it diverge?</h2>
<p class="note"><bdi>{{ text | shown(TEXT_CHARS) }}</bdi></p>
</section>
"""


def run_localize_section(run_dir: str | os.PathLike[str], run_info: RunInfo) -> Markup | None:
    """RUN_DIR/localize as a section of the run's report.html: None when there is none, a note instead
    when it cannot be read or was written for an earlier run in the same directory."""
    out = Path(run_dir) / RUN_FOLDER
    if not (out / "localize.csv").is_file():
        return None
    try:
        table, info = load_localize(out)
        recorded = (info.get("run") or {}).get("started")
        if recorded is not None and recorded != run_info.started:
            text = (
                f"{RUN_FOLDER}/ localised the flips of an earlier run in this directory (started {recorded}); "
                f"run lucid-eval localize --examples-from {run_dir} again"
            )
        else:
            return localize_section(table, info)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        text = f"{RUN_FOLDER}/ could not be read ({type(exc).__name__}: {exc}); run lucid-eval localize again"
    return Markup(_environment().from_string(STALE).render(text=text))


def build_localize_report(out_dir: str | os.PathLike[str]) -> Path:
    """Write OUT/localize.html from OUT/localize.csv and OUT/localize.json."""
    table, info = load_localize(out_dir)
    export, checkpoint = info.get("export"), info.get("checkpoint") or {}
    source, model = ("Export", export["dir"]) if export else ("Checkpoint", checkpoint.get("path"))
    section = localize_section(table, info)
    html = _environment().from_string(PAGE).render(version=__version__, info=info, source=source, model=model,
                                                   section=section)  # fmt: skip
    path = Path(out_dir) / "localize.html"
    atomic_write_text(path, html)
    return path
