"""The recipe of one pretraining run: model shape, data construction and optimisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lucid_eval.models.config import BERTConfig


@dataclass
class PretrainConfig:
    """Model shape, data construction and optimisation of one pretraining run."""

    vocab_size: int = 8000
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.0  # 0 lets SDPA use its fused kernel: attention ~40% faster
    max_length: int = 128  # also the model's max_position_embeddings: only trained positions exist
    steps: int = 9000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 300
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    mlm_probability: float = 0.15
    nsp_weight: float = 1.0  # loss = MLM + nsp_weight * NSP
    single_sentence_prob: float = 0.3  # pairs of one sentence each, the shape of the evaluation pairs
    segment_tokens: int = 64  # token budget of a multi-sentence chunk; a pair may still fill max_length
    short_seq_prob: float = 0.1  # BERT's: a random shorter token budget now and then
    heldout_fraction: float = 0.1
    eval_every: int = 400
    eval_pairs: int = 1000
    eval_batch_size: int = 64
    eval_seed: int = 0  # held-out pairs and their masks; as `write_heldout_pairs(seed=0)` builds them
    seed: int = 0
    threads: int = 2

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PretrainConfig:
        """'demo': the shipped checkpoint's recipe; 'tiny': a seconds-long run for tests."""
        presets: dict[str, dict[str, Any]] = {
            "demo": {},
            "tiny": dict(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_length=48, steps=6, batch_size=8, warmup_steps=2,
                         eval_every=3, eval_pairs=32, threads=1),
        }  # fmt: skip
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; use one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def model_config(self, vocab_size: int) -> BERTConfig:
        return BERTConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            hidden_dropout_prob=self.dropout,
            attention_probs_dropout_prob=self.attention_dropout,
            max_position_embeddings=self.max_length,
        )
