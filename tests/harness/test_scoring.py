"""The scoring loop and its tables, on dummy runtimes: agreement, flips and failures."""

import math

import numpy as np
import pytest
from _score_dummy import records

from lucid_eval.harness.accumulate import RunTotals
from lucid_eval.harness.batching import make_batch
from lucid_eval.harness.compare import (
    comparison_table,
    examples_table,
    flips_table,
    margins,
    metrics_table,
    summary_table,
    wilson_interval,
    with_verdicts,
)
from lucid_eval.harness.masking import encode_chunk
from lucid_eval.harness.scoring import BatchShape, Scores, score_chunk
from lucid_eval.runtimes.dummy import DummyRuntime
from lucid_eval.tolerances import TOLERANCES

N = 48


def run_chunk(tokenizer, kinds: dict[str, dict], *, token_budget: int = 256, n: int = N) -> tuple[Scores, dict]:
    recs = records(n)
    examples = encode_chunk(recs, tokenizer, seed=0, max_length=48, mlm_probability=0.15)
    runtimes = [DummyRuntime(name, tokenizer.vocab_size, **options) for name, options in kinds.items()]
    for rt in runtimes:
        rt.open()
    scores = score_chunk(recs, examples, runtimes, BatchShape(token_budget, max_batch=8, max_length=48, pad_token_id=0))
    assert scores is not None
    return scores, {rt.name: rt.info() for rt in runtimes}


def tables(scores: Scores, infos: dict, tokenizer) -> tuple:
    totals = RunTotals.start(list(scores.runtimes), margins(infos, TOLERANCES))
    totals.add(scores)
    metrics = metrics_table(totals, infos, has_labels=True)
    comparison = comparison_table(totals, metrics, infos, TOLERANCES, has_labels=True)
    return with_verdicts(metrics, comparison), comparison, examples_table(scores), flips_table(scores, tokenizer)


def test_dummy_runtime_follows_the_scoring_semantics(tiny_tokenizer) -> None:
    examples = encode_chunk(records(6), tiny_tokenizer, seed=0, max_length=48, mlm_probability=0.3)
    batch = make_batch(examples, pad_token_id=0, max_length=48)
    rt = DummyRuntime("d", tiny_tokenizer.vocab_size)
    rt.open()
    out = rt.run(batch)
    for b, e in enumerate(examples):
        logits = out.mlm_logits[b, : e.n_masked].astype(np.float64)
        lse = np.log(np.exp(logits).sum(-1))
        assert out.mlm_loss_sum[b] == pytest.approx((lse - logits[np.arange(e.n_masked), e.labels]).sum(), rel=1e-5)
        assert out.mlm_correct[b] == (logits.argmax(-1) == e.labels).sum()
        assert out.mlm_count[b] == e.n_masked
        np.testing.assert_array_equal(out.mlm_predictions[b, : e.n_masked], logits.argmax(-1))
        nsp = out.nsp_logits[b].astype(np.float64)
        assert out.nsp_loss[b] == pytest.approx(np.log(np.exp(nsp).sum()) - nsp[e.nsp_label], rel=1e-5)
    assert out.mlm_logits.shape == (*batch.masked_lm_positions.shape, tiny_tokenizer.vocab_size)


def test_results_do_not_depend_on_batching(tiny_tokenizer) -> None:
    kinds = {"ref": {}, "noisy": {"noise": 0.3}}
    small, _ = run_chunk(tiny_tokenizer, kinds, token_budget=64)
    large, _ = run_chunk(tiny_tokenizer, kinds, token_budget=4096)
    np.testing.assert_array_equal(small.shared["index"], np.arange(N))
    for name in kinds:
        assert len(small.runtimes[name]["batch_ms"]) > len(large.runtimes[name]["batch_ms"])
        for key, value in small.runtimes[name].items():
            if key != "batch_ms":
                np.testing.assert_array_equal(value, large.runtimes[name][key], err_msg=key)


def test_identical_runtimes_agree_completely(tiny_tokenizer) -> None:
    scores, infos = run_chunk(tiny_tokenizer, {"ref": {}, "copy": {}})
    metrics, comparison, examples, flips = tables(scores, infos, tiny_tokenizer)
    quality = [
        c
        for c in metrics.columns
        if c not in ("runtime", "wall_s", "pairs_per_second", "tokens_per_second", "p50_ms", "p95_ms", "verdict")
    ]
    assert metrics.loc[0, quality].equals(metrics.loc[1, quality])
    row = comparison.iloc[0]
    assert row["mlm_agreement"] == row["nsp_agreement"] == 1.0
    assert row["max_abs_mlm_logit_diff"] == row["mean_abs_mlm_logit_diff"] == row["max_abs_nsp_logit_diff"] == 0.0
    assert row["n_mlm_flips"] == row["n_nsp_flips"] == 0 and row["d_mlm_loss"] == 0.0
    assert row["verdict"] == "PASS" and row["mlm_decisive"] > 0 and flips.empty
    assert row["mlm_accuracy_diff"] == 0.0 and row["mlm_mcnemar_p"] == 1.0 and "unchanged" in row["mlm_effect"]
    assert metrics.loc[0, "n_pairs"] == N and metrics.loc[0, "n_masked"] == scores.shared["n_masked"].sum()
    assert len(examples) == 2 * N and examples["index"].is_monotonic_increasing
    assert metrics.loc[0, "wall_s"] > 0 and metrics.loc[0, "p95_ms"] >= metrics.loc[0, "p50_ms"]


def test_noisy_runtime_lists_its_flips_with_texts(tiny_tokenizer) -> None:
    scores, infos = run_chunk(tiny_tokenizer, {"ref": {}, "noisy": {"noise": 0.5, "precision": "int8"}})
    metrics, comparison, _, flips = tables(scores, infos, tiny_tokenizer)
    row = comparison.iloc[0]
    assert row["n_mlm_flips"] > 0 and row["max_abs_mlm_logit_diff"] > 0 and math.isnan(row["tol_logit"])
    assert row["n_mlm_flips"] == (flips["kind"] == "mlm").sum()
    assert row["n_nsp_flips"] == (flips["kind"] == "nsp").sum()
    recs = {r.id: r for r in records(N)}
    for flip in flips.itertuples():
        assert (flip.text_a, flip.text_b) == (recs[flip.id].text_a, recs[flip.id].text_b)
        assert flip.prediction != flip.reference_prediction
    mlm = flips[flips["kind"] == "mlm"].iloc[0]
    vocab = tiny_tokenizer.get_vocab()
    assert mlm["label"] in vocab and mlm["prediction"] in vocab and mlm["position"] > 0
    assert mlm["reference_prediction"] != mlm["prediction"]


def test_nan_examples_are_failed_excluded_and_counted(tiny_tokenizer) -> None:
    scores, infos = run_chunk(tiny_tokenizer, {"ref": {}, "nan": {"nan_every": 5}})
    metrics, comparison, examples, flips = tables(scores, infos, tiny_tokenizer)
    failed = scores.runtimes["nan"]["failed"]
    assert 0 < failed.sum() < N and not scores.runtimes["ref"]["failed"].any()
    m = metrics.set_index("runtime")
    assert m.at["nan", "n_failed"] == failed.sum() and m.at["ref", "n_failed"] == 0
    # The NaN runtime is otherwise the reference: its metrics are the reference's over the healthy examples.
    ok = ~failed
    ref = scores.runtimes["ref"]
    count = scores.shared["n_masked"][ok].sum()
    assert m.at["nan", "n_masked"] == count
    assert m.at["nan", "mlm_loss"] == pytest.approx(ref["mlm_loss_sum"][ok].sum() / count)
    assert np.isfinite(m.loc["nan", ["mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"]].astype(float)).all()
    row = comparison.iloc[0]
    # A NaN output is not the reference's prediction: its slots count as flips, and the verdict is FAIL.
    assert row["max_abs_mlm_logit_diff"] == 0.0 and flips.empty
    assert row["n_mlm_flips"] == scores.shared["n_masked"][failed].sum() and row["n_failed"] == failed.sum()
    assert row["nsp_agreement"] == pytest.approx(1 - failed.mean())
    assert row["verdict"] == "FAIL" and row["check_outputs"] == "FAIL" and "NaN/Inf" in row["verdict_reasons"]
    bad = examples[(examples["runtime"] == "nan") & examples["failed"]]
    assert len(bad) == failed.sum() and bad["nsp_pred"].isna().all() and bad["max_abs_mlm_logit_diff"].isna().all()


def test_summary_and_wilson() -> None:
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0) and wilson_interval(0, 10)[0] == pytest.approx(0.0)


def test_summary_table_names_every_runtime(tiny_tokenizer) -> None:
    scores, infos = run_chunk(
        tiny_tokenizer, {"ref": {}, "copy": {}, "noisy": {"noise": 0.5, "precision": "int8"}}, n=16
    )
    metrics, comparison, _, _ = tables(scores, infos, tiny_tokenizer)
    lines = summary_table(metrics, comparison).splitlines()
    assert len({len(line) for line in lines[:4]}) == 1 and lines[4] == ""
    assert "REFERENCE" in lines[1] and "PASS" in lines[2] and "PASS" not in lines[3]
    noisy = comparison.set_index("runtime").at["noisy", "verdict"]
    assert lines[5].startswith("verdict: not every runtime is shown to match") and f"noisy: {noisy}: " in lines[6]
    assert sum("accuracy" in line for line in lines[7:]) == 4  # MLM and NSP effect lines per compared runtime
