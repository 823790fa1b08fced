"""One measurement per fresh process: the usual PyTorch loop, or one of our runtimes, on the same masks.

Each job runs in its own spawned process so that its peak resident memory is its own and thread
settings do not leak between runtimes. Tokenization and masking happen before the clock starts, for
the baseline and our runtimes alike; the clock covers batching, the model and the loss arithmetic.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lucid_eval.harness.batching import CPU_BATCH_SHAPE
from lucid_eval.models.padding import pad_batch
from lucid_eval.totals import Totals

BASELINE = "baseline"


@dataclass(frozen=True)
class Job:
    name: str  # "baseline" or a runtime name
    export_dir: str
    corpus: str
    seed: int = 0
    max_length: int = 128
    threads: int = 2
    token_budget: int = CPU_BATCH_SHAPE[0]
    max_batch: int = CPU_BATCH_SHAPE[1]
    baseline_batch: int = 32


@dataclass
class Measurement:
    name: str
    implementation: str
    precision: str
    providers: str
    threads: int
    pairs: int
    real_tokens: int
    masked_tokens: int
    seconds: float
    mlm_loss: float
    mlm_accuracy: float
    nsp_loss: float
    nsp_accuracy: float
    peak_rss_mb: float


def _examples(job: Job):
    from lucid_eval.export.bundle import ExportBundle
    from lucid_eval.harness.corpus import CorpusReader
    from lucid_eval.harness.masking import encode_chunk

    bundle = ExportBundle.load(job.export_dir)
    records = list(CorpusReader(job.corpus))
    examples = encode_chunk(records, bundle.tokenizer, seed=job.seed, max_length=job.max_length, mlm_probability=0.15)
    return bundle, examples


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Unlike ru_maxrss, it is not inherited from the
    parent across fork + exec, so a spawned measurement reports only its own memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _baseline(job: Job) -> Measurement:
    """The usual loop: corpus order, batch 32, pad to the batch's longest, full B x T x V logits,
    cross-entropy in PyTorch; Hugging Face's BertForPreTraining when installed, else ours."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(job.threads)
    bundle, examples = _examples(job)
    try:
        from transformers import BertForPreTraining

        model, implementation = (
            BertForPreTraining.from_pretrained(str(bundle.checkpoint)),
            "transformers.BertForPreTraining",
        )
    except ImportError:
        from lucid_eval.models.model import BERTForPreTraining

        model, implementation = (
            BERTForPreTraining.from_pretrained(bundle.checkpoint),
            "lucid_eval BERTForPreTraining (full logits)",
        )
    model.eval()
    totals = Totals()
    start = time.perf_counter()
    for ids, mask, types, labels, nsp in _padded_groups(examples, job.baseline_batch, bundle.tokenizer.pad_token_id):
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
            scores, nsp_scores = (
                (out.prediction_logits, out.seq_relationship_logits) if hasattr(out, "prediction_logits") else out
            )
            totals.add(
                **_mlm_sums(scores, labels),
                nsp_loss_sum=F.cross_entropy(nsp_scores, nsp, reduction="sum").item(),
                nsp_correct=(nsp_scores.argmax(-1) == nsp).sum().item(),
                nsp_count=len(nsp),
            )
    seconds = time.perf_counter() - start
    return _measurement(job.name, implementation, "fp32", f"torch:cpu ({implementation})", job.threads, examples,
                        totals, seconds)  # fmt: skip


def _padded_groups(examples, size: int, pad: int):
    """The usual evaluation batches: corpus order, `size` pairs padded to the longest, as torch
    tensors (ids, attention mask, token types, MLM labels with -100 elsewhere, NSP labels)."""
    import torch

    for begin in range(0, len(examples), size):
        group = examples[begin : begin + size]
        tokens = pad_batch(
            {"input_ids": [e.input_ids for e in group], "token_type_ids": [e.type_ids for e in group]},
            pad_token_id=pad,
        )
        ids, mask, types = (torch.from_numpy(tokens[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
        labels = torch.full_like(ids, -100)  # (B, T)
        for row, e in enumerate(group):
            labels[row, torch.from_numpy(e.positions)] = torch.from_numpy(e.labels)
        yield ids, mask, types, labels, torch.tensor([max(e.nsp_label, 0) for e in group])


def _mlm_sums(scores, labels) -> dict[str, float]:
    """MLM loss sum, hits and count from full (B, T, V) logits and labels (-100: not masked)."""
    import torch.nn.functional as F

    valid = labels != -100
    return {
        "mlm_loss_sum": F.cross_entropy(
            scores.reshape(-1, scores.shape[-1]), labels.reshape(-1), reduction="sum"
        ).item(),
        "mlm_correct": (scores.argmax(-1)[valid] == labels[valid]).sum().item(),
        "mlm_count": valid.sum().item(),
    }


OPTIMUM = "optimum"


def _optimum(job: Job) -> Measurement:
    """The peer a user of ONNX Runtime would pick: Optimum's ORTModelForMaskedLM on an Optimum
    fill-mask export of the same checkpoint, evaluated in the usual loop (MLM only: the fill-mask
    graph has no NSP head). Not installed: a row that says so."""
    try:
        from optimum.exporters.onnx import main_export
        from optimum.onnxruntime import ORTModelForMaskedLM
    except ImportError:
        return Measurement(job.name, "not installed (pip install -e '.[optimum]' in its own venv)", "fp32", "", job.threads,
                           0, 0, 0, float("nan"), *[float("nan")] * 4, _peak_rss_mb())  # fmt: skip
    import onnxruntime as ort
    import torch

    torch.set_num_threads(job.threads)
    bundle, examples = _examples(job)
    graph_dir = Path(job.export_dir).parent / "optimum-fill-mask"
    if not (graph_dir / "model.onnx").exists():
        main_export(str(bundle.checkpoint), output=graph_dir, task="fill-mask")
    options = ort.SessionOptions()
    options.intra_op_num_threads = job.threads
    model = ORTModelForMaskedLM.from_pretrained(graph_dir, provider="CPUExecutionProvider", session_options=options)
    totals = Totals()
    start = time.perf_counter()
    for ids, mask, types, labels, _ in _padded_groups(examples, job.baseline_batch, bundle.tokenizer.pad_token_id):
        with torch.inference_mode():
            scores = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
            totals.add(**_mlm_sums(torch.as_tensor(scores), labels))
    seconds = time.perf_counter() - start
    providers = ",".join(model.model.get_providers())
    return _measurement(job.name, "optimum ORTModelForMaskedLM (fill-mask)", "fp32", providers, job.threads, examples,
                        totals, seconds)  # fmt: skip


def _runtime(job: Job) -> Measurement:
    from lucid_eval.harness.batching import iter_batches
    from lucid_eval.runtimes import create_runtime

    bundle, examples = _examples(job)
    runtime = create_runtime(job.name, bundle, threads=job.threads)
    runtime.open()
    info = runtime.info()
    batches = list(iter_batches(examples, token_budget=job.token_budget, max_batch=job.max_batch,
                                max_length=job.max_length, pad_token_id=bundle.tokenizer.pad_token_id))  # fmt: skip
    runtime.run(batches[0][1])  # warm-up: first-run allocations and kernel selection
    totals = Totals()
    start = time.perf_counter()
    for _, batch in batches:
        out = runtime.run(batch)
        totals.add(
            mlm_loss_sum=out.mlm_loss_sum.sum(),
            mlm_correct=out.mlm_correct.sum(),
            mlm_count=out.mlm_count.sum(),
            nsp_loss_sum=out.nsp_loss.sum(),
            nsp_correct=(out.nsp_logits.argmax(-1) == batch.next_sentence_labels).sum(),
            nsp_count=len(batch.next_sentence_labels),
        )
    seconds = time.perf_counter() - start
    runtime.close()
    return _measurement(job.name, info.name, info.precision, ",".join(info.providers), info.threads or job.threads,
                        examples, totals, seconds)  # fmt: skip


def profile_job(job: Job) -> dict[str, float]:
    """Seconds per ONNX Runtime operator type of `job.name`'s graph over the bench batches, from
    ONNX Runtime's profiler (one warm-up batch left out): what the model's time goes to."""
    import tempfile

    from lucid_eval.export.sessions import make_session
    from lucid_eval.harness.batching import iter_batches
    from lucid_eval.runtimes import spec

    bundle, examples = _examples(job)
    graph = bundle.path / bundle.manifest.variants[spec(job.name).variant].graphs["scoring"]
    batches = [b for _, b in iter_batches(examples, token_budget=job.token_budget, max_batch=job.max_batch,
                                          max_length=job.max_length, pad_token_id=bundle.tokenizer.pad_token_id)]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="lucid-eval-profile-") as tmp:
        session = make_session(graph, "cpu", threads=job.threads, profile_prefix=f"{tmp}/ort").session
        for batch in batches[:1] + batches:
            session.run(None, batch.inputs())
        events = json.loads(Path(session.end_profiling()).read_text(encoding="utf-8"))
    runs = [e for e in events if e.get("name") == "model_run"]
    warm_up_end = runs[0]["ts"] + runs[0]["dur"]
    seconds: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= warm_up_end:
            op = e["args"]["op_name"]
            seconds[op] = seconds.get(op, 0.0) + e["dur"] / 1e6
    seconds["(between operators)"] = sum(r["dur"] for r in runs[1:]) / 1e6 - sum(seconds.values())
    return dict(sorted(seconds.items(), key=lambda kv: -kv[1]))


OVERHEAD_PAIRS = 1000
OVERHEAD_RUNTIME = "ort-cpu"


def suite_overhead(job: Job) -> dict[str, float]:
    """`score` on OVERHEAD_PAIRS pairs (the bench corpus, cycled) on OVERHEAD_RUNTIME, then its
    report: the seconds of each phase and the harness's share of the model's time, i.e. reading,
    tokenising, masking, batching, journaling, tables and report over the runtime's own seconds."""
    import tempfile

    from lucid_eval.harness import ScoreConfig, score
    from lucid_eval.harness.corpus import CorpusReader
    from lucid_eval.reports.html import build_report

    records = list(CorpusReader(job.corpus))
    with tempfile.TemporaryDirectory(prefix="lucid-eval-overhead-") as tmp:
        corpus = Path(tmp) / "pairs.jsonl"
        with corpus.open("w", encoding="utf-8") as handle:
            for i in range(OVERHEAD_PAIRS):
                r = records[i % len(records)]
                label = {} if r.nsp_label is None else {"nsp_label": r.nsp_label}
                handle.write(json.dumps({"id": f"{r.id}-{i}", "text_a": r.text_a, "text_b": r.text_b, **label}) + "\n")
        config = ScoreConfig(export_dir=Path(job.export_dir), corpus=corpus, runtimes=[OVERHEAD_RUNTIME], seed=job.seed,
                             max_length=job.max_length, token_budget=job.token_budget, max_batch=job.max_batch,
                             threads=job.threads, out_dir=Path(tmp) / "run", progress=False)  # fmt: skip
        report_s: list[float] = []

        def timed_report(out: Path) -> Path:
            start = time.perf_counter()
            page = build_report(out)
            report_s.append(time.perf_counter() - start)
            return page

        result = score(config, report=timed_report)
    seconds = {**result.run_info.engine["seconds"], "report": report_s[0]}
    model = seconds.pop("model")
    return {"pairs": OVERHEAD_PAIRS, "runtime": OVERHEAD_RUNTIME, "model_s": model,
            **{f"{k}_s": v for k, v in seconds.items()}, "share": sum(seconds.values()) / model}  # fmt: skip


def _measurement(
    name, implementation, precision, providers, threads, examples, totals: Totals, seconds: float
) -> Measurement:
    return Measurement(
        name=name,
        implementation=implementation,
        precision=precision,
        providers=providers,
        threads=int(threads),
        pairs=len(examples),
        real_tokens=int(sum(e.n_tokens for e in examples)),
        masked_tokens=totals.mlm_count,
        seconds=seconds,
        mlm_loss=totals.mlm_loss,
        mlm_accuracy=totals.mlm_accuracy,
        nsp_loss=totals.nsp_loss,
        nsp_accuracy=totals.nsp_accuracy,
        peak_rss_mb=_peak_rss_mb(),
    )


def measure(job: Job) -> dict:
    """Entry point of a spawned process: one measurement as a plain dict."""
    run = {BASELINE: _baseline, OPTIMUM: _optimum}.get(job.name, _runtime)
    result = run(job)
    return asdict(result)


def matmul_job(threads: int) -> dict[str, float]:
    from lucid_eval.bench.flops import matmul_rates

    return matmul_rates(threads)


def run_isolated(fn, *args):
    """Run fn(*args) in a fresh spawned process and return its result."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def corpus_batches(job: Job) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]:
    """Real and masked token counts per example (for the useful-FLOP count), and the (pairs,
    padded length, masked slots) of each batch our runtimes get: one tokenization for both."""
    from lucid_eval.harness.batching import iter_batches

    bundle, examples = _examples(job)
    batches = iter_batches(examples, token_budget=job.token_budget, max_batch=job.max_batch,
                           max_length=job.max_length, pad_token_id=bundle.tokenizer.pad_token_id)  # fmt: skip
    shapes = [(*b.input_ids.shape, b.masked_lm_positions.shape[1]) for _, b in batches]
    return np.array([e.n_tokens for e in examples]), np.array([e.n_masked for e in examples]), shapes


def model_bytes(export_dir: str | Path) -> int:
    from lucid_eval.export.bundle import ExportBundle

    return (ExportBundle.load(export_dir).checkpoint / "model.safetensors").stat().st_size
