"""Plain-text documents → BERT-style next-sentence-prediction pairs, written as a TSV corpus.

The TSV that `write_pairs_tsv` produces is read back by `CorpusReader` unchanged, so a
generated evaluation set goes through the same validation as a user's own corpus.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class PairRecord:
    """One accepted text pair; `index` counts accepted records, `line` is where the row starts."""

    index: int
    id: str
    line: int
    text_a: str
    text_b: str
    nsp_label: int | None


# WikiText "= Title =" / "= = Section = =" / "==Section==" and Markdown ATX "# Heading".
_WIKI_HEADING = re.compile(r"^\s*(=(?:\s*=)*)\s*[^=\s].*?\s*(=(?:\s*=)*)\s*$")
_MD_HEADING = re.compile(r"^(#{1,6})\s+\S")
# Common abbreviations whose trailing period does not end a sentence ("Dr. Smith", "e.g. this").
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt rev hon gen col lt sgt capt cmdr gov sen rep pres "
    "vs cf al approx dept est fig figs eq vol vols pp inc ltd co corp "
    "jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")  # "e.g", "i.e", "U.S"
# A run of terminators, closing quotes/brackets, then whitespace (always needed after ASCII
# terminators; optional after CJK ones, which are written without spaces).
_BOUNDARY = re.compile(r"([.!?…]+|[。！？]+)([\"'”’»」』)\]]*)(\s*)")
_OPENERS = "\"'“‘«「『(["
_LAST_WORD = re.compile(r"(\S+)$")


def _heading_level(line: str) -> int | None:
    """Heading depth of a WikiText or Markdown heading line, None for ordinary text."""
    if match := _MD_HEADING.match(line):
        return len(match.group(1))
    if match := _WIKI_HEADING.match(line):
        opening, closing = match.group(1).count("="), match.group(2).count("=")
        return opening if opening == closing else None
    return None


def read_documents(path: str | Path) -> list[list[str]]:
    """Read a plain-text corpus as documents, each a list of sentences.

    Rule: if the file has heading lines (WikiText `= Title =`, `== Section ==`, `= = Section = =`,
    or Markdown `#`..`######`), each heading of the shallowest level present starts a new
    document and deeper headings are dropped, so a whole article is one document; text before
    the first heading is a document of its own. Without headings, blank lines separate
    documents. Within a paragraph (lines between blank lines) lines are joined with spaces
    before sentence splitting, so wrapped prose works; sentences never span paragraphs.
    Documents with no sentences are dropped.
    """
    lines = Path(path).read_text(encoding="utf-8-sig", errors="replace").splitlines()
    levels = [_heading_level(line) for line in lines]
    present = [level for level in levels if level is not None]
    top = min(present) if present else None

    documents: list[list[str]] = []
    document: list[str] = []
    paragraph: list[str] = []
    for line, level in zip(lines, levels, strict=True):
        starts_document = (top is None and not line.strip()) or (top is not None and level == top)
        if level is not None or not line.strip():
            document.extend(split_sentences(" ".join(paragraph)))
            paragraph = []
        if starts_document and document:
            documents.append(document)
            document = []
        if level is None and line.strip():
            paragraph.append(line.strip())
    document.extend(split_sentences(" ".join(paragraph)))
    if document:
        documents.append(document)
    return documents


def _is_boundary(text: str, match: re.Match[str]) -> bool:
    """Whether a terminator match really ends a sentence (not an abbreviation or mid-sentence)."""
    terminator, _, space = match.groups()
    rest = text[match.end() :].lstrip(_OPENERS)
    if not rest:
        return False  # end of text; the tail is the last sentence anyway
    if terminator[0] in "。！？":
        return True
    if not space or rest[0].islower():
        return False
    if terminator == ".":
        word = _LAST_WORD.search(text, 0, match.start())
        token = word.group(1).lstrip(_OPENERS) if word else ""
        initial = len(token) == 1 and token.isupper() and token != "I"  # "J. R. R. Tolkien"
        if initial or token.lower() in _ABBREVIATIONS or _DOTTED.fullmatch(token):
            return False
    return True


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences with regexes (no nltk), whitespace collapsed to single spaces.

    A sentence ends at `.`, `!`, `?`, `…` (plus closing quotes/brackets) followed by whitespace
    and a word that does not start lowercase, or at CJK `。！？`. A period after a known
    abbreviation ("Dr.", "Fig.", "e.g.") or a single-letter initial does not end a sentence;
    the price is that "... in the U.S. The next ..." stays one sentence.
    """
    text = " ".join(text.split())
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        if _is_boundary(text, match):
            sentences.append(text[start : match.end(2)].strip())
            start = match.end()
    sentences.append(text[start:].strip())
    return [sentence for sentence in sentences if sentence]


def build_pairs(
    documents: list[list[str]], seed: int, n_pairs: int | None = None, sentences: int = 1
) -> list[PairRecord]:
    """BERT-style NSP pairs of segments of `sentences` consecutive sentences: for each start with
    two segments after it, a fair coin picks label 0 (the next segment of the same document) or
    label 1 (a random segment of a random different document; shorter where that document is).
    BERT's own data packs several sentences per segment; more sentences give longer pairs.

    Deterministic for a seed (`random.Random(seed)`). `n_pairs` caps the count: that many
    positions are drawn at random, kept in corpus order; there is at most one pair per position.
    Ids are `d{doc}-s{sent}` for text_a's document and first sentence; `line` is the line
    the pair occupies in the file `write_pairs_tsv` writes (header is line 1).
    """
    if sentences < 1:
        raise ValueError(f"sentences must be at least 1, got {sentences}")
    k = sentences
    positions = [(d, i) for d, sents in enumerate(documents) for i in range(len(sents) - 2 * k + 1)]
    if not positions:
        raise ValueError(f"no document has {2 * k} or more sentences, so no label-0 pair can be built")
    donors = [d for d, sents in enumerate(documents) if sents]
    if len(donors) < 2:
        raise ValueError("need at least two non-empty documents to draw random (label-1) segments")
    rng = random.Random(seed)
    if n_pairs is not None:
        if n_pairs < 1:
            raise ValueError(f"n_pairs must be at least 1, got {n_pairs}")
        positions = sorted(rng.sample(positions, min(n_pairs, len(positions))))

    def segment(d: int, start: int) -> str:
        return " ".join(documents[d][start : start + k])

    pairs: list[PairRecord] = []
    for d, i in positions:
        if rng.random() < 0.5:
            label, text_b = 0, segment(d, i + k)
        else:
            other = d
            while other == d:
                other = rng.choice(donors)
            label, text_b = 1, segment(other, rng.randrange(max(1, len(documents[other]) - k + 1)))
        index = len(pairs)
        pairs.append(
            PairRecord(
                index=index, id=f"d{d}-s{i}", line=index + 2, text_a=segment(d, i), text_b=text_b, nsp_label=label
            )
        )
    return pairs


def write_pairs_tsv(pairs: Iterable[PairRecord], out: str | Path) -> int:
    """Write pairs as a labelled TSV corpus (id, text_a, text_b, nsp_label); return the row count.

    Rows whose fields hold a carriage return are fully quoted: Python 3.11's csv writer only
    quotes characters of its line terminator ("\\n" here), and a bare "\\r" would split the row.
    """
    count = 0
    with open(out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        quote_all = csv.writer(handle, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(["id", "text_a", "text_b", "nsp_label"])
        for pair in pairs:
            if pair.nsp_label is None:
                raise ValueError(f"pair {pair.id!r} has no nsp_label; the pairs TSV is always labelled")
            row = [pair.id, pair.text_a, pair.text_b, pair.nsp_label]
            (quote_all if any("\r" in str(field) for field in row) else writer).writerow(row)
            count += 1
    return count
