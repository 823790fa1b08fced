"""lucid-eval: a reference BERT pretraining model, its ONNX exports, and the harness that compares them.

The model names are imported lazily, so `lucid_eval.reports` and the CLI's help stay free of torch.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("lucid-eval")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = [
    "BERTConfig",
    "BERTForPreTraining",
    "BERTTokenizerFast",
    "__version__",
    "bert_for_pre_training_base",
    "bert_for_pre_training_large",
    "bert_for_pre_training_tiny",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("lucid_eval.models"), name)
    raise AttributeError(f"module 'lucid_eval' has no attribute {name!r}")
