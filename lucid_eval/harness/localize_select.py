"""What a localisation runs on: which graphs (an export's variants, foreign graphs), which model as
the reference, which corpus pairs, and where it writes.

With `--examples-from RUN_DIR` whatever is not given comes from that score run: its flipped pairs,
its corpus, its export or checkpoint, the runtimes that flipped (its foreign graphs too), and the
output folder RUN_DIR/localize, which the run's report.html then shows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from lucid_eval.errors import UserError
from lucid_eval.export.boundaries import MLM_OUTPUT, NSP_OUTPUT
from lucid_eval.export.bundle import ExportBundle
from lucid_eval.export.foreign import CheckpointBundle, graph_labels, inspect_graph
from lucid_eval.harness.corpus import CorpusReader, PairRecord
from lucid_eval.harness.run_info import RunInfo, RunInfoError
from lucid_eval.harness.tables import LOCALIZE_DIR
from lucid_eval.runtimes import SPECS, foreign_name, spec

if TYPE_CHECKING:
    from lucid_eval.harness.localize import LocalizeConfig

DEFAULT_RUNTIMES = ("ort-cpu-plain", "ort-cpu", "ort-cpu-int8")
OUT_FOLDER = LOCALIZE_DIR  # where --examples-from RUN_DIR writes by default


class LocalizeError(UserError, ValueError):
    """The localisation cannot run as asked (ids, runtimes, output directory); says what to do."""


@dataclass(frozen=True)
class FlippedRun:
    """A score run's flipped predictions: their pair ids and runtimes (first-seen order), its run.json."""

    ids: tuple[str, ...]
    runtimes: tuple[str, ...]
    run: RunInfo | None  # None when the run directory has no run.json
    run_dir: Path


def flipped_examples(path: str | Path) -> FlippedRun:
    """The flips of a run (`path` is its flips.csv or its run directory)."""
    path = Path(path)
    flips = path / "flips.csv" if path.is_dir() else path
    try:
        frame = pd.read_csv(flips, dtype=str, keep_default_na=False)
        ids = frame["id"]
    except (OSError, ValueError, KeyError) as exc:
        raise LocalizeError(f"cannot read flipped examples' ids from {flips}: {exc}") from exc
    if ids.empty:
        raise LocalizeError(f"{flips} lists no flipped predictions: nothing to localise; use --n-pairs instead")
    try:
        run = RunInfo.load(flips.parent)
    except FileNotFoundError:
        run = None
    except (OSError, RunInfoError) as exc:  # its seed and corpus would be guessed: refuse rather
        raise LocalizeError(f"cannot take that run's settings: {exc}") from exc
    runtimes = tuple(dict.fromkeys(frame["runtime"])) if "runtime" in frame else ()
    return FlippedRun(tuple(dict.fromkeys(ids)), runtimes, run, flips.parent)


def select_pairs(reader: CorpusReader, n_pairs: int, ids: tuple[str, ...]) -> list[PairRecord]:
    """The corpus's first `n_pairs` pairs, or every pair whose id is in `ids` (all must be there)."""
    if not ids:
        return list(itertools.islice(reader, n_pairs))
    wanted = set(ids)
    chosen = [r for r in reader if r.id in wanted]
    if missing := sorted(wanted - {r.id for r in chosen}):
        raise LocalizeError(
            f"{len(missing)} of {len(wanted)} ids are not in {reader.path}: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
            + "; give the corpus the run was scored on"
        )
    return chosen


@dataclass
class Target:
    """One graph to localise: an export variant's full graph under its runtime's name, or a foreign graph."""

    name: str
    variant: str  # the export's variant, or "foreign"
    path: Path
    precision: str
    device: str
    verdict: str | None  # the export's verdict for the variant; None for a foreign graph
    mlm_output: str = MLM_OUTPUT
    nsp_output: str | None = NSP_OUTPUT
    identified: dict[str, str] = field(default_factory=dict)  # output -> how it was told to be a head's logits
    warnings: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None  # a foreign graph's path, sha256 and matching, for localize.json


@dataclass
class Sources:
    bundle: ExportBundle | CheckpointBundle
    targets: list[Target]
    corpus: Path
    out: Path

    def record(self) -> dict[str, Any]:
        """localize.json's account of the reference and of each foreign graph (path, sha256, matching)."""
        bundle = self.bundle
        model: dict[str, Any] = (
            {"export": {"dir": str(bundle.path), "manifest_sha256": bundle.manifest_sha256}}
            if isinstance(bundle, ExportBundle)
            else {"export": None, "checkpoint": {"path": str(Path(bundle.checkpoint).resolve()),
                                                 "sha256": bundle.manifest_sha256}}
        )  # fmt: skip
        return {**model, "onnx_graphs": {t.name: t.record for t in self.targets if t.record}}


def _export_targets(names: list[str], bundle: ExportBundle) -> list[Target]:
    specs = [spec(n) for n in names]
    if torch_names := [s.name for s in specs if s.backend != "ort"]:
        raise LocalizeError(
            f"{', '.join(torch_names)}: localize compares ONNX Runtime graphs with the torch-cpu reference, "
            "which always runs; name ort-* runtimes"
        )
    return [
        Target(
            s.name, s.variant, bundle.graph(s.variant, "full"), s.precision, s.device, bundle.verdict(s.variant).value
        )
        for s in specs
    ]


def _foreign_targets(paths: list[Path], labels: list[str], device: str, bundle: Any) -> list[Target]:
    targets = []
    for path, label in zip(paths, labels, strict=True):
        g = inspect_graph(path, bundle.config, label)
        targets.append(
            Target(
                name=foreign_name(device, label),
                variant="foreign",
                path=g.path,
                precision=g.precision,
                device=device,
                verdict=None,
                mlm_output=g.mlm_output,
                nsp_output=g.nsp_output,
                identified=dict(g.how),
                warnings=g.warnings,
                record=g.record(),
            )
        )
    return targets


def _warn_if_changed(echo: Callable[[str], None], what: str, recorded: str | None, now: str) -> None:
    if recorded not in (None, now):
        echo(f"warning: {what} is not what that run scored (sha256 differs)")


def _reference(config: LocalizeConfig, run: RunInfo | None, from_run: bool, echo: Callable[[str], None]) -> Any:
    """The export's bundle or the checkpoint's: as given, else the one the run scored."""
    export_dir, model = config.export_dir, config.model
    recorded_export = (run.export if run else None) or {}
    recorded_checkpoint = (run.checkpoint if run else None) or {}
    if from_run:
        export_dir = recorded_export.get("dir")
        model = None if export_dir else recorded_checkpoint.get("path")
    if export_dir is None and model is None:
        where = " (the run's run.json names neither)" if from_run else ""
        raise LocalizeError(f"give --export DIR, or --model CHECKPOINT with --onnx graphs{where}")
    if model is not None and config.runtimes:
        raise LocalizeError(
            f"{', '.join(config.runtimes)}: with --model only --onnx graphs are localised; the ort-* runtimes run "
            "an export's graphs (give --export)"
        )
    if export_dir is not None:
        bundle: Any = ExportBundle.load(export_dir, allow_unverified=True)  # a failed export is worth localising
        recorded = recorded_export.get("manifest_sha256")
        _warn_if_changed(echo, f"export {export_dir}", recorded, bundle.manifest_sha256)
        return bundle
    bundle = CheckpointBundle.load(model)
    _warn_if_changed(echo, f"checkpoint {model}", recorded_checkpoint.get("sha256"), bundle.manifest_sha256)
    return bundle


def _targets(
    config: LocalizeConfig, bundle: Any, flipped: FlippedRun | None, from_run: bool, echo: Callable[[str], None]
) -> list[Target]:
    """The export's runtimes (named; else those that flipped; else its CPU ones) and the foreign
    graphs (given; else, when the run also gives the model, its graphs that flipped)."""
    targets = []
    if isinstance(bundle, ExportBundle):
        names = list(config.runtimes)
        if not names:
            candidates = flipped.runtimes if flipped else DEFAULT_RUNTIMES
            names = [n for n in candidates if n in SPECS and SPECS[n].variant in bundle.variants]
        targets = _export_targets(names, bundle)
    paths, labels = [Path(p) for p in config.onnx], graph_labels(list(config.onnx)) if config.onnx else []
    device = config.onnx_device or "cpu"
    recorded = flipped.run.onnx_graphs if flipped and flipped.run and from_run and not paths else {}
    graphs = {name: g for name, g in recorded.items() if name in flipped.runtimes}
    if graphs:
        paths, labels = [Path(g["path"]) for g in graphs.values()], [n.split(":", 1)[1] for n in graphs]
        device = config.onnx_device or next(n.split(":", 1)[0].removeprefix("ort-") for n in graphs)
    foreign = _foreign_targets(paths, labels, device, bundle)
    for t, g in zip(foreign, graphs.values(), strict=False):  # the run's graphs, when they are the ones used
        _warn_if_changed(echo, str(t.path), g.get("sha256"), t.record["sha256"])
    if not targets + foreign:
        raise LocalizeError(
            (f"no ONNX graph flipped in {flipped.run_dir} (flips: {', '.join(flipped.runtimes)})" if flipped
             else f"{bundle.path} has none of the CPU variants of {', '.join(DEFAULT_RUNTIMES)}")
            + "; name --runtime or --onnx graphs"
        )  # fmt: skip
    return targets + foreign


def resolve_sources(config: LocalizeConfig, flipped: FlippedRun | None, echo: Callable[[str], None]) -> Sources:
    """The reference model, the graphs, the corpus and the output folder: as given, else the run's."""
    if config.export_dir is not None and config.model is not None:
        raise LocalizeError("give --export DIR or --model CHECKPOINT, not both")
    if config.out_dir is None and flipped is None:
        raise LocalizeError("give --out DIR (or --examples-from RUN_DIR, which writes RUN_DIR/localize)")
    run = flipped.run if flipped else None
    from_run = flipped is not None and config.export_dir is None and config.model is None
    bundle = _reference(config, run, from_run, echo)
    targets = _targets(config, bundle, flipped, from_run, echo)
    corpus = config.corpus
    if corpus is None:
        recorded = run.corpus.path if run else None
        if recorded is None or not Path(recorded).is_file():
            where = f"the run's corpus {recorded} is not there" if recorded else "no run.json names one"
            raise LocalizeError(f"give --corpus FILE ({where})")
        corpus = recorded
    out = Path(config.out_dir) if config.out_dir is not None else flipped.run_dir / OUT_FOLDER
    return Sources(bundle, targets, Path(corpus), out)
