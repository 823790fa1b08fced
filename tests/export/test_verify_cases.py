"""Verification cases: BERT-masked real pairs, at least one masked token per row, fixed by the seed."""

import numpy as np

from lucid_eval.export.verify import build_cases


def test_cases_are_deterministic_and_mask_every_row(tiny_tokenizer, tiny_config) -> None:
    cases = build_cases(tiny_tokenizer, 96, tiny_config.vocab_size, seed=5, n_pairs=20)
    again = build_cases(tiny_tokenizer, 96, tiny_config.vocab_size, seed=5, n_pairs=20)
    other = build_cases(tiny_tokenizer, 96, tiny_config.vocab_size, seed=6, n_pairs=20)
    for case, same in zip(cases, again, strict=True):
        assert case.inputs.keys() == same.inputs.keys()
        for name, array in case.inputs.items():
            np.testing.assert_array_equal(array, same.inputs[name])
    assert any(
        not np.array_equal(c.inputs["input_ids"], o.inputs["input_ids"]) for c, o in zip(cases, other, strict=True)
    )
    replaced = []
    for case in cases:
        positions, real = case.inputs["masked_lm_positions"], case.inputs["masked_lm_weights"] > 0
        assert (real.sum(1) >= 1).all(), "every row has a masked token"
        assert (np.take_along_axis(case.inputs["attention_mask"], positions, 1)[real] == 1).all()
        replaced.append(np.take_along_axis(case.inputs["input_ids"], positions, 1)[real])
        assert case.inputs["masked_lm_weights"].dtype == np.float32
        assert positions.dtype == case.inputs["masked_lm_ids"].dtype == np.int64
    share = (np.concatenate(replaced) == tiny_tokenizer.mask_token_id).mean()
    assert 0.6 < share < 0.95, "BERT's rule: about 80 % of masked tokens become [MASK]"
