"""The reference model: lucid's BERTForPreTraining API over Hugging Face BERT weights.

The names below load lazily, so `lucid_eval.models.config` (read by export manifests and reports)
stays free of torch."""

from lucid_eval.lazy import lazy_attributes

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

__getattr__ = lazy_attributes(__name__, _HOMES)
