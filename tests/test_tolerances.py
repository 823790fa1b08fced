"""tolerances.top2_margin: the decisiveness every verdict's decisive subset is built on."""

import numpy as np
import pytest

from lucid_eval.tolerances import decisive, top2_margin


def _by_sorting(logits: np.ndarray) -> np.ndarray:
    top2 = np.sort(logits, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


@pytest.mark.parametrize("shape", [(1, 2), (5, 7), (130, 301), (3, 4, 50)])
def test_margin_is_best_minus_runner_up(shape: tuple[int, ...]) -> None:
    logits = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(top2_margin(logits, slab=16), _by_sorting(logits))


def test_ties_infinities_nans_and_empty_input() -> None:
    logits = np.array(
        [[1.0, 3.0, 3.0, 0.0], [np.inf, 1.0, 2.0, 0.0], [1.0, np.nan, 2.0, 0.0], [-1.0, -2.0, -3.0, -1.5]],
        dtype=np.float32,
    )
    margin = top2_margin(logits)
    assert margin[0] == 0 and margin[1] == np.inf and np.isnan(margin[2]) and margin[3] == pytest.approx(0.5)
    assert top2_margin(np.zeros((0, 9), dtype=np.float32)).shape == (0,)
    assert decisive(logits, 0.6).tolist() == [False, True, False, False]
