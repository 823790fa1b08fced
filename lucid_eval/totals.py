"""MLM and NSP sums that add up across batches, chunks and processes; the metrics are their ratios.

One class for every place that scores (the harness, `bench`, pretraining's held-out evaluation),
so a loss or an accuracy means the same thing everywhere: MLM over masked tokens, NSP over
labelled pairs. A ratio over nothing is NaN, never 0 or 100 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


def ratio(num: float, den: float) -> float:
    """num / den, NaN when there is nothing to divide by."""
    return num / den if den > 0 else math.nan


@dataclass
class Totals:
    """Summed MLM/NSP losses and hits, and what they were summed over."""

    mlm_loss_sum: float = 0.0
    mlm_correct: int = 0
    mlm_count: int = 0  # masked tokens
    nsp_loss_sum: float = 0.0
    nsp_correct: int = 0
    nsp_count: int = 0  # labelled pairs

    def add(
        self,
        *,
        mlm_loss_sum: float,
        mlm_correct: float,
        mlm_count: float,
        nsp_loss_sum: float = 0.0,
        nsp_correct: float = 0,
        nsp_count: float = 0,
    ) -> None:
        """Add one batch's sums (counts may arrive as floats from a graph; they are whole numbers)."""
        self.mlm_loss_sum += float(mlm_loss_sum)
        self.mlm_correct += round(float(mlm_correct))
        self.mlm_count += round(float(mlm_count))
        self.nsp_loss_sum += float(nsp_loss_sum)
        self.nsp_correct += round(float(nsp_correct))
        self.nsp_count += round(float(nsp_count))

    def __iadd__(self, other: Totals) -> Totals:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def mlm_loss(self) -> float:
        return ratio(self.mlm_loss_sum, self.mlm_count)

    @property
    def mlm_accuracy(self) -> float:
        return ratio(self.mlm_correct, self.mlm_count)

    @property
    def nsp_loss(self) -> float:
        return ratio(self.nsp_loss_sum, self.nsp_count)

    @property
    def nsp_accuracy(self) -> float:
        return ratio(self.nsp_correct, self.nsp_count)
