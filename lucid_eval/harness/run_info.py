"""run.json: a scoring run's provenance, settings and row counts, as one typed object.

`RunInfo.save` is the only writer of run.json and `RunInfo.load` the only reader. The layout on disk
is the JSON of the fields below, in this order and nesting (`checkpoint` is left out for a run of
an export). Runs written before a field existed still load: every field an older run.json may lack
has a default, and keys this version does not know are ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lucid_eval.errors import UserError
from lucid_eval.harness.tables import RUN_INFO_FILE, atomic_write_text

MARKER = "lucid_eval"  # the key of `versions` every run.json we write holds: what tells ours from others


class RunInfoError(UserError, ValueError):
    """A run.json that is not a lucid-eval run's (not JSON, not ours, or missing what every run records)."""


@dataclass(kw_only=True)
class CorpusInfo:
    """The scored corpus: its path and sha256, the format it was read as, the column mapping used."""

    path: str
    sha256: str | None = None
    format: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # our column name -> the corpus's
    warnings: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Counts:
    """Corpus rows: read = scored + rejected; truncated counts scored pairs cut to max_length."""

    read: int
    scored: int
    truncated: int = 0
    rejected: int


@dataclass(kw_only=True)
class RunInfo:
    """Everything run.json records about a finished run; the fields' order is the file's key order."""

    command: str = ""
    seed: int
    max_length: int
    mlm_probability: float = 0.15
    token_budget: int | None = None  # None: not recorded (older runs)
    max_batch: int | None = None
    chunk_size: int | None = None
    corpus: CorpusInfo
    export: dict[str, Any] | None = None  # {"dir", "manifest_sha256"}; None for a run of a checkpoint
    checkpoint: dict[str, Any] | None = None  # {"path", "sha256", "files"}; None (and not written) for an export
    reference: str
    runtimes: list[str]
    runtime_info: dict[str, dict[str, Any]] = field(default_factory=dict)  # runtime -> its RuntimeInfo
    counts: Counts
    versions: dict[str, str]  # holds MARKER
    host: dict[str, Any] = field(default_factory=dict)
    started: str
    finished: str
    tolerances: dict[str, dict[str, Any]] = field(default_factory=dict)  # precision -> tolerance fields
    onnx_graphs: dict[str, dict[str, Any]] = field(default_factory=dict)  # runtime -> the foreign graph's record
    verdicts: dict[str, str] = field(default_factory=dict)  # runtime -> verdict
    late_verification: dict[str, dict[str, Any]] = field(default_factory=dict)  # variant -> verification record
    engine: dict[str, Any] | None = None  # {"name", ..., "scoring_wall_s"}; None: not recorded (older runs)

    # Written only when set, as run.json has always had it.
    _OMITTED_WHEN_NONE = ("checkpoint",)

    @staticmethod
    def file(run_dir: str | os.PathLike[str]) -> Path:
        """Where a run directory's run.json is."""
        return Path(run_dir) / RUN_INFO_FILE

    def to_dict(self) -> dict[str, Any]:
        """run.json's content: the fields in order, nested dataclasses as objects."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["corpus"], data["counts"] = asdict(self.corpus), asdict(self.counts)
        return {k: v for k, v in data.items() if not (v is None and k in self._OMITTED_WHEN_NONE)}

    def save(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write RUN_DIR/run.json atomically (readers see the old file or the whole new one)."""
        path = self.file(run_dir)
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=str)
        atomic_write_text(path, text + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Any, source: str = "run.json") -> RunInfo:
        """The run.json content `data` (as json.loads gives it), checked; `source` names it in errors."""

        def refuse(why: str) -> RunInfoError:
            return RunInfoError(f"{source} is not a lucid-eval run.json: {why}")

        if not isinstance(data, dict):
            kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
                type(data), "a number"
            )
            raise refuse(f"it holds {kind}, not a JSON object")
        versions = data.get("versions")
        if not isinstance(versions, dict) or MARKER not in versions:
            raise refuse(f'its "versions" do not name {MARKER} (it was not written by a lucid-eval run)')
        values = _known(cls, data, refuse, "")
        for name, kind in (("corpus", CorpusInfo), ("counts", Counts)):
            if not isinstance(values[name], dict):
                raise refuse(f'"{name}" is not an object')
            values[name] = kind(**_known(kind, values[name], refuse, f"{name}."))
        return cls(**values)

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> RunInfo:
        """Read RUN_DIR/run.json. FileNotFoundError when there is none; RunInfoError when it is not
        valid JSON or not a lucid-eval run's."""
        path = cls.file(run_dir)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{Path(run_dir)} is not a lucid-eval run directory: {RUN_INFO_FILE} is missing"
            ) from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise RunInfoError(f"{path} is not a lucid-eval run.json: it is not valid JSON ({exc})") from None
        return cls.from_dict(data, str(path))


def _known(kind: type, data: dict[str, Any], refuse: Any, prefix: str) -> dict[str, Any]:
    """The keys of `data` that are fields of dataclass `kind` (others are ignored); every field
    without a default must be there."""
    names = {f.name for f in fields(kind)}
    required = [f.name for f in fields(kind) if f.default is MISSING and f.default_factory is MISSING]
    if missing := [name for name in required if name not in data]:
        raise refuse("it lacks " + ", ".join(f'"{prefix}{name}"' for name in missing))
    return {k: v for k, v in data.items() if k in names}
