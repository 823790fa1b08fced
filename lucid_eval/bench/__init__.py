"""`lucid-eval bench`: our runtimes against the usual PyTorch evaluation loop, near the CPU roofline."""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lucid_eval.bench.flops import gemm_flops, useful_flops
from lucid_eval.bench.measure import (
    BASELINE,
    OPTIMUM,
    OVERHEAD_PAIRS,
    OVERHEAD_RUNTIME,
    Job,
    corpus_batches,
    matmul_job,
    measure,
    model_bytes,
    profile_job,
    run_isolated,
    suite_overhead,
)
from lucid_eval.errors import UserError
from lucid_eval.harness.batching import default_batch_shape
from lucid_eval.reports.bench import overhead_line, profile_line
from lucid_eval.runtimes import spec

DEFAULT_RUNTIMES = ("torch-cpu", "ort-cpu", "ort-cpu-int8", "ort-cpu-int8-static")


@dataclass
class BenchConfig:
    model: str  # checkpoint dir, "demo" or "bert-base-random"
    corpus: Path
    out: Path
    runtimes: tuple[str, ...] = DEFAULT_RUNTIMES
    baseline: bool = True
    optimum: bool = True  # the peer row (Optimum's ORTModelForMaskedLM); "not installed" without the extra
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0
    max_length: int = 128
    token_budget: int | None = None  # None: harness.batching.default_batch_shape of the runtimes' devices
    max_batch: int | None = None
    command: str = ""
    force: bool = False  # replace OUT's earlier results, and its export when it no longer fits


BENCH_FILES = ("bench.csv", "bench.json", "bench.html", "bench.md")


class BenchOutError(UserError):
    """OUT holds an earlier bench's results, or an export this bench would have to replace."""


def check_out(config: BenchConfig) -> None:
    """Refuse, before measuring anything, to overwrite an earlier bench's results without `force`."""
    found = [name for name in BENCH_FILES if (config.out / name).exists()]
    if found and not config.force:
        raise BenchOutError(f"{config.out} holds an earlier bench ({', '.join(found)}); "
                            "pass --force to replace it, or choose another --out")  # fmt: skip


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def prepare_export(config: BenchConfig) -> Path:
    """Export the model into OUT/export-NAME with the variants the runtimes need; a verified export
    of the same source with those variants is reused, any other replaced only with `force`."""
    from lucid_eval.export import ExportBundle, ExportConfig, ExportError, export_model
    from lucid_eval.train.named import resolve_checkpoint

    checkpoint = resolve_checkpoint(config.model, config.out / "models").resolve()
    export_dir = config.out / f"export-{checkpoint.name}"
    variants = tuple(dict.fromkeys(spec(r).variant for r in config.runtimes if spec(r).backend == "ort"))
    try:
        manifest = ExportBundle.load(export_dir).manifest
        if manifest.source_checkpoint == str(checkpoint) and set(variants) <= set(manifest.variants):
            return export_dir
        unfit = f"is of {manifest.source_checkpoint} with variants {', '.join(manifest.variants)}"
    except ExportError as e:
        unfit = f"is not a usable export ({e})"
    if export_dir.exists() and any(export_dir.iterdir()) and not config.force:
        raise BenchOutError(f"{export_dir} {unfit}; this bench needs {checkpoint} with {', '.join(variants)}: "
                            "pass --force to replace it, or choose another --out")  # fmt: skip
    export_model(ExportConfig(model=checkpoint, out=export_dir, variants=variants or ("fp32",), force=True))
    return export_dir


def _gemm_rates(shapes, model_config, profile: dict[str, float], real_tokens: int) -> dict[str, float]:
    """The rate ort-cpu's GEMM operators reach over the padded batches of `shapes` (their FLOPs over
    the profiler's seconds), their share of its time, and the padded tokens per real token: what
    stands between its useful FLOP rate and the matmul rate. Empty without a fused profile."""
    if not {"MatMul", "Attention"} <= set(profile):
        return {}
    work = gemm_flops(model_config, shapes)
    return {
        **{f"{op}_gflops": flops / profile[op] / 1e9 for op, flops in work.items()},
        "gemm_share": sum(profile[op] for op in work) / sum(profile.values()),
        "padding": sum(b * t for b, t, _ in shapes) / real_tokens,
    }


def run_bench(config: BenchConfig, echo=print) -> pd.DataFrame:
    """Measure every runtime (and the baseline) in its own process on the same masked corpus."""
    check_out(config)
    config.out.mkdir(parents=True, exist_ok=True)
    export_dir = prepare_export(config)
    budget, pairs = default_batch_shape((spec(r).device for r in config.runtimes), config.max_length)
    job = Job(BASELINE, str(export_dir), str(config.corpus), config.seed, config.max_length, config.threads,
              config.token_budget or budget, config.max_batch or pairs)  # fmt: skip
    names = ([BASELINE] if config.baseline else []) + ([OPTIMUM] if config.optimum else []) + list(config.runtimes)
    rows = []
    for name in names:
        echo(f"measuring {name} ...")
        rows.append(run_isolated(measure, Job(**{**job.__dict__, "name": name})))
        row = rows[-1]
        echo(f"  {row['pairs'] / row['seconds']:.1f} pairs/s, peak RSS {row['peak_rss_mb']:.0f} MB" if row["pairs"]
             else f"  {row['implementation']}")  # fmt: skip
    echo(f"measuring the suite's overhead: score + report on {OVERHEAD_PAIRS} pairs with {OVERHEAD_RUNTIME} ...")
    overhead = run_isolated(suite_overhead, job)
    echo(f"  {overhead_line(overhead)}")
    profiles = {}  # what each ONNX Runtime CPU graph spends its time on, e.g. int8's fp32 remainder
    for name in (r for r in config.runtimes if (spec(r).backend, spec(r).device) == ("ort", "cpu")):
        echo(f"profiling {name} with ONNX Runtime's profiler ...")
        profiles[name] = run_isolated(profile_job, Job(**{**job.__dict__, "name": name}))
        echo(f"  {profile_line(name, profiles[name])}")
    echo("measuring the fp32 matrix-multiply rate ...")
    rates = run_isolated(matmul_job, config.threads)
    matmul = max(rates.values())
    table = pd.DataFrame(rows)
    n_tokens, n_masked, shapes = corpus_batches(job)
    from lucid_eval.export import ExportBundle

    model_config = ExportBundle.load(export_dir).config
    flops = useful_flops(model_config, n_tokens, n_masked)
    table["pairs_per_second"] = table["pairs"] / table["seconds"]
    table["tokens_per_second"] = table["real_tokens"] / table["seconds"]
    table["useful_gflops"] = flops / table["seconds"] / 1e9
    table["roofline"] = table["useful_gflops"] / matmul
    reference = table.iloc[0]
    table["speedup"] = table["pairs_per_second"] / reference["pairs_per_second"]
    peer = table.loc[table["name"] == OPTIMUM, "pairs_per_second"]
    table["vs_optimum"] = table["pairs_per_second"] / (peer.iloc[0] if len(peer) else float("nan"))
    table["d_mlm_loss"] = table["mlm_loss"] - reference["mlm_loss"]
    table["d_nsp_loss"] = table["nsp_loss"] - reference["nsp_loss"]
    table.to_csv(config.out / "bench.csv", index=False)
    info = {
        "model": str(config.model),
        "corpus": str(config.corpus),
        "pairs": int(len(n_tokens)),
        "mean_tokens": float(n_tokens.mean()),
        "threads": config.threads,
        "batches": {"token_budget": job.token_budget, "max_batch": job.max_batch},  # our runtimes'
        "matmul_gflops": matmul,
        "matmul_gflops_by_library": rates,
        "useful_gflop": flops / 1e9,
        "model_mb": model_bytes(export_dir) / 2**20,
        "suite_overhead": overhead,
        "ort_profiles_s": profiles,  # runtime -> seconds per operator type of its graph
        "ort_cpu_gemms": _gemm_rates(shapes, model_config, profiles.get("ort-cpu", {}), int(n_tokens.sum())),
        "baseline": reference["implementation"],
        "host": f"{_cpu_name()}, {os.cpu_count()} cores, {platform.machine()}, Python {sys.version.split()[0]}",
        "command": config.command,
    }
    (config.out / "bench.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    from lucid_eval.reports.bench import build_bench_report

    build_bench_report(config.out)
    return table
