"""Where the models a run scores come from: an export directory or a checkpoint, the foreign ONNX
graphs given with it, and the verification, before scoring, of graphs not verified at export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lucid_eval.harness.journal import RunError
from lucid_eval.runtimes.base import Runtime, RuntimeUnavailable
from lucid_eval.tolerances import Tolerances, tolerance_for
from lucid_eval.verdict import Verdict

if TYPE_CHECKING:
    from lucid_eval.harness.run import ScoreConfig


def default_factory(config: ScoreConfig, bundle: Any, foreign: dict[str, Any]) -> Callable[[str], Runtime]:
    from lucid_eval.runtimes import create_runtime

    return lambda name: create_runtime(
        name, bundle, threads=config.threads, allow_fallback=config.allow_fallback, foreign=foreign
    )


def load_bundle(config: ScoreConfig) -> Any:
    """The export directory's bundle, or a checkpoint's (config, tokenizer, file hashes)."""
    if config.export_dir is not None:
        from lucid_eval.export.bundle import ExportBundle

        return ExportBundle.load(config.export_dir)
    from lucid_eval.export.foreign import CheckpointBundle

    return CheckpointBundle.load(config.model)


def foreign_graphs(config: ScoreConfig, bundle: Any) -> dict[str, Any]:
    """Runtime name -> ForeignGraph for each --onnx graph, matched to the model's config."""
    if not config.onnx:
        return {}
    from lucid_eval.export.foreign import graph_labels, inspect_graph
    from lucid_eval.runtimes import foreign_name

    labels = graph_labels(list(config.onnx))
    graphs = {
        foreign_name(config.onnx_device, label): inspect_graph(Path(path), bundle.config, label)
        for path, label in zip(config.onnx, labels, strict=True)
    }
    clash = set(graphs) & set(config.runtimes)
    if clash:
        raise ValueError(f"runtime names given twice: {sorted(clash)}")
    return graphs


def verify_unverified(
    config: ScoreConfig, bundle: Any, tolerances: Tolerances, echo: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Verify, before any scoring, each requested graph that was NOT VERIFIED at export (e.g. fp16
    exported where no CUDA device was): on the runtime's device, with the export's own cases.
    A FAIL stops the run with the numbers; every result goes into run.json."""
    from lucid_eval.export.sessions import ProviderError
    from lucid_eval.export.verify import verify_bundle_variant
    from lucid_eval.runtimes import spec

    records: dict[str, dict[str, Any]] = {}
    for name in config.runtimes:
        s = spec(name)
        if (
            s.backend != "ort"
            or s.variant not in bundle.variants
            or bundle.verdict(s.variant) is not Verdict.NOT_VERIFIED
        ):
            continue
        echo(f"verifying the {s.variant} graphs on {s.device} before scoring (not verified at export) ...")
        try:
            record = verify_bundle_variant(
                bundle, s.variant, s.device, tolerance_for(s.precision, tolerances), config.allow_fallback
            )
        except ProviderError as exc:
            raise RuntimeUnavailable(f"{name}: {exc}") from exc
        records[f"{s.variant}@{s.device}"] = record
        echo(f"{s.variant} on {s.device}: {record['verdict']}" + "".join(f"\n  {r}" for r in record["reasons"]))
        if record["verdict"] == Verdict.FAIL.value:
            raise RunError(
                f"the {s.variant} graphs failed verification on {s.device} before scoring:\n  "
                + "\n  ".join(record["reasons"])
            )
    return records
