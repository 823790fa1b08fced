"""ONNX export: the full and scoring graphs in fp32, fused, int8 and fp16 variants, verified."""

from lucid_eval.export.bundle import ExportBundle, ExportError
from lucid_eval.export.pipeline import VARIANTS, ExportConfig, export_model
from lucid_eval.export.verify import ExportVerificationError

__all__ = ["VARIANTS", "ExportBundle", "ExportConfig", "ExportError", "ExportVerificationError", "export_model"]
