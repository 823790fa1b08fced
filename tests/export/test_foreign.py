"""Reading foreign BERT graphs: inputs by name and dtype, outputs by name then shape, clear errors."""

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from lucid_eval.export.foreign import ForeignGraphError, graph_labels, inspect_graph
from lucid_eval.models.config import BERTConfig

CONFIG = BERTConfig.tiny(vocab_size=50)


def graph(path: Path, inputs: list[tuple], outputs: list[tuple]) -> Path:
    """An ONNX file with the given (name, elem type, shape) inputs and outputs (Identity-free stub:
    each output is a ConstantOfShape, enough for reading; it is never run)."""
    nodes = [helper.make_node("Shape", [inputs[0][0]], [f"shape_{name}"]) for name, *_ in outputs] + [
        helper.make_node("ConstantOfShape", [f"shape_{name}"], [name]) for name, *_ in outputs
    ]
    model = helper.make_model(
        helper.make_graph(
            nodes,
            "stub",
            [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
            [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        )
    )
    onnx.save(model, str(path))
    return path


IDS = [("input_ids", TensorProto.INT64, ["b", "t"]), ("attention_mask", TensorProto.INT64, ["b", "t"])]


def test_outputs_are_found_by_name_then_by_shape(tmp_path) -> None:
    named = inspect_graph(graph(tmp_path / "a.onnx", IDS, [("logits", TensorProto.FLOAT, ["b", "t", 50])]), CONFIG, "a")
    assert (named.mlm_output, named.nsp_output) == ("logits", None)
    assert named.how == {"logits": "by name (logits)"} and named.inputs == {
        "input_ids": "int64",
        "attention_mask": "int64",
    }
    shaped = inspect_graph(
        graph(
            tmp_path / "b.onnx",
            [(n, TensorProto.INT32, s) for n, _, s in IDS],
            [("out0", TensorProto.FLOAT, ["b", "t", 50]), ("out1", TensorProto.FLOAT, ["b", 2]),
             ("hidden", TensorProto.FLOAT, ["b", "t", 32])],
        ),
        CONFIG,
        "b",
    )  # fmt: skip
    assert (shaped.mlm_output, shaped.nsp_output, shaped.ignored_outputs) == ("out0", "out1", ("hidden",))
    assert shaped.how["out0"].startswith("by shape") and shaped.inputs["input_ids"] == "int32"
    assert shaped.warnings and "token_type_ids" in shaped.warnings[0]
    assert len(shaped.sha256) == 64 and shaped.precision == "fp32"


def test_an_unidentifiable_output_is_an_error_that_lists_the_graph(tmp_path) -> None:
    path = graph(tmp_path / "c.onnx", IDS, [("last_hidden_state", TensorProto.FLOAT, ["b", "t", 32])])
    with pytest.raises(
        ForeignGraphError, match=r"no output is the MLM logits.*outputs last_hidden_state float32\[b, t, 32\]"
    ):
        inspect_graph(path, CONFIG, "c")
    two = graph(
        tmp_path / "d.onnx", IDS, [("x", TensorProto.FLOAT, ["b", "t", 50]), ("y", TensorProto.FLOAT, ["b", "t", 50])]
    )
    with pytest.raises(ForeignGraphError, match="several outputs could be the MLM logits"):
        inspect_graph(two, CONFIG, "d")
    wrong = graph(tmp_path / "e.onnx", IDS, [("logits", TensorProto.FLOAT, ["b", "t", 49])])
    with pytest.raises(ForeignGraphError, match=r"named like the MLM logits \(B, T, 50\) but has another shape"):
        inspect_graph(wrong, CONFIG, "e")


def test_inputs_must_be_berts_with_dynamic_axes(tmp_path) -> None:
    cases = {
        "pixel_values": [*IDS, ("pixel_values", TensorProto.FLOAT, ["b", 3])],
        "attention_mask is missing": IDS[:1],
        "must be int64 or int32": [("input_ids", TensorProto.FLOAT, ["b", "t"]), IDS[1]],
        "fixed batch or sequence size": [("input_ids", TensorProto.INT64, [1, 128]), IDS[1]],
    }
    for i, (message, inputs) in enumerate(cases.items()):
        path = graph(tmp_path / f"{i}.onnx", inputs, [("logits", TensorProto.FLOAT, ["b", "t", 50])])
        with pytest.raises(ForeignGraphError, match=message):
            inspect_graph(path, CONFIG, "x")
    (tmp_path / "not.onnx").write_text("not a graph")
    with pytest.raises(ForeignGraphError, match="not a readable ONNX model"):
        inspect_graph(tmp_path / "not.onnx", CONFIG, "x")


def test_labels_are_stems_made_unique_by_their_folders(tmp_path) -> None:
    paths = [tmp_path / "a/model.onnx", tmp_path / "b/model.onnx", tmp_path / "c/x.onnx"]
    assert graph_labels(paths) == ["a/model", "b/model", "x"]
    assert graph_labels([tmp_path / "a/model.onnx", tmp_path / "c/x.onnx"]) == ["model", "x"]
    with pytest.raises(ForeignGraphError, match="twice"):
        graph_labels([tmp_path / "m.onnx", tmp_path / "m.onnx"])
