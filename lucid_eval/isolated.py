"""Run one graph transform in a fresh Python process, so the memory it held goes back to the OS.

ONNX Runtime's optimizer and quantizer keep several GB of a bert-base graph alive after they
return. A child started with `python -m` (not multiprocessing's spawn, which re-imports the
caller's `__main__` and so breaks unguarded user scripts) runs the function and exits. Function
and arguments travel as a pickle between this package and its own child; nothing else is read.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lucid_eval.errors import UserError


class IsolatedError(UserError, RuntimeError):
    """The child process died without reporting a result (killed, out of memory, crashed)."""


def run_isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) in a child process; its exception is re-raised here, its stderr shown as is."""
    with tempfile.TemporaryDirectory(prefix="lucid-eval-") as tmp:
        result = Path(tmp) / "result.pickle"
        proc = subprocess.run(
            [sys.executable, "-m", __name__, str(result)], input=pickle.dumps((fn, args)), check=False
        )
        if not result.exists():
            raise IsolatedError(f"{fn.__name__} died in its child process (exit status {proc.returncode})")
        ok, value = pickle.loads(result.read_bytes())
    if not ok:
        raise value
    return value


def _main(result: Path) -> None:
    fn, args = pickle.loads(sys.stdin.buffer.read())
    try:
        outcome = (True, fn(*args))
    except Exception as exc:  # re-raised in the parent
        try:
            pickle.dumps(exc)
        except Exception:
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        outcome = (False, exc)
    result.write_bytes(pickle.dumps(outcome))


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
