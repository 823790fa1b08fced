"""Pretrain a small BERT (MLM + NSP) from scratch on a document corpus, on CPU, reproducibly.

The demo checkpoint in `lucid_eval/data/demo_model/` is `pretrain(None, out, PretrainConfig.preset("demo"))`:
the built-in corpus (`lucid_eval.data.corpus`) split by document into train and held-out; a
WordPiece vocabulary learned on the train documents only (deterministically, see `wordpiece.py`);
BERT's recipe: segment pairs of several consecutive sentences up to a token budget (or single
sentences, the shape of the evaluation pairs), half followed by their true continuation and half by
text from another document, fresh pairs and masks every epoch, the model's own `get_loss` (whose
vocabulary head runs on masked positions only, which halves the step time of this small model),
AdamW (fused) with linear warm-up and linear decay, gradient clipping. Held-out numbers are
measured on the pairs `build_pairs` makes from the held-out documents, i.e. what `lucid-eval` scores.
"""

from __future__ import annotations

import json
import platform
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lucid_eval.data.corpus import (
    Document,
    builtin_documents,
    corpus_fingerprint,
    corpus_stats,
    python_version,
    split_documents,
)
from lucid_eval.data.pairs import build_pairs, read_documents
from lucid_eval.models.model import BERTForPreTraining
from lucid_eval.models.padding import pad_batch
from lucid_eval.models.tokenizer import BERTTokenizerFast
from lucid_eval.totals import Totals
from lucid_eval.train.config import PretrainConfig
from lucid_eval.train.wordpiece import train_wordpiece

IGNORE_INDEX = -100


@dataclass
class PretrainResult:
    """Where the checkpoint went, its final held-out numbers and the whole training log."""

    out_dir: Path
    final: dict[str, float]
    baseline_mlm_accuracy: float
    seconds: float
    log: dict[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class _Example:
    a: list[int]
    b: list[int]
    nsp_label: int


def _load_corpus(corpus: str | Path | Sequence[Document] | None) -> tuple[list[Document], str]:
    """Documents and a description of where they came from."""
    if corpus is None:
        return builtin_documents(), "builtin"
    if isinstance(corpus, str | Path):
        return [Document(f"doc{i}", sentences) for i, sentences in enumerate(read_documents(corpus))], str(corpus)
    return list(corpus), "documents"


def _truncate(a: list[int], b: list[int], budget: int) -> None:
    """Longest-first: drop the last token of the longer segment until the pair fits."""
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()


def _document_examples(
    docs: list[list[list[int]]], d: int, rng: random.Random, config: PretrainConfig
) -> list[_Example]:
    """BERT's `create_instances_from_document`: walk document `d`, cutting chunks of consecutive
    sentences up to `segment_tokens`, split each into A and B; B is the true continuation (label
    0) or, by a fair coin, sentences from another document (label 1, unused A sentences reused)."""
    budget = config.max_length - 3
    chunk = min(config.segment_tokens, config.max_length) - 3
    doc, examples, i = docs[d], [], 0
    while i < len(doc) - 1:
        single = rng.random() < config.single_sentence_prob
        target = rng.randint(8, chunk) if rng.random() < config.short_seq_prob else chunk
        j, length = i + 2, len(doc[i]) + len(doc[i + 1])  # a chunk holds two sentences at least
        while not single and j < len(doc) and length + len(doc[j]) <= target:
            length += len(doc[j])
            j += 1
        a_end = i + 1 if single or j - i == 2 else rng.randint(i + 1, j - 1)
        a = [t for s in doc[i:a_end] for t in s]
        if rng.random() < 0.5:
            label, b, i = 0, [t for s in doc[a_end:j] for t in s], j
        else:
            other = d
            while other == d:
                other = rng.randrange(len(docs))
            k, b = rng.randrange(len(docs[other])), []
            # whole sentences only, like the true continuation: a cut-off B must not give the label away
            while k < len(docs[other]) and (not b or (not single and len(a) + len(b) + len(docs[other][k]) <= target)):
                b.extend(docs[other][k])
                k += 1
            label, i = 1, a_end
        _truncate(a, b, budget)
        if a and b:
            examples.append(_Example(a, b, label))
    return examples


def _batches(
    docs: list[list[list[int]]], config: PretrainConfig, tokenizer: BERTTokenizerFast
) -> Iterator[dict[str, torch.Tensor]]:
    """Training batches forever: each epoch draws fresh pairs, groups similar lengths into
    batches (less padding) and shuffles the batches; all randomness from one seeded stream."""
    rng = random.Random(config.seed)
    usable = [d for d, doc in enumerate(docs) if len(doc) >= 2]
    while True:
        order = usable[:]
        rng.shuffle(order)
        examples = [e for d in order for e in _document_examples(docs, d, rng, config)]
        rng.shuffle(examples)
        pool = config.batch_size * 50
        batches = []
        for start in range(0, len(examples), pool):
            chunk = sorted(examples[start : start + pool], key=lambda e: len(e.a) + len(e.b))
            batches += [chunk[k : k + config.batch_size] for k in range(0, len(chunk), config.batch_size)]
        rng.shuffle(batches)
        for batch in batches:
            yield _collate(batch, tokenizer)


def _collate(batch: list[_Example], tokenizer: BERTTokenizerFast) -> dict[str, torch.Tensor]:
    """[CLS] A [SEP] B [SEP], right-padded to the longest pair of the batch."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    columns = {
        "input_ids": [[cls, *e.a, sep, *e.b, sep] for e in batch],
        "token_type_ids": [[0] * (len(e.a) + 2) + [1] * (len(e.b) + 1) for e in batch],
        "special_tokens_mask": [[1, *[0] * len(e.a), 1, *[0] * len(e.b), 1] for e in batch],
    }
    padded = pad_batch(columns, pad_token_id=tokenizer.pad_token_id)  # (B, T) each
    return {
        **{k: torch.from_numpy(v) for k, v in padded.items()},
        "nsp_labels": torch.tensor([e.nsp_label for e in batch]),
    }


def _mask(model: BERTForPreTraining, batch: dict[str, torch.Tensor], tokenizer, config, generator):
    return model.create_masked_lm_inputs(
        batch["input_ids"],
        batch["attention_mask"],
        batch["special_tokens_mask"],
        mask_token_id=tokenizer.mask_token_id,
        mlm_probability=config.mlm_probability,
        ignore_index=IGNORE_INDEX,
        generator=generator,
    )


def _eval_set(model, heldout: list[Document], tokenizer, config) -> list[dict[str, torch.Tensor]]:
    """Held-out NSP pairs (as `build_pairs` makes them), tokenized and masked once, length-sorted."""
    pairs = build_pairs([d.sentences for d in heldout], seed=config.eval_seed, n_pairs=config.eval_pairs)
    pairs = sorted(pairs, key=lambda p: len(p.text_a) + len(p.text_b))
    generator = torch.Generator().manual_seed(config.eval_seed)
    batches = []
    for start in range(0, len(pairs), config.eval_batch_size):
        chunk = pairs[start : start + config.eval_batch_size]
        batch = tokenizer.batch_encode_plus(
            [p.text_a for p in chunk], [p.text_b for p in chunk], max_length=config.max_length, return_tensors=True
        )
        batch["input_ids"], batch["mlm_labels"] = _mask(model, batch, tokenizer, config, generator)
        batch["nsp_labels"] = torch.tensor([p.nsp_label for p in chunk])
        batches.append(batch)
    return batches


@torch.no_grad()
def evaluate(model: BERTForPreTraining, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """MLM loss/accuracy over all masked tokens and NSP loss/accuracy over all pairs (NaN over none)."""
    was_training = model.training
    model.eval()
    totals = Totals()
    for batch in batches:
        scores, nsp_scores = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        labels, selected = batch["mlm_labels"], batch["mlm_labels"] != IGNORE_INDEX  # (B, T)
        nsp_labels = batch["nsp_labels"]  # (B,)
        totals.add(
            mlm_loss_sum=F.cross_entropy(scores[selected].float(), labels[selected], reduction="sum").item(),
            mlm_correct=(scores[selected].argmax(-1) == labels[selected]).sum().item(),
            mlm_count=selected.sum().item(),
            nsp_loss_sum=F.cross_entropy(nsp_scores.float(), nsp_labels, reduction="sum").item(),
            nsp_correct=(nsp_scores.argmax(-1) == nsp_labels).sum().item(),
            nsp_count=len(nsp_labels),
        )
    model.train(was_training)
    return {
        "mlm_loss": totals.mlm_loss,
        "mlm_accuracy": totals.mlm_accuracy,
        "nsp_loss": totals.nsp_loss,
        "nsp_accuracy": totals.nsp_accuracy,
        "masked_tokens": totals.mlm_count,
        "pairs": totals.nsp_count,
    }


def _optimizer(model: BERTForPreTraining, config: PretrainConfig):
    """AdamW without decay on biases and LayerNorm; linear warm-up, then linear decay to 0."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6, fused=True)

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        return max(0.0, (config.steps - step) / max(1, config.steps - config.warmup_steps))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def pretrain(
    corpus: str | Path | Sequence[Document] | None,
    out_dir: str | Path,
    config: PretrainConfig | None = None,
    progress: bool = True,
) -> PretrainResult:
    """Train BERTForPreTraining from scratch on `corpus` (None: the built-in corpus; a path: a
    plain-text file read by `read_documents`; or documents) and save an HF-format checkpoint with
    its tokenizer and `training_log.json` to `out_dir`. Same seed and threads → same weights."""
    config = config or PretrainConfig.preset("demo")
    out_dir = Path(out_dir)
    started = time.perf_counter()
    with _reproducible_torch(config.threads):
        run = _setup(corpus, config)
        curve = _train(run, config, started, progress)
        seconds = time.perf_counter() - started
        log = _training_log(run, config, curve, seconds)
        _save(out_dir, run, log)
    return PretrainResult(out_dir, curve[-1], run.baseline["mlm_accuracy"], seconds, log)


@contextmanager
def _reproducible_torch(threads: int) -> Iterator[None]:
    """`threads` intra-op threads and deterministic algorithms while training; the caller's settings after."""
    saved_threads, saved_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        torch.use_deterministic_algorithms(saved_deterministic)


@dataclass
class _Run:
    """What one run trains and is measured on, built before the first step."""

    source: str
    train_docs: list[Document]
    heldout: list[Document]
    tokenizer: BERTTokenizerFast
    encoded: list[list[list[int]]]  # token ids per sentence per train document
    model: BERTForPreTraining
    eval_batches: list[dict[str, torch.Tensor]]
    baseline: dict[str, Any]


def _setup(corpus: str | Path | Sequence[Document] | None, config: PretrainConfig) -> _Run:
    """Split the corpus, learn the vocabulary, and build the seeded model and the held-out set."""
    documents, source = _load_corpus(corpus)
    train_docs, heldout = split_documents(documents, config.heldout_fraction)
    if len(train_docs) < 2 or len(heldout) < 2:
        raise ValueError(f"need two train and two held-out documents, got {len(train_docs)} and {len(heldout)}")
    tokenizer = train_wordpiece([" ".join(d.sentences) for d in train_docs], config.vocab_size)
    tokenizer.model_max_length = config.max_length
    encoded = _encode_documents(train_docs, tokenizer, config.max_length)
    torch.manual_seed(config.seed)
    model = BERTForPreTraining(config.model_config(tokenizer.vocab_size))
    eval_batches = _eval_set(model, heldout, tokenizer, config)
    baseline = _baseline(encoded, eval_batches, tokenizer)
    return _Run(source, train_docs, heldout, tokenizer, encoded, model, eval_batches, baseline)


def _train(run: _Run, config: PretrainConfig, started: float, progress: bool) -> list[dict[str, float]]:
    """`config.steps` optimisation steps; the held-out curve, a point every `eval_every` steps and at the end."""
    model = run.model
    optimizer, scheduler = _optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    batches = _batches(run.encoded, config, run.tokenizer)
    curve: list[dict[str, float]] = []
    running, seen = 0.0, 0
    model.train()
    bar = tqdm(total=config.steps, desc="pretrain", disable=not progress, unit="step")
    for step in range(1, config.steps + 1):
        loss = _step(run, next(batches), config, generator, optimizer, scheduler)
        running, seen = running + loss, seen + 1
        bar.update()
        bar.set_postfix(loss=f"{loss:.3f}")
        if step % config.eval_every == 0 or step == config.steps:
            point = {"step": step, "train_loss": running / seen, "lr": scheduler.get_last_lr()[0],
                     "seconds": time.perf_counter() - started, **evaluate(model, run.eval_batches)}  # fmt: skip
            curve.append(point)
            running, seen = 0.0, 0
            if progress:
                bar.write(
                    f"step {step}: held-out MLM loss {point['mlm_loss']:.3f} acc {point['mlm_accuracy']:.3f}, "
                    f"NSP loss {point['nsp_loss']:.3f} acc {point['nsp_accuracy']:.3f}"
                )
    bar.close()
    model.eval()
    return curve


def _step(run: _Run, batch: dict[str, torch.Tensor], config: PretrainConfig, generator, optimizer, scheduler) -> float:
    """One update on a fresh masking of `batch`; the loss it was computed from."""
    masked, labels = _mask(run.model, batch, run.tokenizer, config, generator)
    loss = run.model.get_loss(
        labels,
        batch["nsp_labels"],
        masked,
        batch["attention_mask"],
        batch["token_type_ids"],
        nsp_weight=config.nsp_weight,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), config.max_grad_norm)
    optimizer.step()
    scheduler.step()
    return loss.item()


def _training_log(run: _Run, config: PretrainConfig, curve: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    """`training_log.json`: the recipe, the corpus and its fingerprints, the curve and the versions."""
    return {
        "config": asdict(config),
        "model_config": run.model.config.to_dict(),
        "corpus": {
            "source": run.source,
            "python_version": python_version(),
            "heldout_fraction": config.heldout_fraction,
            "train": {**corpus_stats(run.train_docs), "fingerprint": corpus_fingerprint(run.train_docs)},
            "heldout": {**corpus_stats(run.heldout), "fingerprint": corpus_fingerprint(run.heldout)},
        },
        "curve": curve,
        "final": curve[-1],
        "baseline": run.baseline,
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "seconds": seconds,
        "torch_version": torch.__version__,
        "python_version": python_version(),
        "platform": platform.platform(),
        "threads": config.threads,
    }


def _save(out_dir: Path, run: _Run, log: dict[str, Any]) -> None:
    """The checkpoint, its tokenizer and the training log, side by side."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run.model.save_pretrained(out_dir)
    run.tokenizer.save_pretrained(out_dir)
    (out_dir / "training_log.json").write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")


def _encode_documents(docs: list[Document], tokenizer: BERTTokenizerFast, max_length: int) -> list[list[list[int]]]:
    """Token ids of every sentence (no [CLS]/[SEP]), per document."""
    flat = [s for d in docs for s in d.sentences]
    ids = iter([e.ids[1:-1] for e in tokenizer.encode_batch(flat, max_length=max_length)])
    return [[next(ids) for _ in d.sentences] for d in docs]


def _baseline(encoded: list[list[list[int]]], eval_batches, tokenizer: BERTTokenizerFast) -> dict[str, Any]:
    """Always predicting the train corpus's most frequent token: its accuracy on held-out masked tokens."""
    counts = torch.bincount(
        torch.tensor([t for doc in encoded for s in doc for t in s]), minlength=tokenizer.vocab_size
    )
    token = int(counts.argmax())
    labels = torch.cat([b["mlm_labels"][b["mlm_labels"] != IGNORE_INDEX] for b in eval_batches])
    return {
        "most_frequent_token": tokenizer.convert_ids_to_tokens([token])[0],
        "mlm_accuracy": (labels == token).float().mean().item(),
    }
