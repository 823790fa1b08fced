"""`score` end to end on dummy runtimes: reproducible, refuses conflicts, survives Ctrl-C and kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from _score_dummy import TIMING_COLUMNS, FaultAtBatch, config, factory, make_bundle, write_corpus

from lucid_eval.harness import RunError, RunInterrupted, score
from lucid_eval.harness.corpus import CorpusReader
from lucid_eval.harness.journal import JOURNAL_DIR, JOURNAL_FILE, LOCK_FILE
from lucid_eval.harness.run_info import Counts, RunInfo
from lucid_eval.reports import build_report
from lucid_eval.runtimes.dummy import DummyRuntime

N = 96
RUNTIMES = ["ref", "noisy"]
KINDS = {"noisy": {"noise": 0.3, "precision": "int8"}}
HELPER = Path(__file__).with_name("_score_dummy.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "pairs.tsv", N, bad_rows=2)


@pytest.fixture(scope="module")
def bundle(tiny_tokenizer):
    return make_bundle(tiny_tokenizer)


def run(bundle, corpus: Path, out: Path, delay_s: float = 0.0, **overrides):
    make = factory(bundle.config.vocab_size, delay_s, **KINDS)
    return score(config(corpus, out, RUNTIMES, **overrides), bundle=bundle, runtime_factory=make, report=build_report)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, bundle, corpus):
    return run(bundle, corpus, tmp_path_factory.mktemp("baseline") / "out")


def read(out: Path, name: str) -> pd.DataFrame:
    table = pd.read_csv(out / name, dtype=str, keep_default_na=False)
    return table.drop(columns=[c for c in TIMING_COLUMNS if c in table.columns])


def assert_same_outputs(a: Path, b: Path) -> None:
    for name in ("metrics.csv", "comparison.csv", "examples.csv", "flips.csv", "rejected.csv"):
        pd.testing.assert_frame_equal(read(a, name), read(b, name), obj=name)
    counts = [RunInfo.load(d).counts for d in (a, b)]
    assert counts[0] == counts[1]


def test_run_writes_reconciled_tables_and_report(baseline, bundle, corpus) -> None:
    out = baseline.out_dir
    info = RunInfo.load(out)
    assert info == baseline.run_info
    too_long = sum(len(bundle.tokenizer.encode(r.text_a, r.text_b)) > 64 for r in CorpusReader(corpus))  # max_length 64
    assert info.counts == Counts(read=N + 2, scored=N, truncated=too_long, rejected=2)
    assert info.reference == "ref" and info.runtimes == RUNTIMES and info.seed == 0
    assert info.corpus.format == "tsv" and len(info.corpus.sha256) == 64
    assert {"platform", "cpu_count"} <= set(info.host) and info.started <= info.finished
    assert len(read(out, "rejected.csv")) == 2 and (out / "report.html").stat().st_size > 0
    assert len(baseline.examples) == 2 * N and list(baseline.metrics["runtime"]) == RUNTIMES
    assert baseline.metrics["n_nsp"].tolist() == [N, N] and not (out / LOCK_FILE).exists()
    assert (out / JOURNAL_DIR / JOURNAL_FILE).exists() and "ref" in baseline.summary()
    assert len(baseline.flips) > 0, "the noisy runtime must disagree somewhere for the resume checks to bite"
    seconds = info.engine["seconds"]  # where the scoring time went: the model's own, and the harness's
    assert set(seconds) == {"model", "journal", "tables", "other"} and min(seconds.values()) >= 0
    model = (baseline.metrics["n_pairs"] / baseline.metrics["pairs_per_second"]).sum()
    assert seconds["model"] == pytest.approx(model, rel=0.01, abs=0.001)


def test_same_seed_reproduces_and_another_seed_masks_differently(baseline, bundle, corpus, tmp_path) -> None:
    again = run(bundle, corpus, tmp_path / "again")
    assert_same_outputs(baseline.out_dir, again.out_dir)
    other = run(bundle, corpus, tmp_path / "other", seed=1)
    ref = read(baseline.out_dir, "metrics.csv").iloc[0]
    assert not ref.equals(read(other.out_dir, "metrics.csv").iloc[0])
    assert not baseline.examples["n_masked"].equals(other.examples["n_masked"])


def test_tables_summed_chunk_by_chunk_equal_those_of_one_chunk(baseline, bundle, corpus, tmp_path) -> None:
    """Metrics and comparisons are summed per chunk and the tables streamed: chunking changes nothing."""
    small = run(bundle, corpus, tmp_path / "small", chunk_size=10)
    assert len(json.loads((small.out_dir / JOURNAL_DIR / JOURNAL_FILE).read_text())["chunks"]) == 10
    assert_same_outputs(baseline.out_dir, small.out_dir)


def test_existing_journal_needs_resume_and_the_same_settings(baseline, bundle, corpus) -> None:
    with pytest.raises(RunError, match=r"--resume .* or choose another output directory"):
        run(bundle, corpus, baseline.out_dir)
    with pytest.raises(RunError, match=r"changed: seed \(0 -> 5\)"):
        run(bundle, corpus, baseline.out_dir, seed=5, resume=True)


def test_a_stale_lock_file_is_taken_over(bundle, corpus, tmp_path) -> None:
    """A lock file left by a dead run is not held (flock): the next run takes it over. A held lock
    refuses a second run: tests/harness/test_run_leftovers.py."""
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_FILE).write_text(f"{dead.pid}\n")
    assert run(bundle, corpus, out).metrics["n_pairs"].tolist() == [N, N]
    assert not (out / LOCK_FILE).exists()


def test_ctrl_c_stops_after_the_batch_and_resumes(baseline, bundle, corpus, tmp_path) -> None:
    out, vocab = tmp_path / "out", bundle.config.vocab_size
    runtimes = {
        "ref": FaultAtBatch("ref", vocab, at_batch=5, fault=lambda: os.kill(os.getpid(), signal.SIGINT)),
        "noisy": DummyRuntime("noisy", vocab, **KINDS["noisy"]),
    }
    with pytest.raises(RunInterrupted, match=r"--resume") as caught:
        score(config(corpus, out, RUNTIMES), bundle=bundle, runtime_factory=runtimes.__getitem__)
    state = json.loads((out / JOURNAL_DIR / JOURNAL_FILE).read_text())
    assert 1 <= len(state["chunks"]) < N // 16, str(caught.value)
    assert not (out / "metrics.csv").exists() and not (out / LOCK_FILE).exists()
    run(bundle, corpus, out, resume=True)
    assert_same_outputs(baseline.out_dir, out)


def test_killed_run_resumes_to_the_same_tables(baseline, bundle, corpus, tmp_path) -> None:
    tokenizer_dir, out = tmp_path / "tokenizer", tmp_path / "out"
    bundle.tokenizer.save_pretrained(tokenizer_dir)
    args = [sys.executable, str(HELPER), "--tokenizer", str(tokenizer_dir), "--corpus", str(corpus), "--out", str(out)]
    proc = subprocess.Popen([*args, "--delay", "0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = out / JOURNAL_DIR / JOURNAL_FILE
    deadline = time.monotonic() + 60
    try:
        while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert journal.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no chunk within 60 s"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    done = len(json.loads(journal.read_text())["chunks"])
    assert 1 <= done < N // 16 and (out / LOCK_FILE).exists() and not (out / "metrics.csv").exists()
    run(bundle, corpus, out, resume=True)
    assert_same_outputs(baseline.out_dir, out)


def test_every_rejected_row_reaches_rejected_csv(bundle, tmp_path, monkeypatch) -> None:
    """The reader keeps only the first rejections in memory; the run streams all of them to disk."""
    from lucid_eval.harness import corpus as corpus_module

    monkeypatch.setattr(corpus_module, "KEPT_REJECTED", 2)
    bad = write_corpus(tmp_path / "bad.tsv", 12, bad_rows=7)
    result = run(bundle, bad, tmp_path / "out")
    assert result.run_info.counts.rejected == 7 and len(result.rejected) == 7
    assert len(read(result.out_dir, "rejected.csv")) == 7
