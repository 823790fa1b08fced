"""The one judge: measured evidence in, a verdict out.

Export verification, the harness comparison, the terminal summary, the CSVs and the HTML report
all take their verdicts from `judge`; nothing else decides PASS or FAIL. A PASS needs evidence:
an empty or undecided comparison is INCONCLUSIVE (with how much more evidence would settle it),
a skipped check is NOT VERIFIED, and a runtime that ran somewhere other than requested is FALLBACK.

Agreement is judged as a flip rate with one-sided Clopper–Pearson bounds at the tolerance's
confidence: PASS when the upper bound is within the tolerance, FAIL when the lower bound is above
it, INCONCLUSIVE otherwise. An agreement tolerance of 1.0 is an exact rule (no flip allowed).
Whether a runtime changes *accuracy* is answered separately by `paired_difference` (exact McNemar).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum

from scipy.stats import binomtest

from lucid_eval.tolerances import Tolerance


class Verdict(str, Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    NOT_VERIFIED = "NOT VERIFIED"
    FALLBACK = "FALLBACK"

    def __str__(self) -> str:
        return self.value


# Worst first: combining verdicts keeps the worst one.
SEVERITY = (Verdict.FAIL, Verdict.FALLBACK, Verdict.INCONCLUSIVE, Verdict.NOT_VERIFIED, Verdict.PASS)

VERDICT_HELP: dict[Verdict, str] = {
    Verdict.PASS: "The evidence shows sameness: every judged check is within its tolerance, with enough "
    "predictions that the flip rate's upper confidence bound is within it too.",
    Verdict.FAIL: "The evidence shows a difference beyond the tolerance (or NaN/Inf outputs). "
    "`score` and `demo` exit with status 3.",
    Verdict.INCONCLUSIVE: "Too little evidence to decide either way, e.g. too few decisive predictions; "
    "the reason says how many more would settle it. It fails the run only with --strict.",
    Verdict.NOT_VERIFIED: "The check was not run (e.g. no CUDA device for an fp16 graph). It is never "
    "shown as passed; the graph is verified the first time it is opened where it can run.",
    Verdict.FALLBACK: "The runtime ran somewhere other than requested (--allow-fallback), so its numbers say "
    "nothing about the requested device. Never PASS; fails the run only with --strict.",
}

# Exit status of `score`/`demo` when a verdict fails the run (errors exit 1, usage errors 2).
EXIT_VERDICT = 3

CHECKS = ("outputs", "mlm_logit", "nsp_logit", "mlm_agreement", "nsp_agreement", "mlm_loss", "nsp_loss")


def worst(verdicts) -> Verdict:
    """The most severe of `verdicts` (PASS for none)."""
    found = set(verdicts)
    return next((v for v in SEVERITY if v in found), Verdict.PASS)


def exit_code(verdicts, strict: bool) -> int:
    """0 when the run may be trusted as asked; EXIT_VERDICT on FAIL (and, with strict, anything but PASS)."""
    found = set(verdicts)
    if Verdict.FAIL in found or (strict and found - {Verdict.PASS}):
        return EXIT_VERDICT
    return 0


# ---- statistics -----------------------------------------------------------------------------------
def flip_rate_bounds(flips: int, n: int, confidence: float) -> tuple[float, float]:
    """One-sided Clopper–Pearson (lower, upper) bounds of a flip rate, each at `confidence`."""
    if n <= 0:
        return 0.0, 1.0
    ci = binomtest(flips, n).proportion_ci(confidence_level=2 * confidence - 1, method="exact")
    return float(ci.low), float(ci.high)


def predictions_to_decide(flips: int, n: int, max_rate: float, confidence: float) -> int | None:
    """How many predictions, at the flip rate seen so far, would turn INCONCLUSIVE into PASS or FAIL
    (None when the observed rate sits exactly on the tolerance). With no data, assumes no flips."""
    rate = flips / n if n else 0.0
    if rate == max_rate:
        return None
    decided_pass = rate < max_rate

    def decided(m: int) -> bool:
        lo, hi = flip_rate_bounds(min(m, round(rate * m)), m, confidence)
        return hi <= max_rate if decided_pass else lo > max_rate

    lo, hi = max(n, 1), max(n, 1)
    while not decided(hi):
        lo, hi = hi, hi * 2
        if hi > 10**12:
            return None
    while lo < hi:  # smallest m in (lo, hi] that decides
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decided(mid) else (mid + 1, hi)
    return hi


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of a runtime minus the reference's over the same predictions (paired)."""

    n: int  # predictions both runtimes made, with a label
    gained: int  # the reference was wrong, the runtime right
    lost: int  # the reference was right, the runtime wrong
    difference: float  # (gained - lost) / n
    lo: float  # 95 % interval of the difference
    hi: float
    p_value: float  # exact McNemar test on the discordant predictions


def paired_difference(gained: int, lost: int, n: int, confidence: float = 0.95) -> PairedDifference:
    """Paired accuracy difference with an exact McNemar test (binomial on the discordant pairs) and
    the matching conditional interval: a Clopper–Pearson interval for the share of gains among the
    discordant predictions, scaled by their share of all predictions."""
    if n <= 0:
        return PairedDifference(0, 0, 0, math.nan, math.nan, math.nan, math.nan)
    discordant = gained + lost
    if discordant == 0:
        return PairedDifference(n, 0, 0, 0.0, 0.0, 0.0, 1.0)
    test = binomtest(gained, discordant, 0.5)
    ci = test.proportion_ci(confidence_level=confidence, method="exact")
    scale = discordant / n
    return PairedDifference(
        n, gained, lost, (gained - lost) / n, scale * (2 * ci.low - 1), scale * (2 * ci.high - 1), float(test.pvalue)
    )


def describe_difference(runtime: str, task: str, d: PairedDifference, unit: str) -> str:
    """One line a user can act on: does this runtime change accuracy on this task?"""
    if d.n == 0:
        return f"{runtime}: no {task} predictions with labels to compare"
    if d.gained + d.lost == 0:
        return (f"{runtime} leaves {task} accuracy unchanged: none of {d.n:,} {unit} changed between right and "
                f"wrong")  # fmt: skip
    significance = "significant" if d.p_value < 0.05 else "not significant"
    return (
        f"{runtime} changes {task} accuracy by {100 * d.difference:+.2f} pt (95 % CI {100 * d.lo:+.2f} to "
        f"{100 * d.hi:+.2f} pt; {d.gained:,} gained, {d.lost:,} lost of {d.n:,} {unit}); {significance} "
        f"(exact McNemar p = {d.p_value:.3g})"
    )


# ---- evidence and judgement -----------------------------------------------------------------------
@dataclass(frozen=True)
class Agreement:
    """Argmax agreement of one task: every compared prediction, and the decisive ones."""

    compared: int
    flips: int
    decisive: int
    decisive_flips: int

    @property
    def rate(self) -> float:
        return 1 - self.flips / self.compared if self.compared else math.nan

    @property
    def decisive_rate(self) -> float:
        return 1 - self.decisive_flips / self.decisive if self.decisive else math.nan


@dataclass(frozen=True)
class Evidence:
    """What was measured for one runtime (or graph) against its reference."""

    mlm: Agreement
    nsp: Agreement
    max_abs_mlm_logit_diff: float  # NaN when nothing was compared
    max_abs_nsp_logit_diff: float
    d_mlm_loss: float | None  # None: not measured here (e.g. the full graph has no loss)
    d_nsp_loss: float | None  # None: not measured (e.g. a corpus without NSP labels)
    n_failed: int = 0  # examples (or predictions) with NaN/Inf outputs where the reference had none
    fallback: str = ""  # why the runtime (or its reference) ran somewhere other than requested
    absent: tuple[str, ...] = ()  # tasks ("NSP") whose head the compared graph does not have


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict | None  # None: not judged (no tolerance, or not measurable by design)
    detail: str


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    checks: tuple[Check, ...] = ()
    reasons: tuple[str, ...] = ()  # one line per check (or cause) that is not PASS
    flip_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)  # judged set, per task

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
            "checks": [{**asdict(c), "verdict": None if c.verdict is None else c.verdict.value} for c in self.checks],
        }


def not_verified(reason: str) -> Judgement:
    return Judgement(Verdict.NOT_VERIFIED, reasons=(reason,))


def _judge_max(name: str, value: float, limit: float | None, what: str) -> Check:
    if limit is None:
        return Check(name, None, f"{what} {value:.3g}; not judged at this precision")
    if math.isnan(value):
        return Check(name, Verdict.INCONCLUSIVE, f"{what}: nothing was compared")
    ok = value <= limit
    return Check(name, Verdict.PASS if ok else Verdict.FAIL, f"{what} {value:.3g} {'≤' if ok else '>'} {limit:g}")


def _judge_loss(name: str, shift: float | None, limit: float, task: str) -> Check:
    if shift is None:
        return Check(name, None, f"Δ mean {task} loss not measured here")
    if math.isnan(shift):
        return Check(name, Verdict.INCONCLUSIVE, f"Δ mean {task} loss could not be measured (no data)")
    ok = abs(shift) <= limit
    return Check(
        name,
        Verdict.PASS if ok else Verdict.FAIL,
        f"|Δ mean {task} loss| {abs(shift):.3g} {'≤' if ok else '>'} {limit:g}",
    )


def judge_agreement(task: str, a: Agreement, tol: Tolerance) -> tuple[Check, tuple[float, float]]:
    """The agreement check of one task, and the flip-rate bounds of the judged set."""
    name = f"{task.lower()}_agreement"
    if tol.agreement_on == "decisive" and tol.margin > 0:
        n, k, which, rule = (
            a.decisive,
            a.decisive_flips,
            "decisive predictions",
            f" (reference margin ≥ {tol.margin:g})",
        )
    else:
        n, k, which, rule = a.compared, a.flips, "predictions", ""
    r = tol.max_flip_rate
    lo, hi = flip_rate_bounds(k, n, tol.confidence)
    seen = f"{k:,} of {n:,} {which}{rule} flipped"
    if n == 0:
        need = predictions_to_decide(0, 0, r, tol.confidence) if r > 0 else 1
        return Check(name, Verdict.INCONCLUSIVE, f"{task}: 0 {which}{rule}; ≥ {need:,} needed to judge"), (lo, hi)
    if r == 0:  # exact rule: agreement 1.0 allows no flip
        ok = k == 0
        return Check(name, Verdict.PASS if ok else Verdict.FAIL, f"{task}: {seen}; none allowed"), (lo, hi)
    bounds = (
        f"flip rate {100 * k / n:.2f} % (one-sided {100 * tol.confidence:g} % bounds {100 * lo:.2f}–{100 * hi:.2f} %)"
    )
    if hi <= r:
        return Check(name, Verdict.PASS, f"{task}: {seen}; {bounds} ≤ {100 * r:g} %"), (lo, hi)
    if lo > r:
        return Check(name, Verdict.FAIL, f"{task}: {seen}; {bounds} > {100 * r:g} %"), (lo, hi)
    need = predictions_to_decide(k, n, r, tol.confidence)
    more = f"≥ {need:,} {which} needed to decide at this flip rate" if need else "the rate sits on the tolerance"
    return Check(name, Verdict.INCONCLUSIVE, f"{task}: {seen}; {bounds} straddles {100 * r:g} %; {more}"), (lo, hi)


def judge(evidence: Evidence, tol: Tolerance) -> Judgement:
    """Every check of one comparison and the verdict they add up to."""
    e = evidence
    outputs = Check(
        "outputs",
        Verdict.FAIL if e.n_failed else Verdict.PASS,
        f"{e.n_failed:,} NaN/Inf results where the reference had none" if e.n_failed else "all outputs finite",
    )
    mlm_agree, mlm_bounds = judge_agreement("MLM", e.mlm, tol)
    nsp_agree, nsp_bounds = judge_agreement("NSP", e.nsp, tol)
    checks = (
        outputs,
        _judge_max("mlm_logit", e.max_abs_mlm_logit_diff, tol.logit, "max |Δ MLM logit|"),
        _judge_max("nsp_logit", e.max_abs_nsp_logit_diff, tol.logit, "max |Δ NSP logit|"),
        mlm_agree,
        nsp_agree,
        _judge_loss("mlm_loss", e.d_mlm_loss, tol.loss, "MLM"),
        _judge_loss("nsp_loss", e.d_nsp_loss, tol.loss, "NSP"),
    )
    # A task whose head the graph lacks is not judged (neither passed nor failed), and said so.
    checks = tuple(
        Check(c.name, None, f"{task}: not in this graph") if (task := c.name.split("_")[0].upper()) in e.absent else c
        for c in checks
    )
    judged = [c.verdict for c in checks if c.verdict is not None]
    verdict = worst(judged)
    reasons = [c.detail for c in checks if c.verdict not in (None, Verdict.PASS)]
    reasons += [f"{task} is not in this graph: the verdict covers the other task only" for task in e.absent]
    if e.fallback and verdict is not Verdict.FAIL:
        verdict = Verdict.FALLBACK
    if e.fallback:
        reasons.insert(0, f"FALLBACK: {e.fallback}")
    return Judgement(verdict, checks, tuple(reasons), {"mlm": mlm_bounds, "nsp": nsp_bounds})
