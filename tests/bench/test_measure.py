"""A measurement's metrics are `Totals` ratios: MLM over masked tokens, NSP over labelled pairs."""

import math
from types import SimpleNamespace

import pytest

from lucid_eval.bench.measure import _measurement
from lucid_eval.totals import Totals


def test_measurement_takes_its_metrics_from_totals() -> None:
    examples = [SimpleNamespace(n_tokens=n) for n in (10, 12, 7, 9)]
    totals = Totals()
    totals.add(mlm_loss_sum=6.0, mlm_correct=1, mlm_count=3, nsp_loss_sum=2.0, nsp_correct=3, nsp_count=4)
    m = _measurement("torch-cpu", "impl", "fp32", "cpu", 2, examples, totals, 1.5)
    assert (m.pairs, m.real_tokens, m.masked_tokens) == (4, 38, 3)
    assert m.mlm_loss == 2.0 and m.mlm_accuracy == pytest.approx(1 / 3)
    assert m.nsp_loss == 0.5 and m.nsp_accuracy == 0.75
    nothing = _measurement("torch-cpu", "impl", "fp32", "cpu", 2, examples, Totals(), 1.5)
    assert math.isnan(nothing.mlm_loss) and math.isnan(nothing.nsp_accuracy), "a ratio over nothing is NaN"
