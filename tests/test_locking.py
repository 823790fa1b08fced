"""`exclusive_lock`: one holder at a time even when many processes take over a stale lock file."""

import fcntl
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lucid_eval import locking
from lucid_eval.locking import LockError, exclusive_lock

# ~4 s here; the O_EXCL + dead-pid lock this replaced let two processes hold it in 9 to 37 of 200 rounds.
WORKERS, ROUNDS, ATTEMPTS = 6, 200, 2


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def contend(lock: Path, marker: Path, stale_pid: int, barrier, results) -> None:
    """Each round: one worker leaves a stale lock file, then all take the lock repeatedly; a holder
    creates `marker` with O_EXCL, so a second holder at the same time shows up as an overlap."""
    for round_ in range(ROUNDS):
        if barrier.wait() == 0:
            lock.write_text(f"{stale_pid}\n")
        barrier.wait()
        held = overlaps = 0
        for _ in range(ATTEMPTS):
            try:
                with exclusive_lock(lock, "the test resource"):
                    try:
                        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    except FileExistsError:
                        overlaps += 1
                        continue
                    time.sleep(0.005)
                    os.close(fd)
                    os.unlink(marker)
                    held += 1
            except LockError:
                pass
        results.put((round_, held, overlaps))


def test_processes_taking_over_a_stale_lock_never_hold_it_together(tmp_path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WORKERS), context.Queue()
    lock, marker = tmp_path / "resource.lock", tmp_path / "held"
    args = (lock, marker, dead_pid(), barrier, results)
    workers = [context.Process(target=contend, args=args) for _ in range(WORKERS)]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=60) for _ in range(WORKERS * ROUNDS)]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            worker.kill()
    assert [w.exitcode for w in workers] == [0] * WORKERS
    held = {r: sum(h for rr, h, _ in outcomes if rr == r) for r in range(ROUNDS)}
    assert sum(overlap for _, _, overlap in outcomes) == 0, "two processes held the lock at once"
    assert all(held.values()), f"some round never took the stale lock over: {held}"
    assert not lock.exists() and not marker.exists()


def test_a_held_lock_refuses_a_second_holder_naming_the_first(tmp_path) -> None:
    lock = tmp_path / "resource.lock"
    with exclusive_lock(lock, "the test resource"):
        assert lock.read_text() == f"{os.getpid()}\n"
        refused = rf"the test resource is in use by process {os.getpid()} .*wait"
        with pytest.raises(LockError, match=refused) as caught, exclusive_lock(lock, "the test resource"):
            pass
        assert caught.value.pid == os.getpid() and caught.value.path == lock
        assert lock.read_text() == f"{os.getpid()}\n", "a refused attempt must leave the holder's file alone"
    assert not lock.exists()
    with exclusive_lock(lock, "the test resource"):
        pass


HOLD = """
import sys, time
from pathlib import Path
from lucid_eval.locking import exclusive_lock
with exclusive_lock(Path(sys.argv[1]), "the test resource"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path) -> None:
    lock = tmp_path / "resource.lock"
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "held\n"
        with pytest.raises(LockError, match=f"in use by process {child.pid} "), exclusive_lock(lock, "the resource"):
            pass
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert lock.read_text() == f"{child.pid}\n", "kill -9 leaves the lock file behind"
    with exclusive_lock(lock, "the test resource"):
        assert lock.read_text() == f"{os.getpid()}\n"
    assert not lock.exists()


def test_a_file_unlinked_while_being_locked_is_not_trusted(tmp_path, monkeypatch) -> None:
    """A holder releasing between our open() and flock() unlinks the file we opened: lock the new one."""
    lock = tmp_path / "resource.lock"
    flock, calls = fcntl.flock, []

    def unlink_first(fd: int, operation: int) -> None:
        if not calls:
            lock.unlink()  # what a releasing holder does just before it closes
        calls.append(fd)
        flock(fd, operation)

    monkeypatch.setattr(locking.fcntl, "flock", unlink_first)
    with exclusive_lock(lock, "the test resource"):
        monkeypatch.setattr(locking.fcntl, "flock", flock)
        assert len(calls) == 2 and lock.read_text() == f"{os.getpid()}\n"
        with pytest.raises(LockError), exclusive_lock(lock, "the test resource"):
            pass
