"""Bring your own ONNX: BERT graphs that lucid-eval did not export, scored against a checkpoint.

A foreign graph (Optimum's `fill-mask` export, a plain `torch.onnx.export`, onnxruntime's
transformer optimizer output, ...) is read without running it: its inputs are matched by name
and dtype, its outputs by name, then by shape; anything that cannot be matched is an error that
lists what the graph has. The file is hashed like an export's graphs, and never modified.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import onnx

from lucid_eval.errors import UserError
from lucid_eval.files import sha256_file
from lucid_eval.models.checkpoints import checkpoint_path, read_config
from lucid_eval.models.config import BERTConfig
from lucid_eval.models.tokenizer import BERTTokenizerFast

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
REQUIRED_INPUTS = ("input_ids", "attention_mask")
INT_TYPES = {onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32"}
# Output names by head, as written by lucid-eval, Hugging Face/Optimum and common exports.
MLM_NAMES = ("prediction_scores", "prediction_logits", "logits")
NSP_NAMES = ("seq_relationship_scores", "seq_relationship_logits", "nsp_logits")
CHECKPOINT_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "vocab.txt",
                    "tokenizer_config.json", "special_tokens_map.json")  # fmt: skip
QUANTIZED_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "MatMulIntegerToFloat", "QuantizeLinear",
                 "DequantizeLinear", "QLinearMatMul", "QAttention", "DynamicQuantizeMatMul", "QGemm"}  # fmt: skip


class ForeignGraphError(UserError, ValueError):
    """A graph whose inputs or outputs cannot be matched to BERT's; the message lists what it has."""


@dataclass(frozen=True)
class Port:
    """One graph input or output: name, element type and shape (symbolic dims as names)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def __str__(self) -> str:
        return f"{self.name} {self.dtype}[{', '.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class ForeignGraph:
    """A third-party BERT graph and how lucid-eval feeds it and reads it."""

    path: Path
    label: str  # unique among the run's graphs; the runtime is named ort-DEVICE:LABEL
    sha256: str
    precision: str  # fp32, fp16 or int8, read from the graph's initializers and operators
    vocab_size: int
    inputs: dict[str, str]  # input name -> dtype it takes (int64 or int32)
    mlm_output: str
    nsp_output: str | None  # None: no NSP head (e.g. Optimum's fill-mask)
    ignored_outputs: tuple[str, ...] = ()
    how: dict[str, str] = field(default_factory=dict)  # output name -> how it was identified

    @property
    def warnings(self) -> list[str]:
        """What makes the graph compute something other than the checkpoint on some inputs."""
        if "token_type_ids" in self.inputs:
            return []
        return [
            f"{self.path.name} has no token_type_ids input: it scores the second text of each pair as segment A, "
            "so it matches the checkpoint only where both segment embeddings agree"
        ]

    def record(self) -> dict:
        """What run.json says about the graph."""
        return {**asdict(self), "path": str(self.path.resolve()), "warnings": self.warnings}


def _port(value: onnx.ValueInfoProto) -> Port:
    t = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
    return Port(value.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, dims)


def _precision(model: onnx.ModelProto) -> str:
    if any(node.op_type in QUANTIZED_OPS for node in model.graph.node):
        return "int8"
    floats = [
        i.data_type
        for i in model.graph.initializer
        if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    ]
    return "fp16" if floats and floats.count(onnx.TensorProto.FLOAT16) > len(floats) / 2 else "fp32"


def _has(inputs: list[Port], outputs: list[Port]) -> str:
    return (
        f"the graph has inputs {', '.join(map(str, inputs)) or 'none'} and outputs "
        f"{', '.join(map(str, outputs)) or 'none'}"
    )


def _match_inputs(inputs: list[Port], path: Path, has: str) -> dict[str, str]:
    unknown = [p for p in inputs if p.name not in INPUTS]
    missing = [name for name in REQUIRED_INPUTS if name not in {p.name for p in inputs}]
    wrong = [p for p in inputs if p.name in INPUTS and p.dtype not in INT_TYPES.values()]
    fixed = [p for p in inputs if any(isinstance(d, int) for d in p.shape[:2])]
    problems = (
        [f"input {p} is not one of {', '.join(INPUTS)}" for p in unknown]
        + [f"input {name} is missing" for name in missing]
        + [f"input {p} must be int64 or int32" for p in wrong]
        + [f"input {p} has a fixed batch or sequence size; export it with dynamic axes" for p in fixed]
    )
    if problems:
        raise ForeignGraphError(f"{path}: {'; '.join(problems)}; {has}")
    return {p.name: p.dtype for p in inputs}


def _find(outputs: list[Port], names: tuple[str, ...], fits, what: str, path: Path, has: str) -> tuple[str, str] | None:
    """(output name, how it was found) for one head: by name, else the one output of its shape."""
    named = [p for p in outputs if p.name in names]
    if named:
        port = named[0]
        if not fits(port):
            raise ForeignGraphError(f"{path}: output {port} is named like the {what} but has another shape; {has}")
        return port.name, f"by name ({port.name})"
    shaped = [p for p in outputs if fits(p)]
    if len(shaped) > 1:
        raise ForeignGraphError(
            f"{path}: several outputs could be the {what} ({', '.join(map(str, shaped))}); name one of them "
            f"{' or '.join(names)}; {has}"
        )
    return (shaped[0].name, f"by shape ({shaped[0]})") if shaped else None


def inspect_graph(path: Path, config: BERTConfig, label: str) -> ForeignGraph:
    """Read `path` (weights stay on disk) and match it to BERT's inputs and heads, or say why not."""
    path = Path(path)
    if not path.is_file():
        raise ForeignGraphError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends: not an ONNX model
        raise ForeignGraphError(f"{path} is not a readable ONNX model ({exc})") from exc
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_port(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_port(v) for v in model.graph.output]
    has = _has(inputs, outputs)
    feeds = _match_inputs(inputs, path, has)
    v = config.vocab_size

    def mlm_shape(p: Port) -> bool:
        return len(p.shape) == 3 and p.shape[-1] == v

    def nsp_shape(p: Port) -> bool:
        return len(p.shape) == 2 and p.shape[-1] == 2

    mlm = _find(outputs, MLM_NAMES, mlm_shape, f"MLM logits (B, T, {v})", path, has)
    if mlm is None:
        raise ForeignGraphError(
            f"{path}: no output is the MLM logits: none is named {', '.join(MLM_NAMES)} or has shape "
            f"(batch, sequence, {v}) (the checkpoint's vocab_size); {has}"
        )
    nsp = _find(outputs, NSP_NAMES, nsp_shape, "NSP logits (B, 2)", path, has)
    used = {mlm[0]} if nsp is None else {mlm[0], nsp[0]}
    return ForeignGraph(
        path=path,
        label=label,
        sha256=sha256_file(path),
        precision=_precision(model),
        vocab_size=v,
        inputs=feeds,
        mlm_output=mlm[0],
        nsp_output=None if nsp is None else nsp[0],
        ignored_outputs=tuple(p.name for p in outputs if p.name not in used),
        how={mlm[0]: mlm[1], **({nsp[0]: nsp[1]} if nsp else {})},
    )


def graph_labels(paths: list[Path]) -> list[str]:
    """A short unique label per path: the file stem, with parent folders added to those that collide."""
    paths = [Path(p).resolve() for p in paths]
    if len(set(paths)) != len(paths):
        raise ForeignGraphError("the same ONNX file is given twice")
    depth = [1] * len(paths)

    def label(i: int) -> str:
        return "/".join([*paths[i].parts[-depth[i] : -1], paths[i].stem])

    while True:
        labels = [label(i) for i in range(len(paths))]
        clashing = [i for i, x in enumerate(labels) if labels.count(x) > 1]
        if not clashing:
            return labels
        for i in clashing:
            depth[i] += 1


@dataclass
class CheckpointBundle:
    """What `score` needs when the reference is a checkpoint rather than an export directory:
    the model's config and tokenizer, and a fingerprint of its files (for the journal and run.json)."""

    path: Path

    @classmethod
    def load(cls, model: str | Path) -> CheckpointBundle:
        return cls(checkpoint_path(model))

    @property
    def checkpoint(self) -> Path:
        return self.path

    @cached_property
    def config(self) -> BERTConfig:
        return read_config(self.path)

    @cached_property
    def tokenizer(self) -> BERTTokenizerFast:
        return BERTTokenizerFast.from_pretrained(self.path)

    @cached_property
    def files(self) -> dict[str, str]:
        """sha256 of each file the model and tokenizer are read from."""
        root = self.path if self.path.is_dir() else self.path.parent
        return {name: sha256_file(root / name) for name in CHECKPOINT_FILES if (root / name).is_file()}

    @cached_property
    def manifest_sha256(self) -> str:
        """One hash over the checkpoint's files: a changed weight or vocabulary changes it."""
        return hashlib.sha256(json.dumps(self.files, sort_keys=True).encode()).hexdigest()

    @property
    def variants(self) -> list[str]:
        return []  # no exported graphs: only the torch runtimes and foreign graphs run

    @property
    def tolerances(self) -> None:
        return None  # the defaults of lucid_eval.tolerances
