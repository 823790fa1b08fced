"""Useful work and the machine's matrix-multiply rate, to say how close a runtime runs to the roofline.

"Useful" FLOPs count what evaluation must compute: the encoder over real (unpadded) tokens, the MLM
head at masked positions only, and the pooler + NSP head once per example. Padding, and the
30522-wide decoder at unmasked positions, are work a runtime may do but does not get credit for.
"""

from __future__ import annotations

import time

import numpy as np

from lucid_eval.models.config import BERTConfig


def useful_flops(config: BERTConfig, n_tokens: np.ndarray, n_masked: np.ndarray) -> float:
    """FLOPs (2 per multiply-add) for examples of `n_tokens` real tokens with `n_masked` masked ones."""
    C, F, V, L = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_hidden_layers
    n = n_tokens.astype(np.float64)
    per_layer = n * (2 * 4 * C * C + 2 * 2 * C * F) + 2 * 2 * n * n * C  # projections + FFN + QK^T and PV
    encoder = L * per_layer.sum()
    mlm_head = float(n_masked.sum()) * (2 * C * C + 2 * C * V)
    nsp_head = len(n_tokens) * (2 * C * C + 2 * C * 2)
    return float(encoder + mlm_head + nsp_head)


def gemm_flops(config: BERTConfig, shapes: list[tuple[int, int, int]]) -> dict[str, float]:
    """FLOPs the fused fp32 graph's GEMM operators do over padded batches of (pairs, padded length,
    masked slots): the `MatMul` nodes (attention output, feed-forward, MLM transform and decoder at
    every slot) and the `Attention` nodes (QKV projection, QK^T and PV). Divided by the profiler's
    seconds per operator type, they give the rate each operator reaches."""
    C, F, V, L = config.hidden_size, config.intermediate_size, config.vocab_size, config.num_hidden_layers
    matmul = attention = 0.0
    for b, t, p in shapes:
        rows = b * t
        matmul += L * rows * (2 * C * C + 2 * 2 * C * F) + b * p * (2 * C * C + 2 * C * V)
        attention += L * (rows * 2 * 3 * C * C + 2 * 2 * b * t * t * C)
    return {"MatMul": matmul, "Attention": attention}


def _sustained(step, flops_per_step: float, seconds: float) -> float:
    for _ in range(3):
        step()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    return flops_per_step * count / (time.perf_counter() - start) / 1e9


def matmul_rates(threads: int, *, seconds: float = 1.5, m: int = 2048) -> dict[str, float]:
    """Sustained fp32 GFLOP/s of BERT-base's matrix products (768x3072, 3072x768, 768x768 weights,
    2048 rows) with `threads` threads, by PyTorch (MKL/oneDNN) and ONNX Runtime (MLAS); the best
    shape per library. The best library is the machine's rate."""
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    torch.set_num_threads(threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    rates = {"torch": 0.0, "onnxruntime": 0.0}
    for k, n in ((768, 3072), (3072, 768), (768, 768)):
        flops = 2.0 * m * k * n
        a, b = torch.randn(m, k), torch.randn(k, n)
        out = torch.empty(m, n)
        rates["torch"] = max(rates["torch"], _sustained(lambda: torch.matmul(a, b, out=out), flops, seconds))  # noqa: B023
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])],
            "matmul",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
            initializer=[numpy_helper.from_array(b.numpy(), "b")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feed = {"a": a.numpy()}
        rate = _sustained(lambda: session.run(None, feed), flops, seconds)  # noqa: B023
        rates["onnxruntime"] = max(rates["onnxruntime"], rate)
    return rates
