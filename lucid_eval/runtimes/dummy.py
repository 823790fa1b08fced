"""A deterministic numpy stand-in runtime, so the harness can be tested without a model.

Logits depend only on an example's own unpadded tokens (never on batch mates or padding), so
results are identical however a corpus is batched. `noise` imitates a reduced-precision runtime,
`nan_every` makes some examples produce NaN, and `delay_s` slows each batch for interruption tests.
"""

from __future__ import annotations

import time
import zlib

import numpy as np

from lucid_eval.runtimes.base import Batch, Runtime, RuntimeInfo, ScoreOutputs, outputs_from_logits


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
        return outputs_from_logits(batch, logits, nsp_logits)
