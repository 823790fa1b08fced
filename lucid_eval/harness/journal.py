"""The run directory of `score`: its lock, the refusal of folders a run did not write, and the journal.

Finished chunks are journaled atomically in OUT/.journal (one .npz per chunk plus journal.json
with the run's fingerprint), so a run killed at any moment resumes where it stopped. These chunk
files are the run's shards of per-example results, the same for both engines (a run may be resumed
with the other one). OUT/.lock (a flock) keeps two runs out of the same directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import zipfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lucid_eval.errors import UserError
from lucid_eval.harness.run_info import RunInfo
from lucid_eval.harness.scoring import Scores
from lucid_eval.harness.tables import REPORT_FILE, RUN_INFO_FILE, SCHEMAS, atomic_write_text, temp_files
from lucid_eval.locking import LockError, exclusive_lock

JOURNAL_DIR = ".journal"
JOURNAL_FILE = "journal.json"
LOCK_FILE = ".lock"
JOURNAL_FORMAT = 2  # 2: chunks hold nsp_present


class RunError(UserError, RuntimeError):
    """The run cannot start or go on as asked (locked directory, journal conflict); says what to do."""


class RunInterrupted(RunError):
    """The run stopped early on request; finished chunks are journaled and can be resumed."""


def now() -> str:
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
        RunInfo.load(out)
    except (OSError, ValueError):  # none, unreadable, or not ours (RunInfoError)
        return False
    return True


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
        self.started = now()

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
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # BadZipFile: torn or bad CRC
            raise RunError(f"journal chunk {self._file(k)} is unreadable ({exc}); {self._start_over()}") from exc

    def _start_over(self) -> str:
        """How to rescore from scratch: a run refuses a directory whose journal it cannot resume."""
        return (
            f"it cannot be resumed: to score from the start, delete the journal (rm -r {shlex.quote(str(self.dir))}) "
            f"and run again, or choose another output directory"
        )
