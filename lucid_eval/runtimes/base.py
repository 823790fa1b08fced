"""The boundary between the harness and the backends: plain numpy dataclasses and a small lifecycle.

A runtime opens, scores batches, reports what it really ran on, and closes. It never compares
anything; comparison lives in the harness, which never imports a backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields

import numpy as np


@dataclass(frozen=True)
class Batch:
    """One padded batch in the scoring graph's input layout (see models/scoring.py)."""

    input_ids: np.ndarray  # (B, T) int64
    attention_mask: np.ndarray  # (B, T) int64
    token_type_ids: np.ndarray  # (B, T) int64
    masked_lm_positions: np.ndarray  # (B, P) int64
    masked_lm_ids: np.ndarray  # (B, P) int64
    masked_lm_weights: np.ndarray  # (B, P) float32
    next_sentence_labels: np.ndarray  # (B,) int64

    def inputs(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class ScoreOutputs:
    """Per-example results of one batch, as numpy arrays on the host."""

    mlm_loss_sum: np.ndarray  # (B,) float32
    mlm_correct: np.ndarray  # (B,) float32
    mlm_count: np.ndarray  # (B,) float32
    nsp_loss: np.ndarray  # (B,) float32
    nsp_logits: np.ndarray  # (B, 2) float32
    mlm_predictions: np.ndarray  # (B, P) int64
    mlm_logits: np.ndarray  # (B, P, V) float32


@dataclass
class RuntimeInfo:
    """What a runtime actually ran on, as recorded in reports."""

    name: str
    precision: str  # fp32, int8, fp16
    device: str  # cpu, cuda
    providers: list[str] = field(default_factory=list)  # active providers, or e.g. ["torch:cpu"]
    threads: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. a recorded fallback, TF32 setting, IO binding


class RuntimeUnavailable(RuntimeError):
    """This runtime cannot run on this machine; the message says why."""


class Runtime(ABC):
    """open() -> run(batch) ... -> close(). Usable as a context manager."""

    name: str

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def run(self, batch: Batch) -> ScoreOutputs: ...

    @abstractmethod
    def info(self) -> RuntimeInfo: ...

    def close(self) -> None:  # noqa: B027 - most runtimes have nothing to release
        """Release sessions and device memory."""

    def __enter__(self) -> Runtime:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
