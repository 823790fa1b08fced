"""`score`: run a corpus through every runtime and write the run directory, resumably.

Each chunk is scored by an engine (here, in this process; or across Ray actors, ray_engine.py)
or loaded from the journal (journal.py), journaled as soon as it is scored, then summed into the
run's totals and appended to the examples and flips tables in corpus order, and dropped: memory
stays that of a few chunks however large the corpus, a resumed run ends with the same tables, and
everything after scoring is the same code for both engines.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lucid_eval import __version__
from lucid_eval.files import sha256_file
from lucid_eval.harness.accumulate import Clock, RunTotals
from lucid_eval.harness.batching import default_batch_shape
from lucid_eval.harness.compare import (
    comparison_table,
    examples_table,
    flips_table,
    margins,
    metrics_table,
    summary_table,
    with_verdicts,
)
from lucid_eval.harness.corpus import CorpusReader
from lucid_eval.harness.journal import (
    Journal,
    RunInterrupted,
    now,
    run_directory,
)
from lucid_eval.harness.run_info import CorpusInfo, Counts, RunInfo
from lucid_eval.harness.scoring import Chunk, Engine, LocalEngine, Scores, Stopped, open_runtimes, stop_on_sigint
from lucid_eval.harness.sources import default_factory, foreign_graphs, load_bundle, verify_unverified
from lucid_eval.harness.tables import (
    REJECTED_SCHEMA,
    TableStream,
    load_table,
    write_run_tables,
)
from lucid_eval.runtimes import SPECS
from lucid_eval.runtimes.base import Runtime
from lucid_eval.tolerances import Tolerances, parse_overrides, tolerances_as_dict
from lucid_eval.verdict import Verdict, exit_code


@dataclass
class ScoreConfig:
    """What to score with what; `runtimes[0]` is the reference every other runtime is compared to.

    The model comes from an export directory (`export_dir`) or a checkpoint (`model`: then only the
    torch runtimes and `onnx` graphs run). Each `onnx` graph (a foreign BERT graph) runs as
    ort-`onnx_device`:LABEL after the named runtimes."""

    export_dir: str | Path | None
    corpus: str | Path
    out_dir: str | Path
    runtimes: list[str]
    model: str | Path | None = None
    onnx: tuple[Path, ...] = ()
    onnx_device: Literal["cpu", "cuda"] = "cpu"
    fmt: str | None = None
    seed: int = 0
    max_length: int = 128
    mlm_probability: float = 0.15
    token_budget: int | None = None  # None: default_batch_shape of the runtimes' devices
    max_batch: int | None = None
    chunk_size: int = 1024
    on_error: Literal["skip", "fail"] = "skip"
    resume: bool = False
    threads: int | None = None
    allow_fallback: bool = False
    progress: bool = True
    command: str = ""
    tolerance_overrides: tuple[str, ...] = ()  # 'PRECISION.FIELD=VALUE', applied to the export's tolerances
    columns: dict[str, str] | None = None  # our column name -> the corpus's, e.g. {"nsp_label": "label"}
    engine: Literal["local", "ray"] = "local"  # where chunks are scored: this process, or Ray actors
    address: str | None = None  # ray: "auto", a head's HOST:PORT or "ray://HOST:PORT"; None: a private local Ray
    workers: int | None = None  # ray: actors (default: as many as the cluster's CPUs or GPUs hold)
    gpus_per_worker: float = 0.0  # ray: GPUs per actor, for the CUDA runtimes

    def __post_init__(self) -> None:
        parse_overrides(self.tolerance_overrides)  # a mistyped override fails before any work
        budget, pairs = default_batch_shape(self.devices(), self.max_length)
        self.token_budget = budget if self.token_budget is None else self.token_budget
        self.max_batch = pairs if self.max_batch is None else self.max_batch
        checks = [
            ((self.export_dir is None) != (self.model is None), "give an export directory or a model, not both"),
            (len(self.runtimes) > 0, "name at least one runtime (the first is the reference)"),
            (
                self.model is None or all(r.startswith("torch-") for r in self.runtimes),
                f"with a model instead of an export only torch runtimes and ONNX graphs run, not {self.runtimes}; "
                "the ort runtimes run an export directory's graphs",
            ),
            (len(set(self.runtimes)) == len(self.runtimes), f"runtimes are repeated: {self.runtimes}"),
            (self.seed >= 0, f"seed must be non-negative, got {self.seed}"),
            (0.0 < self.mlm_probability < 1.0, f"mlm_probability must be in (0, 1), got {self.mlm_probability}"),
            (self.max_length >= 3, f"max_length must be at least 3, got {self.max_length}"),
            (self.token_budget >= self.max_length, f"token_budget {self.token_budget} < max_length {self.max_length}"),
            (self.max_batch >= 1 and self.chunk_size >= 1, "max_batch and chunk_size must be at least 1"),
            (self.on_error in ("skip", "fail"), f"on_error must be 'skip' or 'fail', got {self.on_error!r}"),
            (self.engine in ("local", "ray"), f"engine must be 'local' or 'ray', got {self.engine!r}"),
            (
                self.engine == "ray" or (self.address, self.workers, self.gpus_per_worker) == (None, None, 0.0),
                "address, workers and gpus_per_worker are options of the ray engine (--engine ray)",
            ),
            (self.workers is None or self.workers >= 1, f"workers must be at least 1, got {self.workers}"),
            (self.gpus_per_worker >= 0, f"gpus_per_worker must be non-negative, got {self.gpus_per_worker}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def devices(self) -> list[str]:
        """Where the runtimes run: each named runtime's device (CPU for a name it does not know,
        refused later), and `onnx_device` for the ONNX graphs."""
        named = [SPECS[r].device if r in SPECS else "cpu" for r in self.runtimes]
        return named + ([self.onnx_device] if self.onnx else [])


@dataclass(eq=False)
class RunResult:
    """The tables of a finished run (as written to out_dir), run.json's content and the report path.
    Examples, flips and rejected rows are corpus-sized: they are read from out_dir when asked for."""

    out_dir: Path
    metrics: pd.DataFrame
    comparison: pd.DataFrame
    run_info: RunInfo
    report: Path | None  # the HTML report, when score() was given a builder (the CLI's is lucid_eval.reports)

    @property
    def examples(self) -> pd.DataFrame:
        return load_table(self.out_dir, "examples")

    @property
    def rejected(self) -> pd.DataFrame:
        return load_table(self.out_dir, "rejected")

    @property
    def flips(self) -> pd.DataFrame:
        return load_table(self.out_dir, "flips")

    @property
    def verdicts(self) -> list[Verdict]:
        """Every verdict of the run: each comparison's, and FALLBACK for a reference that fell back."""
        return [Verdict(v) for v in self.metrics["verdict"] if v != "REFERENCE"]

    def exit_code(self, strict: bool = False) -> int:
        return exit_code(self.verdicts, strict)

    def summary(self) -> str:
        counts = self.run_info.counts
        line = (
            f"pairs read {counts.read:,}, scored {counts.scored:,}, truncated {counts.truncated:,}, "
            f"rejected {counts.rejected:,}" + (" (see rejected.csv)" if counts.rejected else "")
        )
        return summary_table(self.metrics, self.comparison) + "\n" + line


# ---- the run ---------------------------------------------------------------------------------------
def _interrupted(journal: Journal) -> RunInterrupted:
    return RunInterrupted(
        f"interrupted: {len(journal.chunks)} finished chunk(s) are saved in {journal.dir}; "
        "run the same command with --resume to continue"
    )


@dataclass
class _Outputs:
    """Where each finished chunk goes: the totals of the metrics, and the examples and flips tables."""

    totals: RunTotals
    examples: TableStream
    flips: TableStream
    tokenizer: Any

    def add(self, scores: Scores) -> None:
        self.totals.add(scores)
        self.examples.append(examples_table(scores))
        self.flips.append(flips_table(scores, self.tokenizer))


def _data_rows(path: str | Path, fmt: str) -> int:
    """The corpus's data rows as its line count says (one pass, like hashing): the progress bar's
    total. Blank lines and multi-line quoted fields make it a slight overestimate."""
    lines, last = 0, b"\n"
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            lines, last = lines + block.count(b"\n"), block[-1:]
    return max(0, lines + (last != b"\n") - (fmt != "jsonl"))


def _score_corpus(
    config: ScoreConfig, reader: CorpusReader, journal: Journal, engine: Engine, outputs: _Outputs
) -> Clock:
    """Every chunk, journaled ones loaded, the rest scored by `engine` and journaled as they finish;
    each goes into `outputs` in corpus order and is dropped. Returns where the time went."""
    clock = Clock()

    def save(k: int, scores: Scores) -> None:
        clock.add_model(scores)
        with clock.timing("journal"):
            journal.save(k, scores)

    total = _data_rows(config.corpus, reader.fmt) if config.progress else None
    progress = tqdm(total=total, unit="pair", desc="scoring", disable=not config.progress, dynamic_ncols=True)
    with progress as bar, stop_on_sigint() as stop:

        def chunks() -> Iterator[Chunk]:
            for k, records in enumerate(reader.chunks(config.chunk_size)):
                chunk = Chunk(k, records)
                if k in journal.chunks:
                    chunk.scores = journal.load(k, records[0].index, len(records))
                    bar.update(len(records))
                yield chunk

        try:
            for scores in engine.scored(chunks(), save, stop, bar.update):
                with clock.timing("tables"):
                    outputs.add(scores)
        except (KeyboardInterrupt, Stopped):
            raise _interrupted(journal) from None
        bar.total = bar.n  # the line count's estimate, corrected
        bar.refresh()
    return clock


def _model_info(config: ScoreConfig, bundle: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """run.json's account of the model (export, checkpoint): the export directory, or the reference
    checkpoint's files."""
    if config.model is None:
        return {"dir": str(getattr(bundle, "path", config.export_dir)), "manifest_sha256": bundle.manifest_sha256}, None
    return None, {"path": str(Path(bundle.checkpoint).resolve()), "sha256": bundle.manifest_sha256,
                  "files": bundle.files}  # fmt: skip


def _run_info(
    setup: _Setup,
    reader: CorpusReader,
    totals: RunTotals,
    engine: Engine,
    journal: Journal,
    verdicts: dict[str, str],
    timing: dict[str, Any],
) -> RunInfo:
    """run.json: provenance, settings and row counts (read = scored + rejected)."""
    config, infos, stats = setup.config, engine.infos, reader.stats
    versions = {"lucid_eval": __version__, "python": platform.python_version(), "numpy": np.__version__}
    for info in infos.values():
        versions.update(info.versions)
    export, checkpoint = _model_info(config, setup.bundle)
    return RunInfo(
        command=config.command,
        seed=config.seed,
        max_length=config.max_length,
        mlm_probability=config.mlm_probability,
        token_budget=config.token_budget,
        max_batch=config.max_batch,
        chunk_size=config.chunk_size,
        corpus=CorpusInfo(
            path=str(config.corpus),
            sha256=journal.fingerprint["corpus_sha256"],
            format=reader.fmt,
            columns=dict(config.columns or {}),
            warnings=list(reader.warnings),
        ),
        export=export,
        checkpoint=checkpoint,
        reference=config.runtimes[0],
        runtimes=list(infos),
        runtime_info={name: asdict(info) for name, info in infos.items()},
        counts=Counts(read=stats.read, scored=stats.accepted, truncated=totals.truncated, rejected=stats.rejected),
        versions=versions,
        host={"platform": platform.platform(), "cpu_count": os.cpu_count()},
        started=journal.started,
        finished=now(),
        tolerances=tolerances_as_dict(setup.tolerances),
        onnx_graphs={name: graph.record() for name, graph in setup.foreign.items()},
        verdicts=verdicts,
        late_verification=engine.late_verification,
        engine={**engine.description, **timing},
    )


@dataclass
class _Setup:
    """What a run is about, resolved before its directory is touched."""

    config: ScoreConfig
    bundle: Any
    foreign: dict[str, Any]  # runtime name -> ForeignGraph
    tolerances: Tolerances
    names: list[str]  # every runtime, the reference first

    @classmethod
    def resolve(cls, config: ScoreConfig, bundle: Any) -> _Setup:
        if config.engine == "ray":
            from lucid_eval.harness.ray_engine import import_ray

            import_ray()  # without Ray, fail before anything is loaded or written
        bundle = bundle if bundle is not None else load_bundle(config)
        limit = bundle.config.max_position_embeddings
        if config.max_length > limit:
            raise ValueError(f"max_length {config.max_length} exceeds the model's max_position_embeddings {limit}")
        tolerances = parse_overrides(config.tolerance_overrides, getattr(bundle, "tolerances", None))
        foreign = foreign_graphs(config, bundle)
        return cls(config, bundle, foreign, tolerances, [*config.runtimes, *foreign])

    def fingerprint(self, reader: CorpusReader) -> dict[str, Any]:
        """What a resumed run must share with the run it resumes."""
        c = self.config
        return {
            **({"corpus_columns": dict(c.columns)} if c.columns else {}),
            "corpus_sha256": sha256_file(c.corpus),
            "corpus_format": reader.fmt,
            "export_manifest_sha256": self.bundle.manifest_sha256,
            **({"onnx_sha256": {name: g.sha256 for name, g in self.foreign.items()}} if self.foreign else {}),
            "seed": c.seed,
            "max_length": c.max_length,
            "mlm_probability": c.mlm_probability,
            "runtimes": self.names,
            "chunk_size": c.chunk_size,
        }


def _tables(
    setup: _Setup, reader: CorpusReader, outputs: _Outputs, engine: Engine, journal: Journal, clock: Clock
) -> tuple[pd.DataFrame, pd.DataFrame, RunInfo]:
    """metrics, comparison and run.json's content, from the run's totals."""
    timing = clock.record()  # the scoring's wall clock ends here; the final tables count as tables
    start = time.perf_counter()
    totals, stats, infos = outputs.totals, reader.stats, engine.infos
    if stats.read != stats.accepted + stats.rejected or stats.accepted != totals.n_pairs:
        raise AssertionError(f"row counts do not reconcile: {stats}, {totals.n_pairs} scored")
    metrics = metrics_table(totals, infos, reader.has_labels)
    comparison = comparison_table(totals, metrics, infos, setup.tolerances, reader.has_labels)
    metrics = with_verdicts(metrics, comparison)
    verdicts = dict(zip(metrics["runtime"], metrics["verdict"], strict=True))
    timing["seconds"]["tables"] = round(timing["seconds"]["tables"] + time.perf_counter() - start, 3)
    run_info = _run_info(setup, reader, totals, engine, journal, verdicts, timing)
    return metrics, comparison, run_info


class _RejectedRows:
    """Every rejected corpus row, appended to rejected.csv in blocks as the reader meets it."""

    BLOCK = 1000

    def __init__(self, stream: TableStream) -> None:
        self.stream, self.rows = stream, []

    def __call__(self, row: Any) -> None:
        self.rows.append(asdict(row))
        if len(self.rows) >= self.BLOCK:
            self.flush()

    def flush(self) -> TableStream:
        if self.rows:
            self.stream.append(pd.DataFrame(self.rows, columns=list(REJECTED_SCHEMA)))
            self.rows = []
        return self.stream


def _start_engine(
    stack: contextlib.ExitStack,
    setup: _Setup,
    runtime_factory: Callable[[str], Runtime] | None,
    bundle_given: bool,
    echo: Callable[[str], None],
) -> Engine:
    """The engine of `config.engine`, its runtimes open (and graphs not verified at export verified
    first, where they will run) until `stack` closes."""
    config = setup.config
    if config.engine == "ray":
        from lucid_eval.harness.ray_engine import RayEngine, WorkerSpec

        spec = WorkerSpec.of(config, setup.names, setup.foreign, setup.bundle, bundle_given, runtime_factory)
        return stack.enter_context(RayEngine.start(spec, setup.tolerances, verify=runtime_factory is None, echo=echo))
    late = {} if runtime_factory else verify_unverified(config, setup.bundle, setup.tolerances, echo)
    factory = runtime_factory or default_factory(config, setup.bundle, setup.foreign)
    runtimes = open_runtimes(stack, factory, setup.names)
    return LocalEngine(config, runtimes, setup.bundle.tokenizer, late)


def score(
    config: ScoreConfig,
    *,
    bundle: Any = None,
    runtime_factory: Callable[[str], Runtime] | None = None,
    echo: Callable[[str], None] = lambda line: None,
    report: Callable[[Path], Path] | None = None,
) -> RunResult:
    """Score `config.corpus` on every runtime with identical masked inputs and write the run directory.

    `bundle` defaults to the export's (or the checkpoint's, with `config.model`); `runtime_factory`
    (name -> Runtime) defaults to lucid_eval.runtimes.create_runtime over that bundle. `report` builds
    the HTML report from the written tables (the harness sits below the report layer, so the caller
    passes it).
    """
    setup = _Setup.resolve(config, bundle)
    out = Path(config.out_dir)
    with run_directory(out):
        reader = CorpusReader(config.corpus, config.fmt, config.on_error, columns=config.columns)
        for warning in [*reader.warnings, *(w for graph in setup.foreign.values() for w in graph.warnings)]:
            echo(f"warning: {warning}")
        journal = Journal.open(out, setup.fingerprint(reader), setup.names, config.resume)
        with contextlib.ExitStack() as stack:
            rejected = _RejectedRows(stack.enter_context(TableStream(out, "rejected")))
            reader.on_reject = rejected
            engine = _start_engine(stack, setup, runtime_factory, bundle is not None, echo)
            outputs = _Outputs(
                RunTotals.start(setup.names, margins(engine.infos, setup.tolerances)),
                stack.enter_context(TableStream(out, "examples")),
                stack.enter_context(TableStream(out, "flips")),
                setup.bundle.tokenizer,
            )
            clock = _score_corpus(config, reader, journal, engine, outputs)
            metrics, comparison, run_info = _tables(setup, reader, outputs, engine, journal, clock)
            write_run_tables(out, metrics=metrics, comparison=comparison, examples=outputs.examples,
                             flips=outputs.flips, rejected=rejected.flush(), run_info=run_info)  # fmt: skip
        page = report(out) if report else None  # while the run still holds its directory
    return RunResult(out, metrics, comparison, run_info, page)
