"""`lucid-eval demo`: the main job end to end with nothing to download.

Held-out text pairs from the built-in corpus, the shipped demo checkpoint exported and verified
into a cache folder, every runtime this machine can run, and the full report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lucid_eval.harness import RunResult, ScoreConfig, score

PREFERRED_ORDER = ("torch-cpu", "ort-cpu", "ort-cpu-int8", "torch-cuda", "ort-cuda", "ort-cuda-fp16")


def cache_dir() -> Path:
    """$LUCID_EVAL_CACHE, else $XDG_CACHE_HOME/lucid-eval, else ~/.cache/lucid-eval."""
    if os.environ.get("LUCID_EVAL_CACHE"):
        return Path(os.environ["LUCID_EVAL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lucid-eval"


@dataclass
class DemoConfig:
    out: Path = Path("reports/demo")
    model: str = "demo"
    cache: Path = field(default_factory=cache_dir)
    n_pairs: int = 1000
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    command: str = "lucid-eval demo"


def _export(checkpoint: Path, cache: Path, with_fp16: bool, echo) -> Path:
    """A verified export of `checkpoint` in the cache, keyed by its weights' hash; built once."""
    from lucid_eval.export import ExportBundle, ExportConfig, ExportError, export_model

    digest = hashlib.sha256((checkpoint / "model.safetensors").read_bytes()).hexdigest()[:16]
    variants = ("fp32", "fused", "int8") + (("fp16",) if with_fp16 else ())
    path = cache / f"export-{digest}-{'-'.join(variants)}"
    try:
        ExportBundle.load(path)
        return path
    except ExportError:
        shutil.rmtree(path, ignore_errors=True)
    echo(f"exporting {checkpoint} ({', '.join(variants)}) to {path} ...")
    export_model(ExportConfig(model=checkpoint, out=path, variants=variants))
    return path


def _heldout_mismatch(checkpoint: Path, pairs_meta: Path) -> str | None:
    """Why the held-out documents may not be the ones `checkpoint` was trained without, if so.

    The split is by document name, so held-out documents stay held out on any Python version;
    their text (and the training documents') still changes with the standard library's."""
    log_path = checkpoint / "training_log.json"
    if not log_path.exists():
        return None
    trained = json.loads(log_path.read_text(encoding="utf-8"))["corpus"]
    if trained.get("source") != "builtin":
        return None
    built = json.loads(pairs_meta.read_text(encoding="utf-8"))
    if built["corpus_fingerprint"] == trained["heldout"]["fingerprint"]:
        return None
    return (
        f"the held-out text read from Python {built['python_version']} differs from the text the model was "
        f"evaluated on in training (Python {trained['python_version']}); its numbers will differ from the README's"
    )


def run_demo(config: DemoConfig, echo=print) -> RunResult:
    from lucid_eval.data.corpus import write_heldout_pairs
    from lucid_eval.export import ExportBundle
    from lucid_eval.reports import build_report
    from lucid_eval.runtimes import runtime_status
    from lucid_eval.train.named import resolve_checkpoint

    config.cache.mkdir(parents=True, exist_ok=True)
    config.out.mkdir(parents=True, exist_ok=True)
    # Built every run (seconds), never cached: the text depends on this Python install and this
    # version of the corpus reader, and the pairs beside the report show what was scored.
    corpus = config.out / "heldout-pairs.tsv"
    echo(f"building up to {config.n_pairs} held-out pairs from the built-in corpus ...")
    write_heldout_pairs(corpus, n_pairs=config.n_pairs, seed=config.seed)
    checkpoint = resolve_checkpoint(config.model, config.cache)
    if warning := _heldout_mismatch(checkpoint, Path(f"{corpus}.json")):
        echo(f"warning: {warning}")
    status = runtime_status()
    usable = {s.name for s, ok, _ in status if ok}
    bundle = ExportBundle.load(_export(checkpoint, config.cache, "ort-cuda-fp16" in usable, echo))
    runtimes = [r for r in PREFERRED_ORDER if r in usable]
    for s, ok, reason in status:
        if not ok and s.name in PREFERRED_ORDER:
            echo(f"skipping {s.name}: {reason}")
    # The demo owns its output folder: each run starts fresh rather than resuming an old journal.
    shutil.rmtree(config.out / ".journal", ignore_errors=True)
    return score(
        ScoreConfig(
            export_dir=bundle.path,
            corpus=corpus,
            out_dir=config.out,
            runtimes=runtimes,
            seed=config.seed,
            threads=config.threads,
            progress=config.progress,
            command=config.command,
        ),
        echo=echo,
        report=build_report,
    )
