"""`score --engine ray`: a run's chunks scored by a pool of Ray actors, on this machine or a cluster.

What runs where:
- The driver (the `lucid-eval score` process) reads the corpus with the usual CorpusReader, so rows
  are rejected, counted and indexed exactly as with the local engine; sends each chunk of records
  to the least busy actor; journals each chunk's Scores the moment it comes back; and aggregates
  them in corpus order (run.py), so everything after scoring is the local engine's code.
- Each actor opens every runtime of the run once (one ONNX Runtime session or torch model each,
  `threads` intra-op threads, `gpus_per_worker` GPUs for the CUDA runtimes) and scores whole chunks:
  tokenise, mask (keyed by seed and example index), batch and score exactly as the local engine
  does. A chunk stays on one actor because each runtime is compared with the reference's logits of
  the same batch, far too large to ship between actors.

An actor that dies (crash, OOM kill, ray.kill, lost node) is restarted by Ray and the chunks it had
in flight are retried, MAX_RETRIES times; a chunk's result is taken once, so no example is lost or
counted twice. Beyond that the run stops with its finished chunks journaled, for --resume.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from uuid import uuid4

from lucid_eval.errors import UserError
from lucid_eval.harness.journal import RunError
from lucid_eval.harness.run import ScoreConfig
from lucid_eval.harness.scoring import Chunk, Scores, Stopped, open_runtimes, score_records
from lucid_eval.harness.sources import default_factory, load_bundle, verify_unverified
from lucid_eval.runtimes.base import Runtime, RuntimeInfo
from lucid_eval.tolerances import Tolerances

MAX_RETRIES = 3  # restarts of a dead actor, and retries of each chunk it had in flight
IN_FLIGHT_PER_WORKER = 2  # one chunk scoring and one queued, so no actor waits for the driver
EXTRA = 'pip install "lucid-eval[ray]"'


class RayUnavailable(UserError, ImportError):
    """--engine ray where Ray is not installed."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable(f"--engine ray needs Ray, which is not installed here: {EXTRA}") from exc
    return ray


@dataclass(frozen=True)
class WorkerSpec:
    """What each actor needs to open the run's runtimes itself, on its own node."""

    config: ScoreConfig  # paths absolute, threads set
    names: list[str]  # every runtime, the reference first
    foreign: dict[str, Any]  # runtime name -> ForeignGraph
    manifest_sha256: str  # the driver's model, which every actor must load too
    bundle: Any = None  # shipped only when score() was given one; otherwise each actor loads its own
    runtime_factory: Callable[[str], Runtime] | None = None

    @classmethod
    def of(
        cls,
        config: ScoreConfig,
        names: list[str],
        foreign: dict[str, Any],
        bundle: Any,
        bundle_given: bool,
        runtime_factory: Callable[[str], Runtime] | None,
    ) -> WorkerSpec:
        """Paths made absolute (an actor's working directory is not the driver's) and one intra-op
        thread per runtime unless `config.threads` says otherwise."""
        model = config.model
        if model is not None and Path(model).exists():
            model = Path(model).resolve()
        config = replace(
            config,
            export_dir=None if config.export_dir is None else Path(config.export_dir).resolve(),
            model=model,
            onnx=tuple(Path(p).resolve() for p in config.onnx),
            threads=config.threads or 1,
        )
        foreign = {name: replace(graph, path=Path(graph.path).resolve()) for name, graph in foreign.items()}
        return cls(config, names, foreign, bundle.manifest_sha256, bundle if bundle_given else None, runtime_factory)


class ScoringWorker:
    """A Ray actor holding every runtime of the run. They open on first use, so an error opening
    them reaches the driver as that error, and an actor Ray restarts opens them again."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._stack = contextlib.ExitStack()
        self._bundle: Any = None
        self._runtimes: list[Runtime] | None = None

    def _load(self) -> Any:
        if self._bundle is None:
            spec = self.spec
            bundle = spec.bundle if spec.bundle is not None else load_bundle(spec.config)
            if bundle.manifest_sha256 != spec.manifest_sha256:
                where = spec.config.export_dir or spec.config.model
                raise RunError(
                    f"{socket.gethostname()}: the model at {where} is not the driver's (manifest sha256 "
                    f"{bundle.manifest_sha256[:12]} != {spec.manifest_sha256[:12]}); every node needs the same "
                    "export at the same path"
                )
            self._bundle = bundle
        return self._bundle

    def _open(self) -> list[Runtime]:
        if self._runtimes is None:
            spec = self.spec
            factory = spec.runtime_factory or default_factory(spec.config, self._load(), spec.foreign)
            self._runtimes = open_runtimes(self._stack, factory, spec.names)
        return self._runtimes

    def describe(self) -> tuple[dict[str, RuntimeInfo], str]:
        """What each runtime really runs on here, and this actor's host."""
        return {rt.name: rt.info() for rt in self._open()}, socket.gethostname()

    def verify(self, tolerances: Tolerances) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """verify_unverified on this actor's device: its records and the lines it printed."""
        lines: list[str] = []
        return verify_unverified(self.spec.config, self._load(), tolerances, lines.append), lines

    def score(self, records: list[Any]) -> Scores:
        scores = score_records(self.spec.config, records, self._open(), self._load().tokenizer)
        assert scores is not None  # only a stop request makes it None
        return scores


def _owned(scores: Scores) -> Scores:
    """A copy out of Ray's object store. The arrays ray.get returns are views of the stored object:
    any one kept (the run keeps each chunk's batch timings) would pin the whole chunk there."""
    return Scores(
        {k: v.copy() for k, v in scores.shared.items()},
        {name: {k: v.copy() for k, v in fields.items()} for name, fields in scores.runtimes.items()},
    )


def _get(ray: Any, refs: Any) -> Any:
    """ray.get, raising an actor's error as itself (a UserError stays one line) and a worker lost
    for good as a RunError that says how to resume."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise exc.cause from None
        raise
    except ray.exceptions.RayActorError as exc:
        last = next((line.strip() for line in reversed(str(exc).splitlines()) if line.strip()), type(exc).__name__)
        raise RunError(
            f"a scoring worker died and Ray could not restart it or retry its chunk {MAX_RETRIES} times ({last}); "
            "the chunks finished so far are journaled: run the same command with --resume"
        ) from exc


@contextlib.contextmanager
def _connected(ray: Any, address: str | None) -> Iterator[None]:
    """Connect to the Ray cluster at `address` unless this process already is; None starts a private
    Ray instance on this machine (address "local": never a cluster `ray start` left running here,
    which "auto" joins). Disconnect (stopping a Ray we started) afterwards."""
    if ray.is_initialized():
        yield
        return
    if address is None:
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def _plan(ray: Any, config: ScoreConfig, names: list[str]) -> tuple[int, int, float]:
    """(workers, CPUs per worker, GPUs per worker). A worker takes `threads` CPUs (and
    `gpus_per_worker` GPUs); by default there are as many workers as the cluster holds."""
    threads, gpus = config.threads or 1, config.gpus_per_worker
    cuda = [name for name in names if "cuda" in name.split(":")[0]]
    if cuda and not gpus:
        raise RunError(f"{', '.join(cuda)} need a GPU in each worker: pass --gpus-per-worker (e.g. 1)")
    resources = ray.cluster_resources()
    have_cpus, have_gpus = int(resources.get("CPU", 0)), resources.get("GPU", 0.0)
    fits = have_cpus // threads if not gpus else min(have_cpus // threads, int(have_gpus // gpus))
    workers = config.workers or fits
    if not 1 <= workers <= fits:
        raise RunError(
            f"{workers or 1} worker(s) of {threads} CPU(s)" + (f" and {gpus:g} GPU(s)" if gpus else "")
            + f" do not fit the Ray cluster's {have_cpus} CPU(s) and {have_gpus:g} GPU(s); "
            "ask for fewer --workers, --threads or --gpus-per-worker"
        )  # fmt: skip
    return workers, threads, gpus


def _agreed(described: list[tuple[dict[str, RuntimeInfo], str]]) -> dict[str, RuntimeInfo]:
    """The runtimes' infos, which every actor must share: one run, one provider per runtime."""
    first, host = described[0]
    for infos, other in described[1:]:
        differ = [name for name in first if asdict(first[name]) != asdict(infos[name])]
        if differ:
            raise RunError(
                f"workers run {', '.join(differ)} differently ({host}: {first[differ[0]]}; {other}: "
                f"{infos[differ[0]]}); every node needs the same packages and devices"
            )
    return first


@dataclass
class RayEngine:
    """The actor pool of one run (see the module docstring); run.py's Engine."""

    ray: Any
    actors: list[Any]
    infos: dict[str, RuntimeInfo]
    late_verification: dict[str, dict[str, Any]]
    description: dict[str, Any]

    @classmethod
    @contextlib.contextmanager
    def start(
        cls, spec: WorkerSpec, tolerances: Tolerances, *, verify: bool, echo: Callable[[str], None]
    ) -> Iterator[RayEngine]:
        """Connect, start the actors and open their runtimes (graphs not verified at export are
        verified first, on a worker); kill the actors when done."""
        ray = import_ray()
        config = spec.config
        with _connected(ray, config.address):
            workers, cpus, gpus = _plan(ray, config, spec.names)
            gcs = ray.get_runtime_context().gcs_address
            echo(
                f"ray {ray.__version__} at {gcs}: {workers} worker(s), {cpus} CPU(s)"
                + (f", {gpus:g} GPU(s)" if gpus else "")
                + " each"
            )
            actor = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=MAX_RETRIES, max_task_retries=MAX_RETRIES)(
                ScoringWorker
            )
            run_id = uuid4().hex[:8]
            actors = [actor.options(name=f"lucid-eval-{run_id}-{i}").remote(spec) for i in range(workers)]
            try:
                late: dict[str, dict[str, Any]] = {}
                if verify:
                    late, lines = _get(ray, actors[0].verify.remote(tolerances))
                    for line in lines:
                        echo(line)
                described = _get(ray, [a.describe.remote() for a in actors])
                description = {
                    "name": "ray",
                    "ray": ray.__version__,
                    "address": config.address or "local",
                    "gcs_address": gcs,
                    "workers": workers,
                    "threads_per_worker": cpus,
                    "gpus_per_worker": gpus,
                    "hosts": sorted({host for _, host in described}),
                }
                yield cls(ray, actors, _agreed(described), late, description)
            finally:
                for handle in actors:
                    ray.kill(handle)

    def scored(
        self,
        chunks: Iterable[Chunk],
        save: Callable[[int, Scores], None],
        stop: Callable[[], bool],
        progress: Callable[[int], None],
    ) -> Iterator[Scores]:
        """Keep IN_FLIGHT_PER_WORKER chunks per actor in flight, save each as it returns, yield in
        corpus order. Memory: at most twice the chunks in flight are held."""
        ray, window = self.ray, IN_FLIGHT_PER_WORKER * len(self.actors)
        queue: deque[Chunk] = deque()  # read and not yet yielded, in corpus order
        running: dict[Any, tuple[Chunk, int]] = {}  # result ref -> (chunk, actor)
        load = [0] * len(self.actors)
        source, exhausted = iter(chunks), False
        while True:
            while queue and queue[0].scores is not None:
                yield queue.popleft().scores
            if stop():
                self._drain(running, save)
                raise Stopped
            if not exhausted and len(running) < window and len(queue) < 2 * window:
                chunk = next(source, None)
                if chunk is None:
                    exhausted = True
                    continue
                queue.append(chunk)
                if chunk.scores is None:
                    a = min(range(len(load)), key=load.__getitem__)
                    running[self.actors[a].score.remote(chunk.records)] = (chunk, a)
                    load[a] += 1
                continue
            if not running:
                break
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)  # wakes up to check stop()
            for ref in ready:
                chunk, a = running.pop(ref)
                load[a] -= 1
                chunk.scores = _owned(_get(ray, ref))
                save(chunk.k, chunk.scores)
                progress(len(chunk.records))
        # Actors Ray restarted opened their runtimes again: they must still run as recorded.
        _agreed([(self.infos, "the first workers"), *_get(ray, [a.describe.remote() for a in self.actors])])

    def _drain(self, running: dict[Any, tuple[Chunk, int]], save: Callable[[int, Scores], None]) -> None:
        """On a stop request: journal the chunks already in flight (a second Ctrl-C stops at once)."""
        for ref, (chunk, _) in running.items():
            with contextlib.suppress(Exception):
                save(chunk.k, _get(self.ray, ref))
