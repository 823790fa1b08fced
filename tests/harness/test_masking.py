"""Masks: BERT's 15 % / 80-10-10 rule, never on specials or padding, identical however chunked."""

import numpy as np
import pytest
from _score_dummy import records

from lucid_eval.harness.masking import draw_mask, encode_chunk


def test_draw_mask_follows_bert_rates() -> None:
    vocab, mask_id = 1000, 4
    ids = np.random.default_rng(0).integers(5, vocab, 4000)
    eligible = np.ones(4000, dtype=bool)
    eligible[::10] = False  # specials / padding
    selected = kept = to_mask = random = eligible_total = 0
    for index in range(25):
        masked, positions, labels = draw_mask(
            ids, eligible, seed=7, index=index, mask_token_id=mask_id, vocab_size=vocab, mlm_probability=0.15
        )
        assert eligible[positions].all(), "only eligible tokens are masked"
        np.testing.assert_array_equal(labels, ids[positions])
        untouched = np.setdiff1d(np.arange(len(ids)), positions)
        np.testing.assert_array_equal(masked[untouched], ids[untouched])
        selected += len(positions)
        eligible_total += int(eligible.sum())
        to_mask += int((masked[positions] == mask_id).sum())
        kept += int((masked[positions] == ids[positions]).sum())
        random += int(((masked[positions] != mask_id) & (masked[positions] != ids[positions])).sum())
    assert selected / eligible_total == pytest.approx(0.15, abs=0.005)
    assert to_mask / selected == pytest.approx(0.8, abs=0.015)
    assert kept / selected == pytest.approx(0.1, abs=0.01)
    assert random / selected == pytest.approx(0.1, abs=0.01)


def test_padding_and_specials_are_never_masked(tiny_tokenizer) -> None:
    ids = np.arange(5, 105)
    nothing = draw_mask(
        ids, np.zeros(100, dtype=bool), seed=0, index=0, mask_token_id=4, vocab_size=1000, mlm_probability=0.99
    )
    assert len(nothing[1]) == 0 and (nothing[0] == ids).all()
    examples = encode_chunk(records(60), tiny_tokenizer, seed=1, max_length=32, mlm_probability=0.5)
    specials = {tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id, tiny_tokenizer.pad_token_id}
    for e in examples:
        enc = tiny_tokenizer.encode_batch([records(60)[e.index].text_a], [records(60)[e.index].text_b], max_length=32)[
            0
        ]
        assert e.n_tokens == len(enc.ids) <= 32
        assert not {enc.ids[p] for p in e.positions} & specials
        assert e.input_ids[0] == tiny_tokenizer.cls_token_id and e.input_ids[-1] == tiny_tokenizer.sep_token_id
        np.testing.assert_array_equal(e.labels, np.asarray(enc.ids)[e.positions])
        np.testing.assert_array_equal(e.type_ids, enc.type_ids)
    assert any(e.truncated for e in examples) and not all(e.truncated for e in examples)


def test_masks_do_not_depend_on_chunking(tiny_tokenizer) -> None:
    options = {"seed": 3, "max_length": 48, "mlm_probability": 0.15}
    whole = encode_chunk(records(40), tiny_tokenizer, **options)
    pieces = [
        e
        for start in range(0, 40, 7)
        for e in encode_chunk(records(min(7, 40 - start), start=start), tiny_tokenizer, **options)
    ]
    again = encode_chunk(records(40), tiny_tokenizer, **options)
    for a, b, c in zip(whole, pieces, again, strict=True):
        assert a.index == b.index == c.index
        for field in ("input_ids", "type_ids", "positions", "labels"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            np.testing.assert_array_equal(getattr(a, field), getattr(c, field))
    other = encode_chunk(records(40), tiny_tokenizer, **{**options, "seed": 4})
    assert any(not np.array_equal(a.positions, o.positions) for a, o in zip(whole, other, strict=True))


def test_labels_and_validation(tiny_tokenizer) -> None:
    unlabelled = encode_chunk(records(3, labels=False), tiny_tokenizer, seed=0, max_length=64, mlm_probability=0.15)
    assert [e.nsp_label for e in unlabelled] == [-1, -1, -1]
    labelled = encode_chunk(records(3), tiny_tokenizer, seed=0, max_length=64, mlm_probability=0.15)
    assert [e.nsp_label for e in labelled] == [0, 1, 0]
    with pytest.raises(ValueError, match="seed"):
        encode_chunk(records(1), tiny_tokenizer, seed=-1, max_length=64, mlm_probability=0.15)
    with pytest.raises(ValueError, match="mlm_probability"):
        encode_chunk(records(1), tiny_tokenizer, seed=0, max_length=64, mlm_probability=1.5)
