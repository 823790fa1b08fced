"""Scoring harness: corpora in, identical masked batches through every runtime, run tables out.

The names below load lazily: `lucid_eval.harness.tables` and `lucid_eval.harness.corpus` stay free
of torch and onnxruntime, so the report layer can read run tables without them."""

from importlib import import_module
from typing import Any

_HOMES = {"RunError": "journal", "RunInterrupted": "journal", "RunResult": "run", "ScoreConfig": "run", "score": "run"}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f"lucid_eval.harness.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'lucid_eval.harness' has no attribute {name!r}")
