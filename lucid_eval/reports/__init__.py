"""Run tables on disk and the self-contained HTML report; never imports torch or onnxruntime."""

from lucid_eval.harness.run_info import RunInfo  # run.json, the run's provenance, settings and counts
from lucid_eval.harness.tables import (  # the run tables the report reads
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
from lucid_eval.reports.html import build_report, render_report, report_context

__all__ = [
    "COMPARISON_SCHEMA",
    "EXAMPLES_SCHEMA",
    "FLIPS_SCHEMA",
    "METRICS_SCHEMA",
    "REJECTED_SCHEMA",
    "RunInfo",
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
