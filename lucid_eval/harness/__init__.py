"""Scoring harness: corpora in, identical masked batches through every runtime, run tables out.

The names below load lazily: `lucid_eval.harness.tables` and `lucid_eval.harness.corpus` stay free
of torch and onnxruntime, so the report layer can read run tables without them."""

from lucid_eval.lazy import lazy_attributes

_HOMES = {"RunError": "journal", "RunInterrupted": "journal", "RunResult": "run", "ScoreConfig": "run", "score": "run"}
__all__ = list(_HOMES)

__getattr__ = lazy_attributes(__name__, _HOMES)
