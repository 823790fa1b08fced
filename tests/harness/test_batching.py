"""Length bucketing: token budget and batch cap hold, padding is a multiple of 8, order comes back."""

from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lucid_eval.harness.batching import (
    CPU_BATCH_SHAPE,
    CUDA_BATCH_SHAPE,
    default_batch_shape,
    iter_batches,
    make_batch,
    padded_length,
    plan_batches,
)
from lucid_eval.harness.masking import MaskedExample
from lucid_eval.harness.run import ScoreConfig


def example(index: int, n_tokens: int, n_masked: int) -> MaskedExample:
    ids = np.arange(10, 10 + n_tokens, dtype=np.int64)
    positions = np.arange(1, 1 + n_masked, dtype=np.int64)
    return MaskedExample(index, ids, np.zeros(n_tokens, np.int64), positions, ids[positions], False, index % 2)


def test_padded_length_rounds_to_8_within_the_cap() -> None:
    assert [padded_length(n, 128) for n in (1, 8, 9, 16, 121, 128)] == [8, 8, 16, 16, 128, 128]
    assert padded_length(61, 62) == 62 and padded_length(62, 62) == 62


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(3, 100), min_size=1, max_size=80),
    budget=st.integers(100, 2000),
    max_batch=st.integers(1, 16),
)
def test_plan_respects_budget_and_covers_everything(lengths: list[int], budget: int, max_batch: int) -> None:
    groups = plan_batches(lengths, token_budget=budget, max_batch=max_batch, max_length=100)
    covered = np.sort(np.concatenate(groups))
    np.testing.assert_array_equal(covered, np.arange(len(lengths)))
    for group in groups:
        width = padded_length(max(lengths[i] for i in group), 100)
        assert len(group) <= max_batch
        assert len(group) * width <= budget or len(group) == 1


def test_batches_are_padded_and_restore_corpus_order() -> None:
    rng = np.random.default_rng(0)
    examples = [example(i + 100, int(rng.integers(10, 61)), int(rng.integers(0, 9))) for i in range(50)]
    seen = []
    for indices, batch in iter_batches(examples, token_budget=256, max_batch=6, max_length=60, pad_token_id=0):
        size, width = batch.input_ids.shape
        assert size <= 6 and size * width <= 256
        assert width % 8 == 0 or width == 60
        assert batch.masked_lm_positions.shape[1] >= 1
        for row, index in enumerate(indices):
            e = examples[index - 100]
            n, m = e.n_tokens, e.n_masked
            np.testing.assert_array_equal(batch.input_ids[row, :n], e.input_ids)
            assert batch.attention_mask[row].sum() == n and (batch.input_ids[row, n:] == 0).all()
            np.testing.assert_array_equal(batch.masked_lm_positions[row, :m], e.positions)
            assert (batch.masked_lm_positions[row, m:] == 0).all() and (batch.masked_lm_ids[row, m:] == 0).all()
            assert batch.masked_lm_weights[row].sum() == m
            assert batch.next_sentence_labels[row] == e.nsp_label
        seen.extend(indices.tolist())
    assert sorted(seen) == [e.index for e in examples]
    assert len(seen) == len(set(seen))


def test_batch_without_masked_tokens_has_one_empty_slot() -> None:
    batch = make_batch([example(0, 5, 0), example(1, 7, 0)], pad_token_id=0, max_length=64)
    assert batch.masked_lm_positions.shape == (2, 1) and batch.masked_lm_weights.sum() == 0
    assert batch.input_ids.shape == (2, 8)
    assert batch.input_ids.dtype == np.int64 and batch.masked_lm_weights.dtype == np.float32


def test_default_batch_shape_is_small_on_the_cpu_and_full_with_cuda() -> None:
    assert default_batch_shape(["cpu", "cpu"], 128) == CPU_BATCH_SHAPE == (2048, 16)
    assert default_batch_shape(["cpu", "cuda"], 128) == CUDA_BATCH_SHAPE == (8192, 64)
    assert default_batch_shape(["cpu"], 4096) == (4096, 16)  # a budget always holds one pair


def test_score_config_resolves_the_shape_from_its_runtimes_and_keeps_given_values() -> None:
    def config(**kw) -> ScoreConfig:
        return ScoreConfig(
            **{"export_dir": "e", "corpus": "c.tsv", "out_dir": "o", "runtimes": ["torch-cpu", "ort-cpu"], **kw}
        )

    assert (config().token_budget, config().max_batch) == CPU_BATCH_SHAPE
    assert (config(runtimes=["torch-cpu", "ort-cuda"]).token_budget, config().max_batch) == (8192, 16)
    assert config(runtimes=["torch-cpu", "ort-cuda"]).max_batch == 64
    foreign = config(export_dir=None, model="m", runtimes=["torch-cpu"], onnx=(Path("g.onnx"),), onnx_device="cuda")
    assert (foreign.token_budget, foreign.max_batch) == CUDA_BATCH_SHAPE
    assert (config(token_budget=512, max_batch=4).token_budget, config(max_batch=4).max_batch) == (512, 4)
