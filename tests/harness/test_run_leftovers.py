"""What `score` leaves behind: nothing after a failed first run, no temp files after a kill, never
a user's files overwritten, a locked directory refused, and journal errors that say what works."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _score_dummy import FaultAtBatch, config, factory, make_bundle, write_corpus

from lucid_eval.harness import RunError, score
from lucid_eval.harness import run as run_module
from lucid_eval.harness.corpus import CorpusError
from lucid_eval.harness.journal import JOURNAL_DIR, JOURNAL_FILE, LOCK_FILE
from lucid_eval.reports import atomic_write_text
from lucid_eval.runtimes.base import RuntimeUnavailable
from lucid_eval.runtimes.dummy import DummyRuntime

N = 40  # three chunks of 16
RUNTIMES = ["ref", "noisy"]
KINDS = {"noisy": {"noise": 0.3, "precision": "int8"}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus") / "pairs.tsv", N)


@pytest.fixture(scope="module")
def bundle(tiny_tokenizer):
    return make_bundle(tiny_tokenizer)


def run(bundle, corpus: Path, out: Path, make=None, **overrides):
    make = make or factory(bundle.config.vocab_size, **KINDS)
    return score(config(corpus, out, RUNTIMES, **overrides), bundle=bundle, runtime_factory=make)


def tables(out: Path) -> dict[str, str]:
    return {name: (out / name).read_text() for name in ("examples.csv", "flips.csv")}


def _lose_device() -> None:
    raise RuntimeError("device lost")


def unavailable(name: str) -> DummyRuntime:
    raise RuntimeUnavailable(f"{name}: not installed here")


def test_a_failed_first_run_removes_the_directories_it_created(bundle, corpus, tmp_path) -> None:
    out = tmp_path / "runs" / "first"
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(CorpusError):
        run(bundle, empty, out)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(RuntimeUnavailable):
        run(bundle, corpus, out, make=unavailable)
    assert not (tmp_path / "runs").exists()


def test_a_failed_run_keeps_a_directory_it_did_not_create_or_one_with_journaled_chunks(
    bundle, corpus, tmp_path
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    with pytest.raises(RuntimeUnavailable):
        run(bundle, corpus, mine, make=unavailable)
    assert mine.is_dir() and not any(mine.iterdir())

    out, vocab = tmp_path / "out", bundle.config.vocab_size
    failing = {
        "ref": FaultAtBatch("ref", vocab, at_batch=5, fault=_lose_device),
        "noisy": DummyRuntime("noisy", vocab, **KINDS["noisy"]),
    }
    with pytest.raises(RuntimeError, match="device lost"):
        run(bundle, corpus, out, make=failing.__getitem__)
    assert json.loads((out / JOURNAL_DIR / JOURNAL_FILE).read_text())["chunks"], "finished chunks are kept"
    assert run(bundle, corpus, out, resume=True).metrics["n_pairs"].tolist() == [N, N]


def test_temp_files_of_a_killed_run_are_removed_and_no_others(bundle, corpus, tmp_path) -> None:
    out = tmp_path / "out"
    run(bundle, corpus, out)
    before = tables(out)
    journal = out / JOURNAL_DIR
    ours = [
        out / ".metrics.csv.k3x_9q1z.tmp",
        out / ".report.html.abcdefgh.tmp",
        out / ".run.json.0a1b2c3d.tmp",
        journal / ".journal.json.zz9_y8x7.tmp",
        journal / "chunk-000002.npz.tmp",
    ]
    theirs = [out / ".notes.txt.abcdefgh.tmp", out / ".metrics.csv.tmp", out / "draft.tmp"]
    for path in [*ours, *theirs]:
        path.write_text("left behind")
    run(bundle, corpus, out, resume=True)
    assert [p.name for p in ours if p.exists()] == []
    assert all(p.read_text() == "left behind" for p in theirs)
    assert tables(out) == before


def test_a_failed_atomic_write_leaves_no_temp_file(bundle, corpus, tmp_path, monkeypatch) -> None:
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(tmp_path / "metrics.csv", "lone surrogate \ud800")
    assert list(tmp_path.iterdir()) == []

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(run_module.np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run(bundle, corpus, out)
    assert [p.name for p in out.rglob("*")] == [], "neither the chunk's temp file nor the lock is left"


def test_a_folder_of_someone_elses_files_is_refused_untouched(bundle, corpus, tmp_path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "report.html").write_text("<p>my report</p>")
    (out / "metrics.csv").write_text("my,metrics\n")
    (out / "run.json").write_text('{"mine": true}')
    with pytest.raises(RunError, match=r"holds metrics\.csv, run\.json, report\.html, .*another output directory"):
        run(bundle, corpus, out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.csv", "report.html", "run.json"]
    assert (out / "report.html").read_text() == "<p>my report</p>"


def test_a_folder_with_unrelated_files_is_scored_into_and_they_are_kept(bundle, corpus, tmp_path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run(bundle, corpus, out).metrics["n_pairs"].tolist() == [N, N]
    assert (out / "notes.txt").read_text() == "mine"


def test_a_missing_journal_chunk_gives_a_command_that_works(bundle, corpus, tmp_path) -> None:
    out = tmp_path / "out"
    run(bundle, corpus, out)
    before = tables(out)
    (out / JOURNAL_DIR / "chunk-000001.npz").unlink()
    with pytest.raises(RunError, match=r"chunk-000001\.npz is unreadable .*rm -r ") as caught:
        run(bundle, corpus, out, resume=True)
    command = re.search(r"\((rm -r [^)]+)\)", str(caught.value)).group(1)
    subprocess.run(shlex.split(command), check=True)
    run(bundle, corpus, out)
    assert tables(out) == before


HOLD = """
import sys, time
from pathlib import Path
from lucid_eval.locking import exclusive_lock
with exclusive_lock(Path(sys.argv[1]), "run directory"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_directory_locked_by_another_run_is_refused_until_that_run_is_killed(bundle, corpus, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunError, match=rf"in use by another lucid-eval run \(process {holder.pid} .*wait for it"):
            run(bundle, corpus, out)
        assert (out / LOCK_FILE).read_text() == f"{holder.pid}\n"
        os.kill(holder.pid, signal.SIGKILL)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert run(bundle, corpus, out).metrics["n_pairs"].tolist() == [N, N]
    assert not (out / LOCK_FILE).exists()
