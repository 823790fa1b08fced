"""Right-padding of variable-length examples: one helper for every (B, T) batch."""

import numpy as np

from lucid_eval.models.padding import length_mask, pad_batch, pad_rows


def test_pad_rows_to_the_longest_or_a_given_width() -> None:
    rows = [np.array([1, 2, 3]), [4], []]
    np.testing.assert_array_equal(pad_rows(rows), [[1, 2, 3], [4, 0, 0], [0, 0, 0]])
    wide = pad_rows(rows, width=5, value=-1, dtype=np.int32)
    assert wide.shape == (3, 5) and wide.dtype == np.int32 and wide[1].tolist() == [4, -1, -1, -1, -1]
    assert length_mask([2, 0], 3, np.float32).tolist() == [[1, 1, 0], [0, 0, 0]]


def test_pad_batch_pads_each_column_with_its_value() -> None:
    batch = pad_batch(
        {
            "input_ids": [[2, 7, 3], [2, 3]],
            "token_type_ids": [[0, 0, 1], [0, 1]],
            "special_tokens_mask": [[1, 0, 1], [1, 1]],
        },
        pad_token_id=9,
        width=4,
    )
    assert batch["input_ids"].tolist() == [[2, 7, 3, 9], [2, 3, 9, 9]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1, 0], [0, 1, 0, 0]]
    assert batch["special_tokens_mask"].tolist() == [[1, 0, 1, 1], [1, 1, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert all(v.dtype == np.int64 for v in batch.values())
