"""lucid-eval: a reference BERT pretraining model, its ONNX exports, and the harness that compares them."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lucid-eval")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
