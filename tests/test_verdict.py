"""The one judge: verdict states, flip-rate statistics, paired accuracy differences, tolerance overrides."""

import ast
import math
from pathlib import Path

import pytest

from lucid_eval.tolerances import TOLERANCES, Tolerance, parse_overrides
from lucid_eval.verdict import (
    EXIT_VERDICT,
    Agreement,
    Evidence,
    Verdict,
    exit_code,
    flip_rate_bounds,
    judge,
    judge_agreement,
    paired_difference,
    predictions_to_decide,
    worst,
)

INT8 = TOLERANCES["int8"]
PACKAGE = Path(__file__).resolve().parents[1] / "lucid_eval"


def evidence(mlm: Agreement, nsp: Agreement | None = None, **changes) -> Evidence:
    base = {"max_abs_mlm_logit_diff": 0.3, "max_abs_nsp_logit_diff": 0.1, "d_mlm_loss": 0.001, "d_nsp_loss": 0.001}
    return Evidence(mlm=mlm, nsp=nsp or Agreement(5000, 0, 5000, 0), **{**base, **changes})


def test_three_percent_flips_on_enough_predictions_fail():
    result = judge(evidence(Agreement(3000, 90, 3000, 90)), INT8)
    assert result.verdict is Verdict.FAIL and result.check("mlm_agreement").verdict is Verdict.FAIL
    assert "90 of 3,000 decisive predictions" in result.reasons[0]


def test_no_flips_in_twenty_predictions_is_inconclusive_and_says_how_many_are_needed():
    result = judge(evidence(Agreement(20, 0, 20, 0)), INT8)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert (
        "0 of 20 decisive predictions" in result.reasons[0] and "≥ 299 decisive predictions needed" in result.reasons[0]
    )


def test_no_flips_in_thousands_of_predictions_pass():
    result = judge(evidence(Agreement(4000, 0, 4000, 0)), INT8)
    assert result.verdict is Verdict.PASS and result.reasons == ()


def test_no_decisive_prediction_is_never_a_vacuous_pass():
    # A random-init model: 59 flips among near-ties, none of them decisive.
    result = judge(evidence(Agreement(2500, 59, 0, 0)), INT8)
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "MLM: 0 decisive predictions (reference margin ≥ 0.5); ≥ 299 needed to judge" in result.reasons
    # Judged on all predictions instead, the same evidence fails the 99 % tolerance.
    on_all = parse_overrides(["int8.agreement_on=all"])["int8"]
    assert judge(evidence(Agreement(2500, 59, 0, 0)), on_all).verdict is Verdict.FAIL


def test_exact_rule_and_empty_evidence():
    fp32 = TOLERANCES["fp32"]
    assert judge(evidence(Agreement(50, 0, 50, 0), max_abs_mlm_logit_diff=2e-5, max_abs_nsp_logit_diff=1e-5,
                          d_mlm_loss=1e-6, d_nsp_loss=0.0), fp32).verdict is Verdict.PASS  # fmt: skip
    flipped = judge(evidence(Agreement(5000, 1, 5000, 1), max_abs_mlm_logit_diff=2e-5, max_abs_nsp_logit_diff=1e-5,
                             d_mlm_loss=1e-6, d_nsp_loss=0.0), fp32)  # fmt: skip
    assert flipped.verdict is Verdict.FAIL and "none allowed" in flipped.reasons[0]
    empty = judge(evidence(Agreement(0, 0, 0, 0), max_abs_mlm_logit_diff=math.nan, d_mlm_loss=math.nan,
                           max_abs_nsp_logit_diff=1e-5, d_nsp_loss=0.0), fp32)  # fmt: skip
    assert empty.verdict is Verdict.INCONCLUSIVE and "max |Δ MLM logit|: nothing was compared" in empty.reasons


def test_failed_outputs_fallback_and_unlabelled_nsp():
    assert judge(evidence(Agreement(4000, 0, 4000, 0), n_failed=2), INT8).verdict is Verdict.FAIL
    fell = judge(evidence(Agreement(4000, 0, 4000, 0), fallback="ran on CPUExecutionProvider"), INT8)
    assert fell.verdict is Verdict.FALLBACK and fell.reasons[0].startswith("FALLBACK: ")
    assert judge(evidence(Agreement(3000, 90, 3000, 90), fallback="x"), INT8).verdict is Verdict.FAIL
    unlabelled = judge(evidence(Agreement(4000, 0, 4000, 0), d_nsp_loss=None), INT8)
    assert unlabelled.verdict is Verdict.PASS and unlabelled.check("nsp_loss").verdict is None


def test_verdict_order_and_exit_codes():
    assert worst([Verdict.PASS, Verdict.NOT_VERIFIED, Verdict.INCONCLUSIVE]) is Verdict.INCONCLUSIVE
    assert worst([Verdict.FALLBACK, Verdict.FAIL]) is Verdict.FAIL and worst([]) is Verdict.PASS
    assert exit_code([Verdict.PASS, Verdict.INCONCLUSIVE], strict=False) == 0
    assert exit_code([Verdict.PASS, Verdict.INCONCLUSIVE], strict=True) == EXIT_VERDICT
    assert (
        exit_code([Verdict.FALLBACK], strict=True) == EXIT_VERDICT and exit_code([Verdict.FAIL], False) == EXIT_VERDICT
    )


def _binomial_tail(k: int, n: int, p: float, upper: bool) -> float:
    terms = range(k, n + 1) if upper else range(0, k + 1)
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in terms)


def _solve(f, lo: float = 0.0, hi: float = 1.0) -> float:
    for _ in range(100):  # f is increasing in p
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return lo


def test_flip_rate_bounds_match_clopper_pearson_by_hand():
    # One-sided 95 % bounds for 3 flips in 40: P(X >= 3 | lo) = 0.05 and P(X <= 3 | hi) = 0.05.
    lo, hi = flip_rate_bounds(3, 40, 0.95)
    assert lo == pytest.approx(_solve(lambda p: _binomial_tail(3, 40, p, upper=True) - 0.05), abs=1e-9)
    assert hi == pytest.approx(_solve(lambda p: 0.05 - _binomial_tail(3, 40, p, upper=False)), abs=1e-9)
    # No flips: the upper bound is 1 - 0.05 ** (1 / n); it first reaches 1 % at n = 299.
    assert flip_rate_bounds(0, 299, 0.95)[1] == pytest.approx(1 - 0.05 ** (1 / 299))
    assert predictions_to_decide(0, 0, 0.01, 0.95) == 299 == math.ceil(math.log(0.05) / math.log(0.99))
    assert judge_agreement("MLM", Agreement(298, 0, 298, 0), INT8)[0].verdict is Verdict.INCONCLUSIVE
    assert judge_agreement("MLM", Agreement(299, 0, 299, 0), INT8)[0].verdict is Verdict.PASS


def test_mcnemar_and_paired_interval_match_a_hand_computed_case():
    # 1000 pairs; the runtime gets 3 right that the reference got wrong and 10 wrong that it got right.
    d = paired_difference(gained=3, lost=10, n=1000)
    assert d.difference == pytest.approx(-0.007)
    # Exact McNemar: two-sided binomial test of 3 successes in 13 at p = 1/2.
    assert d.p_value == pytest.approx(2 * sum(math.comb(13, i) for i in range(4)) / 2**13)  # 756 / 8192
    # Interval: a 95 % Clopper-Pearson interval for 3 / 13, mapped to (13 / 1000) * (2p - 1).
    p_lo = _solve(lambda p: _binomial_tail(3, 13, p, upper=True) - 0.025)
    p_hi = _solve(lambda p: 0.025 - _binomial_tail(3, 13, p, upper=False))
    assert (p_lo, p_hi) == (pytest.approx(0.0504, abs=1e-4), pytest.approx(0.5381, abs=1e-4))  # published tables
    assert d.lo == pytest.approx(0.013 * (2 * p_lo - 1), abs=1e-9) and d.hi == pytest.approx(
        0.013 * (2 * p_hi - 1), abs=1e-9
    )
    same = paired_difference(0, 0, 500)
    assert (same.difference, same.p_value) == (0.0, 1.0) and math.isnan(paired_difference(0, 0, 0).p_value)


def test_tolerance_overrides():
    table = parse_overrides(["int8.agreement=0.98", "fp32.logit=none", "fp16.agreement_on=all"])
    assert table["int8"].agreement == 0.98 and table["int8"].margin == INT8.margin
    assert table["fp32"].logit is None and table["fp16"].agreement_on == "all"
    assert TOLERANCES["int8"].agreement == 0.99  # the defaults are untouched
    for bad, message in [("int8.agreement", "PRECISION.FIELD=VALUE"), ("int4.loss=1", "unknown precision"),
                         ("int8.speed=1", "unknown field"), ("int8.agreement=1.5", r"agreement must be in \(0, 1\]"),
                         ("int8.loss=abc", "needs a number"), ("int8.agreement_on=some", "agreement_on must be")]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            parse_overrides([bad])
    with pytest.raises(ValueError, match="confidence"):
        Tolerance(logit=None, agreement=0.9, loss=0.1, confidence=1.0)


JUDGING = {"judge", "judge_agreement", "flip_rate_bounds", "paired_difference", "predictions_to_decide", "worst",
           "exit_code", "Tolerance", "tolerance_for", "decisive"}  # fmt: skip


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            names |= {a.name for a in node.names} | {node.module or ""}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_reports_render_verdicts_and_never_judge():
    for path in (PACKAGE / "reports").rglob("*.py"):
        imported = _imported_names(path)
        assert not imported & JUDGING, f"{path.name} imports judging code: {imported & JUDGING}"
        assert "lucid_eval.tolerances" not in imported, f"{path.name} reads tolerances to judge with"
        assert "tol_" not in "".join(
            ast.unparse(n) for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Compare)
        ), f"{path.name} compares a measurement with a tolerance"


def test_export_and_harness_take_verdicts_from_the_one_judge():
    for module in ("export/verify.py", "harness/compare.py"):
        assert "judge" in _imported_names(PACKAGE / module) and "lucid_eval.verdict" in _imported_names(
            PACKAGE / module
        )
    for path in PACKAGE.rglob("*.py"):
        if path.name != "verdict.py":
            tree = ast.parse(path.read_text(encoding="utf-8"))
            assert not any(isinstance(n, ast.FunctionDef) and n.name.startswith("judge") for n in ast.walk(tree)), path
