"""Pretraining a small BERT from scratch, for the demo checkpoint."""

from lucid_eval.train.pretrain import PretrainConfig, PretrainResult, pretrain

__all__ = ["PretrainConfig", "PretrainResult", "pretrain"]
