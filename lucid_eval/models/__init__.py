"""The reference model: lucid's BERTForPreTraining API over Hugging Face BERT weights."""

from lucid_eval.models.checkpoints import CheckpointError
from lucid_eval.models.config import BERTConfig
from lucid_eval.models.model import (
    BERTForPreTraining,
    bert_for_pre_training_base,
    bert_for_pre_training_large,
    bert_for_pre_training_tiny,
)
from lucid_eval.models.tokenizer import BERTTokenizerFast

__all__ = [
    "BERTConfig",
    "BERTForPreTraining",
    "BERTTokenizerFast",
    "CheckpointError",
    "bert_for_pre_training_base",
    "bert_for_pre_training_large",
    "bert_for_pre_training_tiny",
]
