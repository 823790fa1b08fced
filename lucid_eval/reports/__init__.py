"""Run tables on disk and the self-contained HTML report; never imports torch or onnxruntime."""

from lucid_eval.reports.html import build_report, render_report, report_context
from lucid_eval.reports.tables import (
    COMPARISON_SCHEMA,
    EXAMPLES_SCHEMA,
    FLIPS_SCHEMA,
    METRICS_SCHEMA,
    REJECTED_SCHEMA,
    RunTables,
    atomic_write_text,
    coerce_table,
    empty_table,
    load_run,
    write_run_tables,
)

__all__ = [
    "COMPARISON_SCHEMA",
    "EXAMPLES_SCHEMA",
    "FLIPS_SCHEMA",
    "METRICS_SCHEMA",
    "REJECTED_SCHEMA",
    "RunTables",
    "atomic_write_text",
    "build_report",
    "coerce_table",
    "empty_table",
    "load_run",
    "render_report",
    "report_context",
    "write_run_tables",
]
