"""Length bucketing: pack a chunk's examples into padded batches under a token budget.

Sorting by length keeps padding small; every batch satisfies B x padded_T <= token_budget and
B <= max_batch. Batches carry the corpus indices of their examples, so per-example results can
be put back into corpus order whatever the packing was.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from lucid_eval.harness.masking import MaskedExample
from lucid_eval.models.padding import length_mask, pad_batch, pad_rows
from lucid_eval.runtimes.base import Batch

PAD_MULTIPLE = 8
CPU_BATCH_SHAPE = (2048, 16)  # (token budget, pairs at most) when every runtime runs on the CPU
CUDA_BATCH_SHAPE = (8192, 64)  # once a CUDA runtime is in the run


def default_batch_shape(devices: Iterable[str], max_length: int) -> tuple[int, int]:
    """(token_budget, max_batch) for runtimes on `devices` ('cpu', 'cuda'), the budget at least
    `max_length`. Small batches on the CPU: on bert-base they ran int8 1.45x and fp32 1.23x faster
    than 8192 / 64 on a Xeon (AVX-512), fp32 1.17-1.28x on an AMD EPYC (BENCHMARKS.md), their
    activations staying in cache; a GPU wants full batches."""
    budget, pairs = CUDA_BATCH_SHAPE if "cuda" in set(devices) else CPU_BATCH_SHAPE
    return max(budget, max_length), pairs


def padded_length(n_tokens: int, max_length: int) -> int:
    """Round up to a multiple of 8 (tensor-core friendly shapes), never beyond max_length."""
    return min(-(-n_tokens // PAD_MULTIPLE) * PAD_MULTIPLE, max(max_length, n_tokens))


def plan_batches(lengths: Sequence[int], *, token_budget: int, max_batch: int, max_length: int) -> list[np.ndarray]:
    """Groups of positions into `lengths`, shortest examples first, each group within budget.

    A single example always forms a batch, even when its padded length alone exceeds the budget.
    """
    if token_budget < 1 or max_batch < 1:
        raise ValueError(f"token_budget and max_batch must be positive, got {token_budget}, {max_batch}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    groups: list[np.ndarray] = []
    start = 0
    for end in range(1, len(order) + 1):
        if end == len(order):
            groups.append(order[start:end])
            break
        width = padded_length(int(lengths[order[end]]), max_length)  # the longest if it joins
        if end + 1 - start > max_batch or (end + 1 - start) * width > token_budget:
            groups.append(order[start:end])
            start = end
    return groups


def make_batch(examples: Sequence[MaskedExample], *, pad_token_id: int, max_length: int) -> Batch:
    """Right-pad examples into one `Batch`; masked slots are padded to the batch's longest list
    (at least one slot) with position 0, id 0 and weight 0."""
    width = padded_length(max(e.n_tokens for e in examples), max_length)
    slots = max(1, max(e.n_masked for e in examples))
    tokens = pad_batch(
        {"input_ids": [e.input_ids for e in examples], "token_type_ids": [e.type_ids for e in examples]},
        pad_token_id=pad_token_id,
        width=width,
    )  # (B, T) each
    positions = pad_rows([e.positions for e in examples], width=slots)  # (B, slots)
    ids = pad_rows([e.labels for e in examples], width=slots)  # (B, slots)
    weights = length_mask([e.n_masked for e in examples], slots, np.float32)  # (B, slots)
    # unlabelled pairs score label 0; their NSP loss is ignored
    nsp = np.array([max(e.nsp_label, 0) for e in examples], dtype=np.int64)  # (B,)
    return Batch(tokens["input_ids"], tokens["attention_mask"], tokens["token_type_ids"], positions, ids, weights, nsp)


def iter_batches(
    examples: Sequence[MaskedExample],
    *,
    token_budget: int,
    max_batch: int,
    max_length: int,
    pad_token_id: int,
) -> Iterator[tuple[np.ndarray, Batch]]:
    """Yield (corpus indices of the batch's examples, Batch) covering every example once."""
    groups = plan_batches(
        [e.n_tokens for e in examples], token_budget=token_budget, max_batch=max_batch, max_length=max_length
    )
    for group in groups:
        members = [examples[i] for i in group]
        indices = np.array([e.index for e in members], dtype=np.int64)
        yield indices, make_batch(members, pad_token_id=pad_token_id, max_length=max_length)
