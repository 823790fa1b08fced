"""Runtimes that score batches: PyTorch and ONNX Runtime, on CPU and CUDA."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lucid_eval.runtimes.base import Batch, Runtime, RuntimeInfo, RuntimeUnavailable, ScoreOutputs

if TYPE_CHECKING:
    from lucid_eval.export.bundle import ExportBundle
    from lucid_eval.export.foreign import ForeignGraph


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    backend: str  # torch | ort
    device: str  # cpu | cuda
    variant: str  # export variant whose scoring graph it runs (torch: the checkpoint)
    precision: str
    description: str


SPECS = {
    s.name: s
    for s in (
        RuntimeSpec("torch-cpu", "torch", "cpu", "checkpoint", "fp32", "PyTorch reference model on the CPU"),
        RuntimeSpec("torch-cuda", "torch", "cuda", "checkpoint", "fp32", "PyTorch reference model on CUDA, TF32 off"),
        RuntimeSpec("ort-cpu", "ort", "cpu", "fused", "fp32", "ONNX Runtime CPU EP, fused fp32 graph"),
        RuntimeSpec("ort-cpu-plain", "ort", "cpu", "fp32", "fp32", "ONNX Runtime CPU EP, unfused fp32 graph"),
        RuntimeSpec("ort-cpu-int8", "ort", "cpu", "int8", "int8", "ONNX Runtime CPU EP, dynamic int8 graph"),
        RuntimeSpec(
            "ort-cpu-int8-static", "ort", "cpu", "int8-static", "int8", "ONNX Runtime CPU EP, static int8 graph"
        ),
        RuntimeSpec("ort-cuda", "ort", "cuda", "fused", "fp32", "ONNX Runtime CUDA EP, fused fp32, TF32 off"),
        RuntimeSpec("ort-cuda-fp16", "ort", "cuda", "fp16", "fp16", "ONNX Runtime CUDA EP, fp16 graph"),
    )
}


def spec(name: str) -> RuntimeSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; choose from {', '.join(SPECS)}") from None


def foreign_name(device: str, label: str) -> str:
    """The runtime name of a foreign graph: ort-cpu:LABEL or ort-cuda:LABEL."""
    return f"ort-{device}:{label}"


def create_runtime(
    name: str,
    bundle: ExportBundle,
    *,
    threads: int | None = None,
    allow_fallback: bool = False,
    foreign: Mapping[str, ForeignGraph] | None = None,
) -> Runtime:
    """A runtime over an export bundle, or one of the `foreign` graphs by its runtime name;
    nothing is loaded until open()."""
    if foreign and name in foreign:
        from lucid_eval.runtimes.foreign_runtime import ForeignOrtRuntime

        device = name.split(":", 1)[0].removeprefix("ort-")
        return ForeignOrtRuntime(name, foreign[name], device, threads, allow_fallback)
    s = spec(name)
    if s.backend == "torch":
        from lucid_eval.runtimes.torch_runtime import TorchRuntime

        return TorchRuntime(name, str(bundle.checkpoint), s.device, threads)
    from lucid_eval.runtimes.ort_runtime import OrtRuntime

    return OrtRuntime(name, bundle.graph(s.variant), s.precision, s.device, threads, allow_fallback)


def runtime_status(bundle: ExportBundle | None = None) -> list[tuple[RuntimeSpec, bool, str]]:
    """Every runtime with whether it can run here and, if not, why."""
    import torch

    from lucid_eval.export.sessions import cuda_provider_status

    ort_cuda = cuda_provider_status()
    rows = []
    for s in SPECS.values():
        ok, reason = True, "available"
        if s.backend == "torch" and s.device == "cuda" and not torch.cuda.is_available():
            ok, reason = False, f"torch.cuda.is_available() is False (torch {torch.__version__})"
        elif s.backend == "ort" and s.device == "cuda" and not ort_cuda[0]:
            ok, reason = ort_cuda
        elif bundle is not None and s.backend == "ort" and s.variant not in bundle.variants:
            ok, reason = False, f"export has no '{s.variant}' variant"
        rows.append((s, ok, reason))
    return rows


__all__ = [
    "SPECS",
    "Batch",
    "Runtime",
    "RuntimeInfo",
    "RuntimeSpec",
    "RuntimeUnavailable",
    "ScoreOutputs",
    "create_runtime",
    "foreign_name",
    "runtime_status",
    "spec",
]
