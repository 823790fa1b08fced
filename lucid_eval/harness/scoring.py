"""The scoring loop: every runtime scores the same batches, reduced at once to per-example results;
and the engine that scores a run's chunks in this process (ray_engine.py has the other).

Runtimes see each batch in order, reference first; each `run` call is timed on its own. The
B x P x V logits never outlive their batch: they are reduced to per-example losses, predictions
at the masked slots and distances to the reference's logits of the same batch. An example whose
outputs hold NaN/Inf is marked failed for that runtime. Ctrl-C (`stop_on_sigint`) stops the loop
between batches, never inside one.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from lucid_eval.harness.batching import iter_batches
from lucid_eval.harness.corpus import PairRecord
from lucid_eval.harness.masking import MaskedExample, encode_chunk
from lucid_eval.runtimes.base import Batch, Runtime, RuntimeInfo, ScoreOutputs
from lucid_eval.tolerances import top2_margin

if TYPE_CHECKING:
    from lucid_eval.harness.run import ScoreConfig

SLAB = 256  # masked slots per step when diffing logits, to bound temporary memory


@dataclass
class Scores:
    """Per-example results in corpus order: inputs shared by all runtimes plus one dict per runtime.

    shared: index, id, n_tokens, n_masked, nsp_label (-1 = none), truncated; slot_position and
    slot_label (masked slots of all examples, concatenated); flip_index/flip_text_a/flip_text_b
    (texts of examples some runtime disagrees on, for flips.csv).
    runtime: mlm_loss_sum, mlm_correct, nsp_loss, nsp_logits (N, 2), nsp_pred, nsp_present (False:
    the runtime's graph has no NSP head), failed,
    max_abs_mlm_diff, sum_abs_mlm_diff, n_mlm_diff (vs the reference), slot_pred, slot_margin
    (top-1 minus top-2 logit per slot), batch_ms (one entry per batch).
    """

    shared: dict[str, np.ndarray]
    runtimes: dict[str, dict[str, np.ndarray]]  # reference first

    @property
    def reference(self) -> str:
        return next(iter(self.runtimes))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array mapping for np.savez; runtimes are keyed by position."""
        out = {f"shared.{k}": v for k, v in self.shared.items()}
        for j, fields in enumerate(self.runtimes.values()):
            out.update({f"runtime.{j}.{k}": v for k, v in fields.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], names: Sequence[str]) -> Scores:
        shared = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("shared.")}
        runtimes: dict[str, dict[str, np.ndarray]] = {name: {} for name in names}
        for key, value in arrays.items():
            if key.startswith("runtime."):
                _, j, field = key.split(".", 2)
                runtimes[names[int(j)]][field] = value
        return cls(shared, runtimes)


def _per_example(rows: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Sum per-slot values into their examples."""
    return np.bincount(rows, weights=values, minlength=size)


def reduce_outputs(batch: Batch, out: ScoreOutputs, ref_logits: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per-example results of one batch (batch row order) and per-slot results (valid slots, row-major).

    `ref_logits` are the reference's (S, V) logits at the valid slots, None for the reference itself.
    """
    size = batch.size
    valid = batch.masked_lm_weights > 0  # (B, P)
    rows = np.nonzero(valid)[0]  # example row of each valid slot
    n_slots = valid.sum(axis=1)
    logits = out.mlm_logits[valid]  # (S, V)
    bad_slots = _per_example(rows, (~np.isfinite(logits).all(axis=-1)).astype(np.float64), size) > 0
    failed = bad_slots | ~np.isfinite(out.mlm_loss_sum)
    if out.has_nsp:
        failed |= ~np.isfinite(out.nsp_loss) | ~np.isfinite(out.nsp_logits).all(axis=-1)
    slot_max = np.zeros(len(rows))
    slot_sum = np.zeros(len(rows))
    if ref_logits is not None:
        for start in range(0, len(rows), SLAB):
            diff = np.abs(logits[start : start + SLAB] - ref_logits[start : start + SLAB])
            slot_max[start : start + SLAB] = diff.max(axis=-1, initial=0.0)
            slot_sum[start : start + SLAB] = diff.sum(axis=-1, dtype=np.float64)
    max_diff = np.full(size, -np.inf)
    np.fmax.at(max_diff, rows, slot_max)  # NaN-ignoring; failed examples become NaN below
    max_diff[(n_slots == 0) | failed] = np.nan
    margin = np.full(len(rows), np.nan, dtype=np.float32)
    if logits.shape[-1] >= 2 and len(rows):
        margin = top2_margin(logits).astype(np.float32)
    return {
        "mlm_loss_sum": out.mlm_loss_sum.astype(np.float64),
        "mlm_correct": out.mlm_correct.astype(np.float64),
        "nsp_loss": out.nsp_loss.astype(np.float64),
        "nsp_logits": out.nsp_logits.astype(np.float32),
        "nsp_pred": out.nsp_logits.argmax(axis=-1).astype(np.int64) if out.has_nsp else np.full(size, -1),
        "nsp_present": np.full(size, out.has_nsp),
        "failed": failed,
        "max_abs_mlm_diff": max_diff,
        "sum_abs_mlm_diff": _per_example(rows, slot_sum, size),
        "n_mlm_diff": (n_slots * logits.shape[-1]).astype(np.int64),
        "slot_pred": out.mlm_predictions[valid].astype(np.int64),
        "slot_margin": margin,
    }


def _slot_order(n_masked: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Permutation of concatenated slot arrays that follows reordering their examples by `order`."""
    offsets = np.concatenate([[0], np.cumsum(n_masked)])
    spans = [np.arange(offsets[i], offsets[i + 1]) for i in order]
    return np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)


def _shared(records: Sequence[PairRecord], examples: Sequence[MaskedExample]) -> dict[str, np.ndarray]:
    empty = np.zeros(0, dtype=np.int64)
    return {
        "index": np.array([e.index for e in examples], dtype=np.int64),
        "id": np.array([r.id for r in records], dtype=str),
        "n_tokens": np.array([e.n_tokens for e in examples], dtype=np.int64),
        "n_masked": np.array([e.n_masked for e in examples], dtype=np.int64),
        "nsp_label": np.array([e.nsp_label for e in examples], dtype=np.int64),
        "truncated": np.array([e.truncated for e in examples], dtype=bool),
        "slot_position": np.concatenate([empty, *(e.positions for e in examples)]),
        "slot_label": np.concatenate([empty, *(e.labels for e in examples)]),
    }


def flips_vs_reference(
    shared: dict[str, np.ndarray], ref: dict[str, np.ndarray], got: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """(slot flipped (S,), NSP flipped (N,)) where both runtimes scored the example without failing
    (and, for NSP, both have an NSP head)."""
    both_ok = ~ref["failed"] & ~got["failed"]
    slot_ok = np.repeat(both_ok, shared["n_masked"])
    nsp_ok = both_ok & ref["nsp_present"] & got["nsp_present"]
    return (ref["slot_pred"] != got["slot_pred"]) & slot_ok, (ref["nsp_pred"] != got["nsp_pred"]) & nsp_ok


@contextlib.contextmanager
def stop_on_sigint() -> Iterator[Callable[[], bool]]:
    """First Ctrl-C asks to stop after the current batch; a second one interrupts at once."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum: int, frame: object) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        print("\nlucid-eval: stopping after the current batch (Ctrl-C again to stop now)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass(frozen=True)
class BatchShape:
    """How a chunk is cut into padded batches (see batching.iter_batches); the same for every runtime."""

    token_budget: int
    max_batch: int
    max_length: int
    pad_token_id: int


def score_chunk(
    records: Sequence[PairRecord],
    examples: Sequence[MaskedExample],
    runtimes: Sequence[Runtime],
    shape: BatchShape,
    *,
    stop: Callable[[], bool] = lambda: False,
    on_batch: Callable[[int], None] = lambda n: None,
) -> Scores | None:
    """Score one chunk with every runtime (the first is the reference) in corpus order.

    Returns None when `stop()` is true before a batch (the chunk is then left unfinished);
    `on_batch(n)` reports progress in pairs."""
    if not examples:
        raise ValueError("cannot score an empty chunk")
    pieces: dict[str, list[dict[str, np.ndarray]]] = {rt.name: [] for rt in runtimes}
    times: dict[str, list[float]] = {rt.name: [] for rt in runtimes}
    order_parts = []
    for indices, batch in iter_batches(examples, **asdict(shape)):
        if stop():
            return None
        ref_logits = None
        for rt in runtimes:
            start = time.perf_counter()
            out = rt.run(batch)
            times[rt.name].append((time.perf_counter() - start) * 1000.0)
            pieces[rt.name].append(reduce_outputs(batch, out, ref_logits))
            if ref_logits is None:
                ref_logits = out.mlm_logits[batch.masked_lm_weights > 0]
            del out  # free this batch's logits before the next runtime allocates its own
        order_parts.append(indices)
        on_batch(len(indices))
    shared = _shared(records, examples)
    scores = Scores(shared, _in_corpus_order(shared, np.concatenate(order_parts), pieces, times))
    _attach_flip_texts(scores, records)
    return scores


def _in_corpus_order(
    shared: dict[str, np.ndarray],
    batch_index: np.ndarray,
    pieces: dict[str, list[dict[str, np.ndarray]]],
    times: dict[str, list[float]],
) -> dict[str, dict[str, np.ndarray]]:
    """Each runtime's per-batch results joined and put back in corpus order (slot arrays too)."""
    order = np.argsort(batch_index, kind="stable")
    if not np.array_equal(batch_index[order], shared["index"]):
        raise AssertionError("batches must cover the chunk's examples, in corpus order, exactly once")
    slot_perm = _slot_order(shared["n_masked"][np.searchsorted(shared["index"], batch_index)], order)
    per_runtime = {}
    for name, parts in pieces.items():
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        fields = {k: v[slot_perm] if k.startswith("slot_") else v[order] for k, v in merged.items()}
        fields["batch_ms"] = np.asarray(times[name], dtype=np.float64)
        per_runtime[name] = fields
    return per_runtime


def _attach_flip_texts(scores: Scores, records: Sequence[PairRecord]) -> None:
    """Keep the texts of examples that any runtime flips, so flips.csv needs no second corpus pass."""
    ref = scores.runtimes[scores.reference]
    flipped = np.zeros(len(records), dtype=bool)
    example_of_slot = np.repeat(np.arange(len(records)), scores.shared["n_masked"])
    for name, got in scores.runtimes.items():
        if name == scores.reference:
            continue
        slot_flip, nsp_flip = flips_vs_reference(scores.shared, ref, got)
        flipped |= nsp_flip
        flipped[example_of_slot[slot_flip]] = True
    chosen = [records[i] for i in np.flatnonzero(flipped)]
    scores.shared["flip_index"] = np.array([r.index for r in chosen], dtype=np.int64)
    scores.shared["flip_text_a"] = np.array([r.text_a for r in chosen], dtype=str)
    scores.shared["flip_text_b"] = np.array([r.text_b for r in chosen], dtype=str)


# ---- engines ---------------------------------------------------------------------------------------
def open_runtimes(stack: contextlib.ExitStack, factory: Callable[[str], Runtime], names: list[str]) -> list[Runtime]:
    """Each named runtime from `factory`, open until `stack` closes."""
    runtimes = [factory(name) for name in names]
    for name, rt in zip(names, runtimes, strict=True):
        if rt.name != name:
            raise ValueError(f"runtime factory returned {rt.name!r} for {name!r}")
        stack.enter_context(rt)
    return runtimes


@dataclass
class Chunk:
    """Chunk `k` of the corpus; `scores` is set once it is loaded from the journal or scored."""

    k: int
    records: list[PairRecord]
    scores: Scores | None = None


class Stopped(Exception):
    """Scoring stopped on request (Ctrl-C) before the corpus was done."""


class Engine(Protocol):
    """Scores chunks on every runtime. `scored` yields each chunk's Scores in corpus order, calls
    `save(k, scores)` as soon as chunk k is scored (in any order) and `progress(n)` per n pairs
    scored, and raises Stopped when `stop()` turns true."""

    infos: dict[str, RuntimeInfo]  # what each runtime really ran on
    late_verification: dict[str, dict[str, Any]]  # verify_unverified's records
    description: dict[str, Any]  # run.json's "engine"

    def scored(
        self,
        chunks: Iterable[Chunk],
        save: Callable[[int, Scores], None],
        stop: Callable[[], bool],
        progress: Callable[[int], None],
    ) -> Iterator[Scores]: ...


def score_records(
    config: ScoreConfig,
    records: list[PairRecord],
    runtimes: list[Runtime],
    tokenizer: Any,
    stop: Callable[[], bool] = lambda: False,
    on_batch: Callable[[int], None] = lambda n: None,
) -> Scores | None:
    """One chunk masked and scored on every runtime; None when stopped on request."""
    examples = encode_chunk(
        records, tokenizer, seed=config.seed, max_length=config.max_length, mlm_probability=config.mlm_probability
    )
    shape = BatchShape(config.token_budget, config.max_batch, config.max_length, tokenizer.pad_token_id)
    return score_chunk(records, examples, runtimes, shape, stop=stop, on_batch=on_batch)


@dataclass
class LocalEngine:
    """Every chunk scored here, one after another, with the runtimes opened in this process."""

    config: ScoreConfig
    runtimes: list[Runtime]
    tokenizer: Any
    late_verification: dict[str, dict[str, Any]]

    def __post_init__(self) -> None:
        self.infos = {rt.name: rt.info() for rt in self.runtimes}
        self.description = {"name": "local"}

    def scored(
        self,
        chunks: Iterable[Chunk],
        save: Callable[[int, Scores], None],
        stop: Callable[[], bool],
        progress: Callable[[int], None],
    ) -> Iterator[Scores]:
        for chunk in chunks:
            if chunk.scores is None:
                chunk.scores = score_records(self.config, chunk.records, self.runtimes, self.tokenizer, stop, progress)
                if chunk.scores is None:
                    raise Stopped
                save(chunk.k, chunk.scores)
            yield chunk.scores
