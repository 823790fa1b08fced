"""ONNX export: the full and scoring graphs in fp32, fused, int8 and fp16 variants, verified.

The names below load lazily, so `lucid_eval.export.transforms` (run in a child process) and the
manifest stay free of torch."""

from lucid_eval.lazy import lazy_attributes

_HOMES = {
    "VARIANTS": "manifest",
    "ExportBundle": "bundle",
    "ExportConfig": "pipeline",
    "ExportError": "manifest",
    "ExportVerificationError": "verify",
    "export_model": "pipeline",
}
__all__ = list(_HOMES)

__getattr__ = lazy_attributes(__name__, _HOMES)
