"""Pretraining: a few tiny steps save a loadable, reproducible checkpoint; the built-in corpus
splits deterministically into disjoint train and held-out documents."""

import json
import pydoc_data.topics
import random
import sys

import pytest
from safetensors.torch import load_file

from lucid_eval import BERTForPreTraining, BERTTokenizerFast
from lucid_eval.data.corpus import (
    Document,
    builtin_documents,
    corpus_fingerprint,
    split_documents,
    write_heldout_pairs,
)
from lucid_eval.harness.corpus import CorpusReader
from lucid_eval.train import PretrainConfig, pretrain
from lucid_eval.train.pretrain import _document_examples
from lucid_eval.train.wordpiece import train_wordpiece

TINY = PretrainConfig.preset("tiny", heldout_fraction=0.3)


@pytest.fixture(scope="module")
def documents() -> list[Document]:
    return builtin_documents()


@pytest.fixture(scope="module")
def small_slice(documents) -> list[Document]:
    return documents[:20] + documents[-60:]  # pydoc topics and standard-library modules


@pytest.fixture(scope="module")
def trained(tmp_path_factory, small_slice):
    out = tmp_path_factory.mktemp("pretrained")
    return pretrain(small_slice, out, TINY, progress=False)


@pytest.mark.slow  # a pretraining run: CI runs it in the slow step
def test_checkpoint_loads_with_matching_tokenizer(trained):
    model = BERTForPreTraining.from_pretrained(trained.out_dir)
    tokenizer = BERTTokenizerFast.from_pretrained(trained.out_dir)
    assert tokenizer.vocab_size == model.config.vocab_size
    assert model.config.max_position_embeddings == TINY.max_length == tokenizer.model_max_length
    expected = {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
                "training_log.json"}  # fmt: skip
    assert expected <= {p.name for p in trained.out_dir.iterdir()}


@pytest.mark.slow  # a pretraining run: CI runs it in the slow step
def test_training_log_has_curve_baseline_and_versions(trained):
    log = json.loads((trained.out_dir / "training_log.json").read_text())
    assert [p["step"] for p in log["curve"]] == [3, 6]
    for key in ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "train_loss"):
        assert key in log["final"]
    assert log["final"]["pairs"] == TINY.eval_pairs
    assert 0.0 <= log["baseline"]["mlm_accuracy"] <= 1.0
    assert log["python_version"] == log["corpus"]["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert log["torch_version"] and log["seconds"] > 0
    assert log["config"]["steps"] == TINY.steps
    assert trained.final == log["final"]


@pytest.mark.slow  # a pretraining run: CI runs it in the slow step
def test_same_seed_same_weights(tmp_path, small_slice, trained):
    again = pretrain(small_slice, tmp_path / "again", TINY, progress=False)
    first, second = load_file(trained.out_dir / "model.safetensors"), load_file(again.out_dir / "model.safetensors")
    assert first.keys() == second.keys()
    assert all((first[k] == second[k]).all() for k in first)
    assert (trained.out_dir / "vocab.txt").read_text() == (again.out_dir / "vocab.txt").read_text()


@pytest.mark.slow  # a pretraining run: CI runs it in the slow step
def test_plain_text_corpus_path(tmp_path, small_slice):
    text = "\n\n".join(f"# {d.name}\n\n" + " ".join(d.sentences) for d in small_slice[:30])
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    result = pretrain(
        path,
        tmp_path / "out",
        PretrainConfig.preset("tiny", steps=2, eval_every=2, heldout_fraction=0.3),
        progress=False,
    )
    assert result.log["corpus"]["source"] == str(path)
    assert result.log["corpus"]["train"]["documents"] + result.log["corpus"]["heldout"]["documents"] == 30


@pytest.mark.slow  # reads the built-in corpus twice (~9 s each): the demo's training data
def test_builtin_split_is_deterministic_and_disjoint(documents):
    assert len(documents) > 300 and all(len(d.sentences) >= 2 for d in documents)
    assert len({d.name for d in documents}) == len(documents)
    train, heldout = split_documents(documents)
    again_train, again_heldout = split_documents(builtin_documents())
    assert [d.name for d in train] == [d.name for d in again_train]
    assert corpus_fingerprint(heldout) == corpus_fingerprint(again_heldout)
    assert {d.name for d in train}.isdisjoint(d.name for d in heldout)
    assert len(train) + len(heldout) == len(documents)
    share = sum(len(d.sentences) for d in heldout) / sum(len(d.sentences) for d in documents)
    assert 0.03 < share < 0.2
    train_sentences = {s for d in train for s in d.sentences}
    assert not any(s in train_sentences for d in heldout for s in d.sentences)


@pytest.mark.slow  # reads the built-in corpus (~9 s): the demo's data
def test_heldout_pairs_file_reads_back(tmp_path):
    out = tmp_path / "heldout.tsv"
    assert write_heldout_pairs(out, n_pairs=50, seed=0) == 50
    records = list(CorpusReader(out, on_error="fail"))
    assert len(records) == 50 and {r.nsp_label for r in records} == {0, 1}
    meta = json.loads((tmp_path / "heldout.tsv.json").read_text())
    assert meta["python_version"] == ".".join(map(str, sys.version_info[:3])) and meta["n_pairs"] == 50
    write_heldout_pairs(tmp_path / "again.tsv", n_pairs=50, seed=0)
    assert (tmp_path / "again.tsv").read_text() == out.read_text()


def _toy_documents(rng: random.Random, longest_sentence: int) -> list[list[list[int]]]:
    """50 token-id documents; every token of sentence s of document d is d * 100 + s."""
    return [[[d * 100 + s] * rng.randint(3, longest_sentence) for s in range(rng.randint(2, 12))] for d in range(50)]


def test_training_pairs_fit_the_budget_and_balance_labels():
    rng = random.Random(0)
    docs = _toy_documents(rng, longest_sentence=40)
    config = PretrainConfig(max_length=64)
    examples = [e for d in range(len(docs)) for e in _document_examples(docs, d, rng, config)]
    assert all(len(e.a) + len(e.b) <= config.max_length - 3 and e.a and e.b for e in examples)
    same_doc = [e.a[0] // 100 == e.b[0] // 100 for e in examples]
    assert all(same == (e.nsp_label == 0) for same, e in zip(same_doc, examples, strict=True))
    assert 0.4 < sum(same_doc) / len(examples) < 0.6


def test_segment_tokens_shortens_chunks_but_pairs_may_fill_max_length():
    docs = _toy_documents(random.Random(0), longest_sentence=30)

    def lengths(config: PretrainConfig) -> list[int]:
        rng = random.Random(1)
        return [len(e.a) + len(e.b) for d in range(len(docs)) for e in _document_examples(docs, d, rng, config)]

    full, short = lengths(PretrainConfig(max_length=64)), lengths(PretrainConfig(max_length=64, segment_tokens=32))
    assert sum(short) / len(short) < 0.8 * sum(full) / len(full)
    assert max(short) <= 61 and max(short) > 29  # two long sentences still use every position


def test_wordpiece_training_is_deterministic():
    texts = [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)[:60]]
    first, second = train_wordpiece(texts, 600), train_wordpiece(texts, 600)
    assert first.get_vocab() == second.get_vocab() and first.vocab_size == 600
    assert first.convert_ids_to_tokens(range(5)) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    ids = first.encode("Attribute references are evaluated left to right.")
    assert first.unk_token_id not in ids
    assert first.decode(ids) == "attribute references are evaluated left to right."
