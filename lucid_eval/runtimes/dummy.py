"""A deterministic numpy stand-in runtime, so the harness can be tested without a model.

Logits depend only on an example's own unpadded tokens (never on batch mates or padding), so
results are identical however a corpus is batched. `noise` imitates a reduced-precision runtime,
`nan_every` makes some examples produce NaN, and `delay_s` slows each batch for interruption tests.
"""

from __future__ import annotations

import math
import time
import zlib

import numpy as np

from lucid_eval.runtimes.base import Batch, Runtime, RuntimeInfo, ScoreOutputs


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = np.max(x, axis=-1, keepdims=True)
    return (top + np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True)))[..., 0]


class DummyRuntime(Runtime):
    """Scores a `Batch` with fixed random embeddings; follows the ScoreOutputs semantics exactly.

    Sums run in a fixed order (exact for the loss), so an example's outputs are bit-identical in
    any batch; a real runtime's may differ in the last bits with the batch shape."""

    def __init__(
        self,
        name: str,
        vocab_size: int,
        hidden: int = 16,
        seed: int = 0,
        noise: float = 0.0,
        precision: str = "fp32",
        nan_every: int = 0,
        delay_s: float = 0.0,
    ) -> None:
        self.name = name
        self.vocab_size = vocab_size
        self.hidden = hidden
        self.seed = seed
        self.noise = noise
        self.precision = precision
        self.nan_every = nan_every
        self.delay_s = delay_s
        self._weights: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def open(self) -> None:
        rng = np.random.default_rng(self.seed)
        embed = rng.standard_normal((self.vocab_size, self.hidden)).astype(np.float32)
        decoder = rng.standard_normal((self.hidden, self.vocab_size)).astype(np.float32)
        nsp = rng.standard_normal((self.hidden, 2)).astype(np.float32)
        self._weights = (embed, decoder, nsp)

    def info(self) -> RuntimeInfo:
        return RuntimeInfo(
            name=self.name,
            precision=self.precision,
            device="cpu",
            providers=["dummy:numpy"],
            threads=1,
            versions={"numpy": np.__version__},
        )

    def _example(self, ids: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P, V) logits at `positions` and (2,) NSP logits of one unpadded example."""
        assert self._weights is not None, "call open() first"
        embed, decoder, nsp = self._weights
        n = ids.shape[0]
        window = np.clip(positions[:, None] + np.arange(-1, 2), 0, n - 1)  # (P, 3) neighbours
        hidden = np.tanh(embed[ids[window]].mean(axis=1))  # (P, C)
        logits = np.zeros((len(positions), self.vocab_size), dtype=np.float32)
        for c in range(self.hidden):  # a fixed summation order: bit-identical whatever P is
            logits += hidden[:, c, None] * decoder[c]
        nsp_logits = np.tanh(embed[ids].mean(axis=0)) @ nsp  # (2,)
        key = zlib.crc32(ids.tobytes())
        if self.noise > 0:
            rng = np.random.default_rng([self.seed, key])  # NSP first: P varies with the batch
            nsp_logits = nsp_logits + self.noise * rng.standard_normal(2).astype(np.float32)
            logits = logits + self.noise * rng.standard_normal(logits.shape).astype(np.float32)
        if self.nan_every > 0 and key % self.nan_every == 0:
            logits = np.full_like(logits, np.nan)
            nsp_logits = np.full_like(nsp_logits, np.nan)
        return logits.astype(np.float32), nsp_logits.astype(np.float32)

    def run(self, batch: Batch) -> ScoreOutputs:
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        lengths = batch.attention_mask.sum(axis=1)
        pairs = [
            self._example(batch.input_ids[b, : lengths[b]], batch.masked_lm_positions[b]) for b in range(batch.size)
        ]
        logits = np.stack([p[0] for p in pairs])  # (B, P, V)
        nsp_logits = np.stack([p[1] for p in pairs])  # (B, 2)
        weights = batch.masked_lm_weights.astype(np.float32)
        target = np.take_along_axis(logits, batch.masked_lm_ids[..., None], -1)[..., 0]
        token_loss = _logsumexp(logits) - target
        predictions = logits.argmax(-1).astype(np.int64)
        nsp_target = np.take_along_axis(nsp_logits, batch.next_sentence_labels[:, None], -1)[:, 0]
        return ScoreOutputs.from_named(
            dict(
                mlm_loss_sum=np.array([math.fsum(row) for row in token_loss * weights], dtype=np.float32),
                mlm_correct=((predictions == batch.masked_lm_ids) * weights).sum(-1).astype(np.float32),
                mlm_count=weights.sum(-1),
                nsp_loss=(_logsumexp(nsp_logits) - nsp_target).astype(np.float32),
                nsp_logits=nsp_logits,
                mlm_predictions=predictions,
                mlm_logits=logits,
            )
        )
