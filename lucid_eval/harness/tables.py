"""The run's tables on disk: one schema, atomic writes, typed reads.

The harness writes a run directory through `write_run_tables`; `lucid-eval report`
reads it back through `load_run`. Both sides coerce every contract column to the
same dtype, so a table survives the CSV round trip unchanged.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from lucid_eval.harness.run_info import RunInfo

# Column kinds: "str" (missing -> ""), "float" (missing -> NaN),
# "int" (nullable Int64, missing -> <NA>), "bool" (no missing values allowed).
Schema = dict[str, str]

METRICS_SCHEMA: Schema = {
    "runtime": "str",
    "n_pairs": "int",
    "n_failed": "int",
    "n_masked": "int",
    "n_nsp": "int",
    "mlm_loss": "float",
    "mlm_perplexity": "float",
    "mlm_accuracy": "float",
    "mlm_accuracy_lo": "float",
    "mlm_accuracy_hi": "float",
    "nsp_loss": "float",
    "nsp_accuracy": "float",
    "nsp_accuracy_lo": "float",
    "nsp_accuracy_hi": "float",
    "weighted_accuracy": "float",
    "wall_s": "float",
    "pairs_per_second": "float",
    "tokens_per_second": "float",
    "p50_ms": "float",
    "p95_ms": "float",
    "providers": "str",
    "fallback": "str",
    "verdict": "str",
    "threads": "int",
    "precision": "str",
    "versions": "str",
    "tasks": "str",  # the heads the runtime's graph has: "mlm nsp", or "mlm" (e.g. an Optimum fill-mask graph)
}

# One row per compared runtime, with the verdict and every check as judged by lucid_eval.verdict:
# reports render these columns and never judge. Agreement columns count all compared predictions;
# decisive ones are those whose reference margin is at least tol_margin; flip_rate_lo/hi are the
# one-sided bounds of the set the tolerance applies to (tol_agreement_on).
COMPARISON_SCHEMA: Schema = {
    "runtime": "str",
    "reference": "str",
    "verdict": "str",
    "verdict_reasons": "str",
    "d_mlm_loss": "float",
    "d_mlm_accuracy": "float",
    "d_nsp_loss": "float",
    "d_nsp_accuracy": "float",
    "d_weighted_accuracy": "float",
    "max_abs_mlm_logit_diff": "float",
    "mean_abs_mlm_logit_diff": "float",
    "max_abs_nsp_logit_diff": "float",
    "mean_abs_nsp_logit_diff": "float",
    "n_failed": "int",
    "mlm_compared": "int",
    "mlm_agreement": "float",
    "n_mlm_flips": "int",
    "mlm_decisive": "int",
    "mlm_decisive_agreement": "float",
    "n_mlm_decisive_flips": "int",
    "mlm_flip_rate_lo": "float",
    "mlm_flip_rate_hi": "float",
    "mlm_paired_n": "int",
    "mlm_gained": "int",
    "mlm_lost": "int",
    "mlm_accuracy_diff": "float",
    "mlm_accuracy_diff_lo": "float",
    "mlm_accuracy_diff_hi": "float",
    "mlm_mcnemar_p": "float",
    "mlm_effect": "str",
    "nsp_compared": "int",
    "nsp_agreement": "float",
    "n_nsp_flips": "int",
    "nsp_decisive": "int",
    "nsp_decisive_agreement": "float",
    "n_nsp_decisive_flips": "int",
    "nsp_flip_rate_lo": "float",
    "nsp_flip_rate_hi": "float",
    "nsp_paired_n": "int",
    "nsp_gained": "int",
    "nsp_lost": "int",
    "nsp_accuracy_diff": "float",
    "nsp_accuracy_diff_lo": "float",
    "nsp_accuracy_diff_hi": "float",
    "nsp_mcnemar_p": "float",
    "nsp_effect": "str",
    "tol_logit": "float",
    "tol_agreement": "float",
    "tol_loss": "float",
    "tol_agreement_on": "str",
    "tol_margin": "float",
    "tol_confidence": "float",
    "check_outputs": "str",
    "check_mlm_logit": "str",
    "check_nsp_logit": "str",
    "check_mlm_agreement": "str",
    "check_nsp_agreement": "str",
    "check_mlm_loss": "str",
    "check_nsp_loss": "str",
}

EXAMPLES_SCHEMA: Schema = {
    "index": "int",
    "id": "str",
    "runtime": "str",
    "n_tokens": "int",
    "n_masked": "int",
    "mlm_loss_sum": "float",
    "mlm_correct": "int",
    "nsp_logit_0": "float",
    "nsp_logit_1": "float",
    "nsp_pred": "int",
    "nsp_label": "int",
    "max_abs_mlm_logit_diff": "float",
    "failed": "bool",
}

FLIPS_SCHEMA: Schema = {
    "runtime": "str",
    "id": "str",
    "kind": "str",
    "position": "int",
    "text_a": "str",
    "text_b": "str",
    "label": "str",
    "reference_prediction": "str",
    "prediction": "str",
}

REJECTED_SCHEMA: Schema = {"line": "int", "reason": "str", "raw": "str"}

SCHEMAS: dict[str, Schema] = {
    "metrics": METRICS_SCHEMA,
    "comparison": COMPARISON_SCHEMA,
    "examples": EXAMPLES_SCHEMA,
    "flips": FLIPS_SCHEMA,
    "rejected": REJECTED_SCHEMA,
}

RUN_INFO_FILE = "run.json"
REPORT_FILE = "report.html"
LOCALIZE_DIR = "localize"  # RUN_DIR/localize: where `localize --examples-from RUN_DIR` writes, and the report looks
_BOOL_WORDS = {"True": True, "False": False, "true": True, "false": False, "1": True, "0": False}
# RFC 4180 line ends: with "\r\n" as terminator the csv writer also quotes a lone "\r" in text.
_CSV_OPTIONS: dict[str, Any] = {"index": False, "lineterminator": "\r\n"}


@dataclass(eq=False)
class RunTables:
    """Everything a run directory holds, as typed DataFrames plus run.json."""

    run_dir: Path
    run_info: RunInfo
    metrics: pd.DataFrame
    comparison: pd.DataFrame
    examples: pd.DataFrame
    flips: pd.DataFrame
    rejected: pd.DataFrame


def _temp_beside(path: Path) -> tuple[int, Path]:
    """A new temp file beside `path` named `.NAME.XXXXXXXX.tmp` (which `temp_files` finds when a killed
    process leaves one), with the old file's mode, else the usual 0644 (mkstemp creates 0600 files)."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp_name, path.stat().st_mode & 0o777 if path.exists() else 0o644)
    return fd, Path(tmp_name)


def _move_into_place(tmp: Path, path: Path) -> None:
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success move it into place with os.replace.
    The temp file is removed on any error."""
    fd, tmp = _temp_beside(path)
    try:
        os.close(fd)
        yield tmp
        _move_into_place(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class TableStream:
    """A run table written chunk by chunk into a temp file beside NAME.csv, moved into place by
    `commit`: a corpus-sized table (examples, flips) never has to be in memory at once, and readers
    see the old file or the whole new one. Closing without commit removes the temp file."""

    def __init__(self, run_dir: Path, name: str) -> None:
        self.name = name
        self.path = Path(run_dir) / f"{name}.csv"
        fd, self._tmp = _temp_beside(self.path)
        self._handle = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self.rows = 0

    def append(self, df: pd.DataFrame) -> None:
        """Add rows (typed and ordered by the table's schema; the header comes with the first call)."""
        table = coerce_table(df, SCHEMAS[self.name], self.name)
        table.to_csv(self._handle, header=self._handle.tell() == 0, **_CSV_OPTIONS)
        self.rows += len(table)

    def commit(self) -> None:
        if self._handle.tell() == 0:  # no chunk: the header of an empty table
            self.append(empty_table(self.name))
        self._handle.close()
        _move_into_place(self._tmp, self.path)

    def close(self) -> None:
        """Discard what was not committed."""
        self._handle.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> TableStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def temp_files(directory: Path, names: Iterable[str]) -> list[Path]:
    """The temp files that atomic writes of `names` in `directory` left behind (killed mid-write)."""
    pattern = re.compile(rf"\.(?:{'|'.join(map(re.escape, names))})\.[a-z0-9_]+\.tmp")
    return sorted(path for path in directory.glob(".*.tmp") if pattern.fullmatch(path.name))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text so readers see the old file or the whole new one, never a torn one."""
    target = Path(path)
    with _atomic_target(target) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


_KIND_DTYPES = {
    "str": pd.Series([""]).astype("str").dtype,
    "float": np.dtype("float64"),
    "int": pd.Int64Dtype(),
    "bool": np.dtype(bool),
}


def _coerce_column(values: pd.Series, kind: str, name: str) -> pd.Series:
    """Convert one column (Python objects or CSV strings) to the dtype of its kind; a column that
    already has it is returned as is, so re-coercing a corpus-sized table copies nothing."""
    if values.dtype == _KIND_DTYPES[kind] and not (kind == "str" and values.isna().any()):
        return values
    if kind == "str":
        return values.astype("str").fillna("")
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        values = values.replace("", np.nan)
    if kind == "float":
        return pd.to_numeric(values).astype("float64")
    if kind == "int":
        return pd.to_numeric(values).astype("Int64")
    if not pd.api.types.is_bool_dtype(values.dtype):
        values = values.map(lambda v: _BOOL_WORDS.get(str(v), v) if isinstance(v, str) else v)
    if values.isna().any():
        raise ValueError(f"column {name!r} must be all True/False, found missing values")
    return values.astype(bool)


def coerce_table(df: pd.DataFrame, schema: Schema, table: str = "table") -> pd.DataFrame:
    """Return `df` with the contract columns first, in order and typed; extra columns follow."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"{table} is missing contract columns: {', '.join(missing)}")
    out = pd.DataFrame({c: _coerce_column(df[c].reset_index(drop=True), k, c) for c, k in schema.items()})
    for extra in (c for c in df.columns if c not in schema):
        out[extra] = df[extra].reset_index(drop=True)
    return out


def empty_table(name: str) -> pd.DataFrame:
    """A zero-row frame with the contract columns and dtypes of table `name`."""
    schema = SCHEMAS[name]
    return coerce_table(pd.DataFrame({c: pd.Series([], dtype=object) for c in schema}), schema, name)


def _write_csv(path: Path, df: pd.DataFrame, name: str) -> None:
    """Straight into the temp file: a million-row table never becomes one string in memory."""
    with _atomic_target(path) as tmp:
        coerce_table(df, SCHEMAS[name], name).to_csv(tmp, encoding="utf-8", **_CSV_OPTIONS)


def _write_table(root: Path, table: pd.DataFrame | TableStream, name: str) -> None:
    if isinstance(table, TableStream):
        table.commit()
    else:
        _write_csv(root / f"{name}.csv", table, name)


# Columns added after runs were first written, and what they held before: older runs still load.
_ADDED_COLUMNS: dict[str, dict[str, str]] = {"metrics": {"tasks": "mlm nsp"}}


def _read_csv(path: Path, name: str) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return empty_table(name)
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    if raw.columns.empty:
        return empty_table(name)
    for column, value in _ADDED_COLUMNS.get(name, {}).items():
        if column not in raw.columns:
            raw[column] = value
    return coerce_table(raw, SCHEMAS[name], f"{path.name}")


def write_run_tables(
    run_dir: str | os.PathLike[str],
    *,
    metrics: pd.DataFrame,
    comparison: pd.DataFrame,
    examples: pd.DataFrame | TableStream,
    flips: pd.DataFrame | TableStream,
    rejected: pd.DataFrame | TableStream | None,
    run_info: RunInfo,
    examples_format: Literal["csv", "parquet"] = "csv",
) -> None:
    """Write every table of a run (each file atomically) and run.json.

    Examples and flips may come as a TableStream the run has filled chunk by chunk; it is committed
    here. `examples_format="parquet"` (for a DataFrame) needs pyarrow; the other format's stale file
    is removed so `load_run` never reads examples from an earlier run.
    """
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    _write_csv(root / "metrics.csv", metrics, "metrics")
    _write_csv(root / "comparison.csv", comparison, "comparison")
    _write_table(root, flips, "flips")
    _write_table(root, empty_table("rejected") if rejected is None else rejected, "rejected")
    if examples_format == "parquet" and isinstance(examples, pd.DataFrame):
        try:
            import pyarrow  # noqa: F401  (only to fail early with a clear message)
        except ImportError as exc:
            raise ImportError("examples_format='parquet' needs pyarrow: pip install pyarrow") from exc
        with _atomic_target(root / "examples.parquet") as tmp:
            coerce_table(examples, EXAMPLES_SCHEMA, "examples").to_parquet(tmp, index=False)
        (root / "examples.csv").unlink(missing_ok=True)
    else:
        _write_table(root, examples, "examples")
        (root / "examples.parquet").unlink(missing_ok=True)
    run_info.save(root)


def load_run(run_dir: str | os.PathLike[str], *, report_only: bool = False) -> RunTables:
    """Read a run directory back; optional tables that are absent come back as empty frames.

    With `report_only`, examples holds only what the report draws (REPORT_EXAMPLE_COLUMNS of the
    runtimes compared with the reference), read in chunks: a report of a million-pair run then
    needs little memory."""
    from lucid_eval.harness.run_info import RunInfo  # it writes run.json with this module's atomic_write_text

    root = Path(run_dir)
    for required in (RUN_INFO_FILE, "metrics.csv"):
        if not (root / required).is_file():
            raise FileNotFoundError(f"{root} is not a lucid-eval run directory: {required} is missing")
    run_info = RunInfo.load(root)
    examples = _report_examples(root, run_info.reference) if report_only else load_table(root, "examples")
    return RunTables(
        run_dir=root,
        run_info=run_info,
        metrics=_read_csv(root / "metrics.csv", "metrics"),
        comparison=_read_csv(root / "comparison.csv", "comparison"),
        examples=examples,
        flips=_read_csv(root / "flips.csv", "flips"),
        rejected=_read_csv(root / "rejected.csv", "rejected"),
    )


def load_table(run_dir: str | os.PathLike[str], name: str) -> pd.DataFrame:
    """One table of a run directory, typed (examples from examples.parquet when that is there)."""
    root = Path(run_dir)
    parquet = root / f"{name}.parquet"
    if name == "examples" and parquet.is_file():
        return coerce_table(pd.read_parquet(parquet), EXAMPLES_SCHEMA, parquet.name)
    return _read_csv(root / f"{name}.csv", name)


REPORT_EXAMPLE_COLUMNS = ("runtime", "failed", "max_abs_mlm_logit_diff")


def _report_examples(root: Path, reference: str | None, chunk_rows: int = 100_000) -> pd.DataFrame:
    """The examples of compared runtimes, REPORT_EXAMPLE_COLUMNS only, read chunk by chunk."""
    schema = {c: EXAMPLES_SCHEMA[c] for c in REPORT_EXAMPLE_COLUMNS}
    parquet, path = root / "examples.parquet", root / "examples.csv"
    if parquet.is_file():
        chunks: Iterable[pd.DataFrame] = [pd.read_parquet(parquet, columns=list(schema))]
    elif path.is_file() and path.stat().st_size:
        read = {"dtype": str, "keep_default_na": False, "encoding": "utf-8", "usecols": list(schema)}
        chunks = pd.read_csv(path, chunksize=chunk_rows, **read)
    else:
        chunks = []
    kept = [t[t["runtime"] != reference] for t in (coerce_table(c, schema, "examples") for c in chunks)]
    return pd.concat(kept, ignore_index=True) if kept else empty_table("examples")[list(schema)]
