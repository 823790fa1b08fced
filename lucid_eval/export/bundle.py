"""An export directory: its manifest, integrity checks, and what runtimes need from it.

Layout:  DIR/manifest.json, DIR/checkpoint/ (config + weights for the PyTorch runtimes),
DIR/tokenizer files, DIR/<variant>/{full,scoring}.onnx for variant in fp32, fused, int8, fp16.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from lucid_eval.errors import UserError
from lucid_eval.files import sha256_file
from lucid_eval.models.config import BERTConfig
from lucid_eval.models.tokenizer import BERTTokenizerFast
from lucid_eval.tolerances import Tolerances, tolerances_from_dict
from lucid_eval.verdict import Verdict

MANIFEST = "manifest.json"
CHECKPOINT_DIR = "checkpoint"
VARIANTS = ("fp32", "fused", "int8", "fp16")
GRAPHS = ("full", "scoring")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ExportError(UserError, ValueError):
    """An export directory that is missing, inconsistent, corrupt, or unverified."""


def is_export_dir(path: Path) -> bool:
    """Whether `path` holds a manifest written by `lucid-eval export` (any version)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and "lucid_eval_version" in manifest


def validate_manifest(manifest: Any, path: Path) -> None:
    """The keys and types every reader relies on. Each variant's graphs are exactly VARIANT/full.onnx
    and VARIANT/scoring.onnx and every one is listed with its hash, so no key can be dropped or
    swapped to skip an integrity check or to run one variant's graph under another's name."""
    where = path / MANIFEST
    if not isinstance(manifest, dict):
        raise ExportError(f"{where} must hold a JSON object, not {type(manifest).__name__}; re-export")
    if "verdict" not in manifest:
        raise ExportError(f"{path} was exported by an older lucid-eval without verdicts; re-export it")
    kinds = {"lucid_eval_version": str, "model_config": dict, "variants": dict, "files": dict, "verdict": str}
    problems = [
        f"'{k}' is missing or not a {t.__name__}" for k, t in kinds.items() if not isinstance(manifest.get(k), t)
    ]
    files = manifest.get("files") if isinstance(manifest.get("files"), dict) else {}
    for name, entry in files.items():
        if Path(name).is_absolute() or ".." in Path(name).parts:
            problems.append(f"file {name!r} lies outside the export")
        elif not (
            isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])
        ):
            problems.append(f"file {name!r} has no sha256")
    for name in (f"{CHECKPOINT_DIR}/config.json", f"{CHECKPOINT_DIR}/model.safetensors"):
        if name not in files:
            problems.append(f"{name} is not listed in 'files'")
    variants = manifest.get("variants") if isinstance(manifest.get("variants"), dict) else {}
    if not variants:
        problems.append("no variants")
    for variant, info in variants.items():
        expected = {g: f"{variant}/{g}.onnx" for g in GRAPHS}
        if variant not in VARIANTS:
            problems.append(f"unknown variant {variant!r}")
        elif not isinstance(info, dict) or info.get("graphs") != expected:
            problems.append(f"variant {variant}: graphs must be exactly {expected}")
        elif missing := [g for g in expected.values() if g not in files]:
            problems.append(f"variant {variant}: {', '.join(missing)} not listed in 'files'")
        elif not isinstance(info.get("verification"), dict) or info["verification"].get("verdict") not in {
            v.value for v in Verdict
        }:
            problems.append(f"variant {variant}: no verification verdict")
    if isinstance(manifest.get("model_config"), dict):
        try:
            BERTConfig.from_dict(manifest["model_config"])
        except ValueError as exc:
            problems.append(f"model_config: {exc}")
    if problems:
        raise ExportError(f"{where} is not a valid lucid-eval manifest: {'; '.join(problems)}; re-export it")


@dataclass
class ExportBundle:
    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str

    @classmethod
    def load(cls, path: str | Path, *, check_files: bool = True, allow_unverified: bool = False) -> ExportBundle:
        """Open an export dir; refuse one whose files changed since export or that failed verification."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.exists():
            raise ExportError(f"{path} is not a lucid-eval export: {MANIFEST} is missing (run `lucid-eval export`)")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ExportError(f"{manifest_path} is not valid JSON: {exc}") from exc
        validate_manifest(manifest, path)
        bundle = cls(path, manifest, sha256_file(manifest_path))
        if check_files:
            bundle.check_files()
        failed = [v for v in bundle.variants if bundle.verdict(v) is Verdict.FAIL]
        if failed and not allow_unverified:
            raise ExportError(
                f"{path} failed verification at export time ({', '.join(failed)}: FAIL); "
                f"see {MANIFEST} 'variants.*.verification'"
            )
        if bundle.tokenizer.vocab_size != bundle.config.vocab_size:
            raise ExportError(
                f"tokenizer vocabulary size {bundle.tokenizer.vocab_size} != model vocab_size "
                f"{bundle.config.vocab_size} in {path}: the tokenizer belongs to another model"
            )
        return bundle

    def check_files(self, names: list[str] | None = None) -> None:
        """Every listed file exists with the sha256 recorded at export."""
        files: dict[str, dict[str, Any]] = self.manifest["files"]
        for name in names or list(files):
            expected = files[name]["sha256"]
            file = self.path / name
            if not file.exists():
                raise ExportError(f"{file} is listed in {MANIFEST} but missing")
            actual = sha256_file(file)
            if actual != expected:
                raise ExportError(
                    f"{file} does not match {MANIFEST}: sha256 {actual[:12]}… != recorded {expected[:12]}… "
                    "(modified, truncated or corrupt since export; re-export it)"
                )

    @cached_property
    def config(self) -> BERTConfig:
        return BERTConfig.from_dict(self.manifest["model_config"])

    @cached_property
    def tokenizer(self) -> BERTTokenizerFast:
        return BERTTokenizerFast.from_pretrained(self.path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def variants(self) -> list[str]:
        return list(self.manifest.get("variants", {}))

    @property
    def tolerances(self) -> Tolerances:
        """The tolerances the export was verified with (later runs start from them)."""
        return tolerances_from_dict(self.manifest.get("tolerances"))

    def verification(self, variant: str) -> dict[str, Any]:
        return self.manifest["variants"][variant]["verification"]

    def verdict(self, variant: str) -> Verdict:
        return Verdict(self.verification(variant)["verdict"])

    def graph(self, variant: str, graph: str = "scoring") -> Path:
        if variant not in self.manifest.get("variants", {}):
            raise ExportError(
                f"{self.path} has no '{variant}' variant (has {self.variants}); re-export with --variant {variant}"
            )
        return self.path / self.manifest["variants"][variant]["graphs"][graph]
