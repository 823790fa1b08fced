"""Test helpers: a stand-in export bundle, generated corpora and dummy runtimes; run as a script,
it scores a corpus with them (the interrupted-and-resumed test kills it with SIGKILL)."""

from __future__ import annotations

import argparse
import csv
import os
import pydoc_data.topics
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lucid_eval.harness import ScoreConfig, score
from lucid_eval.harness.corpus import PairRecord
from lucid_eval.models.config import BERTConfig
from lucid_eval.models.tokenizer import BERTTokenizerFast
from lucid_eval.runtimes.dummy import DummyRuntime

TIMING_COLUMNS = ["wall_s", "pairs_per_second", "tokens_per_second", "p50_ms", "p95_ms"]


@dataclass
class StandInBundle:
    """What `score` reads from an ExportBundle."""

    tokenizer: BERTTokenizerFast
    config: BERTConfig
    manifest_sha256: str = "0" * 64
    path: Path = Path("stand-in-export")


def make_bundle(tokenizer: BERTTokenizerFast) -> StandInBundle:
    return StandInBundle(tokenizer, BERTConfig.tiny(vocab_size=tokenizer.vocab_size))


def sentences(n: int) -> list[str]:
    """n+1 short English sentences from CPython's docs, deterministic."""
    text = " ".join(pydoc_data.topics.topics.values())
    found = [" ".join(s.split()) for s in re.split(r"(?<=\.)\s", text)]
    found = [s for s in found if 4 <= len(s.split()) <= 30 and "\t" not in s]
    return found[: n + 1]


def records(n: int, *, labels: bool = True, start: int = 0) -> list[PairRecord]:
    """Pairs start..start+n-1 as CorpusReader would yield them (label alternates)."""
    texts = sentences(start + n)
    return [
        PairRecord(i, f"p{i}", i + 2, texts[i], texts[i + 1], i % 2 if labels else None)
        for i in range(start, start + n)
    ]


def write_corpus(path: Path, n: int, *, labels: bool = True, bad_rows: int = 0) -> Path:
    """A TSV corpus of n pairs (consecutive sentences; label alternates) plus `bad_rows` broken rows."""
    texts = sentences(n)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "text_a", "text_b", "nsp_label"] if labels else ["id", "text_a", "text_b"])
        for i in range(n):
            writer.writerow([f"pair-{i}", texts[i], texts[i + 1], *([i % 2] if labels else [])])
        for _ in range(bad_rows):
            handle.write("only one column\n")
    return path


def factory(vocab_size: int, delay_s: float = 0.0, **kinds: dict) -> Callable[[str], DummyRuntime]:
    """name -> DummyRuntime; `kinds` maps a name to DummyRuntime options (default: exact copy)."""
    return lambda name: DummyRuntime(name, vocab_size, delay_s=delay_s, **kinds.get(name, {}))


class FaultAtBatch(DummyRuntime):
    """A dummy runtime that calls `fault()` during its n-th batch (a lost device, a Ctrl-C)."""

    def __init__(self, *args, at_batch: int, fault: Callable[[], None], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls, self.at_batch, self.fault = 0, at_batch, fault

    def run(self, batch):
        self.calls += 1
        if self.calls == self.at_batch:
            self.fault()
        return super().run(batch)


class ExitAtBatch(DummyRuntime):
    """A dummy runtime whose process exits (a crashed Ray worker) at the n-th batch any process of
    it scores (`count_file` keeps the count across processes and restarts); `once`: only there,
    otherwise at every later batch too (a worker that dies again whenever it is restarted)."""

    def __init__(self, *args, at_batch: int, count_file: Path, once: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at_batch, self.count_file, self.once = at_batch, count_file, once

    def run(self, batch):
        n = (int(self.count_file.read_text()) if self.count_file.exists() else 0) + 1
        tmp = self.count_file.with_name(f"{self.count_file.name}.{os.getpid()}")
        tmp.write_text(str(n))
        os.replace(tmp, self.count_file)  # atomic: the other workers never read a half-written count
        if n == self.at_batch or (not self.once and n > self.at_batch):
            os._exit(1)
        return super().run(batch)


def exiting_factory(vocab_size: int, name: str, delay_s: float = 0.0, **options) -> Callable[[str], DummyRuntime]:
    """`factory`, but runtime `name` is an ExitAtBatch with `options` (at_batch, count_file, once,
    and DummyRuntime's)."""
    make = factory(vocab_size, delay_s)
    return lambda n: ExitAtBatch(n, vocab_size, delay_s=delay_s, **options) if n == name else make(n)


def config(corpus: Path, out: Path, runtimes: list[str], **overrides) -> ScoreConfig:
    """Small batches and chunks, so a tiny corpus still spans several of each."""
    options = {"max_length": 64, "token_budget": 512, "max_batch": 8, "chunk_size": 16, "progress": False}
    return ScoreConfig("stand-in-export", corpus, out, runtimes, **{**options, **overrides})


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--tokenizer", "--corpus", "--out"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    bundle = make_bundle(BERTTokenizerFast.from_pretrained(args.tokenizer))
    make = factory(bundle.config.vocab_size, args.delay, noisy={"noise": 0.3, "precision": "int8"})
    score(config(args.corpus, args.out, ["ref", "noisy"], resume=args.resume), bundle=bundle, runtime_factory=make)


if __name__ == "__main__":
    main()
