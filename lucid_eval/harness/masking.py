"""Tokenize text pairs and draw BERT masks in numpy, one private random stream per example.

The masks of example `index` come from `np.random.default_rng([seed, index])` alone, so they are
bit-identical however the corpus is chunked, batched or resumed, and every runtime scores exactly
the same masked inputs. The rule is `MaskingRule`, the one of
`BERTForPreTraining.create_masked_lm_inputs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lucid_eval.harness.corpus import PairRecord
from lucid_eval.models.masking import MaskingRule
from lucid_eval.models.tokenizer import BERTTokenizerFast


@dataclass(frozen=True, slots=True, eq=False)
class MaskedExample:
    """One tokenized pair after masking; `positions` index `input_ids`, `labels` are the original ids."""

    index: int
    input_ids: np.ndarray  # (n_tokens,) int64, after masking
    type_ids: np.ndarray  # (n_tokens,) int64
    positions: np.ndarray  # (n_masked,) int64, ascending
    labels: np.ndarray  # (n_masked,) int64
    truncated: bool
    nsp_label: int  # -1 when the corpus has no labels

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_masked(self) -> int:
        return int(self.positions.shape[0])


def draw_mask(
    ids: np.ndarray,
    eligible: np.ndarray,
    *,
    seed: int,
    index: int,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BERT masking of one example (`MaskingRule`, 80/10/10): (masked ids, selected positions,
    original ids there). The stream is `default_rng([seed, index])` and its draws always cover every
    token, so it depends only on (seed, index, length).
    """
    rng = np.random.default_rng([seed, index])
    rule = MaskingRule(mask_token_id, mlm_probability)
    masked, selected = rule.draw_numpy(rng, ids, eligible, vocab_size)
    positions = np.flatnonzero(selected).astype(np.int64)
    return masked, positions, ids[positions]


def encode_chunk(
    records: Sequence[PairRecord],
    tokenizer: BERTTokenizerFast,
    *,
    seed: int,
    max_length: int,
    mlm_probability: float,
) -> list[MaskedExample]:
    """Tokenize a chunk of pairs (truncated to max_length) and mask each with its own stream."""
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    if not records:
        return []
    encodings = tokenizer.encode_batch([r.text_a for r in records], [r.text_b for r in records], max_length=max_length)
    mask_id, vocab_size = tokenizer.mask_token_id, tokenizer.vocab_size
    examples = []
    for record, enc in zip(records, encodings, strict=True):
        ids = np.asarray(enc.ids, dtype=np.int64)
        eligible = (np.asarray(enc.attention_mask) > 0) & (np.asarray(enc.special_tokens_mask) == 0)
        masked, positions, labels = draw_mask(
            ids,
            eligible,
            seed=seed,
            index=record.index,
            mask_token_id=mask_id,
            vocab_size=vocab_size,
            mlm_probability=mlm_probability,
        )
        examples.append(
            MaskedExample(
                index=record.index,
                input_ids=masked,
                type_ids=np.asarray(enc.type_ids, dtype=np.int64),
                positions=positions,
                labels=labels,
                truncated=len(enc.overflowing) > 0,
                nsp_label=-1 if record.nsp_label is None else record.nsp_label,
            )
        )
    return examples
