"""lucid-eval: a reference BERT pretraining model, its ONNX exports, and the harness that compares them."""

from importlib.metadata import PackageNotFoundError, version

from lucid_eval.models import (
    BERTConfig,
    BERTForPreTraining,
    BERTTokenizerFast,
    bert_for_pre_training_base,
    bert_for_pre_training_large,
    bert_for_pre_training_tiny,
)

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
