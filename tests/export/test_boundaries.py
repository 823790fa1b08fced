"""Boundary mapping: every variant's graph and third-party graphs (a plain transformers export, its
onnxruntime-optimized form, a fill-mask graph, an opset-14 export with LayerNorm lowered to
primitives) map to the reference's module names by structure, and the instrumented copy never
touches the user's file."""

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from lucid_eval.export.boundaries import (
    LOWERED,
    NO_NSP_HEAD,
    instrument,
    map_boundaries,
    normalizations,
    reference_boundaries,
)
from lucid_eval.export.foreign import inspect_graph
from lucid_eval.files import sha256_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from foreign_graphs import AXES, hf_masked_lm_graph, hf_pretraining_graph, ort_optimized  # noqa: E402

LAYERS = 2  # BERTConfig.tiny


def graph(tiny_export, variant: str):
    return tiny_export / variant / "full.onnx"


def ops(model: onnx.ModelProto) -> dict[str, str]:
    return {out: node.op_type for node in model.graph.node for out in node.output}


@pytest.mark.parametrize(
    "variant, norm", [("fp32", "LayerNormalization"), ("fused", "LayerNormalization"), ("int8", "LayerNormalization"), ("fp16", "SkipLayerNormalization")]
)  # fmt: skip
def test_every_variant_maps_every_boundary(tiny_export, variant, norm):
    model = onnx.load(str(graph(tiny_export, variant)))
    boundaries = map_boundaries(model, LAYERS)
    assert [b.name for b in boundaries] == [b.name for b in reference_boundaries(LAYERS)]
    assert all(b.tensor for b in boundaries), [b.how_found for b in boundaries if not b.tensor]
    op = ops(model)
    by_name = {b.name: b for b in boundaries}
    assert op[by_name["bert.embeddings"].tensor] == (
        "LayerNormalization" if variant == "fp32" else "EmbedLayerNormalization"
    )
    for i in range(LAYERS):
        assert op[by_name[f"bert.encoder.layer.{i}.attention"].tensor] == norm
        assert op[by_name[f"bert.encoder.layer.{i}"].tensor] == norm
        assert f"#{2 * i + 3} of 5 on the encoder in topological order: layer {i}'s feed-forward output" in (
            by_name[f"bert.encoder.layer.{i}"].how_found
        )
    assert op[by_name["bert.pooler"].tensor] == "Tanh"
    assert op[by_name["cls.predictions.transform"].tensor] == "LayerNormalization"
    assert by_name["cls.predictions"].tensor == "prediction_scores"
    assert "nearest upstream of graph output prediction_scores" in by_name["cls.predictions.transform"].how_found
    # the export keeps the torch module paths in tensor names: an independent check of the structural mapping
    assert "layer.1/attention" in by_name["bert.encoder.layer.1.attention"].tensor


def test_a_layer_count_that_does_not_fit_maps_no_encoder_boundary(tiny_export):
    boundaries = {b.name: b for b in map_boundaries(onnx.load(str(graph(tiny_export, "fused"))), 3)}
    encoder = [b for b in boundaries.values() if b.branch == "trunk"]
    assert len(encoder) == 7 and all(b.tensor is None for b in encoder)
    assert "5 normalization nodes (EmbedLayerNormalization, LayerNormalization)" in encoder[0].how_found
    assert "expected 1 + 2 x 3 layers = 7" in encoder[0].how_found
    assert boundaries["bert.pooler"].tensor and boundaries["cls.predictions.transform"].tensor


def test_a_graph_without_the_nsp_output_says_so(tiny_export):
    model = onnx.load(str(graph(tiny_export, "fp32")))
    kept = [o for o in model.graph.output if o.name != "seq_relationship_scores"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    boundaries = {b.name: b for b in map_boundaries(model, LAYERS)}
    assert boundaries["cls.seq_relationship"].tensor is None
    assert boundaries["cls.seq_relationship"].how_found == "no graph output seq_relationship_scores"
    assert boundaries["bert.pooler"].tensor is None
    assert boundaries["bert.encoder.layer.1"].tensor


def test_instrumented_copy_outputs_boundaries_and_leaves_the_file_alone(tiny_export):
    path = graph(tiny_export, "int8")
    before, listing = sha256_file(path), sorted(path.parent.iterdir())
    instrumented = instrument(path, LAYERS)
    assert sha256_file(path) == before and sorted(path.parent.iterdir()) == listing
    ids = np.array([[2, 50, 60, 70, 3, 0]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64), "token_type_ids": np.zeros_like(ids)}
    values = instrumented.run(feeds)
    assert list(values) == [b.name for b in reference_boundaries(LAYERS)]
    assert values["bert.encoder.layer.0"].shape == (1, 6, 32) and values["bert.pooler"].shape == (1, 32)
    assert instrumented.session.options["graph_optimization_level"].endswith("ORT_ENABLE_ALL")


class _Logits(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.prediction_logits, out.seq_relationship_logits


def opset14_graph(checkpoint: Path, path: Path) -> Path:
    """transformers.BertForPreTraining exported at opset 14 (Optimum's default for BERT), where torch
    writes each LayerNorm as ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add."""
    from transformers import BertForPreTraining

    inputs = ["input_ids", "attention_mask", "token_type_ids"]
    outputs = ["prediction_logits", "seq_relationship_logits"]
    torch.onnx.export(
        _Logits(BertForPreTraining.from_pretrained(str(checkpoint)).eval()),
        tuple(torch.ones(2, 7, dtype=torch.int64) for _ in inputs),
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes={**{n: AXES for n in inputs}, outputs[0]: AXES, outputs[1]: {0: "batch"}},
        opset_version=14,
        dynamo=False,
    )
    return path


@pytest.fixture(scope="module")
def foreign(tmp_path_factory, tiny_checkpoint, tiny_config) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("foreign")
    plain = hf_pretraining_graph(tiny_checkpoint, root / "plain.onnx")
    heads, hidden = tiny_config.num_attention_heads, tiny_config.hidden_size
    return {
        "plain": plain,
        "optimized": ort_optimized(plain, root / "optimized.onnx", heads, hidden),
        "masked_lm": hf_masked_lm_graph(tiny_checkpoint, root / "fill-mask.onnx"),
        "opset14": opset14_graph(tiny_checkpoint, root / "opset14.onnx"),
        "int32": hf_pretraining_graph(tiny_checkpoint, root / "int32.onnx", dtype=torch.int32, token_types=False),
    }


# torch.onnx.export keeps the module path in every node's name: an independent check of the structural mapping
MODULE_PATHS = {
    "bert.embeddings": "bert/embeddings/LayerNorm/",
    **{f"bert.encoder.layer.{i}.attention": f"bert/encoder/layer.{i}/attention/output/LayerNorm/" for i in range(2)},
    **{f"bert.encoder.layer.{i}": f"bert/encoder/layer.{i}/output/LayerNorm/" for i in range(2)},
    "cls.predictions.transform": "cls/predictions/transform/LayerNorm/",
    "bert.pooler": "bert/pooler/",
}


@pytest.mark.parametrize(
    "kind, encoder_ops",
    [
        ("plain", {"LayerNormalization"}),
        ("optimized", {"LayerNormalization", "SkipLayerNormalization"}),  # the embeddings' LayerNorm stays unfused
        ("masked_lm", {"LayerNormalization"}),
        ("opset14", {LOWERED}),
    ],
)
def test_third_party_graphs_map_every_boundary_they_have(foreign, tiny_config, kind, encoder_ops):
    path = foreign[kind]
    graph = inspect_graph(path, tiny_config, kind)
    model = onnx.load(str(path))
    found = map_boundaries(model, LAYERS, mlm_output=graph.mlm_output, nsp_output=graph.nsp_output,
                           identified=graph.how)  # fmt: skip
    by_name = {b.name: b for b in found}
    assert [b.name for b in found] == [b.name for b in reference_boundaries(LAYERS)]
    ops = {n.tensor: n.op for n in normalizations(model.graph)}
    assert {ops[b.tensor] for b in found if b.branch == "trunk"} == encoder_ops
    for name, module in MODULE_PATHS.items():
        boundary = by_name[name]
        if kind == "masked_lm" and name == "bert.pooler":
            assert boundary.absent and boundary.tensor is None and boundary.how_found == NO_NSP_HEAD
        else:
            assert module in boundary.tensor, (name, boundary.tensor, boundary.how_found)
    mlm = by_name["cls.predictions"]
    assert mlm.tensor == graph.mlm_output and f"identified {graph.how[graph.mlm_output]}" in mlm.how_found
    nsp = by_name["cls.seq_relationship"]
    assert (nsp.absent, nsp.tensor) == ((True, None) if kind == "masked_lm" else (False, "seq_relationship_logits"))
    if kind == "opset14":
        assert by_name["bert.encoder.layer.1"].how_found.startswith(
            f"{LOWERED} ((x - ReduceMean(x)) / Sqrt(...), Mul, Add)"
        )


def test_a_graph_without_token_types_is_fed_what_it_takes(foreign, tiny_config):
    graph = inspect_graph(foreign["int32"], tiny_config, "int32")
    instrumented = instrument(graph.path, LAYERS, mlm_output=graph.mlm_output, nsp_output=graph.nsp_output)
    assert instrumented.inputs == {"input_ids": np.int32, "attention_mask": np.int32}
    ids = np.array([[2, 50, 60, 3, 70, 3]], dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    values = instrumented.run(feeds)
    assert values["bert.encoder.layer.1"].shape == (1, 6, tiny_config.hidden_size)
    assert values["cls.predictions"].shape == (1, 6, tiny_config.vocab_size)
