"""`score --engine ray`: the same run tables as the local engine, on real runtimes and dummies, and
every example scored exactly once when a worker dies mid-run (Ray retries) or for good (--resume).

One local Ray instance (2 CPUs) serves the module; tests needing it skip without the ray extra."""

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _score_dummy import TIMING_COLUMNS, FaultAtBatch, config, exiting_factory, factory, make_bundle, write_corpus
from click.testing import CliRunner

from lucid_eval.cli import main
from lucid_eval.harness import RunError, ScoreConfig, score
from lucid_eval.harness.corpus import CorpusReader
from lucid_eval.harness.journal import JOURNAL_DIR
from lucid_eval.harness.ray_engine import RayEngine, RayUnavailable, WorkerSpec
from lucid_eval.harness.run_info import RunInfo
from lucid_eval.harness.scoring import Chunk

N = 96
RUNTIMES = ["ref", "noisy"]
KINDS = {"noisy": {"noise": 0.3, "precision": "int8"}}
REAL = ["torch-cpu", "ort-cpu", "ort-cpu-int8"]
TABLES = ("metrics.csv", "comparison.csv", "examples.csv", "flips.csv", "rejected.csv")


@pytest.fixture(scope="module")
def ray():
    """A local Ray instance of 2 CPUs for the module; workers import the test helpers too."""
    ray = pytest.importorskip("ray", reason='--engine ray needs the ray extra: pip install -e ".[ray]"')
    helpers = str(Path(__file__).parent)
    ray.init(
        address="local",  # a private instance, even where `ray start` runs
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": helpers}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "pairs.tsv", N, bad_rows=2)


@pytest.fixture(scope="module")
def bundle(tiny_tokenizer):
    return make_bundle(tiny_tokenizer)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, bundle, corpus):
    """The dummy runtimes on the local engine."""
    out = tmp_path_factory.mktemp("baseline") / "out"
    return score(
        config(corpus, out, RUNTIMES), bundle=bundle, runtime_factory=factory(bundle.config.vocab_size, **KINDS)
    )


def read(out: Path, name: str) -> pd.DataFrame:
    table = pd.read_csv(out / name, dtype=str, keep_default_na=False)
    return table.drop(columns=[c for c in TIMING_COLUMNS if c in table.columns])


def assert_exactly_once(out: Path) -> None:
    """Each scored pair is in examples.csv once per runtime, and read = scored + rejected."""
    counts = RunInfo.load(out).counts
    assert counts.read == counts.scored + counts.rejected == N + 2
    examples = read(out, "examples.csv")
    assert not examples.duplicated(["runtime", "index"]).any()
    assert examples.groupby("runtime").size().tolist() == [N] * len(RUNTIMES)


def assert_same_tables(a: Path, b: Path) -> None:
    for name in TABLES:
        pd.testing.assert_frame_equal(read(a, name), read(b, name), obj=name)
    counts = [RunInfo.load(d).counts for d in (a, b)]
    assert counts[0] == counts[1]


def test_ray_engine_without_ray_names_the_extra(monkeypatch, bundle, corpus, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(RayUnavailable, match=r"lucid-eval\[ray\]"):
        score(config(corpus, tmp_path / "out", RUNTIMES, engine="ray"), bundle=bundle)
    assert not (tmp_path / "out").exists()
    result = CliRunner().invoke(main, ["score", "--export", str(tmp_path), "--corpus", str(corpus),
                                       "--out", str(tmp_path / "cli"), "--engine", "ray"])  # fmt: skip
    assert result.exit_code == 1 and 'pip install "lucid-eval[ray]"' in result.output, result.output
    with pytest.raises(ValueError, match="ray engine"):
        config(corpus, tmp_path / "out", RUNTIMES, workers=2)


def test_same_tables_as_the_local_engine_on_real_runtimes(ray, tiny_export, corpus, tmp_path) -> None:
    """torch-cpu, ort-cpu and ort-cpu-int8 from an export, each actor loading it: metrics within
    1e-9, the same examples, flips and verdicts (one intra-op thread per runtime in both engines)."""
    options = {"max_length": 64, "token_budget": 512, "max_batch": 8, "chunk_size": 16, "progress": False}
    runs = {
        engine: score(ScoreConfig(tiny_export, corpus, tmp_path / engine, REAL, threads=1, engine=engine, **options))
        for engine in ("local", "ray")
    }
    local, remote = runs["local"], runs["ray"]
    numeric = [c for c in local.metrics.select_dtypes("number").columns if c not in TIMING_COLUMNS]
    values = [run.metrics[numeric].to_numpy(dtype=float, na_value=np.nan) for run in (remote, local)]
    np.testing.assert_allclose(*values, rtol=0, atol=1e-9)
    assert local.verdicts == remote.verdicts
    for name in ("comparison.csv", "examples.csv", "flips.csv", "rejected.csv"):
        pd.testing.assert_frame_equal(read(tmp_path / "ray", name), read(tmp_path / "local", name), obj=name)
    engine = remote.run_info.engine
    assert engine["name"] == "ray" and engine["workers"] == 2 and engine["threads_per_worker"] == 1
    assert remote.run_info.runtime_info == local.run_info.runtime_info  # the same providers, checked per actor


def test_results_are_copied_out_of_the_object_store(ray, bundle, corpus, tmp_path) -> None:
    """ray.get gives read-only views of the stored object: one kept by the run (the batch timings
    are) would pin its whole chunk in Ray's shared memory until the run ends."""
    make = factory(bundle.config.vocab_size, **KINDS)
    spec = WorkerSpec.of(config(corpus, tmp_path, RUNTIMES, engine="ray", workers=1), RUNTIMES, {}, bundle, True, make)
    chunks = [Chunk(k, records) for k, records in enumerate(CorpusReader(corpus).chunks(16))][:3]
    with RayEngine.start(spec, None, verify=False, echo=lambda line: None) as engine:
        got = list(engine.scored(chunks, lambda k, scores: None, lambda: False, lambda n: None))
    arrays = [a for s in got for fields in [s.shared, *s.runtimes.values()] for a in fields.values()]
    assert len(got) == 3 and all(a.flags.writeable and a.base is None for a in arrays)


@pytest.mark.slow  # Ray restarts a worker: seconds each; CI runs it in the slow step
def test_a_worker_that_crashes_is_restarted_and_its_chunk_retried(ray, baseline, bundle, corpus, tmp_path) -> None:
    count = tmp_path / "batches"
    make = exiting_factory(bundle.config.vocab_size, "noisy", at_batch=3, count_file=count, **KINDS["noisy"])
    result = score(config(corpus, tmp_path / "out", RUNTIMES, engine="ray", workers=2), bundle=bundle,
                   runtime_factory=make)  # fmt: skip
    assert int(count.read_text()) > N // 8, "a worker must have exited mid-run, and the run gone on"
    assert_exactly_once(result.out_dir)
    assert_same_tables(baseline.out_dir, result.out_dir)


@pytest.mark.slow  # Ray restarts the killed worker: seconds; CI runs it in the slow step
def test_a_worker_killed_with_ray_kill_mid_run_loses_nothing(ray, baseline, bundle, corpus, tmp_path) -> None:
    out = tmp_path / "out"
    killed: list[str] = []

    def kill_one_after_the_first_chunk() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            names = [n for n in ray.util.list_named_actors() if n.startswith("lucid-eval-")]
            if names and any((out / JOURNAL_DIR).glob("chunk-*.npz")):
                ray.kill(ray.get_actor(names[0]), no_restart=False)
                killed.append(names[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_after_the_first_chunk)
    killer.start()
    make = factory(bundle.config.vocab_size, 0.15, **KINDS)  # ~4 s of scoring
    result = score(config(corpus, out, RUNTIMES, engine="ray", workers=2), bundle=bundle, runtime_factory=make)
    killer.join()
    assert killed, "no worker was killed during the run"
    assert_exactly_once(result.out_dir)
    assert_same_tables(baseline.out_dir, result.out_dir)


@pytest.mark.slow  # Ray restarts a worker: seconds each; CI runs it in the slow step
def test_a_worker_lost_for_good_stops_the_run_and_resume_finishes_it(ray, baseline, bundle, corpus, tmp_path) -> None:
    out = tmp_path / "out"
    options = {"at_batch": 7, "count_file": tmp_path / "batches", "once": False, **KINDS["noisy"]}
    dies = exiting_factory(bundle.config.vocab_size, "noisy", **options)  # from the 7th batch on, and after restarts
    with pytest.raises(RunError, match="--resume"):
        score(config(corpus, out, RUNTIMES, engine="ray", workers=1), bundle=bundle, runtime_factory=dies)
    assert len(list((out / JOURNAL_DIR).glob("chunk-*.npz"))) == 3, "the chunks of the first 6 batches finished"
    make = factory(bundle.config.vocab_size, **KINDS)
    result = score(config(corpus, out, RUNTIMES, engine="ray", resume=True), bundle=bundle, runtime_factory=make)
    assert_exactly_once(result.out_dir)
    assert_same_tables(baseline.out_dir, result.out_dir)


@pytest.mark.slow  # a second Ray run of the module: CI runs it in the slow step
def test_a_local_run_resumes_on_ray(ray, baseline, bundle, corpus, tmp_path) -> None:
    """The journal's chunks are the shards of both engines: a run may be resumed with the other one."""
    out, size = tmp_path / "out", bundle.config.vocab_size

    def lost() -> None:
        raise RuntimeError("device lost")

    broken = lambda name: FaultAtBatch(name, size, at_batch=5, fault=lost, **KINDS.get(name, {}))  # noqa: E731
    with pytest.raises(RuntimeError, match="device lost"):
        score(config(corpus, out, RUNTIMES), bundle=bundle, runtime_factory=broken)
    assert len(list((out / JOURNAL_DIR).glob("chunk-*.npz"))) == 2
    result = score(config(corpus, out, RUNTIMES, engine="ray", resume=True), bundle=bundle,
                   runtime_factory=factory(size, **KINDS))  # fmt: skip
    assert_exactly_once(result.out_dir)
    assert_same_tables(baseline.out_dir, result.out_dir)


def test_a_damaged_shard_is_refused_on_resume(baseline, bundle, corpus, tmp_path) -> None:
    """Resume trusts only verified shards: one whose bytes changed fails its zip CRC, with a way out."""
    out = tmp_path / "out"
    score(config(corpus, out, RUNTIMES), bundle=bundle, runtime_factory=factory(bundle.config.vocab_size, **KINDS))
    shard = out / JOURNAL_DIR / "chunk-000002.npz"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(RunError, match=r"chunk-000002\.npz is unreadable"):
        score(
            config(corpus, out, RUNTIMES, resume=True), bundle=bundle, runtime_factory=factory(bundle.config.vocab_size)
        )
