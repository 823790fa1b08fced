"""`manifest.json`, the record of an export, as one typed value with one writer and one reader.

`Manifest.save` writes what `lucid-eval export` measured and verified; `Manifest.load` refuses a
manifest off its schema before anything trusts it: integrity checks cannot be switched off by
dropping a key, and one variant's graph cannot run under another's name. What the schema requires
(version, model config, variants with their graphs and verdicts, hashed files, verdict) is always
set; the other fields are None only when a hand-made manifest leaves them out, and are then not
written back.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lucid_eval.errors import UserError
from lucid_eval.models.config import BERTConfig
from lucid_eval.tolerances import Tolerance, Tolerances, tolerances_as_dict
from lucid_eval.verdict import Verdict

MANIFEST = "manifest.json"
CHECKPOINT_DIR = "checkpoint"
VARIANTS = ("fp32", "fused", "int8", "fp16", "int8-static")
DEFAULT_VARIANTS = VARIANTS[:4]  # int8-static is opt-in: calibration costs export time and it is not faster here
GRAPHS = ("full", "scoring")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERDICTS = {v.value for v in Verdict}
# Type of each field the schema does not require, checked when present so the fields hold what they say.
_OPTIONAL = {"created": str, "source_checkpoint": str, "vocab_size": int, "vocab_sha256": str, "opset": int,
             "exporter": str, "versions": dict, "host": dict, "seconds": dict, "verification": dict,
             "tolerances": dict}  # fmt: skip
_VARIANT_OPTIONAL = {"precision": str, "device": str, "fusion": dict, "quantization": dict, "conversion": dict}


class ExportError(UserError, ValueError):
    """An export directory that is missing, inconsistent, corrupt, or unverified."""


def graph_paths(variant: str) -> dict[str, str]:
    """Where a variant's graphs lie in the export: exactly VARIANT/full.onnx and VARIANT/scoring.onnx."""
    return {g: f"{variant}/{g}.onnx" for g in GRAPHS}


def is_export_dir(path: Path) -> bool:
    """Whether `path` holds a manifest written by `lucid-eval export` (any version)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "lucid_eval_version" in manifest


@dataclass(frozen=True)
class FileEntry:
    """One exported file as it was written; "bytes" in the JSON."""

    sha256: str
    size: int | None = None

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> FileEntry:
        return cls(entry["sha256"], entry.get("bytes"))

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256} | ({} if self.size is None else {"bytes": self.size})


@dataclass(frozen=True)
class VerificationSettings:
    """How the export's verification cases were built, so a later check rebuilds the same ones.
    The defaults are what a manifest without them means."""

    pairs: int = 0
    max_length: int = 512
    seed: int = 0


@dataclass
class Variant:
    """One exported variant: where it runs, its graphs, and its verification record (as
    `export.verify` writes it: verdict, reasons, per-graph evidence, per-case numbers).
    The pipeline fills `verification` in once the graphs are verified."""

    precision: str | None
    device: str | None
    graphs: dict[str, str]
    verification: dict[str, Any] = field(default_factory=dict)
    fusion: dict[str, Any] | None = None  # fused: the operators onnxruntime fused, per graph
    quantization: dict[str, Any] | None = None  # int8: the quantizer's options
    conversion: dict[str, Any] | None = None  # fp16: the converter's options

    @property
    def verdict(self) -> Verdict:
        return Verdict(self.verification["verdict"])

    @classmethod
    def from_json(cls, info: dict[str, Any]) -> Variant:
        return cls(
            info.get("precision"),
            info.get("device"),
            info["graphs"],
            info["verification"],
            info.get("fusion"),
            info.get("quantization"),
            info.get("conversion"),
        )

    def to_json(self) -> dict[str, Any]:
        data = {
            "precision": self.precision,
            "device": self.device,
            "fusion": self.fusion,
            "quantization": self.quantization,
            "conversion": self.conversion,
            "graphs": self.graphs,
            "verification": self.verification,
        }
        return {key: value for key, value in data.items() if value is not None}


@dataclass(frozen=True)
class Manifest:
    """What an export holds and how it was made and verified; the JSON keys are the field names
    (FileEntry.size aside), in the order written."""

    lucid_eval_version: str
    model_config: BERTConfig
    variants: dict[str, Variant]
    verdict: Verdict
    files: dict[str, FileEntry]
    created: str | None = None
    source_checkpoint: str | None = None
    vocab_size: int | None = None
    vocab_sha256: str | None = None
    opset: int | None = None
    exporter: str | None = None
    versions: dict[str, str] | None = None
    host: dict[str, str] | None = None
    seconds: dict[str, float] | None = None  # per export step, and "total"
    verification: VerificationSettings | None = None
    tolerances: Tolerances | None = None  # the tolerances the variants were verified with

    def to_json(self) -> dict[str, Any]:
        """The manifest as a JSON object; fields that are None are left out."""
        data = {
            "lucid_eval_version": self.lucid_eval_version,
            "created": self.created,
            "source_checkpoint": self.source_checkpoint,
            # gelu_form spells out what hidden_act means for this checkpoint_origin (tanh or erf)
            "model_config": {**asdict(self.model_config), "gelu_form": self.model_config.gelu_form},
            "vocab_size": self.vocab_size,
            "vocab_sha256": self.vocab_sha256,
            "opset": self.opset,
            "exporter": self.exporter,
            "versions": self.versions,
            "host": self.host,
            "seconds": self.seconds,
            "verification": None if self.verification is None else asdict(self.verification),
            "tolerances": None if self.tolerances is None else tolerances_as_dict(self.tolerances),
            "variants": {name: variant.to_json() for name, variant in self.variants.items()},
            "verdict": self.verdict.value,
            "files": {name: entry.to_json() for name, entry in self.files.items()},
        }
        return {key: value for key, value in data.items() if value is not None}

    def save(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        """Read and check `directory`'s manifest (see `from_json`)."""
        path = directory / MANIFEST
        if not path.exists():
            raise ExportError(
                f"{directory} is not a lucid-eval export: {MANIFEST} is missing (run `lucid-eval export`)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ExportError(f"{path} is not valid JSON: {exc}") from exc
        return cls.from_json(data, directory)

    @classmethod
    def from_json(cls, data: Any, directory: Path) -> Manifest:
        """The manifest of the export in `directory` from its JSON object; ExportError naming every
        way it is off its schema (re-export it)."""
        where = directory / MANIFEST
        if not isinstance(data, dict):
            raise ExportError(f"{where} must hold a JSON object, not {type(data).__name__}; re-export")
        if "verdict" not in data:
            raise ExportError(f"{directory} was exported by an older lucid-eval without verdicts; re-export it")
        problems = _problems(data)
        config: BERTConfig | None = None
        tolerances: Tolerances | None = None
        settings: VerificationSettings | None = None
        if isinstance(data.get("model_config"), dict):
            try:
                config = BERTConfig.from_dict(data["model_config"])
            except ValueError as exc:
                problems.append(f"model_config: {exc}")
            else:
                form = data["model_config"].get("gelu_form", config.gelu_form)
                if form != config.gelu_form:
                    problems.append(
                        f"model_config: gelu_form {form!r} contradicts hidden_act {config.hidden_act!r} "
                        f"(the {config.gelu_form} form)"
                    )
        if isinstance(data.get("tolerances"), dict):
            try:
                tolerances = {precision: Tolerance(**values) for precision, values in data["tolerances"].items()}
            except (TypeError, ValueError) as exc:
                problems.append(f"tolerances: {exc}")
        if isinstance(data.get("verification"), dict):
            try:
                settings = VerificationSettings(
                    **{k: int(v) for k, v in data["verification"].items() if k in ("pairs", "max_length", "seed")}
                )
            except (TypeError, ValueError) as exc:
                problems.append(f"verification: {exc}")
        if problems:
            raise ExportError(f"{where} is not a valid lucid-eval manifest: {'; '.join(problems)}; re-export it")
        assert config is not None  # _problems reported a model_config that is not a dict
        return cls(
            lucid_eval_version=data["lucid_eval_version"],
            model_config=config,
            variants={name: Variant.from_json(info) for name, info in data["variants"].items()},
            verdict=Verdict(data["verdict"]),
            files={name: FileEntry.from_json(entry) for name, entry in data["files"].items()},
            created=data.get("created"),
            source_checkpoint=data.get("source_checkpoint"),
            vocab_size=data.get("vocab_size"),
            vocab_sha256=data.get("vocab_sha256"),
            opset=data.get("opset"),
            exporter=data.get("exporter"),
            versions=data.get("versions"),
            host=data.get("host"),
            seconds=data.get("seconds"),
            verification=settings,
            tolerances=tolerances,
        )


def _problems(data: dict[str, Any]) -> list[str]:
    """The keys and types every reader relies on. Each variant's graphs are exactly `graph_paths`
    and every one is listed with its hash, so no key can be dropped or swapped to skip an
    integrity check or to run one variant's graph under another's name."""
    kinds = {"lucid_eval_version": str, "model_config": dict, "variants": dict, "files": dict, "verdict": str}
    problems = [f"'{k}' is missing or not a {t.__name__}" for k, t in kinds.items() if not isinstance(data.get(k), t)]
    if isinstance(data.get("verdict"), str) and data["verdict"] not in _VERDICTS:
        problems.append(f"'verdict' {data['verdict']!r} is not one of {', '.join(sorted(_VERDICTS))}")
    problems += [
        f"'{k}' is not of type {t.__name__}" for k, t in _OPTIONAL.items() if k in data and not isinstance(data[k], t)
    ]
    files = data.get("files") if isinstance(data.get("files"), dict) else {}
    for name, entry in files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append(f"file {name!r} lies outside the export")
        elif not (
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])
        ):
            problems.append(f"file {name!r} has no sha256")
        elif not isinstance(entry.get("bytes", 0), int):
            problems.append(f"file {name!r}: 'bytes' is not of type int")
    for name in (f"{CHECKPOINT_DIR}/config.json", f"{CHECKPOINT_DIR}/model.safetensors"):
        if name not in files:
            problems.append(f"{name} is not listed in 'files'")
    variants = data.get("variants") if isinstance(data.get("variants"), dict) else {}
    if not variants:
        problems.append("no variants")
    for variant, info in variants.items():
        expected = graph_paths(variant)
        if variant not in VARIANTS:
            problems.append(f"unknown variant {variant!r}")
        elif not isinstance(info, dict) or info.get("graphs") != expected:
            problems.append(f"variant {variant}: graphs must be exactly {expected}")
        elif missing := [g for g in expected.values() if g not in files]:
            problems.append(f"variant {variant}: {', '.join(missing)} not listed in 'files'")
        elif not isinstance(info.get("verification"), dict) or info["verification"].get("verdict") not in _VERDICTS:
            problems.append(f"variant {variant}: no verification verdict")
        else:
            problems += [f"variant {variant}: '{k}' is not of type {t.__name__}"
                         for k, t in _VARIANT_OPTIONAL.items() if k in info and not isinstance(info[k], t)]  # fmt: skip
    return problems
