"""`score`: run a corpus through every runtime and write the run directory, resumably.

Finished chunks are journaled atomically in OUT/.journal (one .npz per chunk plus journal.json
with the run's fingerprint), so a run killed at any moment resumes where it stopped and ends with
the same tables as an uninterrupted one. OUT/.lock keeps two runs out of the same directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lucid_eval import __version__
from lucid_eval.errors import UserError
from lucid_eval.files import sha256_file
from lucid_eval.harness.compare import (
    comparison_table,
    examples_table,
    flips_table,
    metrics_table,
    summary_table,
    with_verdicts,
)
from lucid_eval.harness.corpus import CorpusReader
from lucid_eval.harness.masking import encode_chunk
from lucid_eval.harness.scoring import Scores, score_chunk, stop_on_sigint
from lucid_eval.harness.tables import (
    REJECTED_SCHEMA,
    REPORT_FILE,
    RUN_INFO_FILE,
    SCHEMAS,
    atomic_write_text,
    coerce_table,
    temp_files,
    write_run_tables,
)
from lucid_eval.locking import LockError, exclusive_lock
from lucid_eval.runtimes.base import Runtime, RuntimeInfo, RuntimeUnavailable
from lucid_eval.tolerances import Tolerances, parse_overrides, tolerance_for, tolerances_as_dict
from lucid_eval.verdict import Verdict, exit_code

JOURNAL_DIR = ".journal"
JOURNAL_FILE = "journal.json"
LOCK_FILE = ".lock"
JOURNAL_FORMAT = 1


class RunError(UserError, RuntimeError):
    """The run cannot start or go on as asked (locked directory, journal conflict); says what to do."""


class RunInterrupted(RunError):
    """The run stopped early on request; finished chunks are journaled and can be resumed."""


@dataclass
class ScoreConfig:
    """What to score with what; `runtimes[0]` is the reference every other runtime is compared to."""

    export_dir: str | Path
    corpus: str | Path
    out_dir: str | Path
    runtimes: list[str]
    fmt: str | None = None
    seed: int = 0
    max_length: int = 128
    mlm_probability: float = 0.15
    token_budget: int = 8192
    max_batch: int = 64
    chunk_size: int = 1024
    on_error: Literal["skip", "fail"] = "skip"
    resume: bool = False
    threads: int | None = None
    allow_fallback: bool = False
    progress: bool = True
    command: str = ""
    tolerance_overrides: tuple[str, ...] = ()  # 'PRECISION.FIELD=VALUE', applied to the export's tolerances
    columns: dict[str, str] | None = None  # our column name -> the corpus's, e.g. {"nsp_label": "label"}

    def __post_init__(self) -> None:
        parse_overrides(self.tolerance_overrides)  # a mistyped override fails before any work
        checks = [
            (len(self.runtimes) > 0, "name at least one runtime (the first is the reference)"),
            (len(set(self.runtimes)) == len(self.runtimes), f"runtimes are repeated: {self.runtimes}"),
            (self.seed >= 0, f"seed must be non-negative, got {self.seed}"),
            (0.0 < self.mlm_probability < 1.0, f"mlm_probability must be in (0, 1), got {self.mlm_probability}"),
            (self.max_length >= 3, f"max_length must be at least 3, got {self.max_length}"),
            (self.token_budget >= self.max_length, f"token_budget {self.token_budget} < max_length {self.max_length}"),
            (self.max_batch >= 1 and self.chunk_size >= 1, "max_batch and chunk_size must be at least 1"),
            (self.on_error in ("skip", "fail"), f"on_error must be 'skip' or 'fail', got {self.on_error!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass(eq=False)
class RunResult:
    """The tables of a finished run (as written to out_dir), run.json's content and the report path."""

    out_dir: Path
    metrics: pd.DataFrame
    comparison: pd.DataFrame
    examples: pd.DataFrame
    flips: pd.DataFrame
    rejected: pd.DataFrame
    run_info: dict[str, Any]
    report: Path | None  # the HTML report, when score() was given a builder (the CLI's is lucid_eval.reports)

    @property
    def verdicts(self) -> list[Verdict]:
        """Every verdict of the run: each comparison's, and FALLBACK for a reference that fell back."""
        return [Verdict(v) for v in self.metrics["verdict"] if v != "REFERENCE"]

    def exit_code(self, strict: bool = False) -> int:
        return exit_code(self.verdicts, strict)

    def summary(self) -> str:
        counts = self.run_info["counts"]
        line = (
            f"pairs read {counts['read']:,}, scored {counts['scored']:,}, truncated {counts['truncated']:,}, "
            f"rejected {counts['rejected']:,}" + (" (see rejected.csv)" if counts["rejected"] else "")
        )
        return summary_table(self.metrics, self.comparison) + "\n" + line


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- lock and run directory -------------------------------------------------------------------------
# What `score` writes into OUT; a folder holding any of these that no run of ours wrote is refused.
OUTPUT_FILES = (*(f"{name}.csv" for name in SCHEMAS), "examples.parquet", RUN_INFO_FILE, REPORT_FILE)


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold OUT/.lock (a flock, so a run killed with -9 leaves a lock file the next run simply takes over)."""
    path = out_dir / LOCK_FILE
    try:
        with exclusive_lock(path, str(out_dir)):
            yield
    except LockError as exc:
        if exc.path != path:  # raised inside the block by another lock, not ours
            raise
        holder = f"process {exc.pid}" if exc.pid else "another process"
        raise RunError(
            f"{out_dir} is in use by another lucid-eval run ({holder} holds {path}); wait for it to finish "
            f"or choose another output directory"
        ) from None


def _is_run_dir(out: Path) -> bool:
    """Whether a lucid-eval run wrote into `out`: it holds our journal, or our run.json."""
    if (out / JOURNAL_DIR / JOURNAL_FILE).is_file():
        return True
    try:
        info = json.loads((out / RUN_INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and isinstance(info.get("versions"), dict) and "lucid_eval" in info["versions"]


def _refuse_foreign_files(out: Path) -> None:
    """Refuse to overwrite files of the run's names in a folder that no lucid-eval run wrote."""
    in_the_way = [name for name in OUTPUT_FILES if (out / name).exists()]
    if in_the_way and not _is_run_dir(out):
        raise RunError(
            f"{out} is not a lucid-eval run directory and holds {', '.join(in_the_way)}, which scoring would "
            f"overwrite; choose another output directory (--out), e.g. a new one"
        )


def _remove_temp_files(out: Path) -> None:
    """Remove temp files our atomic writes leave when a run is killed mid-write (call under the lock)."""
    journal = out / JOURNAL_DIR
    leftovers = [*temp_files(out, OUTPUT_FILES), *temp_files(journal, [JOURNAL_FILE]), *journal.glob("chunk-*.npz.tmp")]
    for path in leftovers:
        path.unlink(missing_ok=True)


def _remove_unjournaled(out: Path) -> None:
    """After a failed run that journaled no chunk: remove its journal files (call under the lock)."""
    journal = out / JOURNAL_DIR
    if (journal / JOURNAL_FILE).exists():
        return
    _remove_temp_files(out)
    for stray in journal.glob("chunk-*.npz"):  # written before journal.json listed them
        stray.unlink()
    with contextlib.suppress(OSError):
        journal.rmdir()


@contextlib.contextmanager
def run_directory(out: Path) -> Iterator[None]:
    """Create OUT if needed and hold its lock for the run; refuse a folder of someone else's files,
    and remove temp files a killed run left. A run that fails before journaling any chunk removes
    its journal files and the directories it created; rmdir keeps any that something else was put
    into meanwhile."""
    created = [d for d in (out, *out.parents) if not d.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    try:
        with run_lock(out):
            _refuse_foreign_files(out)
            _remove_temp_files(out)
            try:
                yield
            except BaseException:
                _remove_unjournaled(out)
                raise
    except BaseException:
        for directory in created:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


# ---- journal ---------------------------------------------------------------------------------------
class Journal:
    """OUT/.journal: chunk-{k:06d}.npz per finished chunk, and journal.json listing them."""

    def __init__(self, out_dir: Path, fingerprint: dict[str, Any], names: list[str]) -> None:
        self.dir = out_dir / JOURNAL_DIR
        self.fingerprint = fingerprint
        self.names = names
        self.chunks: dict[int, dict[str, Any]] = {}
        self.started = _now()

    @classmethod
    def open(cls, out_dir: Path, fingerprint: dict[str, Any], names: list[str], resume: bool) -> Journal:
        """A fresh journal, or (resume) the existing one after checking it belongs to this run."""
        journal = cls(out_dir, fingerprint, names)
        path = journal.dir / JOURNAL_FILE
        if not path.exists():
            if journal.dir.exists():
                for stray in journal.dir.glob("chunk-*.npz*"):  # written before journal.json listed them
                    stray.unlink()
            return journal
        if not resume:
            raise RunError(
                f"{out_dir} already holds a scoring run ({path}); pass --resume to continue "
                f"or rebuild it, or choose another output directory"
            )
        state = json.loads(path.read_text(encoding="utf-8"))
        old = state.get("fingerprint", {})
        changed = [
            f"{key} ({old.get(key)!r} -> {value!r})" for key, value in fingerprint.items() if old.get(key) != value
        ]
        if state.get("format") != JOURNAL_FORMAT or changed:
            what = ", ".join(changed) or f"journal format {state.get('format')!r}"
            raise RunError(
                f"cannot resume in {out_dir}: the journal was written by a different run; changed: {what}. "
                f"Resume with the original settings or choose another output directory"
            )
        journal.chunks = {int(c["chunk"]): c for c in state["chunks"]}
        journal.started = state.get("started", journal.started)
        return journal

    def _file(self, k: int) -> Path:
        return self.dir / f"chunk-{k:06d}.npz"

    def save(self, k: int, scores: Scores) -> None:
        """Write the chunk's arrays atomically, then list it in journal.json (also atomically)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self._file(k)
        tmp = target.with_name(target.name + ".tmp")
        try:
            with open(tmp, "wb") as handle:
                np.savez(handle, **scores.to_arrays())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        index = scores.shared["index"]
        self.chunks[k] = {"chunk": k, "file": target.name, "first_index": int(index[0]), "n_pairs": len(index)}
        state = {
            "format": JOURNAL_FORMAT,
            "fingerprint": self.fingerprint,
            "started": self.started,
            "chunks": [self.chunks[c] for c in sorted(self.chunks)],
        }
        atomic_write_text(self.dir / JOURNAL_FILE, json.dumps(state, indent=1) + "\n")

    def load(self, k: int, first_index: int, n_pairs: int) -> Scores:
        """A journaled chunk, checked against the corpus rows it must cover."""
        entry = self.chunks[k]
        if (entry["first_index"], entry["n_pairs"]) != (first_index, n_pairs):
            raise RunError(f"journal chunk {k} covers other pairs than the corpus now yields; {self._start_over()}")
        try:
            with np.load(self._file(k), allow_pickle=False) as data:
                return Scores.from_arrays({key: data[key] for key in data.files}, self.names)
        except (OSError, ValueError, KeyError) as exc:
            raise RunError(f"journal chunk {self._file(k)} is unreadable ({exc}); {self._start_over()}") from exc

    def _start_over(self) -> str:
        """How to rescore from scratch: a run refuses a directory whose journal it cannot resume."""
        return (
            f"it cannot be resumed: to score from the start, delete the journal (rm -r {shlex.quote(str(self.dir))}) "
            f"and run again, or choose another output directory"
        )


# ---- the run ---------------------------------------------------------------------------------------
def _default_factory(config: ScoreConfig, bundle: Any) -> Callable[[str], Runtime]:
    from lucid_eval.runtimes import create_runtime

    return lambda name: create_runtime(name, bundle, threads=config.threads, allow_fallback=config.allow_fallback)


def _interrupted(journal: Journal) -> RunInterrupted:
    return RunInterrupted(
        f"interrupted: {len(journal.chunks)} finished chunk(s) are saved in {journal.dir}; "
        "run the same command with --resume to continue"
    )


def _score_corpus(
    config: ScoreConfig, reader: CorpusReader, journal: Journal, runtimes: list[Runtime], tokenizer: Any
) -> list[Scores]:
    """Every chunk's scores, journaled ones loaded, the rest scored and journaled as they finish."""
    parts: list[Scores] = []
    progress = tqdm(unit="pair", desc="scoring", disable=not config.progress, dynamic_ncols=True)
    with progress as bar, stop_on_sigint() as stop:
        try:
            for k, records in enumerate(reader.chunks(config.chunk_size)):
                if k in journal.chunks:
                    parts.append(journal.load(k, records[0].index, len(records)))
                    bar.update(len(records))
                    continue
                examples = encode_chunk(
                    records,
                    tokenizer,
                    seed=config.seed,
                    max_length=config.max_length,
                    mlm_probability=config.mlm_probability,
                )
                scores = score_chunk(
                    records,
                    examples,
                    runtimes,
                    token_budget=config.token_budget,
                    max_batch=config.max_batch,
                    max_length=config.max_length,
                    pad_token_id=tokenizer.pad_token_id,
                    stop=stop,
                    on_batch=bar.update,
                )
                if scores is None:
                    raise _interrupted(journal)
                journal.save(k, scores)
                parts.append(scores)
        except KeyboardInterrupt:
            raise _interrupted(journal) from None
    return parts


def _run_info(
    config: ScoreConfig,
    bundle: Any,
    reader: CorpusReader,
    scores: Scores,
    infos: dict[str, RuntimeInfo],
    journal: Journal,
) -> dict[str, Any]:
    """run.json: provenance, settings and row counts (read = scored + rejected)."""
    versions = {"lucid_eval": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for info in infos.values():
        versions.update(info.versions)
    stats = reader.stats
    return {
        "command": config.command,
        "seed": config.seed,
        "max_length": config.max_length,
        "mlm_probability": config.mlm_probability,
        "token_budget": config.token_budget,
        "max_batch": config.max_batch,
        "chunk_size": config.chunk_size,
        "corpus": {
            "path": str(config.corpus),
            "sha256": journal.fingerprint["corpus_sha256"],
            "format": reader.fmt,
            "columns": dict(config.columns or {}),
            "warnings": list(reader.warnings),
        },  # fmt: skip
        "export": {"dir": str(getattr(bundle, "path", config.export_dir)), "manifest_sha256": bundle.manifest_sha256},
        "reference": config.runtimes[0],
        "runtimes": list(config.runtimes),
        "runtime_info": {name: asdict(info) for name, info in infos.items()},
        "counts": {
            "read": stats.read,
            "scored": stats.accepted,
            "truncated": int(scores.shared["truncated"].sum()),
            "rejected": stats.rejected,
        },
        "versions": versions,
        "host": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "started": journal.started,
        "finished": _now(),
    }


def verify_unverified(
    config: ScoreConfig, bundle: Any, tolerances: Tolerances, echo: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Verify, before any scoring, each requested graph that was NOT VERIFIED at export (e.g. fp16
    exported where no CUDA device was): on the runtime's device, with the export's own cases.
    A FAIL stops the run with the numbers; every result goes into run.json."""
    from lucid_eval.export.sessions import ProviderError
    from lucid_eval.export.verify import verify_bundle_variant
    from lucid_eval.runtimes import spec

    records: dict[str, dict[str, Any]] = {}
    for name in config.runtimes:
        s = spec(name)
        if (
            s.backend != "ort"
            or s.variant not in bundle.variants
            or bundle.verdict(s.variant) is not Verdict.NOT_VERIFIED
        ):
            continue
        echo(f"verifying the {s.variant} graphs on {s.device} before scoring (not verified at export) ...")
        try:
            record = verify_bundle_variant(
                bundle, s.variant, s.device, tolerance_for(s.precision, tolerances), config.allow_fallback
            )
        except ProviderError as exc:
            raise RuntimeUnavailable(f"{name}: {exc}") from exc
        records[f"{s.variant}@{s.device}"] = record
        echo(f"{s.variant} on {s.device}: {record['verdict']}" + "".join(f"\n  {r}" for r in record["reasons"]))
        if record["verdict"] == Verdict.FAIL.value:
            raise RunError(
                f"the {s.variant} graphs failed verification on {s.device} before scoring:\n  "
                + "\n  ".join(record["reasons"])
            )
    return records


def score(
    config: ScoreConfig,
    *,
    bundle: Any = None,
    runtime_factory: Callable[[str], Runtime] | None = None,
    echo: Callable[[str], None] = lambda line: None,
    report: Callable[[Path], Path] | None = None,
) -> RunResult:
    """Score `config.corpus` on every runtime with identical masked inputs and write the run directory.

    `bundle` defaults to ExportBundle.load(config.export_dir); `runtime_factory` (name -> Runtime)
    defaults to lucid_eval.runtimes.create_runtime over that bundle. `report` builds the HTML report
    from the written tables (the harness sits below the report layer, so the caller passes it).
    """
    if bundle is None:
        from lucid_eval.export.bundle import ExportBundle

        bundle = ExportBundle.load(config.export_dir)
    limit = bundle.config.max_position_embeddings
    if config.max_length > limit:
        raise ValueError(f"max_length {config.max_length} exceeds the model's max_position_embeddings {limit}")
    tokenizer = bundle.tokenizer
    tolerances = parse_overrides(config.tolerance_overrides, getattr(bundle, "tolerances", None))
    factory = runtime_factory or _default_factory(config, bundle)
    out = Path(config.out_dir)
    names = list(config.runtimes)
    with run_directory(out):
        reader = CorpusReader(config.corpus, config.fmt, config.on_error, columns=config.columns)
        for warning in reader.warnings:
            echo(f"warning: {warning}")
        fingerprint = {
            **({"corpus_columns": dict(config.columns)} if config.columns else {}),
            "corpus_sha256": sha256_file(config.corpus),
            "corpus_format": reader.fmt,
            "export_manifest_sha256": bundle.manifest_sha256,
            "seed": config.seed,
            "max_length": config.max_length,
            "mlm_probability": config.mlm_probability,
            "runtimes": names,
            "chunk_size": config.chunk_size,
        }
        journal = Journal.open(out, fingerprint, names, config.resume)
        late = {} if runtime_factory else verify_unverified(config, bundle, tolerances, echo)
        with contextlib.ExitStack() as stack:
            runtimes = [factory(name) for name in names]
            for name, rt in zip(names, runtimes, strict=True):
                if rt.name != name:
                    raise ValueError(f"runtime factory returned {rt.name!r} for {name!r}")
                stack.enter_context(rt)
            infos = {rt.name: rt.info() for rt in runtimes}
            parts = _score_corpus(config, reader, journal, runtimes, tokenizer)
        scores = Scores.concat(parts)
        del parts  # the chunks are in `scores` now; tables below need the memory
        stats = reader.stats
        if stats.read != stats.accepted + stats.rejected or stats.accepted != len(scores.shared["index"]):
            raise AssertionError(f"row counts do not reconcile: {stats}, {len(scores.shared['index'])} scored")
        metrics = metrics_table(scores, infos, reader.has_labels)
        comparison = comparison_table(scores, metrics, infos, tolerances, reader.has_labels)
        metrics = with_verdicts(metrics, comparison)
        examples = examples_table(scores)
        flips = flips_table(scores, tokenizer)
        rejected = coerce_table(
            pd.DataFrame([asdict(r) for r in reader.rejected], columns=list(REJECTED_SCHEMA)), REJECTED_SCHEMA
        )
        run_info = _run_info(config, bundle, reader, scores, infos, journal)
        run_info["tolerances"] = tolerances_as_dict(tolerances)
        run_info["late_verification"] = late
        run_info["verdicts"] = dict(zip(metrics["runtime"], metrics["verdict"], strict=True))
        write_run_tables(
            out,
            metrics=metrics,
            comparison=comparison,
            examples=examples,
            flips=flips,
            rejected=rejected,
            run_info=run_info,
        )
        page = report(out) if report else None  # while the run still holds its directory
    return RunResult(out, metrics, comparison, examples, flips, rejected, run_info, page)
