"""`lucid-eval export`: checkpoint -> verified, self-contained ONNX export directory."""

from __future__ import annotations

import hashlib
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

from lucid_eval import __version__
from lucid_eval.export.bundle import ExportBundle
from lucid_eval.export.graphs import export_onnx
from lucid_eval.export.manifest import (
    CHECKPOINT_DIR,
    DEFAULT_VARIANTS,
    GRAPHS,
    MANIFEST,
    VARIANTS,
    ExportError,
    FileEntry,
    Manifest,
    Variant,
    VerificationSettings,
    graph_paths,
    is_export_dir,
)
from lucid_eval.export.transforms import (
    INT8_OP_TYPES,
    convert_fp16,
    each_graph,
    fuse,
    quantize_int8,
    quantize_int8_static,
)
from lucid_eval.export.verify import (
    CALIBRATION_MAX_LENGTH,
    PAIR_BATCH,
    Calibration,
    ExportVerificationError,
    build_cases,
    calibration_inputs,
    verify_variants,
)
from lucid_eval.files import sha256_file
from lucid_eval.isolated import run_isolated
from lucid_eval.locking import exclusive_lock
from lucid_eval.models.checkpoints import CheckpointError, checkpoint_path
from lucid_eval.models.model import BERTForPreTraining
from lucid_eval.models.tokenizer import BERTTokenizerFast
from lucid_eval.tolerances import TOLERANCES, Tolerances
from lucid_eval.verdict import Verdict, not_verified, worst

MIN_OPSET, MAX_OPSET = 14, 20  # torch.onnx.export (TorchScript) writes up to 20
PRECISION = {"fp32": "fp32", "fused": "fp32", "int8": "int8", "fp16": "fp16", "int8-static": "int8"}


@dataclass
class ExportConfig:
    model: Path  # HF-format checkpoint dir with tokenizer files
    out: Path
    opset: int = 17
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    verify_max_length: int = 512
    verify_pairs: int = 1000  # short pairs beyond the three shape cases, so agreement can be judged
    tolerances: Tolerances = field(default_factory=lambda: dict(TOLERANCES))
    int8_per_channel: bool = True
    int8_reduce_range: bool = False
    force: bool = False  # replace an existing export in `out`
    calibration: Calibration | None = None  # pairs for int8-static's activation ranges (default: built-in pairs)


def load_checkpoint(path: Path) -> tuple[BERTForPreTraining, BERTTokenizerFast]:
    """The model and its tokenizer from one HF-format dir; their vocabularies must agree."""
    model = BERTForPreTraining.from_pretrained(path)
    try:
        tokenizer = BERTTokenizerFast.from_pretrained(path)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} has no tokenizer files (tokenizer.json or vocab.txt): {exc}") from exc
    if tokenizer.vocab_size != model.config.vocab_size:
        raise CheckpointError(
            f"tokenizer vocabulary size {tokenizer.vocab_size} != model vocab_size {model.config.vocab_size} in {path}"
        )
    return model, tokenizer


def _vocab_sha256(tokenizer: BERTTokenizerFast) -> str:
    tokens = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256("\n".join(t for t, _ in tokens).encode()).hexdigest()


def _cuda_available() -> tuple[bool, str]:
    from lucid_eval.export.sessions import cuda_provider_status

    return cuda_provider_status()


def export_model(config: ExportConfig) -> Manifest:
    """Export, optimise, quantise and verify into a fresh directory beside `config.out`, then move
    it into place; returns the manifest. Nothing in `out` changes unless the new export verifies:
    a non-empty `out` that is not a lucid-eval export is refused, an existing export is replaced
    only with `force` (and kept until the new one is complete). Raises ExportVerificationError
    when any variant misses its tolerance, keeping the failed export beside `out` for inspection."""
    unknown = set(config.variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; choose from {VARIANTS}")
    if not MIN_OPSET <= config.opset <= MAX_OPSET:
        raise ValueError(f"opset {config.opset} is not supported; choose {MIN_OPSET}–{MAX_OPSET} (default 17)")
    if config.calibration is not None and len(config.calibration.pairs) < PAIR_BATCH:
        raise ValueError(
            f"static int8 calibration needs at least {PAIR_BATCH} text pairs, got {len(config.calibration.pairs)}"
        )
    if config.calibration is not None and "int8-static" not in config.variants:
        raise ValueError(
            "--calibration sets int8-static's activation ranges; ask for that variant (--variant int8-static)"
        )
    out = Path(config.out)
    check_destination(out, config.force)
    started = time.perf_counter()
    model, tokenizer = load_checkpoint(Path(config.model))
    out.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out.parent / f".{out.name}.lock", f"an export into {out}"):
        check_destination(out, config.force)  # again, now that no other export can change it
        for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed export; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            manifest = _export_into(staging, model, tokenizer, config, started)
        except ExportVerificationError as exc:
            kept = out.with_name(f"{out.name}.failed-{datetime.now():%Y%m%d-%H%M%S}")
            staging.rename(kept)
            raise ExportVerificationError(
                f"{exc}\n{out} is unchanged; the failed export and its numbers are in {kept}"
            ) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _move_into_place(staging, out)
    return manifest


def check_destination(out: Path, force: bool) -> None:
    """Refuse an `out` that is a file, holds files lucid-eval did not write, or holds an export
    that would be replaced without `force`."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not is_export_dir(out):
        names = sorted(p.name for p in out.iterdir())
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise ExportError(f"--out {out} is not empty and is not a lucid-eval export (it holds {shown}); "
                          "choose a new or empty directory")  # fmt: skip
    if not force:
        raise ExportError(f"--out {out} already holds a lucid-eval export; pass --force to replace it "
                          "(the old export stays until the new one is complete and verified)")  # fmt: skip


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename the finished export to `out`; an old export is renamed aside first, restored if the
    second rename fails, and deleted only once the new one is in place."""
    if not out.exists():
        staging.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{staging.name.rsplit('-', 1)[-1]}")
    out.rename(old)
    try:
        staging.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old)


def _export_into(
    out: Path, model: BERTForPreTraining, tokenizer: BERTTokenizerFast, config: ExportConfig, started: float
) -> Manifest:
    """Write every file of the export into the empty directory `out` and verify it."""
    model.save_pretrained(out / CHECKPOINT_DIR)
    tokenizer.save_pretrained(out)
    timings: dict[str, float] = {}
    built, variants, quantize = _build_variants(out, model, tokenizer, config, timings)
    steps = [name for name in built if name not in config.variants]  # fp32/fused built only towards another
    for name in steps:
        variants.pop(name)
    t = time.perf_counter()
    _verify(model, tokenizer, config, {n: g for n, g in built.items() if n in variants}, variants, quantize)
    timings["verify"] = time.perf_counter() - t
    for name in steps:
        shutil.rmtree(out / name)
    timings["total"] = time.perf_counter() - started
    manifest = _manifest(out, model, tokenizer, config, timings, variants)
    manifest.save(out)
    failures = [f"{n}: {r}" for n, v in variants.items() if v.verdict is Verdict.FAIL
                for r in v.verification["reasons"]]  # fmt: skip
    if failures:
        raise ExportVerificationError("export verification failed:\n  " + "\n  ".join(failures))
    ExportBundle.load(out)  # the directory reads back clean
    return manifest


def _build_variants(
    out: Path, model: BERTForPreTraining, tokenizer: BERTTokenizerFast, config: ExportConfig, timings: dict[str, float]
) -> tuple[dict[str, dict[str, Path]], dict[str, Variant], Callable[[tuple[str, ...]], dict[str, Any]]]:
    """Export fp32 and derive the other variants from it, each transform in a child process.
    Returns each variant's graph paths, its manifest entry, and how to (re)quantize int8."""
    cfg = model.config
    built: dict[str, dict[str, Path]] = {}
    variants: dict[str, Variant] = {}

    def step(name: str, timing: str, precision: str, device: str, make: Callable[[dict[str, Path]], Any]) -> None:
        t = time.perf_counter()
        (out / name).mkdir(exist_ok=True)
        built[name] = {g: out / name / f"{g}.onnx" for g in GRAPHS}
        result = make(built[name])
        timings[timing] = time.perf_counter() - t
        variants[name] = Variant(precision, device, graph_paths(name), **(result or {}))

    def quantize(op_types: tuple[str, ...]) -> dict[str, Any]:
        return run_isolated(each_graph, quantize_int8, built["fused"], built["int8"], cfg.vocab_size,
                            config.int8_per_channel, config.int8_reduce_range, op_types)["scoring"]  # fmt: skip

    step(
        "fp32",
        "torch.onnx.export",
        "fp32",
        "cpu",
        lambda dst: export_onnx(model, dst["full"], dst["scoring"], config.opset),
    )
    fp32, shape = built["fp32"], (cfg.num_attention_heads, cfg.hidden_size)
    if "fused" in config.variants or "int8" in config.variants:
        fused = partial(run_isolated, each_graph, fuse, fp32)
        step(
            "fused",
            "fuse",
            "fp32",
            "cpu",
            lambda dst: {"fusion": fused(dst, *shape, cfg.num_hidden_layers, cfg.gelu_form)},
        )
    if "int8" in config.variants:
        step("int8", "quantize_int8", "int8", "cpu", lambda dst: {"quantization": quantize(INT8_OP_TYPES)})
    if "int8-static" in config.variants:
        pairs, source = None, {"data": "built-in sentence pairs the verification does not use"}
        if config.calibration is not None:
            pairs, source = config.calibration.pairs, config.calibration.source
        length = min(CALIBRATION_MAX_LENGTH, cfg.max_position_embeddings)
        batches = calibration_inputs(tokenizer, length, cfg.vocab_size, config.verify_pairs, pairs=pairs)
        static = partial(run_isolated, each_graph, quantize_int8_static, fp32)
        args = (cfg.vocab_size, batches, source, config.int8_per_channel, config.int8_reduce_range)
        step(
            "int8-static",
            "quantize_int8_static",
            "int8",
            "cpu",
            lambda dst: {"quantization": static(dst, *args)["scoring"]},
        )
    if "fp16" in config.variants:
        convert = partial(run_isolated, each_graph, convert_fp16, fp32)
        step(
            "fp16",
            "convert_fp16",
            "fp16",
            "cuda",
            lambda dst: {"conversion": convert(dst, *shape, cfg.gelu_form)["scoring"]},
        )
    return built, variants, quantize


def _verify(
    model: BERTForPreTraining,
    tokenizer: BERTTokenizerFast,
    config: ExportConfig,
    built: dict[str, dict[str, Path]],
    variants: dict[str, Variant],
    quantize: Callable[[tuple[str, ...]], dict[str, Any]],
) -> None:
    """Check every graph and compare each variant with the PyTorch model on its device; the
    records go into `variants`. CUDA variants without a working CUDA provider are NOT VERIFIED."""
    cfg = model.config
    cases = build_cases(
        tokenizer,
        min(config.verify_max_length, cfg.max_position_embeddings),
        cfg.vocab_size,
        n_pairs=config.verify_pairs,
    )
    cuda_ok, cuda_reason = _cuda_available() if "fp16" in built else (False, "")
    tolerances = {name: config.tolerances[PRECISION[name]] for name in built}
    for graphs in built.values():
        for g in GRAPHS:
            onnx.checker.check_model(str(graphs[g]), full_check=True)
    for device in ("cpu", "cuda"):
        todo = {n: g for n, g in built.items() if variants[n].device == device}
        if device == "cuda" and todo and not cuda_ok:
            for name in todo:
                reason = f"not run: no working CUDA provider here ({cuda_reason}); verified when first opened on CUDA"
                variants[name].verification = {**not_verified(reason).as_dict(), "device": device,
                                               "tolerance": tolerances[name].as_dict(), "onnx_checker": "valid"}  # fmt: skip
            continue
        if not todo:
            continue
        records = verify_variants(model, cases, todo, tolerances, device)
        if records.get("int8", {}).get("verdict") == Verdict.FAIL.value:
            # Quantizing fused Attention's QKV projection is the largest int8 speed-up and the largest
            # error; some models need it in fp32. Retry without it; the manifest says why.
            options = quantize(("MatMul",))
            variants["int8"].quantization = {**options, "attention_kept_fp32_because": records["int8"]["reasons"]}
            records |= verify_variants(model, cases, {"int8": built["int8"]}, tolerances, device)
        for name, record in records.items():
            variants[name].verification = record


def _manifest(
    out: Path,
    model: BERTForPreTraining,
    tokenizer: BERTTokenizerFast,
    config: ExportConfig,
    timings: dict[str, float],
    variants: dict[str, Variant],
) -> Manifest:
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST)
    return Manifest(
        lucid_eval_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        source_checkpoint=str(checkpoint_path(config.model).resolve()),
        model_config=model.config,
        vocab_size=tokenizer.vocab_size,
        vocab_sha256=_vocab_sha256(tokenizer),
        opset=config.opset,
        exporter="torch.onnx.export (TorchScript, dynamo=False), eager attention",
        versions={
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "python": platform.python_version(),
        },  # fmt: skip
        host={"machine": platform.machine(), "processor": platform.processor(), "system": platform.system()},
        seconds={k: round(v, 2) for k, v in timings.items()},
        verification=VerificationSettings(pairs=config.verify_pairs, max_length=config.verify_max_length, seed=0),
        tolerances=config.tolerances,
        variants=variants,
        verdict=worst(v.verdict for v in variants.values()),
        files={str(p.relative_to(out)): FileEntry(sha256_file(p), p.stat().st_size) for p in files},
    )
