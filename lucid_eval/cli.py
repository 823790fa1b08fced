"""The `lucid-eval` command line: each command is a thin call into the library."""

from __future__ import annotations

from pathlib import Path

import click

from lucid_eval import __version__

VARIANT_NAMES = ("fp32", "fused", "int8", "fp16")


def fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group()
@click.version_option(__version__, prog_name="lucid-eval")
def main() -> None:
    """Prove an exported BERT pretraining model is the same model on every runtime."""


@main.command()
@click.option("--model", "model", required=True, type=click.Path(path_type=Path), help="HF-format checkpoint dir.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Export directory to write.")
@click.option("--opset", default=17, show_default=True, help="ONNX opset.")
@click.option("--variant", "variants", multiple=True, type=click.Choice(VARIANT_NAMES), help="Repeatable; default all.")
def export(model: Path, out: Path, opset: int, variants: tuple[str, ...]) -> None:
    """Export MODEL to verified ONNX graphs (full + scoring) in OUT."""
    from lucid_eval.export import ExportConfig, export_model
    from lucid_eval.export.verify import ExportVerificationError
    from lucid_eval.models.checkpoints import CheckpointError

    try:
        manifest = export_model(ExportConfig(model=model, out=out, opset=opset, variants=variants or VARIANT_NAMES))
    except (ExportVerificationError, CheckpointError, ValueError) as exc:
        raise fail(exc) from exc
    for name, info in manifest["variants"].items():
        verification = info["verification"]
        worst = max((c["max_abs_logit_diff"] for c in verification.get("cases", [])), default=float("nan"))
        status = verification.get("skipped") or f"verified, max |Δ logit| {worst:.2e}"
        click.echo(f"{name:6s} {info['precision']:5s} {info['device']:5s} {status}")
    click.echo(f"export written to {out} in {manifest['seconds']['total']:.1f} s (manifest.json has the details)")


@main.command()
@click.option("--export", "export_dir", type=click.Path(path_type=Path), help="Also check which variants it has.")
def runtimes(export_dir: Path | None) -> None:
    """List the runtimes and whether each can run on this machine (and why not)."""
    from lucid_eval.export import ExportBundle, ExportError
    from lucid_eval.runtimes import runtime_status

    try:
        bundle = ExportBundle.load(export_dir) if export_dir else None
    except ExportError as exc:
        raise fail(exc) from exc
    for spec, ok, reason in runtime_status(bundle):
        click.echo(f"{spec.name:15s} {'yes' if ok else 'no ':3s}  {spec.description}" + ("" if ok else f"\n{'':20s}{reason}"))


@main.command()
@click.argument("docs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="TSV to write (id, text_a, text_b, nsp_label).")
@click.option("--seed", default=0, show_default=True)
@click.option("--n-pairs", type=int, help="At most this many pairs (default: one per sentence).")
def pairs(docs: Path, out: Path, seed: int, n_pairs: int | None) -> None:
    """Turn a plain-text corpus of DOCS into BERT-style NSP pairs (50 % consecutive, 50 % random)."""
    from lucid_eval.harness.pairs import build_pairs, read_documents, write_pairs_tsv

    try:
        written = write_pairs_tsv(build_pairs(read_documents(docs), seed=seed, n_pairs=n_pairs), out)
    except ValueError as exc:
        raise fail(exc) from exc
    click.echo(f"wrote {written} pairs to {out}")
