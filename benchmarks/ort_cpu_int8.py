"""One-off CPU measurements behind BENCHMARKS.md's section of 2026-12-05 (not part of the package).

    python benchmarks/ort_cpu_int8.py kernels            # int8 GEMM and GELU operators alone
    python benchmarks/ort_cpu_int8.py static-fused DIR   # static int8 that keeps QAttention, on bert-base-random

`static-fused` builds bert-base-random's fused and dynamic int8 scoring graphs in DIR (no
verification), replaces every DynamicQuantizeLinear by a QuantizeLinear calibrated (MinMax) on the
fused fp32 graph, rewrites MatMulInteger -> Cast -> Mul into MatMulIntegerToFloat, and times the
graphs interleaved, then profiles them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

THREADS = 2


def _session(nodes, inits, x_shape, y_shape, x_type=TensorProto.FLOAT) -> ort.InferenceSession:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("X", x_type, x_shape)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape)],
        inits,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, ir_version=10, opset_imports=opsets)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = THREADS, 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _ms(run: Callable[[], object], n: int = 20) -> float:
    for _ in range(3):
        run()
    start = time.perf_counter()
    for _ in range(n):
        run()
    return (time.perf_counter() - start) / n * 1e3


def _const(value, name: str, dtype) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _table(runs: dict[str, Callable[[], object]], rounds: int = 3) -> dict[str, list[float]]:
    """Milliseconds per call of each run, `rounds` times, interleaved (this host's speed drifts)."""
    ms: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            ms[name].append(_ms(run))
    return ms


def _cell(values: list[float]) -> str:
    return f"{np.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def kernels() -> None:
    """fp32 MatMul against the two int8 ways to the same GEMM, then GELU's operators; median
    milliseconds of three interleaved rounds of 20 calls, range in brackets."""
    rng, m = np.random.default_rng(0), 1024
    print("| K x N | fp32 MatMul | DynamicQuantizeMatMul | QuantizeLinear + MatMulIntegerToFloat |\n|---|---|---|---|")
    for k, n in [(768, 3072), (3072, 768), (768, 768)]:
        w = rng.standard_normal((k, n)).astype(np.float32)
        inits = [numpy_helper.from_array(w, "W"), _const(np.clip(np.round(w / 0.02), -127, 127), "Wq", np.int8),
                 _const(0.02, "ws", np.float32), _const(0, "wz", np.int8),
                 _const(0.03, "as", np.float32), _const(128, "az", np.uint8)]  # fmt: skip
        graphs = {
            "fp32": [helper.make_node("MatMul", ["X", "W"], ["Y"])],
            "dynamic": [helper.make_node("DynamicQuantizeMatMul", ["X", "Wq", "ws", "wz"], ["Y"], domain="com.microsoft")],
            "static": [helper.make_node("QuantizeLinear", ["X", "as", "az"], ["Xq"]),
                       helper.make_node("MatMulIntegerToFloat", ["Xq", "Wq", "as", "ws", "az", "wz"], ["Y"], domain="com.microsoft")],
        }  # fmt: skip
        feed = {"X": rng.standard_normal((m, k)).astype(np.float32)}
        runs = {}
        for name, nodes in graphs.items():
            used = [i for i in inits if any(i.name in node.input for node in nodes)]
            runs[name] = partial(_session(nodes, used, [m, k], [m, n]).run, None, feed)
        print(f"| {k} x {n} | " + " | ".join(_cell(v) for v in _table(runs).values()) + " |")

    shape = [2048, 3072]
    feed = {"X": rng.standard_normal(shape).astype(np.float32)}
    bias = numpy_helper.from_array(rng.standard_normal(shape[1]).astype(np.float32), "b")
    add = helper.make_node("Add", ["X", "b"], ["Z"])
    gelus = {
        "BiasGelu": [helper.make_node("BiasGelu", ["X", "b"], ["Y"], domain="com.microsoft")],
        "Add, then Gelu (com.microsoft)": [add, helper.make_node("Gelu", ["Z"], ["Y"], domain="com.microsoft")],
        "Add, then Gelu (ONNX opset 20)": [add, helper.make_node("Gelu", ["Z"], ["Y"])],
        "FastGelu (tanh form)": [helper.make_node("FastGelu", ["X", "b"], ["Y"], domain="com.microsoft")],
        "Add alone": [helper.make_node("Add", ["X", "b"], ["Y"])],
    }
    runs = {name: partial(_session(nodes, [bias], shape, shape).run, None, feed) for name, nodes in gelus.items()}
    print(f"\n| Operators on {tuple(shape)} fp32 | ms |\n|---|---|")
    for name, ms in _table(runs).items():
        print(f"| {name} | {_cell(ms)} |")


def _activation_ranges(fused: Path, tensors: list[str], batches) -> dict[str, tuple[float, float]]:
    model = onnx.load(str(fused))
    model.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in tensors)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    lo, hi = dict.fromkeys(tensors, 0.0), dict.fromkeys(tensors, 0.0)  # the range always holds 0
    for batch in batches:
        for t, value in zip(tensors, session.run(tensors, {k: v for k, v in batch.items() if k in names}), strict=True):
            lo[t], hi[t] = min(lo[t], float(value.min())), max(hi[t], float(value.max()))
    return {t: (lo[t], hi[t]) for t in tensors}


def make_static(int8: Path, fused: Path, dst: Path, batches) -> None:
    """The dynamic int8 graph with calibrated QuantizeLinear nodes and MatMulIntegerToFloat."""
    model = onnx.load(str(int8))
    graph = model.graph
    quantized = [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]
    ranges = _activation_ranges(fused, [n.input[0] for n in quantized], batches)
    replaced: dict[str, list[onnx.NodeProto]] = {}  # by each node's first output
    for node in quantized:
        lo, hi = ranges[node.input[0]]
        scale = (hi - lo) / 255.0
        graph.initializer.extend([_const(scale, node.output[1], np.float32),
                                  _const(round(-lo / scale), node.output[2], np.uint8)])  # fmt: skip
        replaced[node.output[0]] = [
            helper.make_node("QuantizeLinear", [node.input[0], *node.output[1:]], [node.output[0]])
        ]
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in graph.node for out in node.output}
    for node in (n for n in graph.node if n.op_type == "MatMulInteger"):
        (cast,) = consumers[node.output[0]]
        (mul,) = consumers[cast.output[0]]
        scales = producer[mul.input[1]]  # Mul(activation scale, weight scale)
        inputs = [*node.input[:2], *scales.input, *node.input[2:]]
        replaced[node.output[0]] = [
            helper.make_node("MatMulIntegerToFloat", inputs, [mul.output[0]], domain="com.microsoft")
        ]
        replaced[cast.output[0]] = replaced[mul.output[0]] = []
        if len(consumers[scales.output[0]]) == 1:
            replaced[scales.output[0]] = []
    nodes = [new for node in graph.node for new in replaced.get(node.output[0], [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(dst))
    print(
        f"{len(quantized)} QuantizeLinear, {sum(n.op_type == 'MatMulIntegerToFloat' for n in nodes)} MatMulIntegerToFloat"
    )


def static_fused(out: Path) -> None:
    from lucid_eval.export.graphs import export_onnx
    from lucid_eval.export.pipeline import load_checkpoint
    from lucid_eval.export.sessions import make_session
    from lucid_eval.export.transforms import fuse, quantize_int8
    from lucid_eval.export.verify import calibration_inputs
    from lucid_eval.train.named import resolve_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_checkpoint(resolve_checkpoint("bert-base-random", out / "cache"))
    cfg = model.config
    export_onnx(model, out / "full-fp32.onnx", out / "fp32.onnx", 17)
    fuse(
        out / "fp32.onnx",
        out / "fused.onnx",
        cfg.num_attention_heads,
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.gelu_form,
    )
    quantize_int8(out / "fused.onnx", out / "int8.onnx", cfg.vocab_size)
    make_static(out / "int8.onnx", out / "fused.onnx", out / "static.onnx",
                calibration_inputs(tokenizer, 128, cfg.vocab_size, 1000))  # fmt: skip

    batches = calibration_inputs(tokenizer, 128, cfg.vocab_size, 400, seed=7)[:8]
    graphs = ("int8", "static")
    sessions = {g: make_session(out / f"{g}.onnx", threads=THREADS).session for g in graphs}
    names = {i.name for i in sessions["int8"].get_inputs()}
    feeds = [{k: v for k, v in b.items() if k in names} for b in batches]
    pairs, seconds = sum(len(f["input_ids"]) for f in feeds), {g: [] for g in graphs}
    for _ in range(5):
        for g, session in sessions.items():
            start = time.perf_counter()
            for feed in feeds:
                session.run(None, feed)
            seconds[g].append(time.perf_counter() - start)
    for g in graphs:
        print(
            f"{g}: {pairs / np.median(seconds[g]):.1f} pairs/s median ({', '.join(f'{pairs / s:.1f}' for s in seconds[g])})"
        )
    for g in graphs:
        session = make_session(out / f"{g}.onnx", threads=THREADS, profile_prefix=str(out / f"profile-{g}")).session
        for feed in feeds:
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        by_op = Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                by_op[e["args"]["op_name"]] += e["dur"]
        total = sum(by_op.values())
        print(
            f"{g}: profiler {total / 1e6:.2f} s: " + ", ".join(f"{k} {v / total:.1%}" for k, v in by_op.most_common(8))
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("kernels")
    commands.add_parser("static-fused").add_argument("out", type=Path)
    args = parser.parse_args()
    kernels() if args.command == "kernels" else static_fused(args.out)
