"""Loss reductions and accuracies of the pretraining heads, with lucid's semantics where they hold.

Shapes: B batch, T tokens.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Reduction = Literal["mean", "sum", "none"] | None
REDUCTIONS = ("mean", "sum", "none", None)


def check_reduction(reduction: Reduction) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum', 'none' or None, got {reduction!r}")


def reduce_token_losses(per_token: Tensor, valid: Tensor, reduction: Reduction) -> Tensor:
    """Reduce (B, T) token losses (0 where `valid` is False) as lucid's get_mlm_loss does: 'mean'
    over labelled tokens (0, not NaN, when none is), 'sum', or None/'none': every token's loss,
    flattened to (B*T,) with 0 at ignored positions."""
    check_reduction(reduction)
    if reduction == "sum":
        return per_token.sum()
    if reduction == "mean":
        return per_token.sum() / valid.sum().clamp(min=1)
    return per_token.reshape(-1)


def example_losses(per_token: Tensor, valid: Tensor) -> Tensor:
    """(B,) each example's mean over its labelled tokens (0 when it has none): what get_loss with
    reduction=None adds to the (B,) NSP losses. lucid adds the (B*T,) token losses instead, which
    fails for B > 1."""
    return per_token.sum(1) / valid.sum(1).clamp(min=1)


def masked_accuracy(pred: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """Share of labelled positions predicted right; 0 when no position is labelled (as lucid)."""
    valid = labels != ignore_index
    if not valid.any():
        return torch.zeros((), device=labels.device)
    return (pred[valid] == labels[valid]).float().mean()


def weighted_accuracy(mlm_acc: Tensor, nsp_acc: Tensor, mlm_weight: float, nsp_weight: float) -> Tensor:
    """(w_m * mlm + w_n * nsp) / (w_m + w_n). lucid returns the unnormalised sum when the weights sum
    to <= 0, a number that is no accuracy; that is refused here."""
    if mlm_weight + nsp_weight <= 0:
        raise ValueError(f"mlm_weight + nsp_weight must be positive, got {mlm_weight} + {nsp_weight}")
    return (mlm_weight * mlm_acc + nsp_weight * nsp_acc) / (mlm_weight + nsp_weight)
