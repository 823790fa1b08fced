"""Runtimes: the same Batch gives the same answers on torch and ONNX Runtime; no silent fallback."""

import numpy as np
import pytest
import torch

from lucid_eval.export import ExportBundle
from lucid_eval.export.sessions import cuda_provider_status
from lucid_eval.export.verify import build_cases
from lucid_eval.runtimes import Batch, RuntimeUnavailable, create_runtime, runtime_status, spec


def cuda_reason() -> str | None:
    ok, reason = cuda_provider_status()
    return None if ok else reason


@pytest.fixture(scope="module")
def bundle(tiny_export):
    return ExportBundle.load(tiny_export)


@pytest.fixture(scope="module")
def batches(bundle):
    return [Batch(**c.inputs) for c in build_cases(bundle.tokenizer, 256, bundle.config.vocab_size, seed=5)]


def outputs(name, bundle, batches, **kw):
    with create_runtime(name, bundle, threads=2, **kw) as runtime:
        return [runtime.run(b) for b in batches], runtime.info()


def test_ort_cpu_matches_torch_cpu(bundle, batches):
    ref, ref_info = outputs("torch-cpu", bundle, batches)
    for name in ("ort-cpu", "ort-cpu-plain"):
        got, info = outputs(name, bundle, batches)
        assert info.providers == ["CPUExecutionProvider"] and info.threads == 2 and info.precision == "fp32"
        for r, g, b in zip(ref, got, batches, strict=True):
            valid = b.masked_lm_weights > 0
            assert np.abs(r.mlm_logits - g.mlm_logits)[valid].max() <= 1e-4
            np.testing.assert_array_equal(r.mlm_predictions[valid], g.mlm_predictions[valid])
            np.testing.assert_allclose(r.mlm_loss_sum, g.mlm_loss_sum, atol=1e-4)
            np.testing.assert_array_equal(r.mlm_correct, g.mlm_correct)
            np.testing.assert_allclose(r.nsp_logits, g.nsp_logits, atol=1e-4)
    assert ref_info.providers == ["torch:cpu"]


def test_int8_runs_and_stays_close(bundle, batches):
    ref, _ = outputs("torch-cpu", bundle, batches)
    got, info = outputs("ort-cpu-int8", bundle, batches)
    assert info.precision == "int8"
    loss_ref = sum(r.mlm_loss_sum.sum() for r in ref) / sum(r.mlm_count.sum() for r in ref)
    loss_got = sum(g.mlm_loss_sum.sum() for g in got) / sum(g.mlm_count.sum() for g in got)
    assert abs(loss_ref - loss_got) < 0.05
    assert all(np.isfinite(g.mlm_logits).all() for g in got)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_torch_cuda_without_cuda_is_unavailable(bundle):
    with pytest.raises(RuntimeUnavailable, match=r"torch-cuda: torch.cuda.is_available\(\) is False"):
        create_runtime("torch-cuda", bundle).open()


def test_ort_cuda_without_working_provider_is_a_clear_error_not_a_cpu_session(bundle, batches):
    if cuda_reason() is None:
        pytest.skip("ONNX Runtime's CUDA provider works here")
    with pytest.raises(
        RuntimeUnavailable,
        match=r"ort-cuda: CUDAExecutionProvider was requested but the session runs on \['CPUExecutionProvider'\]",
    ):
        create_runtime("ort-cuda", bundle).open()
    _, info = outputs("ort-cuda", bundle, batches[:1], allow_fallback=True)
    assert info.providers == ["CPUExecutionProvider"]
    assert info.fallback.startswith("CUDAExecutionProvider was requested")


def test_runtime_status_says_why(bundle):
    rows = {s.name: (ok, reason) for s, ok, reason in runtime_status(bundle)}
    assert rows["torch-cpu"] == (True, "available") and rows["ort-cpu-int8"][0]
    if cuda_reason() is not None:
        assert rows["ort-cuda"][0] is False and "CUDAExecutionProvider" in rows["ort-cuda"][1]
    with pytest.raises(ValueError, match="unknown runtime 'ort-tpu'"):
        spec("ort-tpu")


# ---- on a machine with a working CUDA provider (skipped, with the reason, elsewhere) ----------------
def needs_cuda():
    reason = cuda_reason()
    if reason is not None or not torch.cuda.is_available():
        pytest.skip(f"needs CUDA for torch and ONNX Runtime: {reason or 'torch.cuda.is_available() is False'}")


@pytest.mark.cuda
def test_cuda_fp32_parity_with_tf32_off(bundle, batches):
    needs_cuda()
    ref, ref_info = outputs("torch-cuda", bundle, batches)
    got, info = outputs("ort-cuda", bundle, batches)
    assert "CUDAExecutionProvider" in info.providers and any("IO binding" in n for n in info.notes)
    assert any("TF32 disabled" in n for n in ref_info.notes)
    for r, g, b in zip(ref, got, batches, strict=True):
        valid = b.masked_lm_weights > 0
        assert np.abs(r.mlm_logits - g.mlm_logits)[valid].max() <= 1e-4
        np.testing.assert_array_equal(r.mlm_predictions[valid], g.mlm_predictions[valid])


@pytest.mark.cuda
def test_cuda_fp16_agreement(bundle, batches):
    needs_cuda()
    ref, _ = outputs("torch-cuda", bundle, batches)
    got, info = outputs("ort-cuda-fp16", bundle, batches)
    assert info.precision == "fp16" and "CUDAExecutionProvider" in info.providers
    agree = np.concatenate(
        [(r.nsp_logits.argmax(-1) == g.nsp_logits.argmax(-1)) for r, g in zip(ref, got, strict=True)]
    )
    assert agree.mean() >= 0.99
    assert all(np.isfinite(g.mlm_loss_sum).all() for g in got)


# ---- the result contract: outputs by name, one list of names everywhere -----------------------------
def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(-1, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(-1, keepdims=True)))[..., 0]


def assert_scoring_semantics(batch: Batch, out) -> None:
    """What each output means; two outputs swapped or renamed anywhere break at least one line."""
    w = batch.masked_lm_weights.astype(np.float64)
    logits = out.mlm_logits.astype(np.float64)
    np.testing.assert_array_equal(out.mlm_count, w.sum(-1))
    valid = w > 0
    np.testing.assert_array_equal(out.mlm_predictions[valid], logits.argmax(-1)[valid])
    np.testing.assert_array_equal(out.mlm_correct, ((out.mlm_predictions == batch.masked_lm_ids) * w).sum(-1))
    target = np.take_along_axis(logits, batch.masked_lm_ids[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.mlm_loss_sum, ((_logsumexp(logits) - target) * w).sum(-1), rtol=1e-4, atol=1e-4)
    nsp = out.nsp_logits.astype(np.float64)
    nsp_target = np.take_along_axis(nsp, batch.next_sentence_labels[:, None], -1)[:, 0]
    np.testing.assert_allclose(out.nsp_loss, _logsumexp(nsp) - nsp_target, rtol=1e-4, atol=1e-5)


def test_scoring_outputs_are_one_named_contract(bundle, batches):
    import dataclasses

    import onnx

    from lucid_eval.models.scoring import SCORING_OUTPUTS
    from lucid_eval.runtimes import ScoreOutputs
    from lucid_eval.runtimes.dummy import DummyRuntime

    arrays = tuple(f.name for f in dataclasses.fields(ScoreOutputs) if f.name != "has_nsp")  # has_nsp: a flag
    assert arrays == SCORING_OUTPUTS
    for variant in bundle.variants:
        graph = onnx.load(bundle.graph(variant, "scoring"), load_external_data=False)
        assert tuple(o.name for o in graph.graph.output) == SCORING_OUTPUTS, variant
    for name in ("torch-cpu", "ort-cpu", "ort-cpu-plain", "ort-cpu-int8"):
        got, _ = outputs(name, bundle, batches)
        for batch, out in zip(batches, got, strict=True):
            assert_scoring_semantics(batch, out)
    with DummyRuntime("dummy", bundle.config.vocab_size) as dummy:
        assert_scoring_semantics(batches[0], dummy.run(batches[0]))
    sample = {k: v for k, v in dataclasses.asdict(got[0]).items() if k != "has_nsp"}
    with pytest.raises(ValueError, match="scoring outputs"):
        ScoreOutputs.from_named({k: v for k, v in sample.items() if k != "nsp_loss"})
    with pytest.raises(ValueError, match="output mlm_count has shape"):
        ScoreOutputs.from_named({**sample, "mlm_count": sample["nsp_logits"]})
