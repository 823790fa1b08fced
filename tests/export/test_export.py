"""`lucid-eval export`: both graphs, every CPU variant verified against PyTorch, honest manifest."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from lucid_eval.export import ExportBundle, ExportConfig, ExportError, ExportVerificationError, export_model
from lucid_eval.export.manifest import Manifest
from lucid_eval.export.sessions import make_session
from lucid_eval.export.verify import build_cases
from lucid_eval.models.model import BERTForPreTraining


def test_manifest_records_everything(tiny_export, tiny_config):
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    # A random-init model has no decisive predictions: its int8 graphs cannot be shown to agree.
    verdicts = {name: v["verification"]["verdict"] for name, v in manifest["variants"].items()}
    assert verdicts["fp32"] == verdicts["fused"] == "PASS" and verdicts["int8"] == "INCONCLUSIVE"
    assert manifest["verdict"] in ("INCONCLUSIVE", "NOT VERIFIED") and "passed" not in json.dumps(manifest)
    assert "MLM: 0 decisive predictions (reference margin ≥ 0.5); ≥ 299 needed to judge" in str(
        manifest["variants"]["int8"]["verification"]["reasons"]
    )
    assert manifest["tolerances"]["int8"]["agreement"] == 0.99 and manifest["verification"]["pairs"] == 200
    assert set(manifest["variants"]) == {"fp32", "fused", "int8", "fp16"}
    assert manifest["opset"] == 17 and manifest["vocab_size"] == tiny_config.vocab_size
    assert {"torch", "onnx", "onnxruntime"} <= set(manifest["versions"])
    assert manifest["seconds"]["total"] > 0 and "verify" in manifest["seconds"]
    for name, info in manifest["files"].items():
        assert (tiny_export / name).stat().st_size == info["bytes"] and len(info["sha256"]) == 64
    assert manifest["variants"]["fused"]["fusion"]["scoring"]["skip_layer_norm"] is False  # slower on the CPU
    fused = manifest["variants"]["fused"]["fusion"]["scoring"]["operators"]
    assert fused["Attention"] == fused["BiasGelu"] - 1 == tiny_config.num_hidden_layers
    assert (
        fused["EmbedLayerNormalization"] == 1 and fused["LayerNormalization"] == 2 * tiny_config.num_hidden_layers + 1
    )
    for variant in ("fp32", "fused"):
        verification = manifest["variants"][variant]["verification"]
        cases = verification["cases"]
        assert len(cases) == 8 and all(c["max_abs_logit_diff"] <= 1e-4 and c["mlm_flips"] == 0 for c in cases)
        for graph in ("full", "scoring"):
            evidence = verification["graphs"][graph]["evidence"]
            assert evidence["nsp"]["compared"] == 216 and evidence["mlm"]["decisive"] > 200  # 200 pairs + 16 cases
    int8 = manifest["variants"]["int8"]["verification"]
    assert int8["tolerance"]["loss"] == 0.05 and int8["graphs"]["scoring"]["evidence"]["d_mlm_loss"] is not None
    assert manifest["variants"]["int8"]["quantization"]["excluded_nodes"], "the MLM decoder stays fp32"


def run(path, feed):
    session = make_session(path).session
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {i.name: feed[i.name] for i in session.get_inputs()}), strict=True))


@pytest.fixture(scope="module")
def cases(tiny_tokenizer, tiny_config):
    return build_cases(tiny_tokenizer, 512, tiny_config.vocab_size, seed=3)


@pytest.mark.parametrize("variant", ["fp32", "fused"])
def test_scoring_graph_equals_numpy_over_full_graph(tiny_export, cases, variant):
    for case in cases:
        full = run(tiny_export / variant / "full.onnx", case.inputs)["prediction_scores"]
        scored = run(tiny_export / variant / "scoring.onnx", case.inputs)
        pos, ids, w = case.inputs["masked_lm_positions"], case.inputs["masked_lm_ids"], case.inputs["masked_lm_weights"]
        logits = np.take_along_axis(full, pos[..., None], 1).astype(np.float64)  # (B, P, V)
        lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        token_loss = lse - np.take_along_axis(logits, ids[..., None], -1)[..., 0]
        np.testing.assert_allclose(scored["mlm_loss_sum"], (token_loss * w).sum(-1), atol=1e-4)
        np.testing.assert_array_equal(scored["mlm_correct"], ((logits.argmax(-1) == ids) * w).sum(-1))
        np.testing.assert_array_equal(scored["mlm_count"], w.sum(-1))
        np.testing.assert_allclose(scored["mlm_logits"], logits, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 8), (7, 33), (1, 512), (3, 100)])
def test_dynamic_shapes_match_torch(tiny_export, tiny_checkpoint, shape):
    B, T = shape
    g = torch.Generator().manual_seed(B * T)
    ids = torch.randint(5, 900, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, T // 2 :] = 0 if B > 1 else 1
    types = (torch.arange(T) >= T // 3).long().expand(B, T).contiguous()
    model = BERTForPreTraining.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        ref = model(ids, mask, types)[0].numpy()
    feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    for variant in ("fp32", "fused"):
        got = run(tiny_export / variant / "full.onnx", feed)["prediction_scores"]
        real = mask.numpy().astype(bool)
        assert np.abs(got - ref)[real].max() <= 1e-4
        np.testing.assert_array_equal(got.argmax(-1)[real], ref.argmax(-1)[real])


def test_fp16_graph_is_structurally_valid(tiny_export):
    for graph in ("full", "scoring"):
        model = onnx.load(tiny_export / "fp16" / f"{graph}.onnx")
        onnx.checker.check_model(model, full_check=True)
        assert {i.type.tensor_type.elem_type for i in model.graph.input} == {
            onnx.TensorProto.INT64,
            onnx.TensorProto.FLOAT,
        } - ({onnx.TensorProto.FLOAT} if graph == "full" else set())
        outputs = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
        assert outputs.get("prediction_scores", outputs.get("mlm_logits")) == onnx.TensorProto.FLOAT  # I/O kept fp32
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    verification = json.loads((tiny_export / "manifest.json").read_text())["variants"]["fp16"]["verification"]
    if "cases" not in verification:  # CPU-only: recorded as not verified, never as passed
        assert verification["verdict"] == "NOT VERIFIED"
        assert verification["reasons"][0].startswith("not run: no working CUDA provider")


def test_fp16_loss_is_computed_in_fp32_from_its_own_logits(tiny_export, cases):
    """The fp16 graph's logits are fp16-rounded, but the loss arithmetic after them is fp32: its
    MLM loss matches float64 arithmetic on its own logits (fp16 arithmetic was off by ~5e-3)."""
    manifest = json.loads((tiny_export / "manifest.json").read_text())
    tail = manifest["variants"]["fp16"]["conversion"]["fp32_nodes"]
    assert {n.split("/")[-1].rstrip("_0123456789") for n in tail} >= {"LogSoftmax", "GatherElements", "Neg", "Mul"}
    feed = cases[0].inputs
    out = run(tiny_export / "fp16" / "scoring.onnx", feed)  # ONNX Runtime's CPU EP runs fp16 graphs too
    x = out["mlm_logits"].astype(np.float64)
    top = x.max(-1, keepdims=True)
    nll = (
        np.log(np.exp(x - top).sum(-1))
        + top[..., 0]
        - np.take_along_axis(x, feed["masked_lm_ids"][..., None], -1)[..., 0]
    )
    np.testing.assert_allclose(out["mlm_loss_sum"], (nll * feed["masked_lm_weights"]).sum(-1), rtol=1e-5, atol=1e-4)


def test_verification_fails_loudly_with_numbers(tiny_checkpoint, tmp_path, perturbed_export):
    with pytest.raises(ExportVerificationError, match=r"fp32: full graph: max \|Δ MLM logit\| [\d.e-]+ > 0.0001"):
        export_model(ExportConfig(model=tiny_checkpoint, out=tmp_path / "bad", variants=("fp32",), verify_pairs=16))
    [kept] = tmp_path.glob("bad.failed-*")  # --out stays untouched; the evidence is kept beside it
    manifest = json.loads((kept / "manifest.json").read_text())
    assert manifest["verdict"] == "FAIL"
    cases = manifest["variants"]["fp32"]["verification"]["cases"]
    assert any(c["case"] == "padded batch 8" and c["max_abs_logit_diff"] > 1e-4 for c in cases)
    with pytest.raises(ExportError, match="failed verification at export time"):
        ExportBundle.load(kept)


def test_tampered_or_truncated_graph_is_refused(tiny_export, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_export, copy)
    ExportBundle.load(copy)
    graph = copy / "int8" / "scoring.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    with pytest.raises(
        ExportError, match=r"int8/scoring.onnx does not match manifest.json: sha256 .* \(modified, truncated or corrupt"
    ):
        ExportBundle.load(copy)
    (copy / "fused" / "full.onnx").unlink()
    with pytest.raises(ExportError, match="fused/full.onnx is listed in manifest.json but missing"):
        manifest = Manifest.from_json(json.loads((copy / "manifest.json").read_text()), copy)
        ExportBundle(copy, manifest, "").check_files(["fused/full.onnx"])
    with pytest.raises(ExportError, match="manifest.json is missing"):
        ExportBundle.load(tmp_path)


def test_tokenizer_vocab_mismatch_is_refused(tiny_export, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_export, copy)
    (copy / "tokenizer.json").unlink()
    vocab = (copy / "vocab.txt").read_text().splitlines()
    (copy / "vocab.txt").write_text("\n".join(vocab[:-10]) + "\n")
    with pytest.raises(ExportError, match=r"tokenizer vocabulary size 990 != model vocab_size 1000"):
        ExportBundle.load(copy, check_files=False)


def test_unknown_variant_is_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="unknown variants"):
        export_model(ExportConfig(model=tiny_checkpoint, out=tmp_path, variants=("fp8",)))


def test_loss_tolerance_is_judged_on_the_pooled_mean(tiny_tokenizer, tiny_config):
    """One example's loss moving by 0.2 among 16 whose mean barely moves stays within int8's 0.05."""
    from lucid_eval.export.verify import _Tally

    def add(tally, case, shifts):
        n = len(shifts)
        logits = np.tile(np.array([[5.0, 0.0]], dtype=np.float32), (n, 1))
        ref = {"mlm_logits": logits[:, None, :], "nsp_logits": logits, "mlm_loss_sum": np.zeros(n),
               "mlm_count": np.ones(n), "nsp_loss": np.zeros(n)}  # fmt: skip
        got = {**ref, "nsp_loss": np.asarray(shifts)}
        inputs = {"masked_lm_weights": np.ones((n, 1), np.float32), "input_ids": np.zeros((n, 4), np.int64)}
        tally.add(type(case)(case.name, case.name, inputs), "scoring", ref, got, 0.5)

    case = build_cases(tiny_tokenizer, 64, tiny_config.vocab_size)[0]
    tally = _Tally()
    add(tally, case, [-0.01] * 8)
    add(tally, case, [0.02] * 7 + [0.2])
    assert tally.evidence("scoring").d_nsp_loss == pytest.approx((-0.08 + 0.14 + 0.2) / 16)
    assert tally.evidence("full").d_nsp_loss is None


def test_int8_keeps_attention_fp32_when_full_quantization_fails(tiny_checkpoint, tmp_path, monkeypatch):
    import lucid_eval.export.pipeline as pipeline

    original, calls = pipeline.verify_variants, []

    def first_int8_fails(model, cases, variants, tolerances, device="cpu"):
        records = original(model, cases, variants, tolerances, device)
        calls.append(sorted(variants))
        if len(calls) == 1:
            records["int8"] = {
                **records["int8"],
                "verdict": "FAIL",
                "reasons": ["scoring graph: |Δ mean NSP loss| 0.07 > 0.05"],
            }
        return records

    monkeypatch.setattr(pipeline, "verify_variants", first_int8_fails)
    manifest = export_model(
        ExportConfig(model=tiny_checkpoint, out=tmp_path / "e", variants=("int8",), verify_pairs=16)
    )
    int8 = manifest.variants["int8"]
    assert calls == [["int8"], ["int8"]] and int8.verification["verdict"] != "FAIL"
    assert int8.quantization["op_types"] == ["MatMul"]
    assert int8.quantization["attention_kept_fp32_because"] == ["scoring graph: |Δ mean NSP loss| 0.07 > 0.05"]
    assert not (tmp_path / "e" / "fused").exists() and ExportBundle.load(tmp_path / "e")


def test_the_tied_word_embedding_is_stored_once(tiny_export):
    """The decoder reads the word embedding through a Transpose instead of a folded second copy."""
    manifest = ExportBundle.load(tiny_export).manifest
    hidden, vocab = manifest.model_config.hidden_size, manifest.model_config.vocab_size
    for variant, info in manifest.variants.items():
        for path in info.graphs.values():
            graph = onnx.load(str(tiny_export / path)).graph
            shapes = [tuple(i.dims) for i in graph.initializer]
            assert shapes.count((vocab, hidden)) == 1 and (hidden, vocab) not in shapes, (variant, path)


def test_static_int8_is_calibrated_on_pairs_the_verification_does_not_use(tiny_checkpoint, tmp_path):
    from lucid_eval.export.verify import _pick, _sentences, calibration_inputs, calibration_pairs
    from lucid_eval.runtimes import Batch, create_runtime

    manifest = export_model(
        ExportConfig(model=tiny_checkpoint, out=tmp_path / "e", variants=("int8-static",), verify_pairs=200)
    )
    static = manifest.variants["int8-static"]
    assert static.precision == "int8" and static.verdict.value != "FAIL" and list(manifest.variants) == ["int8-static"]
    assert static.quantization["calibration"]["method"] == "MinMax" and static.quantization["excluded_nodes"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "e" / static.graphs["scoring"])).graph.node}
    assert "QLinearMatMul" in ops and "DynamicQuantizeLinear" not in ops  # static: no ranges computed at run time
    assert not (tmp_path / "e" / "fp32").exists()
    bundle = ExportBundle.load(tmp_path / "e")
    sents = _sentences()
    verified = {sents[i] for i in _pick(np.random.default_rng(0), len(sents), 200)}
    calibrated = {s for pair in calibration_pairs(200) for s in pair}
    assert len(calibrated) == 512 and not calibrated & verified
    batches = calibration_inputs(bundle.tokenizer, 64, bundle.config.vocab_size, 200)
    with create_runtime("ort-cpu-int8-static", bundle, threads=1) as runtime:
        out = runtime.run(Batch(**batches[0]))
        assert runtime.info().precision == "int8" and np.isfinite(out.mlm_logits).all()


def _activation_scales(path) -> list[float]:
    graph = onnx.load(str(path)).graph
    values = {i.name: float(onnx.numpy_helper.to_array(i)) for i in graph.initializer if not i.dims}
    return [values[n.input[1]] for n in graph.node if n.op_type == "QLinearMatMul"]


def test_static_int8_calibrates_on_the_users_file_and_records_it(tiny_checkpoint, tmp_path):
    """--calibration: the file's pairs (not the built-in ones) set the ranges; the manifest names the
    file, its hash and how many pairs were drawn from how many."""
    import hashlib

    from lucid_eval.harness.calibration import calibration_from_file

    words = ["the", "zebra", "quietly", "moves", "across", "an", "ancient", "river", "at", "dawn"]
    rows = [f"{' '.join(words[i % 7 :] * 3)}\t{' '.join(words[: i % 9 + 1] * 2)}" for i in range(300)]
    pairs = tmp_path / "domain.tsv"
    pairs.write_text("text_a\ttext_b\n" + "\n".join(rows) + "\nonly one column\n")
    configs = {name: ExportConfig(model=tiny_checkpoint, out=tmp_path / name, variants=("int8-static",), verify_pairs=64)
               for name in ("builtin", "file")}  # fmt: skip
    configs["file"].calibration = calibration_from_file(pairs)
    manifests = {name: export_model(config) for name, config in configs.items()}
    recorded = manifests["file"].variants["int8-static"].quantization["calibration"]
    assert recorded["data"] == "file" and recorded["file"] == str(pairs.resolve())
    assert recorded["sha256"] == hashlib.sha256(pairs.read_bytes()).hexdigest()
    assert (recorded["valid_pairs"], recorded["rejected_rows"], recorded["sampled_pairs"], recorded["pairs"]) == (
        300,
        1,
        256,
        256,
    )
    assert manifests["builtin"].variants["int8-static"].quantization["calibration"]["data"].startswith("built-in")
    scales = {name: _activation_scales(tmp_path / name / "int8-static" / "scoring.onnx") for name in configs}
    assert len(scales["file"]) == len(scales["builtin"]) > 0 and scales["file"] != scales["builtin"]
    assert manifests["file"].variants["int8-static"].verdict.value != "FAIL"
