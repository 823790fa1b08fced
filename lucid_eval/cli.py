"""The `lucid-eval` command line: each command is a thin call into the library."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lucid_eval import __version__
from lucid_eval.export.manifest import DEFAULT_VARIANTS, VARIANTS


class LucidGroup(click.Group):
    """Turns every error that is the user's to fix into one line (`Error: ...`, exit 1): ours
    (lucid_eval.errors.UserError), bad values (ValueError) and file-system failures (OSError: no
    such file, permission denied, disk full). Anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from lucid_eval.errors import UserError

        try:
            return super().invoke(ctx)
        except (UserError, ValueError, OSError) as exc:
            message = " ".join(str(exc).split()) if isinstance(exc, OSError) else str(exc)
            raise click.ClickException(message or type(exc).__name__) from exc


def _columns(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, str] | None:
    from lucid_eval.harness.corpus import parse_columns

    try:
        return parse_columns(value) if value else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _model_sources(
    onnx_help: str, device_default: str | None = None, device_help: str = "Where --onnx graphs run."
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--export, --model, --onnx and --onnx-device: where score and localize take their models from."""
    options = [
        click.option("--export", "export_dir", type=click.Path(path_type=Path), help="Export dir (lucid-eval export)."),
        click.option(
            "--model", help="Instead of --export: a checkpoint dir (or 'demo') as the reference, for --onnx graphs."
        ),
        click.option(
            "--onnx", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help=onnx_help
        ),
        click.option(
            "--onnx-device",
            type=click.Choice(["cpu", "cuda"]),
            default=device_default,
            show_default=device_default is not None,
            help=device_help,
        ),
    ]

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def _distinct(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    if repeated := sorted({v for v in value if value.count(v) > 1}):
        raise click.BadParameter(f"{', '.join(repeated)} given more than once")
    return value


TOLERANCE_HELP = "Repeatable PRECISION.FIELD=VALUE, e.g. int8.agreement=0.98 (fields: logit, agreement, loss, agreement_on, margin, confidence)."
BATCH_DEFAULTS = "2048 when every runtime runs on the CPU, else 8192"  # harness.batching.default_batch_shape
PAIR_DEFAULTS = "16 when every runtime runs on the CPU, else 64"
STRICT_HELP = "Exit 3 on any verdict but PASS (INCONCLUSIVE, FALLBACK, NOT VERIFIED), not only on FAIL."


@click.group(cls=LucidGroup)
@click.version_option(__version__, prog_name="lucid-eval")
def main() -> None:
    """Prove an exported BERT pretraining model is the same model on every runtime."""


@main.command()
@click.option("--model", "model", required=True, help="HF-format checkpoint dir, or 'demo' (the shipped model).")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Export directory: new or empty, or an earlier export with --force.",
)
@click.option("--force", is_flag=True, help="Replace the export in OUT (kept until the new one has verified).")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(14, 20), help="ONNX opset.")
@click.option(
    "--variant",
    "variants",
    multiple=True,
    type=click.Choice(VARIANTS),
    help=f"Repeatable; default {', '.join(DEFAULT_VARIANTS)} (int8-static only when asked for).",
)
@click.option(
    "--verify-pairs",
    default=1000,
    show_default=True,
    type=click.IntRange(0, 1400),
    help="Short text pairs verified beyond the three shape cases (more pairs, firmer verdicts).",
)
@click.option(
    "--calibration",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Text-pair file (TSV/CSV/JSONL, as score reads) whose pairs set int8-static's activation ranges "
    "(up to 256 sampled); default: built-in pairs the verification does not use.",
)
@click.option("--tolerance", "tolerances", multiple=True, help=TOLERANCE_HELP)
@click.option("--strict", is_flag=True, help=STRICT_HELP)
def export(model: str, out: Path, force: bool, opset: int, variants: tuple[str, ...], verify_pairs: int,
           calibration: Path | None, tolerances: tuple[str, ...], strict: bool) -> None:  # fmt: skip
    """Export MODEL to verified ONNX graphs (full + scoring) in OUT."""
    import sys

    from lucid_eval.export import ExportConfig, ExportVerificationError, export_model
    from lucid_eval.harness.calibration import calibration_from_file
    from lucid_eval.tolerances import parse_overrides
    from lucid_eval.verdict import exit_code

    config = ExportConfig(model=Path(model), out=out, opset=opset, variants=variants or DEFAULT_VARIANTS, force=force,
                          verify_pairs=verify_pairs, tolerances=parse_overrides(tolerances),
                          calibration=calibration_from_file(calibration) if calibration else None)  # fmt: skip
    try:
        manifest = export_model(config)
    except ExportVerificationError as exc:  # a verdict, not a usage error: exit 3 as score does
        click.echo(f"Error: {exc}", err=True)
        sys.exit(3)
    for name, variant in manifest.variants.items():
        click.echo(f"{name:6s} {variant.precision:5s} {variant.device:5s} {variant.verdict.value}")
        for reason in variant.verification["reasons"]:
            click.echo(f"{'':19s}{reason}")
    seconds = (manifest.seconds or {}).get("total", float("nan"))
    click.echo(f"export written to {out} in {seconds:.1f} s (manifest.json has the details)")
    verdicts = [variant.verdict for variant in manifest.variants.values()]
    sys.exit(exit_code(verdicts, strict))


@main.command()
@click.option("--export", "export_dir", type=click.Path(path_type=Path), help="Also check which variants it has.")
def runtimes(export_dir: Path | None) -> None:
    """List the runtimes and whether each can run on this machine (and why not)."""
    from lucid_eval.export import ExportBundle
    from lucid_eval.runtimes import runtime_status

    bundle = ExportBundle.load(export_dir) if export_dir else None
    for spec, ok, reason in runtime_status(bundle):
        click.echo(
            f"{spec.name:15s} {'yes' if ok else 'no ':3s}  {spec.description}" + ("" if ok else f"\n{'':20s}{reason}")
        )
        if bundle is not None and spec.backend == "ort" and spec.variant in bundle.variants:
            verification = bundle.verification(spec.variant)
            lines = [f"{spec.variant} graphs: {verification['verdict']}", *verification["reasons"]]
            click.echo("".join(f"{'':20s}{line}\n" for line in lines), nl=False)


@main.command()
@click.argument("docs")
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="TSV to write (id, text_a, text_b, nsp_label)."
)
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--n-pairs", type=click.IntRange(1), help="At most this many pairs (default: one per sentence).")
@click.option(
    "--sentences",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Consecutive sentences per segment, as BERT packs them; 2 gives pairs about twice as long.",
)
@click.option("--force", is_flag=True, help="Replace OUT (and its .json sidecar) if it exists.")
def pairs(docs: str, out: Path, seed: int, n_pairs: int | None, sentences: int, force: bool) -> None:
    """Turn a plain-text corpus of DOCS into BERT-style NSP pairs (50 % consecutive, 50 % random).

    DOCS 'builtin' gives the held-out documents of the built-in corpus (what the demo scores)."""
    from lucid_eval.data.pairs import build_pairs, read_documents, write_pairs_tsv

    written_files = [out, Path(f"{out}.json")] if docs == "builtin" else [out]
    existing = [str(path) for path in written_files if path.exists()]
    if existing and not force:
        verb = "exists" if len(existing) == 1 else "exist"
        raise click.UsageError(f"{' and '.join(existing)} already {verb}; pass --force to replace it")

    if docs == "builtin":
        from lucid_eval.data.corpus import write_heldout_pairs

        written = write_heldout_pairs(out, n_pairs=n_pairs, seed=seed, sentences=sentences)
    else:
        if not Path(docs).is_file():
            raise FileNotFoundError(f"{docs} is not a file (or use 'builtin')")
        records = build_pairs(read_documents(docs), seed=seed, n_pairs=n_pairs, sentences=sentences)
        written = write_pairs_tsv(records, out)
    click.echo(f"wrote {written} pairs to {out}")


@main.command()
@click.option("--model", required=True, help="Checkpoint dir, 'demo' or 'bert-base-random'.")
@click.option("--corpus", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    callback=_distinct,
    help="Repeatable; default torch-cpu, ort-cpu, ort-cpu-int8, ort-cpu-int8-static.",
)
@click.option("--baseline/--no-baseline", default=True, show_default=True, help="Measure the usual PyTorch loop.")
@click.option(
    "--optimum/--no-optimum", default=True, show_default=True, help="Measure Optimum's ORTModelForMaskedLM (the peer)."
)
@click.option("--threads", type=click.IntRange(1), help="Threads per runtime (default: all cores).")
@click.option("--max-length", default=128, show_default=True, type=click.IntRange(5))
@click.option("--token-budget", type=click.IntRange(1),
              help=f"Padded tokens per batch of our runtimes (as score's; default: {BATCH_DEFAULTS}).")  # fmt: skip
@click.option("--max-batch", type=click.IntRange(1), help=f"Pairs per batch at most (default: {PAIR_DEFAULTS}).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--force", is_flag=True, help="Replace OUT's earlier bench results (and its export if it no longer fits)."
)
def bench(model: str, corpus: Path, runtimes: tuple[str, ...], baseline: bool, optimum: bool, threads: int | None,
          max_length: int, token_budget: int | None, max_batch: int | None, out: Path, force: bool) -> None:  # fmt: skip
    """Measure runtimes side by side against the usual PyTorch evaluation loop."""
    import shlex
    import sys

    from lucid_eval.bench import DEFAULT_RUNTIMES, BenchConfig, run_bench

    config = BenchConfig(model=model, corpus=corpus, out=out, runtimes=runtimes or DEFAULT_RUNTIMES, baseline=baseline,
                         optimum=optimum, max_length=max_length, token_budget=token_budget, max_batch=max_batch,
                         command=shlex.join(["lucid-eval", *sys.argv[1:]]), force=force)  # fmt: skip
    if threads:
        config.threads = threads
    table = run_bench(config, echo=click.echo)
    columns = [
        "name",
        "pairs_per_second",
        "speedup",
        "vs_optimum",
        "mlm_loss",
        "mlm_accuracy",
        "nsp_accuracy",
        "roofline",
        "peak_rss_mb",
    ]
    click.echo(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    click.echo(f"wrote {out / 'bench.csv'} and {out / 'bench.html'}")


@main.command()
@_model_sources(
    "Repeatable: a BERT ONNX graph from elsewhere (Optimum, torch.onnx.export, ...) to compare too.",
    device_default="cpu",
)
@click.option("--corpus", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    callback=_distinct,
    help="Repeatable; the first is the reference. Default: torch-cpu, ort-cpu (with --model: torch-cpu).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory for CSVs and report.html.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["tsv", "csv", "jsonl"]), help="Corpus format (default: from the extension)."
)
@click.option(
    "--columns",
    metavar="NAME=COLUMN,...",
    callback=_columns,
    help="The corpus's names for text_a, text_b, nsp_label, id, e.g. text_a=sentence1,text_b=sentence2,nsp_label=label.",
)
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(0), help="Mask seed: same seed and corpus, same masks."
)
@click.option(
    "--max-length",
    default=128,
    show_default=True,
    type=click.IntRange(5),
    help="Pairs are truncated to this many tokens ([CLS] a [SEP] b [SEP]: at least 5).",
)
@click.option(
    "--token-budget",
    type=click.IntRange(5),
    help=f"Padded tokens per batch; at least --max-length (default: {BATCH_DEFAULTS}).",
)
@click.option("--max-batch", type=click.IntRange(1), help=f"Pairs per batch at most (default: {PAIR_DEFAULTS}).")
@click.option(
    "--threads",
    type=click.IntRange(1),
    help="Intra-op threads per runtime (default: all cores; with --engine ray: 1 per worker).",
)
@click.option("--on-error", type=click.Choice(["skip", "fail"]), default="skip", show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUT.")
@click.option(
    "--allow-fallback", is_flag=True, help="Let a CUDA runtime fall back to the CPU (its verdict is FALLBACK)."
)
@click.option("--tolerance", "tolerances", multiple=True, help=TOLERANCE_HELP + " Applied to the export's tolerances.")
@click.option("--strict", is_flag=True, help=STRICT_HELP)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help='Score in this process, or in a pool of Ray actors (pip install "lucid-eval[ray]"); same results.',
)
@click.option(
    "--address",
    help="With --engine ray: 'auto' (the cluster `ray start` joined here), a head's HOST:PORT, or ray://HOST:PORT "
    "(Ray Client); default: a private Ray on this machine for the run.",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    help="With --engine ray: actors, each with every runtime (default: as many as the cluster's CPUs/GPUs hold).",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(0),
    default=0.0,
    help="With --engine ray: GPUs per actor, needed by the CUDA runtimes (fractions share a GPU).",
)
def score(export_dir, model, onnx, onnx_device, corpus, runtimes, out, fmt, columns, seed, max_length, token_budget,
          max_batch, threads, on_error, resume, allow_fallback, tolerances, strict, engine, address, workers, gpus_per_worker) -> None:  # fmt: skip
    """Score a corpus of text pairs on several runtimes with identical masks, and compare them.

    The model comes from an export (--export) or a checkpoint (--model); --onnx adds graphs
    exported elsewhere, each compared with the reference like lucid-eval's own."""
    import shlex
    import sys

    from lucid_eval.harness import RunInterrupted, ScoreConfig
    from lucid_eval.harness import score as run_score
    from lucid_eval.reports import build_report

    if (export_dir is None) == (model is None):
        raise click.UsageError("give --export DIR, or --model CHECKPOINT (with --onnx graphs to compare), not both")
    if model is not None and not onnx:
        raise click.UsageError("--model needs at least one --onnx graph to compare with it (or use --export)")
    default = ("torch-cpu", "ort-cpu") if export_dir is not None else ("torch-cpu",)
    if token_budget is not None and token_budget < max_length:
        raise click.BadParameter(f"{token_budget} is less than --max-length {max_length}: no batch could hold a pair",
                                 param_hint="--token-budget")  # fmt: skip
    if engine != "ray" and (address, workers, gpus_per_worker) != (None, None, 0.0):
        raise click.UsageError("--address, --workers and --gpus-per-worker go with --engine ray")
    try:
        config = ScoreConfig(
            export_dir=export_dir, model=model, onnx=onnx, onnx_device=onnx_device, corpus=corpus, out_dir=out,
            runtimes=list(runtimes or default), fmt=fmt,
            seed=seed, max_length=max_length, token_budget=token_budget, max_batch=max_batch, threads=threads,
            on_error=on_error,
            resume=resume, allow_fallback=allow_fallback, command=shlex.join(["lucid-eval", *sys.argv[1:]]),
            tolerance_overrides=tolerances, columns=columns,
            engine=engine, address=address, workers=workers, gpus_per_worker=gpus_per_worker,
        )  # fmt: skip
        result = run_score(config, echo=click.echo, report=build_report)
    except RunInterrupted as exc:
        click.echo(str(exc), err=True)
        sys.exit(130)
    click.echo(result.summary())
    click.echo(f"report: {result.report}")
    sys.exit(result.exit_code(strict))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(run_dir: Path) -> None:
    """Rebuild RUN_DIR/report.html from its CSV files and run.json."""
    from lucid_eval.reports import build_report

    click.echo(f"report: {build_report(run_dir)}")


@main.command()
@click.option("--out", default=Path("reports/demo"), show_default=True, type=click.Path(path_type=Path))
@click.option("--model", default="demo", show_default=True, help="Checkpoint dir instead of the shipped demo model.")
@click.option("--n-pairs", default=1000, show_default=True, type=click.IntRange(1), help="Held-out pairs to score.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0))
@click.option("--threads", type=click.IntRange(1), help="Threads per runtime (default: all cores).")
@click.option("--strict", is_flag=True, help=STRICT_HELP)
def demo(out: Path, model: str, n_pairs: int, seed: int, threads: int | None, strict: bool) -> None:
    """Score held-out built-in text pairs with the shipped checkpoint on every runtime available here."""
    import shlex
    import sys

    from lucid_eval.demo import DemoConfig, run_demo

    config = DemoConfig(out=out, model=model, n_pairs=n_pairs, seed=seed, threads=threads,
                        command=shlex.join(["lucid-eval", *sys.argv[1:]]))  # fmt: skip
    result = run_demo(config, echo=click.echo)
    click.echo(result.summary())
    click.echo(f"report: {result.report.resolve()}")
    sys.exit(result.exit_code(strict))


@main.command()
@click.argument("corpus")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Checkpoint dir to write (HF format).")
@click.option("--preset", default="demo", show_default=True, help="Recipe: 'demo' (the shipped model) or 'tiny'.")
@click.option("--steps", type=click.IntRange(1), help="Override the preset's optimisation steps.")
@click.option("--seed", type=click.IntRange(0), help="Override the preset's seed.")
def pretrain(corpus: str, out: Path, preset: str, steps: int | None, seed: int | None) -> None:
    """Pretrain a small BERT from scratch on CORPUS ('builtin' or a plain-text file of documents)."""
    from lucid_eval.train.pretrain import PretrainConfig
    from lucid_eval.train.pretrain import pretrain as run_pretrain

    overrides = {k: v for k, v in {"steps": steps, "seed": seed}.items() if v is not None}
    config = PretrainConfig.preset(preset, **overrides)
    result = run_pretrain(None if corpus == "builtin" else Path(corpus), out, config)
    final = ", ".join(f"{k} {v:.4f}" for k, v in result.final.items())
    click.echo(f"held-out: {final}; most-frequent-token MLM baseline {result.baseline_mlm_accuracy:.4f}")
    click.echo(f"checkpoint written to {out} in {result.seconds:.0f} s")


@main.command()
@_model_sources(
    "Repeatable: a BERT ONNX graph from elsewhere to localise too (run as ort-DEVICE:LABEL, as score does).",
    device_help="Where --onnx graphs run (default: the run's, else cpu).",
)
@click.option(
    "--corpus",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Corpus of text pairs (default with --examples-from: the run's).",
)
@click.option(
    "--runtime",
    "runtimes",
    multiple=True,
    callback=_distinct,
    help="Repeatable ort-* runtime of the export; torch-cpu is always the reference. Default: ort-cpu-plain, "
    "ort-cpu, ort-cpu-int8 (with --examples-from: the run's ONNX runtimes that flipped).",
)
@click.option("--n-pairs", type=click.IntRange(1), help="Localise the corpus's first N pairs (default 100).")
@click.option("--examples", metavar="ID,ID,...", help="Only the pairs with these corpus ids (e.g. from flips.csv).")
@click.option(
    "--examples-from",
    type=click.Path(exists=True, path_type=Path),
    help="A run's flips.csv or run directory: its flipped pairs, with that run's seed, max length, corpus, model and "
    "graphs unless given; writes RUN_DIR/localize and adds it to RUN_DIR/report.html unless --out is given.",
)
@click.option("--seed", type=click.IntRange(0), help="Mask seed (default: the run's with --examples-from, else 0).")
@click.option("--max-length", type=click.IntRange(5), help="Default: the run's with --examples-from, else 128.")
@click.option("--threads", type=click.IntRange(1), help="Intra-op threads (default: all cores).")
@click.option("--tolerance", "tolerances", multiple=True, help=TOLERANCE_HELP + " Applied to the export's tolerances.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="New or empty directory (or an earlier localize output) for localize.csv and localize.html "
    "(default with --examples-from RUN_DIR: RUN_DIR/localize).",
)
def localize(export_dir, model, onnx, onnx_device, corpus, runtimes, n_pairs, examples, examples_from, seed,
             max_length, threads, tolerances, out) -> None:  # fmt: skip
    """Find where each graph's numbers leave the PyTorch reference's: error at every layer boundary.

    The graphs are an export's (--export) and any --onnx graphs exported elsewhere (with --export,
    or --model CHECKPOINT as the reference)."""
    import shlex
    import sys

    from lucid_eval.harness.localize import LocalizeConfig
    from lucid_eval.harness.localize import localize as run_localize
    from lucid_eval.harness.run_info import RunInfo
    from lucid_eval.reports import build_report
    from lucid_eval.reports.localize import build_localize_report

    if model is not None and not onnx:
        raise click.UsageError("--model needs at least one --onnx graph to localise (or use --export)")
    ids = tuple(i.strip() for i in examples.split(",") if i.strip()) if examples else ()
    config = LocalizeConfig(
        export_dir=export_dir, model=model, onnx=onnx, onnx_device=onnx_device, corpus=corpus, out_dir=out,
        runtimes=list(runtimes), n_pairs=n_pairs, examples=ids, examples_from=examples_from, seed=seed,
        max_length=max_length, threads=threads, tolerance_overrides=tolerances,
        command=shlex.join(["lucid-eval", *sys.argv[1:]]),
    )  # fmt: skip
    result = run_localize(config, echo=click.echo, report=build_localize_report)
    click.echo(result.summary())
    click.echo(f"wrote {result.out_dir / 'localize.csv'}; report: {result.report}")
    if result.run_dir is not None and RunInfo.file(result.run_dir).is_file():
        click.echo(f"report: {build_report(result.run_dir)} (with this localisation)")
