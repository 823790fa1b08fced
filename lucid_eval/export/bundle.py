"""An export directory: its manifest, integrity checks, and what runtimes need from it.

Layout:  DIR/manifest.json, DIR/checkpoint/ (config + weights for the PyTorch runtimes),
DIR/tokenizer files, DIR/<variant>/{full,scoring}.onnx for variant in fp32, fused, int8, fp16.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from lucid_eval.export.manifest import CHECKPOINT_DIR, MANIFEST, ExportError, Manifest
from lucid_eval.files import sha256_file
from lucid_eval.models.config import BERTConfig
from lucid_eval.models.tokenizer import BERTTokenizerFast
from lucid_eval.tolerances import TOLERANCES, Tolerances
from lucid_eval.verdict import Verdict


@dataclass
class ExportBundle:
    """An opened export: its directory, its checked manifest and that manifest's sha256."""

    path: Path
    manifest: Manifest
    manifest_sha256: str

    @classmethod
    def load(cls, path: str | Path, *, check_files: bool = True, allow_unverified: bool = False) -> ExportBundle:
        """Open an export dir; refuse one whose files changed since export or that failed verification."""
        path = Path(path)
        bundle = cls(path, Manifest.load(path), sha256_file(path / MANIFEST))
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
        files = self.manifest.files
        for name in names or list(files):
            expected = files[name].sha256
            file = self.path / name
            if not file.exists():
                raise ExportError(f"{file} is listed in {MANIFEST} but missing")
            actual = sha256_file(file)
            if actual != expected:
                raise ExportError(
                    f"{file} does not match {MANIFEST}: sha256 {actual[:12]}… != recorded {expected[:12]}… "
                    "(modified, truncated or corrupt since export; re-export it)"
                )

    @property
    def config(self) -> BERTConfig:
        return self.manifest.model_config

    @cached_property
    def tokenizer(self) -> BERTTokenizerFast:
        return BERTTokenizerFast.from_pretrained(self.path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def variants(self) -> list[str]:
        return list(self.manifest.variants)

    @property
    def tolerances(self) -> Tolerances:
        """The tolerances the export was verified with (later runs start from them)."""
        return {**TOLERANCES, **(self.manifest.tolerances or {})}

    def verification(self, variant: str) -> dict[str, Any]:
        return self.manifest.variants[variant].verification

    def verdict(self, variant: str) -> Verdict:
        return self.manifest.variants[variant].verdict

    def graph(self, variant: str, graph: str = "scoring") -> Path:
        if variant not in self.manifest.variants:
            raise ExportError(
                f"{self.path} has no '{variant}' variant (has {self.variants}); re-export with --variant {variant}"
            )
        return self.path / self.manifest.variants[variant].graphs[graph]
