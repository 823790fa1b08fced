"""Layer boundaries of a BERT graph: which tensor is which reference module's output.

The reference names the boundaries by module (`bert.embeddings`, `bert.encoder.layer.3.attention`,
`bert.encoder.layer.3`, `bert.pooler`, `cls.predictions.transform`) plus the two logit outputs
(`cls.predictions`, `cls.seq_relationship`). In a graph they are found by structure, never by
tensor name, so graphs exported elsewhere map the same way:

- The logits are the graph's MLM and NSP outputs (`prediction_scores` and `seq_relationship_scores`
  in lucid-eval's exports; a foreign graph's as `lucid_eval.export.foreign` identified them). A
  graph without an NSP head (a fill-mask export) has no pooler or NSP logits: those rows are absent.
- The MLM transform is the normalization nearest upstream of the MLM logits; the pooler is the Tanh
  nearest upstream of the NSP logits (breadth-first over producers, so a tanh-approximated GELU
  elsewhere cannot be taken for it).
- Every other normalization is on the encoder path. A normalization is a LayerNormalization node
  (opset 17+; also in fused CPU graphs), an EmbedLayerNormalization or SkipLayerNormalization node
  (fused; fp16 graphs and earlier exports' fused graphs), or a LayerNorm lowered to primitives as opset < 17 exports write it
  (`(x - ReduceMean(x)) / Sqrt(...)`, then the scale's Mul and the shift's Add). In the graph's
  topological order (which ONNX requires of every valid model) the first is the embeddings'
  LayerNorm and then each layer has two: the attention sub-layer's (post-LN) output and the
  feed-forward sub-layer's, which is the layer's output. Their count must be 1 + 2 x layers;
  otherwise no encoder boundary is mapped and each says why (nothing is guessed).

`instrument` makes the mapped tensors extra outputs of a temporary copy of the graph and opens it
with `make_session` at ORT_ENABLE_ALL, as the runtimes run it: the requested tensors are outputs of
normalizations, Tanh or output nodes, which are the ends of ONNX Runtime's fusion patterns, so
exposing them does not block a fusion. The user's file is only read.
"""

from __future__ import annotations

import math
import tempfile
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from lucid_eval.export.sessions import SessionResult, make_session
from lucid_eval.export.transforms import TWO_GB
from lucid_eval.models.scoring import FULL_OUTPUTS

NORMALIZATIONS = frozenset(
    {
        "LayerNormalization",
        "EmbedLayerNormalization",
        "SkipLayerNormalization",
        "SimplifiedLayerNormalization",
        "SkipSimplifiedLayerNormalization",
    }
)
LOWERED = "LayerNorm lowered to primitives"
MLM_OUTPUT, NSP_OUTPUT = FULL_OUTPUTS
NO_NSP_HEAD = "absent: the graph has no NSP head (no output is the NSP logits)"


@dataclass(frozen=True)
class Boundary:
    """One place where the reference and a graph are compared; `tensor` is None when not mapped."""

    name: str  # the reference module whose output this is
    label: str  # short, for plots
    layer: int | None  # encoder layer index; None for the embeddings and the heads
    depth: int  # sub-layers from the input along its path (the logits are deepest)
    branch: str  # "trunk" (feeds both heads), "mlm" or "nsp"
    tensor: str | None = None
    how_found: str = ""
    absent: bool = False  # the graph has no such part (no NSP head), as opposed to not mapped


def reference_boundaries(num_layers: int) -> list[Boundary]:
    """Every boundary of a BERTForPreTraining with `num_layers` layers, in depth order per branch."""
    rows = [Boundary("bert.embeddings", "emb", None, 1, "trunk")]
    for i in range(num_layers):
        rows.append(Boundary(f"bert.encoder.layer.{i}.attention", f"L{i}.attn", i, 2 * i + 2, "trunk"))
        rows.append(Boundary(f"bert.encoder.layer.{i}", f"L{i}", i, 2 * i + 3, "trunk"))
    head = 2 * num_layers + 2
    return [
        *rows,
        Boundary("cls.predictions.transform", "transform", None, head, "mlm"),
        Boundary("cls.predictions", "MLM logits", None, head + 1, "mlm"),
        Boundary("bert.pooler", "pooler", None, head, "nsp"),
        Boundary("cls.seq_relationship", "NSP logits", None, head + 1, "nsp"),
    ]


def _node(node: onnx.NodeProto) -> str:
    return f"{node.op_type} node {node.name or '(unnamed)'!r}"


@dataclass(frozen=True)
class Normalization:
    """One LayerNorm of a graph: its output tensor, the index of its last node, and what it is."""

    tensor: str
    index: int
    op: str  # the node's op type, or LOWERED
    what: str


def normalizations(graph: onnx.GraphProto) -> list[Normalization]:
    """Every normalization of the graph (module doc) in topological order."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    consumers: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers[name].append(i)

    def made_by(tensor: str, op: str) -> onnx.NodeProto | None:
        node = graph.node[producer[tensor]] if tensor in producer else None
        return node if node is not None and node.op_type == op else None

    found = []
    for i, node in enumerate(graph.node):
        if node.op_type in NORMALIZATIONS:
            found.append(Normalization(node.output[0], i, node.op_type, _node(node)))
            continue
        if node.op_type != "Div" or len(node.input) != 2 or not made_by(node.input[1], "Sqrt"):
            continue
        sub = made_by(node.input[0], "Sub")
        mean = sub and made_by(sub.input[1], "ReduceMean")
        if not mean or mean.input[0] != sub.input[0]:
            continue
        end, steps = i, []
        for op in ("Mul", "Add"):  # the scale, then the shift: each the only consumer of the step before
            users = consumers[graph.node[end].output[0]]
            if len(users) == 1 and graph.node[users[0]].op_type == op:
                end = users[0]
                steps.append(op)
        last = graph.node[end]
        what = f"{LOWERED} ((x - ReduceMean(x)) / Sqrt(...){''.join(f', {s}' for s in steps)}) ending at {_node(last)}"
        found.append(Normalization(last.output[0], end, LOWERED, what))
    return sorted(found, key=lambda n: n.index)


def _nearest_upstream(graph: onnx.GraphProto, tensor: str, wanted: Callable[[str], bool]) -> str | None:
    """The tensor satisfying `wanted` fewest producer steps above `tensor` (breadth-first)."""
    producer = {out: node for node in graph.node for out in node.output if out}
    queue, seen = deque([tensor]), {tensor}
    while queue:
        name = queue.popleft()
        if wanted(name):
            return name
        for above in producer[name].input if name in producer else ():
            if above and above not in seen:
                seen.add(above)
                queue.append(above)
    return None


def map_boundaries(
    model: onnx.ModelProto,
    num_layers: int,
    *,
    mlm_output: str = MLM_OUTPUT,
    nsp_output: str | None = NSP_OUTPUT,
    identified: Mapping[str, str] | None = None,
) -> list[Boundary]:
    """`reference_boundaries` with each one's graph tensor and how it was found, or why not (module
    doc). `nsp_output` None: the graph has no NSP head. `identified`: output name -> how the caller
    told it was that head's logits (for a foreign graph), added to how_found."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    norms = {n.tensor: n for n in normalizations(graph)}
    tanh = {node.output[0]: _node(node) for node in graph.node if node.op_type == "Tanh"}
    found: dict[str, tuple[str | None, str]] = {}
    for name, output in (("cls.predictions", mlm_output), ("cls.seq_relationship", nsp_output)):
        if output is None:
            continue
        how = f"graph output {output}" + (
            f", identified {identified[output]}" if identified and output in identified else ""
        )
        found[name] = (output, how) if output in outputs else (None, f"no graph output {output}")
    for name, output, kind, what in (
        ("cls.predictions.transform", mlm_output, {n: x.what for n, x in norms.items()}, "normalization"),
        ("bert.pooler", nsp_output, tanh, "Tanh"),
    ):
        if output is None:
            continue
        tensor = _nearest_upstream(graph, output, kind.__contains__) if output in outputs else None
        found[name] = (
            (tensor, f"{kind[tensor]}, the {what} nearest upstream of graph output {output}")
            if tensor is not None
            else (None, f"no {what} upstream of graph output {output}")
        )
    transform = found["cls.predictions.transform"][0]
    trunk = [n for n in norms.values() if n.tensor != transform]
    expected = 1 + 2 * num_layers
    encoder = [b for b in reference_boundaries(num_layers) if b.branch == "trunk"]
    if len(trunk) != expected:
        ops = ", ".join(sorted({n.op for n in trunk})) or "none"
        why = (
            f"not mapped: {len(trunk)} normalization nodes ({ops}) besides the MLM transform's, expected "
            f"1 + 2 x {num_layers} layers = {expected}, so the layers cannot be told apart"
        )
        found |= {b.name: (None, why) for b in encoder}
    else:
        for k, (boundary, norm) in enumerate(zip(encoder, trunk, strict=True)):
            role = (
                "the embeddings' LayerNorm"
                if boundary.layer is None
                else f"layer {boundary.layer}'s "
                + ("attention sub-layer output" if boundary.name.endswith("attention") else "feed-forward output")
            )
            how = f"{norm.what}, normalization #{k + 1} of {expected} on the encoder in topological order: {role}"
            found[boundary.name] = (norm.tensor, how)
    return [
        replace(b, tensor=found[b.name][0], how_found=found[b.name][1])
        if b.name in found
        else replace(b, how_found=NO_NSP_HEAD, absent=True)
        for b in reference_boundaries(num_layers)
    ]


def _nbytes(tensor: onnx.TensorProto) -> int:
    itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return math.prod(tensor.dims) * itemsize


@dataclass
class InstrumentedGraph:
    """A session over a copy of a graph whose boundary tensors are outputs too."""

    path: Path
    boundaries: list[Boundary]
    session: SessionResult
    inputs: dict[str, np.dtype]  # the graph's inputs and the integer type each takes

    @property
    def mapped(self) -> list[Boundary]:
        return [b for b in self.boundaries if b.tensor is not None]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, object]:
        """Boundary name -> the graph's value there, for the mapped boundaries. The graph is fed
        the inputs it has (a foreign graph may lack token_type_ids), in the types it takes."""
        mapped = self.mapped
        fed = {name: feeds[name].astype(dtype, copy=False) for name, dtype in self.inputs.items()}
        values = self.session.session.run([b.tensor for b in mapped], fed)
        return {b.name: v for b, v in zip(mapped, values, strict=True)}


def instrument(
    path: str | Path,
    num_layers: int,
    device: str = "cpu",
    *,
    threads: int | None = None,
    mlm_output: str = MLM_OUTPUT,
    nsp_output: str | None = NSP_OUTPUT,
    identified: Mapping[str, str] | None = None,
) -> InstrumentedGraph:
    """Map the boundaries of the graph at `path` (heads as in `map_boundaries`) and open a session
    over a temporary copy that outputs them (external data when over 2 GB). The copy is deleted
    once the session holds it."""
    path = Path(path)
    model = onnx.load(str(path))
    boundaries = map_boundaries(model, num_layers, mlm_output=mlm_output, nsp_output=nsp_output, identified=identified)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(
        helper.make_empty_tensor_value_info(b.tensor) for b in boundaries if b.tensor and b.tensor not in present
    )
    weights = {i.name for i in model.graph.initializer}
    inputs = {
        i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
        for i in model.graph.input
        if i.name not in weights
    }
    large = sum(_nbytes(t) for t in model.graph.initializer) > TWO_GB * 0.9
    with tempfile.TemporaryDirectory(prefix="lucid-eval-localize-") as tmp:
        copy = Path(tmp) / path.name
        onnx.save_model(model, str(copy), save_as_external_data=large, location=f"{path.name}.data")
        session = make_session(copy, device, threads=threads)
    return InstrumentedGraph(path, boundaries, session, inputs)
