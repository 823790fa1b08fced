"""A third-party BERT graph (full B x T x V logits) under ONNX Runtime, scored like our own graphs.

The graph is fed the batch's inputs it has, in the dtypes it takes; its logits at the masked
slots (and its NSP logits, when it has that head) go through the same arithmetic as the dummy
runtime's (`outputs_from_logits`). Full logits are B x T x V, so a batch runs in row groups whose
logits stay under LOGITS_BYTES.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from lucid_eval.export.foreign import ForeignGraph
from lucid_eval.export.sessions import ProviderError, SessionResult, make_session
from lucid_eval.runtimes.base import Batch, Runtime, RuntimeInfo, RuntimeUnavailable, ScoreOutputs, outputs_from_logits

LOGITS_BYTES = 64 * 2**20


class ForeignOrtRuntime(Runtime):
    """One session over a foreign graph on the CPU or CUDA execution provider (checked, never a
    silent fallback: see export.sessions.make_session)."""

    def __init__(
        self,
        name: str,
        graph: ForeignGraph,
        device: str = "cpu",
        threads: int | None = None,
        allow_fallback: bool = False,
    ) -> None:
        self.name = name
        self.graph = graph
        self.device = device
        self.threads = threads
        self.allow_fallback = allow_fallback
        self._result: SessionResult | None = None

    def open(self) -> None:
        try:
            self._result = make_session(
                self.graph.path, self.device, threads=self.threads, allow_fallback=self.allow_fallback
            )
        except ProviderError as exc:
            raise RuntimeUnavailable(f"{self.name}: {exc}") from exc

    def _feed(self, batch: Batch, rows: slice) -> dict[str, np.ndarray]:
        arrays = {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        return {name: arrays[name][rows].astype(dtype) for name, dtype in self.graph.inputs.items()}

    def run(self, batch: Batch) -> ScoreOutputs:
        if self._result is None:
            raise RuntimeError(f"{self.name} is not open")
        session, g = self._result.session, self.graph
        wanted = [g.mlm_output] + ([g.nsp_output] if g.nsp_output else [])
        b, t = batch.input_ids.shape
        step = max(1, LOGITS_BYTES // (t * 4 * g.vocab_size))  # rows per group
        mlm, nsp = [], []
        for start in range(0, b, step):
            rows = slice(start, start + step)
            out = session.run(wanted, self._feed(batch, rows))
            positions = batch.masked_lm_positions[rows]  # (b, P)
            logits = out[0]  # (b, T, V)
            mlm.append(np.take_along_axis(logits, positions[..., None], 1).astype(np.float32))  # (b, P, V)
            if g.nsp_output:
                nsp.append(out[1].astype(np.float32))  # (b, 2)
            del out, logits
        return outputs_from_logits(batch, np.concatenate(mlm), np.concatenate(nsp) if nsp else None)

    def info(self) -> RuntimeInfo:
        result = self._result
        notes = [f"foreign graph {self.graph.path} (sha256 {self.graph.sha256[:12]}…)"]
        if self.graph.nsp_output is None:
            notes.append("no NSP head in this graph")
        if result is not None:
            notes.append(f"session options: {result.options}")
        return RuntimeInfo(
            name=self.name,
            precision=self.graph.precision,
            device=self.device,
            providers=result.providers if result else [],
            threads=int(result.options["intra_op_num_threads"]) if result else self.threads,
            versions={"onnxruntime": ort.__version__},
            notes=notes,
            fallback=result.fallback or "" if result else "",
        )

    def close(self) -> None:
        self._result = None
