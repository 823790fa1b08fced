"""Right-padding of variable-length examples into (B, T) batches, written once.

The tokenizer's `batch_encode_plus`, the harness's length-bucketed batches, pretraining's batches,
export verification and the benchmark's PyTorch loop all pad this way: real tokens first, then
[PAD] in `input_ids`, 1 in `special_tokens_mask` (padding is never masked), 0 elsewhere, and an
`attention_mask` that is 1 exactly on the real tokens.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

PAD_VALUES = {"special_tokens_mask": 1}  # input_ids: the [PAD] id; any other column: 0


def pad_rows(
    rows: Sequence[ArrayLike], *, width: int | None = None, value: float = 0, dtype: DTypeLike = np.int64
) -> np.ndarray:
    """Rows of different lengths right-padded with `value` into one (B, width) array; `width`
    defaults to the longest row."""
    width = max((len(row) for row in rows), default=0) if width is None else width
    out = np.full((len(rows), width), value, dtype=dtype)  # (B, width)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def length_mask(lengths: ArrayLike, width: int, dtype: DTypeLike = np.int64) -> np.ndarray:
    """(B, width): 1 on each row's first `lengths[b]` positions, 0 after (what padding added)."""
    return (np.arange(width) < np.asarray(lengths)[:, None]).astype(dtype)


def pad_batch(
    columns: Mapping[str, Sequence[ArrayLike]], *, pad_token_id: int, width: int | None = None
) -> dict[str, np.ndarray]:
    """Pad B examples' token columns (`input_ids` and any of `token_type_ids`,
    `special_tokens_mask`, ...: one row per example, all of that example's length) into (B, T)
    int64 arrays, plus their `attention_mask`. T is `width`, or the longest example."""
    lengths = [len(row) for row in columns["input_ids"]]
    width = max(lengths, default=0) if width is None else width
    batch = {
        name: pad_rows(rows, width=width, value=pad_token_id if name == "input_ids" else PAD_VALUES.get(name, 0))
        for name, rows in columns.items()
    }
    batch["attention_mask"] = length_mask(lengths, width)  # (B, T)
    return batch
