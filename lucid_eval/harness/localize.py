"""`localize`: where a graph's numbers leave the PyTorch reference's, boundary by boundary.

The reference (torch-cpu) and every graph see the masked inputs `score` gives them: `encode_chunk`
with the same seed (masks depend on the pair's corpus index only) and `iter_batches`. Each graph
(an export variant's full graph under its ort-* runtime's name, or a foreign graph as
ort-DEVICE:LABEL, fed the inputs it has in the types it takes) runs with the boundaries of
`lucid_eval.export.boundaries` as extra outputs; the reference's come from forward hooks on the
same modules. Errors are taken over unpadded positions (the pooler and NSP logits: per example).
Which graphs, pairs and folder: `lucid_eval.harness.localize_select`.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lucid_eval import __version__
from lucid_eval.export.boundaries import Boundary, InstrumentedGraph, instrument
from lucid_eval.export.sessions import ProviderError
from lucid_eval.files import sha256_file
from lucid_eval.harness.batching import iter_batches
from lucid_eval.harness.corpus import CorpusReader
from lucid_eval.harness.journal import LOCK_FILE, run_directory
from lucid_eval.harness.localize_select import (
    OUT_FOLDER,
    LocalizeError,
    Target,
    flipped_examples,
    resolve_sources,
    select_pairs,
)
from lucid_eval.harness.masking import encode_chunk
from lucid_eval.harness.run_info import CorpusInfo
from lucid_eval.harness.tables import atomic_write_text, temp_files
from lucid_eval.models.model import BERTForPreTraining
from lucid_eval.models.scoring import FULL_INPUTS
from lucid_eval.runtimes.base import Batch
from lucid_eval.tolerances import Tolerance, parse_overrides, tolerance_for

FLAG_RULE = (
    "A runtime's budget B is its precision's logit tolerance, or half its decisive margin when the precision "
    "has no logit tolerance (a shift under margin/2 cannot flip a decisive prediction). At a head's logits that "
    "is the relative error R = B / rms(reference logits); the encoder, which feeds both heads, takes the "
    "stricter R. A boundary at depth d of D (the logits) gets the share R x d / D: error may grow at most "
    "linearly with depth. The first flagged boundary is the shallowest whose relative error exceeds its share; "
    "growth is the relative error at its head's logits over the error there, and per boundary step."
)
KIND = "lucid-eval localize"
CSV_FILE, INFO_FILE, HTML_FILE = "localize.csv", "localize.json", "localize.html"
DEFAULT_PAIRS = 100
ROWS = 256  # positions compared per step, to bound temporary memory at the logits
LOGITS = {"trunk": "cls.predictions", "mlm": "cls.predictions", "nsp": "cls.seq_relationship"}


@dataclass
class LocalizeConfig:
    """What to localise. The reference is an export's checkpoint (`export_dir`) or a checkpoint
    (`model`, with `onnx` graphs); with `examples_from`, what is not given comes from that run
    (see lucid_eval.harness.localize_select)."""

    corpus: str | Path | None = None
    out_dir: str | Path | None = None  # None: RUN_DIR/localize of `examples_from`
    export_dir: str | Path | None = None
    model: str | Path | None = None
    onnx: tuple[str | Path, ...] = ()  # foreign graphs, run as ort-DEVICE:LABEL
    onnx_device: str | None = None  # None: the run's (examples_from), else cpu
    runtimes: list[str] = field(default_factory=list)  # an export's ort-* runtimes; empty: see localize_select
    n_pairs: int | None = None  # the corpus's first pairs; DEFAULT_PAIRS when no examples are named
    examples: tuple[str, ...] = ()  # corpus ids: only these pairs
    examples_from: str | Path | None = None  # a run's flips.csv (or its run dir): ids and the run's settings
    seed: int | None = None  # None: the run's (examples_from), else 0; so for max_length (128)
    max_length: int | None = None
    token_budget: int = 2048
    max_batch: int = 64
    threads: int | None = None
    tolerance_overrides: tuple[str, ...] = ()
    command: str = ""


@dataclass
class ErrorStats:
    """Running error of one runtime at one boundary; NaN/Inf in the graph's values propagate."""

    max_abs: float = 0.0
    sq_diff: float = 0.0
    sq_ref: float = 0.0
    cos_sum: float = 0.0
    positions: int = 0
    values: int = 0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        """Compare rows (positions) of width C; float64 arithmetic, ROWS rows at a time."""
        for start in range(0, len(ref), ROWS):
            r = ref[start : start + ROWS].astype(np.float64)
            g = got[start : start + ROWS].astype(np.float64)
            d = g - r
            self.max_abs = float(np.max([self.max_abs, np.abs(d).max(initial=0.0)]))
            self.sq_diff += float((d * d).sum())
            self.sq_ref += float((r * r).sum())
            nr, ng = np.linalg.norm(r, axis=1), np.linalg.norm(g, axis=1)
            denom = np.where(nr * ng > 0, nr * ng, np.nan)  # a zero row: cosine 1 if both are zero, else 0
            self.cos_sum += float(np.where(np.isnan(denom), nr == ng, (r * g).sum(1) / denom).sum())
            self.positions += len(r)
            self.values += r.size

    @property
    def rel_err(self) -> float:
        return math.sqrt(self.sq_diff / self.sq_ref) if self.sq_ref > 0 else (0.0 if self.sq_diff == 0 else math.inf)

    @property
    def cosine(self) -> float:
        return self.cos_sum / self.positions if self.positions else math.nan

    @property
    def rms(self) -> float:
        return math.sqrt(self.sq_ref / self.values) if self.values else math.nan


def reference_outputs(model: BERTForPreTraining, batch: Batch, names: list[str]) -> dict[str, np.ndarray]:
    """The reference's output at each named module for one batch (forward hooks, removed after)."""
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(lambda m, i, out, name=name: captured.__setitem__(name, out))
        for name in names
    ]
    try:
        with torch.inference_mode():
            model(*(torch.from_numpy(getattr(batch, name)) for name in FULL_INPUTS))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: captured[name].numpy() for name in names}


def measure(
    model: BERTForPreTraining, graphs: dict[str, InstrumentedGraph], batches: Iterable[Batch]
) -> dict[tuple[str, str], ErrorStats]:
    """(runtime, boundary) -> error over every batch, for each graph's mapped boundaries."""
    stats = {(rt, b.name): ErrorStats() for rt, g in graphs.items() for b in g.mapped}
    names = list(dict.fromkeys(name for _, name in stats))
    for batch in batches:
        ref = reference_outputs(model, batch, names)
        keep = batch.attention_mask.astype(bool)  # (B, T)
        feeds = {name: getattr(batch, name) for name in FULL_INPUTS}
        for rt, graph in graphs.items():
            for name, value in graph.run(feeds).items():
                r, g = ref[name], np.asarray(value)
                if r.shape != g.shape:
                    raise LocalizeError(
                        f"{rt}: the tensor mapped to {name} has shape {g.shape}, the reference's {r.shape}; "
                        f"see how it was found in {CSV_FILE}"
                    )
                stats[(rt, name)].add(*((r[keep], g[keep]) if r.ndim == 3 else (r, g)))
    return stats


def budget(tol: Tolerance) -> tuple[float | None, str]:
    """The logit budget B of FLAG_RULE and where it comes from."""
    if tol.logit is not None:
        return tol.logit, "logit tolerance"
    if tol.margin > 0:
        return tol.margin / 2, "decisive margin / 2"
    return None, "no logit tolerance or margin: nothing is flagged"


def runtime_table(
    runtime: str, boundaries: list[Boundary], stats: dict[tuple[str, str], ErrorStats], logit_budget: float | None
) -> pd.DataFrame:
    """One row per boundary (unmapped and absent ones too, without numbers) with its share and flag (FLAG_RULE)."""
    depth = max(b.depth for b in boundaries)
    rel = {}
    for branch, logits in (("mlm", "cls.predictions"), ("nsp", "cls.seq_relationship")):
        s = stats.get((runtime, logits))
        rel[branch] = logit_budget / s.rms if s and logit_budget is not None and s.rms > 0 else math.nan
    rel["trunk"] = min((v for v in rel.values() if not math.isnan(v)), default=math.nan)
    rows = []
    for b in boundaries:
        s = stats.get((runtime, b.name))
        share = rel[b.branch] * b.depth / depth
        rel_err = s.rel_err if s else math.nan
        rows.append(
            {
                "runtime": runtime,
                "boundary": b.name,
                "label": b.label,
                "layer": b.layer,
                "depth": b.depth,
                "branch": b.branch,
                "tensor": b.tensor or "",
                "status": "absent" if b.absent else "mapped" if b.tensor else "not mapped",
                "how_found": b.how_found,
                "max_abs": s.max_abs if s else math.nan,
                "rel_err": rel_err,
                "cosine": s.cosine if s else math.nan,
                "positions": s.positions if s else 0,
                "share": share,
                "flagged": bool(s) and math.isfinite(share) and not rel_err <= share,
            }
        )
    table = pd.DataFrame(rows)
    table["layer"] = table["layer"].astype("Int64")
    return table


@dataclass
class RuntimeSummary:
    runtime: str
    variant: str  # the export's variant, or "foreign"
    precision: str
    export_verdict: str | None  # None for a foreign graph
    budget: float | None
    budget_source: str
    first_flagged: str | None
    growth: float | None  # rel err at the head's logits / rel err at the first flagged boundary
    growth_per_step: float | None
    unmapped: list[str]
    absent: list[str]  # boundaries the graph does not have (no NSP head)
    text: str


def summarize(t: Target, table: pd.DataFrame, logit_budget: float | None, source: str) -> RuntimeSummary:
    """The first boundary over its share and how fast the error grows after it, in words too."""
    rows = table.set_index("boundary")
    flagged = table[table["flagged"]].sort_values("depth", kind="stable")
    unmapped = list(table.loc[table["status"] == "not mapped", "boundary"])
    absent = list(table.loc[table["status"] == "absent", "boundary"])
    what = f"export {t.verdict}" if t.verdict else "foreign graph"
    head = f"{t.name} ({t.precision}, {what}, budget {_e(logit_budget)} = {source})"
    first, growth, per_step, text = None, None, None, ""
    if flagged.empty:
        worst = table.dropna(subset=["rel_err"])
        where = worst.loc[worst["rel_err"].idxmax()] if not worst.empty else None
        text = f"{head}: no boundary over its share" + (
            f"; largest relative error {_e(where['rel_err'])} at {where['boundary']}" if where is not None else ""
        )
    else:
        row = flagged.iloc[0]
        first, last = row["boundary"], rows.loc[LOGITS[row["branch"]]]
        text = f"{head}: first over its share {first} (rel err {_e(row['rel_err'])} > share {_e(row['share'])})"
        steps = int(last["depth"] - row["depth"])
        if steps > 0 and row["rel_err"] > 0 and math.isfinite(last["rel_err"]):
            growth = float(last["rel_err"] / row["rel_err"])
            per_step = growth ** (1 / steps)
            text += f"; x{growth:.3g} to {last.name} over {steps} boundaries (x{per_step:.3g} per boundary)"
    if unmapped:
        text += f"; NOT MAPPED: {', '.join(unmapped)} (see how_found)"
    if absent:
        text += f"; no NSP head in this graph: {', '.join(absent)} not compared"
    return RuntimeSummary(t.name, t.variant, t.precision, t.verdict, logit_budget, source, first, growth, per_step,
                          unmapped, absent, text)  # fmt: skip


def _e(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2g}"


def _is_localize_dir(out: Path) -> bool:
    try:
        return json.loads((out / INFO_FILE).read_text(encoding="utf-8")).get("kind") == KIND
    except (OSError, ValueError, AttributeError):
        return False


def _refuse_others(out: Path) -> None:
    """Nothing a user owns is overwritten: OUT must be new, empty, or an earlier localize output."""
    if not out.is_dir():
        return
    ours = {LOCK_FILE, *(p.name for p in temp_files(out, (CSV_FILE, INFO_FILE, HTML_FILE)))}
    others = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if others and not _is_localize_dir(out):
        shown = ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")
        raise LocalizeError(
            f"{out} is not empty ({shown}) and holds no earlier localize output; choose a new or empty directory"
        )


@dataclass(eq=False)
class LocalizeResult:
    out_dir: Path
    table: pd.DataFrame
    summaries: list[RuntimeSummary]
    info: dict[str, Any]
    report: Path | None
    run_dir: Path | None = None  # the score run whose report.html shows this localisation (OUT is its localize/)

    def summary(self) -> str:
        """A table of max |Δ| and relative error per boundary and runtime ('!' = over its share), then the verdict lines."""
        runtimes = [s.runtime for s in self.summaries]
        rows = self.table.set_index(["runtime", "boundary"])
        names = list(dict.fromkeys(self.table["boundary"]))
        lines = [f"{'boundary':34s}{'depth':>5s}" + "".join(f"  {rt:>21s}" for rt in runtimes)]
        lines.append(f"{'':39s}" + "".join(f"  {'max|Δ|':>10s} {'rel err':>10s}" for _ in runtimes))
        for name in names:
            cells = []
            for rt in runtimes:
                r = rows.loc[(rt, name)]
                mark = "!" if r["flagged"] else " "
                cells.append(f"  {_e(r['max_abs']):>10s} {_e(r['rel_err']):>9s}{mark}")
            lines.append((f"{name:34s}{int(rows.loc[(runtimes[0], name), 'depth']):5d}" + "".join(cells)).rstrip())
        return "\n".join([*lines, "", *(s.text for s in self.summaries)])


def localize(
    config: LocalizeConfig,
    *,
    echo: Callable[[str], None] = lambda line: None,
    report: Callable[[Path], Path] | None = None,
) -> LocalizeResult:
    """Measure every graph's error at every boundary on the same masked pairs and write OUT:
    localize.csv, localize.json and (via `report`, from the reports layer) localize.html."""
    started = time.perf_counter()
    if config.examples and config.examples_from:
        raise LocalizeError("give --examples or --examples-from, not both")
    flipped = flipped_examples(config.examples_from) if config.examples_from else None
    ids, run = (flipped.ids, flipped.run) if flipped else (tuple(config.examples), None)
    if ids and config.n_pairs is not None:
        raise LocalizeError("--n-pairs selects the corpus's first pairs; it cannot be combined with named examples")
    sources = resolve_sources(config, flipped, echo)
    bundle, targets = sources.bundle, sources.targets
    tolerances = parse_overrides(config.tolerance_overrides, bundle.tolerances)
    seed = config.seed if config.seed is not None else (run.seed if run else 0)
    max_length = config.max_length if config.max_length is not None else (run.max_length if run else 128)
    if max_length > bundle.config.max_position_embeddings:
        raise LocalizeError(f"max_length {max_length} exceeds the model's {bundle.config.max_position_embeddings}")
    corpus_run = run.corpus if run else CorpusInfo(path=str(sources.corpus))
    corpus_sha = sha256_file(sources.corpus)
    if corpus_run.sha256 not in (None, corpus_sha):
        echo(f"warning: {sources.corpus} is not the corpus of that run (sha256 differs): ids may name other pairs")
    for warning in (w for t in targets for w in t.warnings):
        echo(f"warning: {warning}")
    out = sources.out
    _refuse_others(out)
    with run_directory(out):
        for leftover in temp_files(out, (CSV_FILE, INFO_FILE, HTML_FILE)):
            leftover.unlink(missing_ok=True)
        reader = CorpusReader(sources.corpus, corpus_run.format, columns=corpus_run.columns or None)
        records = select_pairs(reader, config.n_pairs or DEFAULT_PAIRS, ids)
        tokenizer = bundle.tokenizer
        probability = run.mlm_probability if run else 0.15
        examples = encode_chunk(records, tokenizer, seed=seed, max_length=max_length, mlm_probability=probability)
        if config.threads:
            torch.set_num_threads(config.threads)
        model = BERTForPreTraining.from_pretrained(bundle.checkpoint)
        layers = bundle.config.num_hidden_layers
        graphs = {}
        for t in targets:
            try:
                graphs[t.name] = instrument(t.path, layers, t.device, threads=config.threads, mlm_output=t.mlm_output,
                                            nsp_output=t.nsp_output, identified=t.identified)  # fmt: skip
            except ProviderError as exc:
                raise LocalizeError(f"{t.name}: {exc}") from exc
        echo(f"localising {len(records)} pairs on {', '.join(graphs)} against torch-cpu ...")
        batches = iter_batches(examples, token_budget=config.token_budget, max_batch=config.max_batch,
                               max_length=max_length, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        stats = measure(model, graphs, (batch for _, batch in batches))
        budgets = {t.name: budget(tolerance_for(t.precision, tolerances)) for t in targets}
        tables = [runtime_table(t.name, graphs[t.name].boundaries, stats, budgets[t.name][0]) for t in targets]
        summaries = [summarize(t, table, *budgets[t.name]) for t, table in zip(targets, tables, strict=True)]
        table = pd.concat(tables, ignore_index=True)
        info = {
            "kind": KIND,
            "command": config.command,
            **sources.record(),
            "corpus": {"path": str(sources.corpus), "sha256": corpus_sha},
            "run": {"dir": str(flipped.run_dir), "started": run.started if run else None} if flipped else None,
            "pairs": len(records),
            "examples": list(ids),
            "seed": seed,
            "max_length": max_length,
            "mlm_probability": probability,
            "reference": "torch-cpu",
            "graphs": {t.name: str(t.path) for t in targets},
            "session": "ONNX Runtime ORT_ENABLE_ALL, as the runtimes run it; boundary tensors added as outputs "
            "of a temporary copy of each graph",
            "rule": FLAG_RULE,
            "runtimes": [asdict(s) for s in summaries],
            "versions": {"lucid_eval": __version__, "python": platform.python_version(), "torch": torch.__version__},
            "seconds": round(time.perf_counter() - started, 2),
        }
        atomic_write_text(out / CSV_FILE, table.to_csv(index=False, lineterminator="\r\n"))
        atomic_write_text(out / INFO_FILE, json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n")
        page = report(out) if report else None
    in_run = flipped is not None and out.resolve() == (flipped.run_dir / OUT_FOLDER).resolve()
    return LocalizeResult(out, table, summaries, info, page, flipped.run_dir if in_run else None)
