"""The reference model: lucid's BERTForPreTraining API over Hugging Face BERT weights.

The names below load lazily, so `lucid_eval.models.config` (read by export manifests and reports)
stays free of torch."""

from importlib import import_module
from typing import Any

_HOMES = {
    "BERTConfig": "config",
    "BERTForPreTraining": "model",
    "BERTTokenizerFast": "tokenizer",
    "CheckpointError": "checkpoints",
    "bert_for_pre_training_base": "model",
    "bert_for_pre_training_large": "model",
    "bert_for_pre_training_tiny": "model",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(f"lucid_eval.models.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'lucid_eval.models' has no attribute {name!r}")
