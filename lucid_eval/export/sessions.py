"""Creating ONNX Runtime sessions that run where they were asked to, or say why not.

ONNX Runtime quietly creates a CPU session when the CUDA provider fails to load (for example a
missing libcublasLt.so.13) while `get_available_providers()` still lists CUDA. Only the session's
`get_providers()` tells the truth, so it is checked after every session is made.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from lucid_eval.errors import UserError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# Graph optimizers CPU sessions leave out. ONNX Runtime 1.31's CPU SkipLayerNormalization kernel
# takes 5x as long per row as Add then LayerNormalization (bert-base, 2 threads: 2.1 vs 0.45 us),
# 18 % of dynamic int8's time; kept apart, int8 ran 1.17x and fp32 1.06x faster (BENCHMARKS.md).
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


class ProviderError(UserError, RuntimeError):
    """The requested execution provider is not active in the session."""


@dataclass
class SessionResult:
    session: ort.InferenceSession
    providers: list[str]
    fallback: str | None = None  # set when the user allowed a fallback and it happened
    options: dict[str, object] = field(default_factory=dict)


def preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* wheels when this onnxruntime build supports it."""
    import importlib.util

    preload = getattr(ort, "preload_dlls", None)
    if preload is not None and importlib.util.find_spec("nvidia") is not None:
        with contextlib.suppress(Exception):  # a CPU-only machine: the session check reports the cause
            preload()


def make_session(
    path: str | Path | bytes,
    device: str = "cpu",
    *,
    threads: int | None = None,
    allow_fallback: bool = False,
    optimization: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    profile_prefix: str | None = None,
) -> SessionResult:
    """An InferenceSession on `device` ('cpu' or 'cuda'), checked to really run there; with
    `profile_prefix`, ONNX Runtime's profiler writes PREFIX_*.json (session.end_profiling())."""
    wanted = PROVIDERS[device]
    opts = ort.SessionOptions()
    opts.graph_optimization_level = optimization
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if profile_prefix:
        opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
    providers: list = [wanted]
    if device == "cuda":
        preload_cuda_libraries()
        providers = [(wanted, {"use_tf32": 0}), "CPUExecutionProvider"]
        if wanted not in ort.get_available_providers():
            raise ProviderError(
                f"{wanted} is not in this onnxruntime build ({ort.__version__}, providers "
                f"{ort.get_available_providers()}); install onnxruntime-gpu"
            )
    source = path if isinstance(path, bytes) else str(path)
    with _native_stderr() as native:
        disabled = list(CPU_DISABLED_OPTIMIZERS) if device == "cpu" else None
        session = ort.InferenceSession(source, sess_options=opts, providers=providers, disabled_optimizers=disabled)
    active = session.get_providers()
    settings = {"intra_op_num_threads": opts.intra_op_num_threads, "graph_optimization_level": str(optimization)}
    if disabled:
        settings["disabled_optimizers"] = disabled
    if device == "cuda":
        settings["use_tf32"] = 0
    if wanted in active:
        return SessionResult(session, active, options=settings)
    detail = _load_error(native.getvalue())
    cause = (
        f"{wanted} was requested but the session runs on {active}: the provider failed to load "
        f"({detail or 'typically missing CUDA 13 / cuDNN libraries such as libcublasLt.so.13, or no GPU'}); "
        "ONNX Runtime fell back silently"
    )
    if not allow_fallback:
        raise ProviderError(cause + ". Pass --allow-fallback to run on the CPU anyway (recorded in the report).")
    return SessionResult(session, active, fallback=cause, options=settings)


def cuda_provider_status() -> tuple[bool, str]:
    """Whether a CUDA session really runs here, probed with a one-node graph; and why not."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    try:
        result = make_session(model.SerializeToString(), "cuda")
    except ProviderError as exc:
        return False, str(exc).split(". Pass --allow-fallback")[0]
    except Exception as exc:
        return False, f"CUDA session failed: {exc}"
    return True, f"active providers {result.providers}"


@contextlib.contextmanager
def _native_stderr():
    """Capture what native code writes to fd 2 (ONNX Runtime's provider-loading errors), so the
    cause can go into our error message instead of a coloured log line."""
    import io
    import sys
    import tempfile

    captured = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.write(tmp.read().decode("utf-8", "replace"))


def _load_error(log: str) -> str:
    """The line of ONNX Runtime's log that says why a provider did not load, shortened."""
    import re

    match = re.search(r"Failed to load library \S*?([^/\s]+\.so) with error: ([^\n\x1b]+)", log)
    if match:
        return f"{match.group(1)}: {match.group(2).strip()}"
    match = re.search(r"(Require cuDNN[^\n\x1b]*?)(?: Please|$)", log)
    return match.group(1).strip() if match else ""
