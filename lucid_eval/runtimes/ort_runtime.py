"""ONNX Runtime runtimes: the exported scoring graph on the CPU or CUDA execution provider."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from lucid_eval.export.sessions import ProviderError, SessionResult, make_session
from lucid_eval.models.scoring import SCORING_OUTPUTS
from lucid_eval.runtimes.base import Batch, Runtime, RuntimeInfo, RuntimeUnavailable, ScoreOutputs


class OrtRuntime(Runtime):
    """One scoring-graph session. On CUDA, inputs and outputs go through IO binding."""

    def __init__(
        self,
        name: str,
        graph: Path,
        precision: str,
        device: str = "cpu",
        threads: int | None = None,
        allow_fallback: bool = False,
    ) -> None:
        self.name = name
        self.graph = graph
        self.precision = precision
        self.device = device
        self.threads = threads
        self.allow_fallback = allow_fallback
        self._result: SessionResult | None = None

    def open(self) -> None:
        try:
            self._result = make_session(
                self.graph, self.device, threads=self.threads, allow_fallback=self.allow_fallback
            )
        except ProviderError as exc:
            raise RuntimeUnavailable(f"{self.name}: {exc}") from exc

    @property
    def _io_binding(self) -> bool:
        return self._result is not None and "CUDAExecutionProvider" in self._result.providers

    def run(self, batch: Batch) -> ScoreOutputs:
        if self._result is None:
            raise RuntimeError(f"{self.name} is not open")
        session = self._result.session
        if not self._io_binding:
            arrays = session.run(list(SCORING_OUTPUTS), batch.inputs())  # in the order asked for
            return ScoreOutputs.from_named(dict(zip(SCORING_OUTPUTS, arrays, strict=True)))
        binding = session.io_binding()
        for name, array in batch.inputs().items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in SCORING_OUTPUTS:
            binding.bind_output(name, "cuda")
        session.run_with_iobinding(binding)
        arrays = binding.copy_outputs_to_cpu()  # in the order the outputs were bound
        return ScoreOutputs.from_named(dict(zip(SCORING_OUTPUTS, arrays, strict=True)))

    def info(self) -> RuntimeInfo:
        result = self._result
        notes = []
        if result is not None:
            notes.append(f"session options: {result.options}")
            if self._io_binding:
                notes.append("IO binding: inputs bound from host, outputs on cuda then copied")
        return RuntimeInfo(
            name=self.name,
            precision=self.precision,
            device=self.device,
            providers=result.providers if result else [],
            threads=int(result.options["intra_op_num_threads"]) if result else self.threads,
            versions={"onnxruntime": ort.__version__},
            notes=notes,
            fallback=result.fallback or "" if result else "",
        )

    def close(self) -> None:
        self._result = None
