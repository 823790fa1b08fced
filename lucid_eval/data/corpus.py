"""The built-in English corpus: prose that ships with every CPython install, so the demo works offline.

Two sources, both part of CPython itself (PSF licence, nothing downloaded or vendored):

* `pydoc_data.topics`: the language-reference topics behind `help("if")`, one document each.
* The pure-Python standard library under `sysconfig.get_paths()["stdlib"]`, read as source
  (never imported): one document per module, its docstrings (module, classes, functions; via
  `ast`) and comment blocks (via `tokenize`) in source order, like the sections of an article.
  Packages that Linux distributions ship separately (the test suites, idlelib, tkinter, lib2to3,
  distutils, ensurepip, ...) are skipped, so every install of one Python version has the same text.

A module, not a docstring, is the document because that is what BERT's next-sentence task needs:
a random "other document" sentence should come from another topic, and a module's docstrings
split across train and held-out would leak near-copies (overloads, sibling methods).

Only prose is kept: code examples, doctests, commented-out code, grammar rules, tables, argument
lists and headings are dropped, and sentences must be mostly words. Text repeated elsewhere (a
topic that is a section of another, copied docstrings, licence headers) is kept once, so held-out
documents do not reappear in training. A document needs `MIN_SENTENCES` sentences.
The text is fixed by the Python version (`python_version()` records it); `corpus_fingerprint`
pins the exact documents so a changed install is detectable.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import platform
import re
import sysconfig
import tokenize
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lucid_eval.data.pairs import build_pairs, split_sentences, write_pairs_tsv

MIN_SENTENCES = 2
MIN_WORDS = 4
MAX_SENTENCE_CHARS = 600
# Share of whitespace-separated tokens that must be plain words, for a paragraph and a sentence.
MIN_WORDINESS = 0.7
# Packages distributions split off (Debian: idle, python3-tk, -lib2to3, -distutils, -venv, the
# test suite) or that hold no prose of their own; leaving them out keeps the corpus the same
# on every install of one Python version.
SKIPPED_TOP_LEVEL = frozenset(
    "site-packages test idlelib tkinter turtledemo turtle.py lib2to3 distutils ensurepip venv "
    "pydoc_data encodings __pycache__ lib-dynload".split()
)
TEST_DIRS = frozenset({"test", "tests", "idle_test"})  # nested test suites (ctypes/test, ...) go with `test`
_WORD = re.compile(r"^[(\"'“‘]?[A-Za-z][A-Za-z'’-]*[)\"'”’,.;:!?]*$")
_UNDERLINE = re.compile(r"^\s*([*=\-~^\"#+])\1{2,}\s*$")
_BULLET = re.compile(r"^\s*(?:[*\-•]|\d+[.)])\s+")


@dataclass(frozen=True, slots=True)
class Document:
    """One document: a unique name (`topics/<key>`, `stdlib/<path>.py`) and its sentences in order."""

    name: str
    sentences: list[str]


def python_version() -> str:
    """The Python version whose standard library the corpus was read from."""
    return platform.python_version()


def _wordiness(text: str) -> float:
    tokens = text.split()
    return sum(bool(_WORD.match(t)) for t in tokens) / max(len(tokens), 1)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _prose_paragraph(lines: list[str]) -> str | None:
    """The prose of one paragraph (lines between blank lines), or None for code/headings/tables.

    Code blocks are indented (3+ spaces in the topics, 4 in docstrings) or are doctests; lines
    indented 3+ beyond the paragraph's first line are argument lists or code and are dropped,
    while bullet continuations (indented 2) are kept.
    """
    if any(_UNDERLINE.match(line) for line in lines):
        return None
    if _indent(lines[0]) >= 3 or any(line.lstrip().startswith((">>>", "...", "$ ")) for line in lines):
        return None
    base = _indent(lines[0])
    kept = [_BULLET.sub("", line).strip() for line in lines if _indent(line) < base + 3]
    text = " ".join(kept)
    if len(text.split()) < MIN_WORDS or _wordiness(text) < MIN_WORDINESS:
        return None
    return text


def prose_sentences(text: str) -> list[str]:
    """Sentences of the prose paragraphs of a docstring or topic text."""
    sentences: list[str] = []
    paragraph: list[str] = []
    for line in [*text.expandtabs().splitlines(), ""]:
        if line.strip():
            paragraph.append(line)
            continue
        if paragraph and (prose := _prose_paragraph(paragraph)):
            for sentence in split_sentences(prose):
                words = len(sentence.split())
                short_enough = len(sentence) <= MAX_SENTENCE_CHARS
                if words >= MIN_WORDS and short_enough and _wordiness(sentence) >= MIN_WORDINESS:
                    sentences.append(sentence)
        paragraph = []
    return sentences


def _docstrings(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, docstring) of the module, its classes and functions."""
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef))]
    return [(node.body[0].lineno, doc) for node in nodes if (doc := ast.get_docstring(node))]


def _comment_blocks(source: bytes) -> list[tuple[int, str]]:
    """(first line, text) of each run of consecutive whole-line comments, '#' stripped."""
    blocks: list[tuple[int, str]] = []
    lines: list[str] = []
    start = previous = -2
    for token in tokenize.tokenize(io.BytesIO(source).readline):
        if token.type != tokenize.COMMENT or not token.line.lstrip().startswith("#"):
            continue
        row = token.start[0]
        if row != previous + 1 and lines:
            blocks.append((start, "\n".join(lines)))
            lines = []
        if not lines:
            start = row
        lines.append(re.sub(r"^#+ ?", "", token.string))
        previous = row
    if lines:
        blocks.append((start, "\n".join(lines)))
    return blocks


def _stdlib_files(root: Path) -> list[Path]:
    """The modules read, sorted: no skipped package, no test directory, no build-specific file."""
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if (
            parts[0] in SKIPPED_TOP_LEVEL
            or TEST_DIRS.intersection(parts[:-1])
            or path.name.startswith("_sysconfigdata")
        ):
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _topic_documents() -> list[tuple[str, list[str]]]:
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return [(f"topics/{key}", prose_sentences(topics[key])) for key in sorted(topics)]


def _stdlib_documents() -> list[tuple[str, list[str]]]:
    """One document per module: the prose of its docstrings and comment blocks in source order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    documents: list[tuple[str, list[str]]] = []
    for path in _stdlib_files(root):
        source = path.read_bytes()
        try:
            texts = sorted(_docstrings(ast.parse(source, filename=str(path))) + _comment_blocks(source))
        except (SyntaxError, ValueError, tokenize.TokenError):  # a file for another Python version
            continue
        sentences = [sentence for _, text in texts for sentence in prose_sentences(text)]
        documents.append((f"stdlib/{path.relative_to(root).as_posix()}", sentences))
    return documents


@cache
def _builtin_documents() -> tuple[Document, ...]:
    """Deduplicated documents in source order. Longest documents claim their sentences first;
    a later document loses the sentences already claimed and is dropped when that leaves fewer
    than `MIN_SENTENCES` or under half of it (a section copied from a larger topic)."""
    raw = [(name, sentences) for name, sentences in _topic_documents() + _stdlib_documents() if sentences]
    claimed: set[str] = set()
    kept: dict[int, list[str]] = {}
    for index in sorted(range(len(raw)), key=lambda i: (-len(raw[i][1]), raw[i][0])):
        sentences = raw[index][1]
        fresh = [s for s in sentences if s not in claimed]
        claimed.update(sentences)
        if len(fresh) >= MIN_SENTENCES and 2 * len(fresh) >= len(sentences):
            kept[index] = fresh
    return tuple(Document(raw[index][0], kept[index]) for index in sorted(kept))


def builtin_documents() -> list[Document]:
    """The built-in corpus: pydoc topics, then standard-library docstrings and comments, in a fixed order."""
    return [Document(d.name, list(d.sentences)) for d in _builtin_documents()]


def _unit_interval(key: str) -> float:
    """A stable hash of `key` in [0, 1): the same on every run and machine (unlike `hash()`)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def split_documents(documents: list[Document], heldout_fraction: float = 0.1) -> tuple[list[Document], list[Document]]:
    """(train, heldout): a document is held out when the stable hash of its name falls below
    `heldout_fraction`; independent of the other documents, and order is kept."""
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    heldout = [d for d in documents if _unit_interval(d.name) < heldout_fraction]
    train = [d for d in documents if _unit_interval(d.name) >= heldout_fraction]
    return train, heldout


def corpus_fingerprint(documents: list[Document]) -> str:
    """SHA-256 over names and sentences: equal fingerprints mean the same corpus, byte for byte."""
    digest = hashlib.sha256()
    for document in documents:
        digest.update(json.dumps([document.name, document.sentences], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def corpus_stats(documents: list[Document]) -> dict[str, int]:
    """Documents, sentences and characters (sentence text only) of a corpus."""
    return {
        "documents": len(documents),
        "sentences": sum(len(d.sentences) for d in documents),
        "characters": sum(len(s) for d in documents for s in d.sentences),
    }


def write_heldout_pairs(
    path: str | Path, n_pairs: int | None = 1000, seed: int = 0, heldout_fraction: float = 0.1, sentences: int = 1
) -> int:
    """Write NSP pairs from the held-out built-in documents (via `build_pairs`) as a labelled TSV;
    return the row count. A sidecar `<path>.json` records the Python version, corpus fingerprint
    and arguments, since the text depends on the Python install it was read from."""
    _, heldout = split_documents(builtin_documents(), heldout_fraction)
    pairs = build_pairs([d.sentences for d in heldout], seed=seed, n_pairs=n_pairs, sentences=sentences)
    count = write_pairs_tsv(pairs, path)
    meta = {
        "source": "lucid_eval.data.corpus builtin held-out documents",
        "python_version": python_version(),
        "corpus_fingerprint": corpus_fingerprint(heldout),
        "heldout": corpus_stats(heldout),
        "heldout_fraction": heldout_fraction,
        "seed": seed,
        "sentences_per_segment": sentences,
        "n_pairs": count,
    }
    Path(f"{path}.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return count
