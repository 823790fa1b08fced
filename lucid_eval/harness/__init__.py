"""Scoring harness: corpora in, identical masked batches through every runtime, run tables out."""

from lucid_eval.harness.run import RunError, RunInterrupted, RunResult, ScoreConfig, score

__all__ = ["RunError", "RunInterrupted", "RunResult", "ScoreConfig", "score"]
