"""Documents → NSP pairs: sentence splitting, document rules, BERT-style sampling, TSV round trip."""

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lucid_eval.data.pairs import build_pairs, read_documents, split_sentences, write_pairs_tsv
from lucid_eval.harness.corpus import CorpusReader


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Dr. Smith went home. He slept.", ["Dr. Smith went home.", "He slept."]),
        ("Is it? Yes! Fine.", ["Is it?", "Yes!", "Fine."]),
        ('"Stop," he said. "Now!" She ran.', ['"Stop," he said.', '"Now!"', "She ran."]),
        (
            'He said "Hi." Then he left (quietly.) Done.',
            ['He said "Hi."', "Then he left (quietly.)", "Done."],
        ),
        ("Use e.g. a list. See Fig. 3 now.", ["Use e.g. a list.", "See Fig. 3 now."]),
        (
            "J. R. R. Tolkien wrote it. So did I. Then I stopped.",
            ["J. R. R. Tolkien wrote it.", "So did I.", "Then I stopped."],
        ),
        ("Pi is 3.14. Next one.", ["Pi is 3.14.", "Next one."]),
        ("Wait... What? ok.", ["Wait...", "What? ok."]),
        ("我来了。你好！好吗？", ["我来了。", "你好！", "好吗？"]),
        ("  wrapped\nprose   line.\n\tNext  line  ", ["wrapped prose line.", "Next line"]),
        ("no terminator", ["no terminator"]),
        ("", []),
        (" \n\t ", []),
    ],
)
def test_split_sentences(text, sentences):
    assert split_sentences(text) == sentences


PROSE_TOKENS = [*"aB. !?\n\"'(。", "Dr", "e.g", "I", "U.S", "Fig"]


@given(st.lists(st.sampled_from(PROSE_TOKENS)).map("".join) | st.text())
def test_split_sentences_keeps_every_character(text):
    sentences = split_sentences(text)
    assert "".join("".join(s.split()) for s in sentences) == "".join(text.split())
    assert all(s and s == " ".join(s.split()) for s in sentences)


def test_blank_lines_split_documents_without_headings(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("First doc. It has\ntwo lines.\n\n\nSecond doc.\n  \nThird. Doc.\n", encoding="utf-8")
    assert read_documents(path) == [["First doc.", "It has two lines."], ["Second doc."], ["Third.", "Doc."]]


def test_wikitext_top_level_headings_split_documents(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text(
        "Preface text.\n"
        " = Alpha = \n\n"
        " Alpha intro. More alpha.\n\n"
        " = = History = = \n\n"
        " Alpha history.\n"
        "== Also a section ==\n"
        "Alpha late.\n"
        " = Beta = \n"
        " Beta only.\n",
        encoding="utf-8",
    )
    assert read_documents(path) == [
        ["Preface text."],
        ["Alpha intro.", "More alpha.", "Alpha history.", "Alpha late."],
        ["Beta only."],
    ]


def test_markdown_shallowest_heading_level_splits(tmp_path):
    path = tmp_path / "docs.md"
    path.write_text(
        "## One\nPara one. Still one.\n\nPara two.\n### Sub\nSub text.\n## Two\nTwo text.\n#hashtag stays.\n",
        encoding="utf-8",
    )
    assert read_documents(path) == [
        ["Para one.", "Still one.", "Para two.", "Sub text."],
        ["Two text.", "#hashtag stays."],
    ]


def make_documents(n_docs: int = 150, n_sents: int = 20) -> list[list[str]]:
    docs = [[f"Doc {d} sentence {i}." for i in range(n_sents)] for d in range(n_docs)]
    docs.append(["A lone sentence."])  # too short for label 0, still a label-1 donor
    return docs


def test_build_pairs_is_bert_style():
    docs = make_documents()
    owner = {sentence: d for d, sentences in enumerate(docs) for sentence in sentences}
    pairs = build_pairs(docs, seed=13)
    assert len(pairs) == 150 * 19  # one pair per sentence that has a successor
    labels = [p.nsp_label for p in pairs]
    assert abs(labels.count(0) / len(labels) - 0.5) < 0.03
    for index, pair in enumerate(pairs):
        d, i = owner[pair.text_a], docs[owner[pair.text_a]].index(pair.text_a)
        assert (pair.index, pair.id, pair.line) == (index, f"d{d}-s{i}", index + 2)
        if pair.nsp_label == 0:
            assert pair.text_b == docs[d][i + 1]
        else:
            assert owner[pair.text_b] != d
    assert any(p.text_b == "A lone sentence." for p in pairs)
    assert not any(p.text_a == "A lone sentence." for p in pairs)


def test_segments_of_several_sentences():
    docs = make_documents(60, 7)
    pairs = build_pairs(docs, seed=13, sentences=2)
    assert len(pairs) == 60 * 4  # starts with two 2-sentence segments after them: 0..3 of 7 sentences
    for pair in pairs:
        d, i = (int(part[1:]) for part in pair.id.split("-"))
        assert pair.text_a == f"Doc {d} sentence {i}. Doc {d} sentence {i + 1}."
        if pair.nsp_label == 0:
            assert pair.text_b == f"Doc {d} sentence {i + 2}. Doc {d} sentence {i + 3}."
        else:  # a random 2-sentence span of another document, or the lone sentence whole
            assert f"Doc {d} " not in pair.text_b and (pair.text_b.count(".") == 2 or pair.text_b == "A lone sentence.")
    assert build_pairs(docs, seed=13, sentences=1) == build_pairs(docs, seed=13)
    with pytest.raises(ValueError, match="no document has 16 or more sentences"):
        build_pairs(docs, seed=0, sentences=8)
    with pytest.raises(ValueError, match="sentences must be at least 1"):
        build_pairs(docs, seed=0, sentences=0)


def test_build_pairs_deterministic_per_seed():
    docs = make_documents(40, 10)
    assert build_pairs(docs, seed=1) == build_pairs(docs, seed=1)
    assert build_pairs(docs, seed=1) != build_pairs(docs, seed=2)


def test_n_pairs_samples_positions_in_corpus_order():
    docs = make_documents(40, 10)
    pairs = build_pairs(docs, seed=5, n_pairs=50)
    assert len(pairs) == 50 and len({p.id for p in pairs}) == 50
    order = [tuple(int(part[1:]) for part in p.id.split("-")) for p in pairs]
    assert order == sorted(order)
    assert len(build_pairs(docs, seed=5, n_pairs=10_000)) == 40 * 9  # capped at one per position
    with pytest.raises(ValueError, match="n_pairs must be at least 1"):
        build_pairs(docs, seed=5, n_pairs=0)


@pytest.mark.parametrize(
    ("docs", "message"),
    [
        ([["One.", "Two."]], "need at least two non-empty documents"),
        ([["Only."], ["Single."], []], "no document has 2 or more sentences"),
        ([], "no document has 2 or more sentences"),
    ],
)
def test_build_pairs_rejects_unusable_documents(docs, message):
    with pytest.raises(ValueError, match=message):
        build_pairs(docs, seed=0)


def test_written_pairs_read_back_identically(tmp_path):
    pairs = build_pairs(make_documents(30, 6), seed=3)
    out = tmp_path / "pairs.tsv"
    assert write_pairs_tsv(pairs, out) == len(pairs)
    assert out.read_text(encoding="utf-8").splitlines()[0] == "id\ttext_a\ttext_b\tnsp_label"
    reader = CorpusReader(out, on_error="fail")
    assert reader.has_labels
    assert list(reader) == pairs


def test_write_pairs_tsv_quotes_awkward_text(tmp_path):
    pairs = build_pairs(make_documents(3, 3), seed=0)[:4]
    awkward = ['tab\there "quote"', "carriage\rreturn", "new\nline", '"leading quote']
    pairs = [replace(p, text_a=text) for p, text in zip(pairs, awkward, strict=True)]
    out = tmp_path / "pairs.tsv"
    write_pairs_tsv(pairs, out)
    back = list(CorpusReader(out, on_error="fail"))
    assert [(p.id, p.text_a, p.text_b, p.nsp_label) for p in back] == [
        (p.id, p.text_a, p.text_b, p.nsp_label) for p in pairs
    ]


def test_write_pairs_tsv_requires_labels(tmp_path):
    pair = replace(build_pairs(make_documents(3, 3), seed=0)[0], nsp_label=None)
    with pytest.raises(ValueError, match="has no nsp_label"):
        write_pairs_tsv([pair], tmp_path / "pairs.tsv")


def test_documents_to_corpus_end_to_end(tmp_path):
    docs_path = tmp_path / "docs.txt"
    docs_path.write_text(
        "\n\n".join(f"Doc {d} opens. Dr. Who appears in doc {d}! Does it end? It does." for d in range(5)),
        encoding="utf-8",
    )
    documents = read_documents(docs_path)
    assert len(documents) == 5 and all(len(doc) == 4 for doc in documents)
    out = tmp_path / "pairs.tsv"
    write_pairs_tsv(build_pairs(documents, seed=7), out)
    assert len(list(CorpusReader(out))) == 15
