"""lucid-eval: a reference BERT pretraining model, its ONNX exports, and the harness that compares them.

The model names are imported lazily, so `lucid_eval.reports` and the CLI's help stay free of torch.
"""

from importlib.metadata import PackageNotFoundError, version

from lucid_eval.lazy import lazy_attributes

try:
    __version__ = version("lucid-eval")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

_MODEL_NAMES = [
    "BERTConfig",
    "BERTForPreTraining",
    "BERTTokenizerFast",
    "bert_for_pre_training_base",
    "bert_for_pre_training_large",
    "bert_for_pre_training_tiny",
]
__all__ = ["__version__", *_MODEL_NAMES]

__getattr__ = lazy_attributes(__name__, dict.fromkeys(_MODEL_NAMES, "models"))
