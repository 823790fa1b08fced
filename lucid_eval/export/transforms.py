"""The fused, int8 and fp16 variants of an fp32 ONNX graph, by ONNX Runtime's optimizer and quantizer.

Torch-free on purpose: the export runs these in a child process (`lucid_eval.isolated`) so the
memory they hold goes back to the OS, and a child that imported torch would spend seconds on it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lucid_eval.export.manifest import GRAPHS

TWO_GB = 2**31
# The operator ONNX Runtime fuses each GELU form into: FastGelu computes the tanh approximation,
# BiasGelu the exact erf form. A fused graph holding the other form's operator computes the wrong GELU.
FUSED_GELU = {"tanh": "FastGelu", "erf": "BiasGelu"}


def check_gelu_operator(src: Path, stats: dict[str, int], gelu_form: str) -> None:
    """Refuse an optimised graph whose GELU fused into the other form's operator (at opset 20 torch
    writes the tanh GELU as an ONNX Gelu node, which ONNX Runtime's optimizer fuses into the erf
    BiasGelu)."""
    gelu = FUSED_GELU[gelu_form]
    wrong = [op for op in FUSED_GELU.values() if op != gelu and stats.get(op)]
    if wrong:
        raise RuntimeError(
            f"{src.name}: the model's GELU is the {gelu_form} form ({gelu}), but the optimised graph holds "
            f"{', '.join(wrong)}; fusion statistics: {stats}"
        )


def fuse(
    src: Path,
    dst: Path,
    num_heads: int,
    hidden_size: int,
    num_layers: int,
    gelu_form: str = "erf",
    use_gpu: bool = False,
) -> dict[str, Any]:
    """ONNX Runtime's BERT optimizer; returns fusion statistics and refuses a graph left unfused or
    whose GELU fused into the other form's operator (`check_gelu_operator`).

    For the CPU the residual Add and LayerNormalization stay apart: its SkipLayerNormalization
    kernel is slower than the two (sessions.CPU_DISABLED_OPTIMIZERS); a CUDA session fuses them itself."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = use_gpu
    opt = optimizer.optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size,
                                   opt_level=0, use_gpu=use_gpu, optimization_options=options)  # fmt: skip
    stats = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
    gelu = FUSED_GELU[gelu_form]
    expected = {
        "EmbedLayerNormalization": 1,
        "Attention": num_layers,
        "SkipLayerNormalization" if use_gpu else "LayerNormalization": 2 * num_layers,
        gelu: num_layers,
    }
    short = {op: (stats.get(op, 0), n) for op, n in expected.items() if stats.get(op, 0) < n}
    if short:
        detail = ", ".join(f"{op} {got}/{want}" for op, (got, want) in short.items())
        raise RuntimeError(f"{src.name}: graph is not fully fused ({detail}); fusion statistics: {stats}")
    check_gelu_operator(src, stats, gelu_form)
    opt.save_model_to_file(str(dst), use_external_data_format=src.stat().st_size > TWO_GB * 0.9)
    return {"operators": stats, "expected_minimum": expected, "gelu": {"form": gelu_form, "operator": gelu},
            "skip_layer_norm": use_gpu}  # fmt: skip


INT8_OP_TYPES = ("MatMul", "Attention")


def quantize_int8(
    src: Path,
    dst: Path,
    vocab_size: int,
    per_channel: bool = True,
    reduce_range: bool = False,
    op_types: tuple[str, ...] = INT8_OP_TYPES,
) -> dict[str, Any]:
    """Dynamic int8 quantization of the encoder's MatMuls (and fused Attention's QKV projection)
    for the CPU execution provider.

    The MLM decoder (hidden x vocab) stays fp32: it runs only at masked positions after the gather,
    so quantizing it saves little time and costs prediction accuracy."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = decoder_matmuls(src, vocab_size)
    logging.disable(logging.WARNING)  # its advice to run pre-processing applies to static quantization
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            nodes_to_exclude=exclude,
            op_types_to_quantize=list(op_types),  # embeddings and LayerNorms stay fp32
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.disable(logging.NOTSET)
    return {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QInt8",
        "activations": "uint8, dynamic per-tensor",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "op_types": list(op_types),
        "excluded_nodes": exclude,
    }


def quantize_int8_static(
    src: Path,
    dst: Path,
    vocab_size: int,
    calibration: list[dict[str, np.ndarray]],
    source: dict[str, Any],
    per_channel: bool = True,
    reduce_range: bool = False,
) -> dict[str, Any]:
    """Static int8 of the plain graph's MatMuls (QOperator: QLinearMatMul, U8S8), the activation
    ranges calibrated (MinMax) on `calibration` batches, whose origin `source` describes; the MLM
    decoder stays fp32 as in dynamic int8."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    names = {i.name for i in onnx.load(str(src), load_external_data=False).graph.input}

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{k: v for k, v in batch.items() if k in names} for batch in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    exclude = decoder_matmuls(src, vocab_size)
    logging.disable(logging.WARNING)  # shape-inference chatter about tensors it leaves in fp32
    try:
        quantize_static(
            str(src),
            str(dst),
            Batches(),
            quant_format=QuantFormat.QOperator,
            op_types_to_quantize=["MatMul"],
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"MatMulConstBOnly": True},
        )
    finally:
        logging.disable(logging.NOTSET)
    return {
        "method": "onnxruntime.quantization.quantize_static (QOperator) on the unfused graph",
        "weight_type": "QInt8",
        "activations": "uint8, static per-tensor",
        "calibration": {
            "method": "MinMax",
            "batches": len(calibration),
            "pairs": sum(len(b["input_ids"]) for b in calibration),
            "max_length": max(b["input_ids"].shape[1] for b in calibration),
            **source,
        },  # fmt: skip
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "op_types": ["MatMul"],
        "excluded_nodes": exclude,
    }


def decoder_matmuls(path: Path, vocab_size: int) -> list[str]:
    """The MatMul/Gemm nodes whose constant weight is (hidden, vocab), stored as such or as the
    transpose of the tied word embedding (`tie_decoder_to_embedding`): the MLM decoder."""
    model = onnx.load(str(path), load_external_data=False)
    weights = {i.name for i in model.graph.initializer if len(i.dims) == 2 and vocab_size in i.dims}
    weights |= {n.output[0] for n in model.graph.node if n.op_type == "Transpose" and n.input[0] in weights}
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and set(n.input) & weights]


def tie_decoder_to_embedding(path: Path) -> list[str]:
    """Store the MLM decoder's weight once when it is the word embedding transposed (BERT ties
    them; the exporter's constant folding writes the transpose as a second initializer, 94 MB for
    bert-base). The decoder then reads a Transpose of the embedding, which ONNX Runtime folds when
    it loads the graph. Only exact copies are tied. Returns the decoder nodes rewired."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    tables = {n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits}
    tied: list[str] = []
    for node in model.graph.node:
        weight = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is None or len(weight.dims) != 2:
            continue
        matrix = numpy_helper.to_array(weight)
        for table in tables:
            if tuple(inits[table].dims) == matrix.shape[::-1] and np.array_equal(
                numpy_helper.to_array(inits[table]).T, matrix
            ):
                transposed = f"{table}.transposed"
                if transposed not in {o for n in model.graph.node for o in n.output}:
                    model.graph.node.insert(
                        0, helper.make_node("Transpose", [table], [transposed], name=transposed, perm=[1, 0])
                    )
                node.input[1] = transposed
                model.graph.initializer.remove(weight)
                tied.append(node.name)
                break
    if tied:
        large = sum(len(i.raw_data) for i in model.graph.initializer) > TWO_GB * 0.9
        onnx.save(model, str(path), save_as_external_data=large)
    return tied


def convert_fp16(src: Path, dst: Path, num_heads: int, hidden_size: int, gelu_form: str = "erf") -> dict[str, Any]:
    """fp16 weights and compute for the CUDA execution provider, fp32 inputs/outputs kept;
    the loss tail (log-softmax and every node after it, argmax) stays fp32 for accuracy: a loss of
    10 rounded to fp16 is off by up to 0.004."""
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(
        str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0, use_gpu=True
    )
    check_gelu_operator(src, {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}, gelu_form)
    keep_fp32 = ["LogSoftmax", "Softmax", "ArgMax", "GatherElements", "ReduceSum"]
    tail = downstream_nodes(opt.model.graph, ("LogSoftmax", "ArgMax"))
    opt.convert_float_to_float16(keep_io_types=True, op_block_list=keep_fp32, node_block_list=tail)
    _drop_duplicate_nodes(opt.model.graph)
    opt.save_model_to_file(str(dst), use_external_data_format=src.stat().st_size > TWO_GB * 0.9)
    return {
        "method": "onnxruntime.transformers float16 conversion",
        "keep_io_types": True,
        "fp32_ops": keep_fp32,
        "fp32_nodes": tail,
        "gelu": {"form": gelu_form, "operator": FUSED_GELU[gelu_form]},
    }


def downstream_nodes(graph: onnx.GraphProto, op_types: tuple[str, ...]) -> list[str]:
    """Names of the nodes of `op_types` and of every node that consumes their results, directly or not."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found: dict[str, None] = {}
    todo = [n for n in graph.node if n.op_type in op_types]
    while todo:
        node = todo.pop()
        if node.name not in found:
            found[node.name] = None
            todo.extend(c for out in node.output for c in consumers.get(out, []))
    return list(found)


def _drop_duplicate_nodes(graph: onnx.GraphProto) -> None:
    """Remove nodes identical to an earlier one. The float16 converter emits one output Cast per
    consumer when a graph output also feeds other nodes, which breaks single static assignment."""
    seen: set[tuple] = set()
    keep = []
    for node in graph.node:
        key = (node.op_type, node.domain, tuple(node.input), tuple(node.output), node.SerializeToString())
        if key not in seen:
            seen.add(key)
            keep.append(node)
    if len(keep) != len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def each_graph(
    transform: Callable[..., dict[str, Any]], src: dict[str, Path], dst: dict[str, Path], *args: Any
) -> dict[str, Any]:
    """`transform(src[g], dst[g], *args)` for the full and the scoring graph (one child process
    runs both); the options each returned, by graph."""
    return {g: transform(src[g], dst[g], *args) for g in GRAPHS}
