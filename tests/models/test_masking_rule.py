"""`MaskingRule`: one selection and replacement rule for torch tensors and numpy arrays alike."""

import numpy as np
import pytest
import torch

from lucid_eval.models.masking import MaskingRule


def test_torch_and_numpy_apply_the_same_rule_to_the_same_draws() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, (6, 40))
    eligible = rng.random((6, 40)) < 0.9
    select_u, replace_u = rng.random((6, 40)), rng.random((6, 40))
    random_ids = rng.integers(0, 1000, (6, 40))
    rule = MaskingRule(4, mlm_probability=0.5)
    selected = rule.select(eligible, select_u)
    masked = rule.replace(ids, selected, replace_u, random_ids)
    as_torch = [torch.from_numpy(a) for a in (eligible, select_u, ids, replace_u, random_ids)]
    t_selected = rule.select(as_torch[0], as_torch[1])
    t_masked = rule.replace(as_torch[2], t_selected, as_torch[3], as_torch[4])
    np.testing.assert_array_equal(selected, t_selected.numpy())
    np.testing.assert_array_equal(masked, t_masked.numpy())
    assert masked.dtype == np.int64 and t_masked.dtype == torch.int64
    np.testing.assert_array_equal(masked[~selected], ids[~selected])
    assert set(np.unique(masked[selected & (replace_u < 0.8)])) == {4}


def test_at_least_one_selects_each_rows_first_eligible_token() -> None:
    ids = np.arange(5, 29).reshape(3, 8)
    eligible = np.zeros((3, 8), dtype=bool)
    eligible[0, 3:6] = eligible[1, 1] = True  # row 2 has nothing to mask
    rule = MaskingRule(4, mlm_probability=0.0)
    _, none = rule.draw_numpy(np.random.default_rng(0), ids, eligible, 100)
    assert not none.any()
    _, forced = rule.draw_numpy(np.random.default_rng(0), ids, eligible, 100, at_least_one=True)
    assert forced[0, 3] and forced[1, 1] and forced.sum() == 2


@pytest.mark.parametrize(
    "bad", [dict(mlm_probability=-0.1), dict(random_replace_prob=1.2), dict(mask_replace_prob=0.95)]
)
def test_probabilities_are_checked(bad) -> None:
    with pytest.raises(ValueError, match="must be"):
        MaskingRule(4, **bad)
