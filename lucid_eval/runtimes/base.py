"""The boundary between the harness and the backends: plain numpy dataclasses and a small lifecycle.

A runtime opens, scores batches, reports what it really ran on, and closes. It never compares
anything; comparison lives in the harness, which never imports a backend.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from lucid_eval.errors import UserError
from lucid_eval.models.scoring import SCORING_OUTPUTS


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
    """Per-example results of one batch, as numpy arrays on the host. Built by name (`from_named`):
    its fields are SCORING_OUTPUTS, the one list the graph builder, every runtime and the dummy use."""

    mlm_loss_sum: np.ndarray  # (B,) float32
    mlm_correct: np.ndarray  # (B,) float32
    mlm_count: np.ndarray  # (B,) float32
    nsp_loss: np.ndarray  # (B,) float32
    nsp_logits: np.ndarray  # (B, 2) float32
    mlm_predictions: np.ndarray  # (B, P) int64
    mlm_logits: np.ndarray  # (B, P, V) float32
    has_nsp: bool = True  # False: the graph has no NSP head (its nsp_* arrays are NaN and mean nothing)

    def __post_init__(self) -> None:
        b, p = self.mlm_predictions.shape
        shapes = {"mlm_loss_sum": (b,), "mlm_correct": (b,), "mlm_count": (b,), "nsp_loss": (b,), "nsp_logits": (b, 2)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"output {name} has shape {getattr(self, name).shape}, expected {shape}")
        if self.mlm_logits.shape[:2] != (b, p):
            raise ValueError(f"output mlm_logits has shape {self.mlm_logits.shape}, expected ({b}, {p}, V)")

    @classmethod
    def from_named(cls, outputs: Mapping[str, np.ndarray], has_nsp: bool = True) -> ScoreOutputs:
        """From a name -> array mapping holding exactly SCORING_OUTPUTS."""
        if set(outputs) != set(SCORING_OUTPUTS):
            raise ValueError(f"scoring outputs {sorted(outputs)} != the contract {list(SCORING_OUTPUTS)}")
        return cls(**{name: np.asarray(outputs[name]) for name in SCORING_OUTPUTS}, has_nsp=has_nsp)


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = np.max(x, axis=-1, keepdims=True)
    return (top + np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True)))[..., 0]


def outputs_from_logits(batch: Batch, mlm_logits: np.ndarray, nsp_logits: np.ndarray | None) -> ScoreOutputs:
    """The scoring outputs from logits at the masked slots (B, P, V) and NSP logits (B, 2), computed as
    the scoring graph does (float32 logits; each example's loss summed exactly, so it does not depend
    on its batch). `nsp_logits` None: the model has no NSP head; its outputs are NaN, has_nsp False."""
    logits = mlm_logits.astype(np.float32, copy=False)
    weights = batch.masked_lm_weights.astype(np.float32)
    target = np.take_along_axis(logits, batch.masked_lm_ids[..., None], -1)[..., 0]  # (B, P)
    token_loss = _logsumexp(logits) - target
    predictions = logits.argmax(-1).astype(np.int64)  # (B, P)
    if nsp_logits is None:
        nsp = np.full((batch.size, 2), np.nan, dtype=np.float32)
        nsp_loss = np.full(batch.size, np.nan, dtype=np.float32)
    else:
        nsp = nsp_logits.astype(np.float32, copy=False)
        nsp_target = np.take_along_axis(nsp, batch.next_sentence_labels[:, None], -1)[:, 0]
        nsp_loss = (_logsumexp(nsp) - nsp_target).astype(np.float32)
    outputs = {
        "mlm_loss_sum": np.array([math.fsum(row) for row in token_loss * weights], dtype=np.float32),
        "mlm_correct": ((predictions == batch.masked_lm_ids) * weights).sum(-1).astype(np.float32),
        "mlm_count": weights.sum(-1),
        "nsp_loss": nsp_loss,
        "nsp_logits": nsp,
        "mlm_predictions": predictions,
        "mlm_logits": logits,
    }
    return ScoreOutputs.from_named(outputs, has_nsp=nsp_logits is not None)


@dataclass
class RuntimeInfo:
    """What a runtime actually ran on, as recorded in reports."""

    name: str
    precision: str  # fp32, int8, fp16
    device: str  # cpu, cuda
    providers: list[str] = field(default_factory=list)  # active providers, or e.g. ["torch:cpu"]
    threads: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # e.g. TF32 setting, IO binding
    fallback: str = ""  # why it runs somewhere other than requested (--allow-fallback); empty when it does not


class RuntimeUnavailable(UserError, RuntimeError):
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
