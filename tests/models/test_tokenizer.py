"""BERTTokenizerFast gives the ids of transformers.BertTokenizerFast on the real BERT vocabulary."""

import pydoc_data.topics
import random
import re

import pytest
import torch

from lucid_eval import BERTTokenizerFast

VARIED = [
    "Héllo Wörld! Ça va? Naïve café, résumé, façade.",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "Punctuation: (brackets) [squares] {braces} <angles> — dashes… «quotes» \"double\" 'single'.",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "x" * 150,
    "Emoji 😀🎉 and symbols ©®™ €£¥ ±×÷ ∑∫√",
    "Tabs\tand\nnewlines\r\nand   multiple   spaces",
    "العربية تكتب من اليمين إلى اليسار",
    "Combining: e\u0301 a\u0308 n\u0303 and zero\u200bwidth",
    "URLs like https://example.com/path?q=1&b=2 and emails a.b@c.de",
    "Numbers 3.14159, 1,000,000 and 2nd 3rd 4th; 10% off $5.99",
    "",
    "   ",
    "ALL CAPS SENTENCE WITH ACRONYMS LIKE NASA AND UNESCO",
    "\x00control\x07chars\x1b",
]


def sentences(n: int) -> list[str]:
    text = " ".join(pydoc_data.topics.topics.values())
    parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if 5 < len(s.strip()) < 400]
    return VARIED + random.Random(0).sample(parts, n)


@pytest.fixture(scope="module")
def pair(bert_vocab):
    transformers = pytest.importorskip("transformers")
    # from_pretrained reads vocab.txt the same way on transformers 4.x and 5.x
    return BERTTokenizerFast.from_pretrained(bert_vocab), transformers.BertTokenizerFast.from_pretrained(
        bert_vocab.parent
    )


def test_single_texts_match_transformers(pair):
    ours, hf = pair
    texts = sentences(300)
    got = [e.ids for e in ours.encode_batch(texts, max_length=512)]
    want = hf(texts, truncation=True, max_length=512)["input_ids"]
    assert got == want


@pytest.mark.parametrize("max_length", [16, 32, 128])
def test_pairs_with_truncation_match_transformers(pair, max_length):
    ours, hf = pair
    texts = sentences(201)
    a, b = texts[::2], texts[1::2]
    got = ours.encode_batch(a, b, max_length=max_length)
    want = hf(a, b, truncation="longest_first", max_length=max_length)
    assert [e.ids for e in got] == want["input_ids"]
    assert [e.type_ids for e in got] == want["token_type_ids"]
    for enc in got:
        assert len(enc.ids) <= max_length
        assert (
            enc.ids[0] == ours.cls_token_id
            and enc.ids.count(ours.sep_token_id) == 2
            and enc.ids[-1] == ours.sep_token_id
        )


def test_special_ids_come_from_the_vocabulary(bert_vocab, tmp_path):
    real = BERTTokenizerFast.from_pretrained(bert_vocab)
    assert (real.pad_token_id, real.unk_token_id, real.cls_token_id, real.sep_token_id, real.mask_token_id) == (
        0,
        100,
        101,
        102,
        103,
    )
    shuffled = ["[MASK]", "[SEP]", "[CLS]", "[UNK]", "[PAD]", "hello", "world"]
    (tmp_path / "vocab.txt").write_text("\n".join(shuffled) + "\n")
    tok = BERTTokenizerFast.from_pretrained(tmp_path / "vocab.txt")
    assert (tok.mask_token_id, tok.cls_token_id, tok.pad_token_id) == (0, 2, 4)
    assert tok.encode("hello world") == [2, 5, 6, 1]


def test_missing_special_token_is_an_error(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(
        ValueError, match=r"special tokens missing from the vocabulary: \['\[SEP\]', '\[CLS\]', '\[MASK\]'\]"
    ):
        BERTTokenizerFast.from_pretrained(tmp_path)


def test_save_and_reload_from_dir_and_files(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    text = ("Lists are mutable sequences.", "Strings are immutable.")
    want = tiny_tokenizer.encode(*text)
    for source in (tmp_path, tmp_path / "tokenizer.json", tmp_path / "vocab.txt"):
        assert BERTTokenizerFast.from_pretrained(source).encode(*text) == want
    with pytest.raises(FileNotFoundError):
        BERTTokenizerFast.from_pretrained(tmp_path / "nope")


def test_tokenizer_config_lowercase_is_honoured(bert_vocab, tmp_path):
    (tmp_path / "vocab.txt").write_text(bert_vocab.read_text())
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    cased = BERTTokenizerFast.from_pretrained(tmp_path)
    assert cased.encode("Hello") != BERTTokenizerFast.from_pretrained(bert_vocab).encode("Hello")


def test_encode_plus_and_pretraining_inputs(tiny_tokenizer):
    plain = tiny_tokenizer.encode_plus("first part", "second part")
    assert set(plain) == {"input_ids", "token_type_ids", "attention_mask"}
    first_sep = plain["input_ids"].index(tiny_tokenizer.sep_token_id)
    assert plain["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(plain["input_ids"]) - first_sep - 1)
    enc = tiny_tokenizer.encode_pretraining_inputs("first part", "second part", return_tensor=True)
    assert enc["input_ids"].shape == (1, len(plain["input_ids"])) and enc["input_ids"].dtype == torch.long
    special = enc["special_tokens_mask"][0].tolist()
    assert special[0] == 1 and special[first_sep] == 1 and special[-1] == 1 and sum(special) == 3


def test_batch_padding_and_decode(tiny_tokenizer):
    batch = tiny_tokenizer.batch_encode_plus(
        ["a short one", "a noticeably longer sentence than the first"], pad_to_multiple_of=8
    )
    width = len(batch["input_ids"][0])
    assert width % 8 == 0 and all(len(row) == width for row in batch["input_ids"])
    assert batch["attention_mask"][0].count(1) < batch["attention_mask"][1].count(1)
    assert tiny_tokenizer.decode(tiny_tokenizer.encode("a short one")) == "a short one"


def test_max_length_too_small_for_specials(tiny_tokenizer):
    with pytest.raises(ValueError, match="no room for"):
        tiny_tokenizer.encode("a", "b", max_length=2)
