"""Attention masks in every form lucid accepts, turned into the one form attention adds to its scores.

A mask is binary (1/True attend, 0/False ignore; what tokenizers return) or additive (0 attend, a
large negative ignore; what lucid and HF build internally), of shape (B, T), (B, T, T) (one row per
query) or (B, 1 or H, T, T). Binary and additive are told apart by the values: a mask with a
negative value is additive. A mask of zeros only is refused: binary it would attend to nothing,
additive it would mask nothing. Shapes: B batch, T tokens, H heads.

The exported ONNX graphs take a binary (B, T) int64 mask; `padding_mask` converts the other forms
at that boundary, or says why a mask cannot be expressed that way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _is_exporting() -> bool:
    """Tracing for ONNX export: the graphs take binary masks by contract, and a data-dependent
    branch would be frozen into the graph."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def is_additive(mask: Tensor) -> bool:
    """Whether `mask` is additive (0 / negative) rather than binary (0 / 1); refuses anything else."""
    if mask.dtype == torch.bool or _is_exporting():
        return False
    lo, hi = (float(v) for v in torch.aminmax(mask.detach()))
    if lo < 0 < hi:
        raise ValueError(
            f"attention_mask mixes positive and negative values ({lo:g} to {hi:g}): pass a binary "
            "mask (1 attend, 0 ignore) or an additive one (0 attend, a large negative ignore)"
        )
    if lo < 0:
        return True
    if hi > 1:
        raise ValueError(f"a binary attention_mask holds 0 and 1 only, got values up to {hi:g}")
    if hi == 0:
        raise ValueError(
            "attention_mask is all zeros: as a binary mask it attends to nothing, as an additive "
            "mask it masks nothing; pass None (or ones) to attend to every token"
        )
    return False


def extended_attention_mask(mask: Tensor, batch: int, length: int, dtype: torch.dtype) -> Tensor:
    """The additive mask attention adds to its (B, H, T, T) scores: (B, 1, 1, T) from a (B, T)
    mask, (B, 1, T, T) from (B, T, T), a 4-D mask as given. 0 where attended, the dtype's most
    negative value where not (never -inf, so a fully masked row gives no NaN)."""
    if mask.ndim not in (2, 3, 4) or mask.shape[-1] != length or mask.shape[0] not in (1, batch):
        raise ValueError(
            f"attention_mask of shape {tuple(mask.shape)} does not fit input of shape ({batch}, {length}): "
            f"expected ({batch}, {length}), ({batch}, {length}, {length}) or ({batch}, 1 or heads, {length}, {length})"
        )
    if mask.ndim == 2:
        mask = mask[:, None, None, :]  # (B, 1, 1, T)
    elif mask.ndim == 3:
        mask = mask[:, None]  # (B, 1, T, T)
    lowest = torch.finfo(dtype).min
    if is_additive(mask):
        return mask.to(dtype).clamp(min=lowest)
    return (1.0 - mask.to(dtype)) * lowest


def attended_tokens(mask: Tensor) -> Tensor:
    """(B, T) bool: the tokens a (B, T) binary or additive mask attends to (for masking inputs)."""
    if mask.ndim != 2:
        raise ValueError(f"a (B, T) attention_mask is needed to choose tokens to mask, got shape {tuple(mask.shape)}")
    return mask >= 0 if is_additive(mask) else mask > 0


def padding_mask(mask: Tensor | np.ndarray) -> np.ndarray:
    """The binary (B, T) int64 mask the exported graphs take, from any accepted mask form.

    A 3-D/4-D mask qualifies when it is a padding mask: a token is real when it attends to itself,
    and every real token's query row (in every head) attends to exactly the real tokens of its
    example. Rows of padding tokens may hold anything: their outputs are padding. Causal, block or
    per-head masks are refused, naming the first row that differs."""
    tensor = torch.as_tensor(mask).cpu()
    if tensor.ndim not in (2, 3, 4):
        raise ValueError(f"attention_mask must be 2-D, 3-D or 4-D, got shape {tuple(tensor.shape)}")
    attend = tensor >= 0 if is_additive(tensor) else tensor > 0
    if attend.ndim == 2:
        return attend.long().numpy()
    rows = attend if attend.ndim == 4 else attend[:, None]  # (B, 1 or H, 1 or T, T)
    T = rows.shape[-1]
    if rows.shape[-2] not in (1, T):
        raise ValueError(f"attention_mask of shape {tuple(tensor.shape)} is not square over tokens")
    rows = rows.expand(-1, -1, T, T)  # a row shared by all queries counts for each
    real = rows[:, 0].diagonal(dim1=-2, dim2=-1)  # (B, T): tokens that attend to themselves
    differs = (rows != real[:, None, None, :]).any(-1) & real[:, None, :]  # (B, 1 or H, T)
    if differs.any():
        b, h, q = (int(i) for i in differs.nonzero()[0])
        raise ValueError(
            f"attention_mask is not a padding mask (example {b}, head {h}, query {q} attends to other "
            "tokens than its example's real ones); the exported graphs take a (B, T) padding mask "
            "only: run this mask in PyTorch"
        )
    return real.long().numpy()
