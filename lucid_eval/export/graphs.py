"""Turning the PyTorch model into ONNX graphs: the plain export and its fused, int8 and fp16 variants.

Export uses the explicit ("eager") attention so ONNX Runtime's transformer optimizer recognises the
pattern and fuses it; the weights are the same tensors either way.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import torch

from lucid_eval.models.model import BERTForPreTraining
from lucid_eval.models.scoring import FULL_INPUTS, FULL_OUTPUTS, SCORING_INPUTS, SCORING_OUTPUTS, BERTScorer

TWO_GB = 2**31
# The operator ONNX Runtime fuses each GELU form into: FastGelu computes the tanh approximation,
# BiasGelu the exact erf form. A fused graph holding the other form's operator computes the wrong GELU.
FUSED_GELU = {"tanh": "FastGelu", "erf": "BiasGelu"}


def export_model_for_onnx(model: BERTForPreTraining) -> BERTForPreTraining:
    """A copy of the model with the explicit attention pattern (same weights, eval mode)."""
    clone = BERTForPreTraining(replace(model.config, attn_implementation="eager"))
    clone.load_state_dict(copy.deepcopy(model.state_dict()))
    return clone.eval()


def _dummy_inputs(vocab_size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_size, (2, 16), generator=g)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 12:] = 0
    types = torch.zeros(2, 16, dtype=torch.long)
    types[:, 8:] = 1
    positions = torch.tensor([[1, 4, 9], [2, 3, 0]])
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": types,
        "masked_lm_positions": positions,
        "masked_lm_ids": torch.gather(ids, 1, positions),
        "masked_lm_weights": torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]),
        "next_sentence_labels": torch.tensor([0, 1]),
    }


def _dynamic_axes(names: tuple[str, ...]) -> dict[str, dict[int, str]]:
    axes = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "sequence"},
        "token_type_ids": {0: "batch", 1: "sequence"},
        "masked_lm_positions": {0: "batch", 1: "predictions"},
        "masked_lm_ids": {0: "batch", 1: "predictions"},
        "masked_lm_weights": {0: "batch", 1: "predictions"},
        "next_sentence_labels": {0: "batch"},
        "prediction_scores": {0: "batch", 1: "sequence"},
        "seq_relationship_scores": {0: "batch"},
        "mlm_loss_sum": {0: "batch"},
        "mlm_correct": {0: "batch"},
        "mlm_count": {0: "batch"},
        "nsp_loss": {0: "batch"},
        "nsp_logits": {0: "batch"},
        "mlm_predictions": {0: "batch", 1: "predictions"},
        "mlm_logits": {0: "batch", 1: "predictions"},
    }
    return {n: axes[n] for n in names}


def needs_external_data(model: BERTForPreTraining) -> bool:
    return sum(p.numel() * p.element_size() for p in model.parameters()) > TWO_GB * 0.9


def export_onnx(model: BERTForPreTraining, full_path: Path, scoring_path: Path, opset: int) -> None:
    """Write the full graph (lucid's forward) and the scoring graph from the same weights."""
    eager = export_model_for_onnx(model)
    dummy = _dummy_inputs(model.config.vocab_size)
    jobs = [
        (eager, FULL_INPUTS, FULL_OUTPUTS, full_path),
        (BERTScorer(eager).eval(), SCORING_INPUTS, SCORING_OUTPUTS, scoring_path),
    ]
    for module, inputs, outputs, path in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer chatter about python-side shape checks
            torch.onnx.export(
                module,
                tuple(dummy[n] for n in inputs),
                str(path),
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_axes=_dynamic_axes(inputs + outputs),
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        onnx.checker.check_model(str(path), full_check=True)


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
    whose GELU fused into the other form's operator (`check_gelu_operator`)."""
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(
        str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0, use_gpu=use_gpu
    )
    stats = {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
    gelu = FUSED_GELU[gelu_form]
    expected = {
        "EmbedLayerNormalization": 1,
        "Attention": num_layers,
        "SkipLayerNormalization": 2 * num_layers,
        gelu: num_layers,
    }
    short = {op: (stats.get(op, 0), n) for op, n in expected.items() if stats.get(op, 0) < n}
    if short:
        detail = ", ".join(f"{op} {got}/{want}" for op, (got, want) in short.items())
        raise RuntimeError(f"{src.name}: graph is not fully fused ({detail}); fusion statistics: {stats}")
    check_gelu_operator(src, stats, gelu_form)
    opt.save_model_to_file(str(dst), use_external_data_format=src.stat().st_size > TWO_GB * 0.9)
    return {"operators": stats, "expected_minimum": expected, "gelu": {"form": gelu_form, "operator": gelu}}


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


def decoder_matmuls(path: Path, vocab_size: int) -> list[str]:
    """The MatMul/Gemm nodes whose constant weight is (hidden, vocab): the MLM decoder."""
    model = onnx.load(str(path), load_external_data=False)
    decoder_weights = {i.name for i in model.graph.initializer if len(i.dims) == 2 and vocab_size in i.dims}
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and set(n.input) & decoder_weights]


def convert_fp16(src: Path, dst: Path, num_heads: int, hidden_size: int, gelu_form: str = "erf") -> dict[str, Any]:
    """fp16 weights and compute for the CUDA execution provider, fp32 inputs/outputs kept;
    the loss tail (log-sum-exp, softmax) stays fp32 for accuracy."""
    from onnxruntime.transformers import optimizer

    opt = optimizer.optimize_model(
        str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0, use_gpu=True
    )
    check_gelu_operator(src, {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}, gelu_form)
    keep_fp32 = ["ReduceLogSumExp", "Softmax", "ArgMax", "GatherElements", "ReduceSum"]
    opt.convert_float_to_float16(keep_io_types=True, op_block_list=keep_fp32)
    _drop_duplicate_nodes(opt.model.graph)
    opt.save_model_to_file(str(dst), use_external_data_format=src.stat().st_size > TWO_GB * 0.9)
    return {
        "method": "onnxruntime.transformers float16 conversion",
        "keep_io_types": True,
        "fp32_ops": keep_fp32,
        "gelu": {"form": gelu_form, "operator": FUSED_GELU[gelu_form]},
    }


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
