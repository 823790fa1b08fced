"""Chunk-by-chunk sums of what the run's metrics and comparisons need, so memory does not grow
with the corpus: a chunk's Scores is added and dropped; the tables are built from these totals.

Semantics are compare.py's: metrics over the examples a runtime scored without failing;
comparisons over the examples the reference scored, where a runtime's failure counts as a
disagreement but never enters a loss or logit statistic.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lucid_eval.harness.scoring import Scores
from lucid_eval.tolerances import decisive, decisive_margin
from lucid_eval.totals import Totals
from lucid_eval.verdict import Agreement, PairedDifference, paired_difference


@dataclass
class RuntimeTotals:
    """One runtime's sums: MLM/NSP totals over its unfailed examples, and its batch timings."""

    scores: Totals = field(default_factory=Totals)
    n_pairs: int = 0
    n_failed: int = 0
    n_tokens: int = 0
    has_nsp: bool = False  # whether the runtime's graph has an NSP head
    batch_ms: list[np.ndarray] = field(default_factory=list)

    def add(self, shared: dict[str, np.ndarray], r: dict[str, np.ndarray]) -> None:
        ok = ~r["failed"]
        labelled = ok & (shared["nsp_label"] >= 0) & r["nsp_present"]
        self.has_nsp |= bool(r["nsp_present"].any())
        self.scores.add(
            mlm_loss_sum=r["mlm_loss_sum"][ok].sum(),
            mlm_correct=np.rint(r["mlm_correct"][ok]).sum(),
            mlm_count=shared["n_masked"][ok].sum(),
            nsp_loss_sum=r["nsp_loss"][labelled].sum(),
            nsp_correct=(r["nsp_pred"][labelled] == shared["nsp_label"][labelled]).sum(),
            nsp_count=labelled.sum(),
        )
        self.n_pairs += len(ok)
        self.n_failed += int(r["failed"].sum())
        self.n_tokens += int(shared["n_tokens"].sum())
        self.batch_ms.append(r["batch_ms"])

    @property
    def latencies_ms(self) -> np.ndarray:
        return np.concatenate([np.zeros(0), *self.batch_ms])


@dataclass
class _Counts:
    """Agreement counts of one task (summable): see verdict.Agreement."""

    compared: int = 0
    flips: int = 0
    decisive: int = 0
    decisive_flips: int = 0

    def add(self, agree: np.ndarray, judged: np.ndarray) -> None:
        self.compared += int(agree.size)
        self.flips += int((~agree).sum())
        self.decisive += int(judged.sum())
        self.decisive_flips += int((~agree & judged).sum())

    def agreement(self) -> Agreement:
        return Agreement(self.compared, self.flips, self.decisive, self.decisive_flips)


@dataclass
class _Paired:
    """Paired correctness of reference and runtime on the same predictions (summable)."""

    gained: int = 0
    lost: int = 0
    n: int = 0

    def add(self, ref_right: np.ndarray, got_right: np.ndarray) -> None:
        self.gained += int((~ref_right & got_right).sum())
        self.lost += int((ref_right & ~got_right).sum())
        self.n += int(ref_right.size)

    def difference(self) -> PairedDifference:
        return paired_difference(self.gained, self.lost, self.n)


@dataclass
class _AbsDiff:
    """Largest and mean absolute difference (summable); NaN when nothing finite was compared."""

    max: float = -math.inf  # over non-NaN values
    finite: bool = False  # whether any value was finite
    total: float = 0.0
    count: int = 0

    def add(self, max_values: np.ndarray, total: float, count: int) -> None:
        seen = max_values[~np.isnan(max_values)]
        if seen.size:
            self.max = max(self.max, float(seen.max()))
            self.finite |= bool(np.isfinite(seen).any())
        self.total += float(total)
        self.count += int(count)

    @property
    def largest(self) -> float:
        return self.max if self.finite else math.nan

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan


@dataclass
class ComparisonTotals:
    """One runtime against the reference; `margin` decides which reference predictions are decisive."""

    margin: float
    mlm: _Counts = field(default_factory=_Counts)
    nsp: _Counts = field(default_factory=_Counts)
    mlm_paired: _Paired = field(default_factory=_Paired)
    nsp_paired: _Paired = field(default_factory=_Paired)
    mlm_diff: _AbsDiff = field(default_factory=_AbsDiff)
    nsp_diff: _AbsDiff = field(default_factory=_AbsDiff)
    n_failed: int = 0
    nsp_absent: int = 0  # examples with a reference NSP prediction and none from this runtime's graph

    def add(self, shared: dict[str, np.ndarray], ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> None:
        ref_ok, got_ok = ~ref["failed"], ~got["failed"]
        both_ok = ref_ok & got_ok
        ref_ok_slot = np.repeat(ref_ok, shared["n_masked"])
        got_ok_slot = np.repeat(got_ok, shared["n_masked"])
        # A runtime that failed where the reference did not disagrees: NaN is not the same prediction.
        self.mlm.add(
            ((ref["slot_pred"] == got["slot_pred"]) & got_ok_slot)[ref_ok_slot],
            decisive_margin(ref["slot_margin"][ref_ok_slot], self.margin),
        )
        # NSP only where both graphs have an NSP head: a missing head is not a disagreement.
        ref_nsp = ref_ok & ref["nsp_present"]
        on = ref_nsp & got["nsp_present"]
        self.nsp_absent += int((ref_nsp & ~got["nsp_present"]).sum())
        self.nsp.add(((ref["nsp_pred"] == got["nsp_pred"]) & got_ok)[on], decisive(ref["nsp_logits"][on], self.margin))
        self.mlm_diff.add(
            got["max_abs_mlm_diff"][both_ok], got["sum_abs_mlm_diff"][both_ok].sum(), got["n_mlm_diff"][both_ok].sum()
        )
        both_nsp = both_ok & on
        nsp_diff = np.abs(got["nsp_logits"][both_nsp].astype(np.float64) - ref["nsp_logits"][both_nsp])  # (N, 2)
        self.nsp_diff.add(nsp_diff.ravel(), nsp_diff.sum(), nsp_diff.size)
        self.n_failed += int((ref_ok & ~got_ok).sum())
        slot_ok = np.repeat(both_ok, shared["n_masked"])
        label = shared["slot_label"][slot_ok]
        self.mlm_paired.add(ref["slot_pred"][slot_ok] == label, got["slot_pred"][slot_ok] == label)
        labelled = both_nsp & (shared["nsp_label"] >= 0)
        nsp_label = shared["nsp_label"][labelled]
        self.nsp_paired.add(ref["nsp_pred"][labelled] == nsp_label, got["nsp_pred"][labelled] == nsp_label)


@dataclass
class RunTotals:
    """Everything the metrics and comparison tables need, summed over the chunks of a run."""

    reference: str
    runtimes: dict[str, RuntimeTotals]  # reference first
    comparisons: dict[str, ComparisonTotals]
    truncated: int = 0

    @classmethod
    def start(cls, names: list[str], margins: dict[str, float]) -> RunTotals:
        """Empty totals for `names` (the first is the reference); margins of the compared runtimes."""
        return cls(
            reference=names[0],
            runtimes={name: RuntimeTotals() for name in names},
            comparisons={name: ComparisonTotals(margins[name]) for name in names[1:]},
        )

    def add(self, scores: Scores) -> None:
        shared, ref = scores.shared, scores.runtimes[self.reference]
        for name, r in scores.runtimes.items():
            self.runtimes[name].add(shared, r)
            if name in self.comparisons:
                self.comparisons[name].add(shared, ref, r)
        self.truncated += int(shared["truncated"].sum())

    @property
    def n_pairs(self) -> int:
        return self.runtimes[self.reference].n_pairs


@dataclass
class Clock:
    """Where a run's scoring time goes, for run.json's engine.seconds: the runtimes' own time
    (model; summed over workers with Ray), journaling and the tables the driver streams; `other`
    is the rest of the wall clock: reading, tokenising, masking and batching on the local engine,
    None where workers ran in parallel (their summed model time exceeds the wall clock). `tables`
    (the final metrics) is added when they are built."""

    start: float = field(default_factory=time.perf_counter)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("model", "journal", "tables"), 0.0))

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def add_model(self, scores: Scores) -> None:
        self.seconds["model"] += sum(float(f["batch_ms"].sum()) for f in scores.runtimes.values()) / 1000

    def record(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.start
        rest = wall - sum(self.seconds.values())
        other = rest if rest >= 0 else None  # None: workers ran in parallel, their summed time exceeds the wall
        return {
            "scoring_wall_s": round(wall, 3),
            "seconds": {
                **{k: round(v, 3) for k, v in self.seconds.items()},
                "other": None if other is None else round(other, 3),
            },
        }
