"""A third-party BERT graph (full B x T x V logits) under ONNX Runtime, scored like our own graphs.

The graph is fed the batch's inputs it has, in the dtypes it takes; its logits at the masked
slots (and its NSP logits, when it has that head) go through the same arithmetic as the dummy
runtime's (`outputs_from_logits`). Full logits are B x T x V, so a batch runs in row groups whose
logits stay under LOGITS_BYTES.
"""

from __future__ import annotations

import numpy as np

from lucid_eval.export.foreign import ForeignGraph
from lucid_eval.runtimes.base import Batch, RuntimeInfo, ScoreOutputs, outputs_from_logits
from lucid_eval.runtimes.ort_runtime import OrtRuntime

LOGITS_BYTES = 64 * 2**20


class ForeignOrtRuntime(OrtRuntime):
    """One session over a foreign graph on the CPU or CUDA execution provider (checked, never a
    silent fallback: the session is made as OrtRuntime makes it)."""

    def __init__(
        self,
        name: str,
        graph: ForeignGraph,
        device: str = "cpu",
        threads: int | None = None,
        allow_fallback: bool = False,
    ) -> None:
        super().__init__(name, graph.path, graph.precision, device, threads, allow_fallback)
        self.foreign = graph

    def _feed(self, batch: Batch, rows: slice) -> dict[str, np.ndarray]:
        arrays = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        return {name: arrays[name][rows].astype(dtype) for name, dtype in self.foreign.inputs.items()}

    def run(self, batch: Batch) -> ScoreOutputs:
        if self._result is None:
            raise RuntimeError(f"{self.name} is not open")
        session, g = self._result.session, self.foreign
        wanted = [g.mlm_output] + ([g.nsp_output] if g.nsp_output else [])
        b, t = batch.input_ids.shape
        step = max(1, LOGITS_BYTES // (t * 4 * g.vocab_size))  # rows per group
        mlm, nsp = [], []
        for start in range(0, b, step):
            rows = slice(start, start + step)
            out = session.run(wanted, self._feed(batch, rows))
            positions = batch.masked_lm_positions[rows]  # (b, P)
            mlm.append(np.take_along_axis(out[0], positions[..., None], 1).astype(np.float32))  # (b, T, V) -> (b, P, V)
            if g.nsp_output:
                nsp.append(out[1].astype(np.float32))  # (b, 2)
            del out
        return outputs_from_logits(batch, np.concatenate(mlm), np.concatenate(nsp) if nsp else None)

    def info(self) -> RuntimeInfo:
        info = super().info()
        g = self.foreign
        info.notes[:0] = [f"foreign graph {g.path} (sha256 {g.sha256[:12]}…)"] + (
            [] if g.nsp_output else ["no NSP head in this graph"]
        )
        return info
