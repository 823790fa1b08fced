"""ONNX export: the full and scoring graphs in fp32, fused, int8 and fp16 variants, verified.

The names below load lazily, so `lucid_eval.export.transforms` (run in a child process) and the
manifest stay free of torch."""

from importlib import import_module
from typing import Any

_HOMES = {
    "VARIANTS": "manifest",
    "ExportBundle": "bundle",
    "ExportConfig": "pipeline",
    "ExportError": "manifest",
    "ExportVerificationError": "verify",
    "export_model": "pipeline",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f"lucid_eval.export.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'lucid_eval.export' has no attribute {name!r}")
