"""BERTTokenizerFast against lucid 2.13's documented behaviour (docs/lucid-compat.md, rows 5-7)."""

import pytest
import torch

from lucid_eval import BERTTokenizerFast


@pytest.fixture(scope="module")
def real(bert_vocab) -> BERTTokenizerFast:
    return BERTTokenizerFast.from_pretrained(bert_vocab)


# ---- row 5: special tokens are never masked ----------------------------------------------------------
def test_row5_unk_and_pad_are_special(tiny_tokenizer):
    enc = tiny_tokenizer.encode_pretraining_inputs("東京 ☃ lists", "are mutable")
    tokens = tiny_tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert tokens.count("[UNK]") == 3
    assert enc["special_tokens_mask"] == [int(t in ("[CLS]", "[SEP]", "[UNK]")) for t in tokens]
    batch = tiny_tokenizer.batch_encode_plus(["a list", "東京 is a longer text"])
    ids, special = batch["input_ids"][0], batch["special_tokens_mask"][0]
    assert [s for i, s in zip(ids, special, strict=True) if i == tiny_tokenizer.pad_token_id] == [1] * ids.count(0)


def test_row5_loss_from_text_never_masks_unk(tiny_model, tiny_tokenizer):
    """With every eligible token masked, text of [UNK]s leaves nothing to mask: the loss is NSP's alone."""
    text = ("東京 ☃", "東京")
    loss = tiny_model.get_loss_from_text(tiny_tokenizer, *text, mlm_probability=1.0)
    enc = tiny_tokenizer.encode_pretraining_inputs(*text, return_tensor=True)
    nsp = tiny_model.get_nsp_loss(torch.tensor([0]), enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    torch.testing.assert_close(loss, nsp)


# ---- row 6: lucid's tokenizer API --------------------------------------------------------------------
def test_row6_conversions_take_one_token_or_a_list(real):
    assert real.convert_tokens_to_ids("[MASK]") == 103
    assert real.convert_tokens_to_ids(["[CLS]", "hello", "no-such-token"]) == [101, 7592, 100]
    assert real.convert_ids_to_tokens(103) == "[MASK]"
    assert real.convert_ids_to_tokens(torch.tensor(101)) == "[CLS]"
    assert real.convert_ids_to_tokens([101, 7592]) == ["[CLS]", "hello"]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        real.convert_ids_to_tokens(30522)


def test_row6_string_attributes_and_special_lists(real):
    assert (real.cls_token, real.sep_token, real.pad_token, real.unk_token, real.mask_token) == (
        "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"
    )  # fmt: skip
    assert (real.bos_token, real.eos_token) == ("[CLS]", "[SEP]")
    assert real.all_special_tokens == ["[UNK]", "[PAD]", "[CLS]", "[SEP]"]
    assert real.all_special_ids == [100, 0, 101, 102]


def test_row6_tokenize_strings_and_templates(real):
    tokens = real.tokenize("Tokenization works.")
    assert tokens == ["token", "##ization", "works", "."]
    assert real.convert_tokens_to_string(tokens) == "tokenization works."
    assert real.build_inputs_with_special_tokens(tokens) == ["[CLS]", *tokens, "[SEP]"]
    assert real.build_inputs_with_special_tokens(["a"], ["b"]) == ["[CLS]", "a", "[SEP]", "b", "[SEP]"]


def test_row6_call_returns_ids_and_decode_strips_specials(real):
    ids = real("The [MASK] sat.")
    assert ids == [101, 1996, 103, 2938, 1012, 102]
    assert real("The [MASK] sat.", add_special_tokens=False) == ids[1:-1]
    assert real("hi", return_tensor=True).tolist() == [101, 7632, 102]
    assert real.decode(ids) == "the [MASK] sat."  # [CLS]/[SEP] stripped, [MASK] kept (lucid)
    assert real.decode(ids, skip_special_tokens=False) == "[CLS] the [MASK] sat. [SEP]"
    assert real.decode(torch.tensor(ids)) == "the [MASK] sat."
    with pytest.raises(ValueError, match="1-D"):
        real.decode(torch.tensor([ids]))
    with pytest.raises(TypeError, match="add_special_tokens= by keyword"):
        real.encode("text", False)


def test_row6_literal_mask_is_one_token_from_either_file(real, tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    for source in (tmp_path / "tokenizer.json", tmp_path / "vocab.txt"):
        tok = BERTTokenizerFast.from_pretrained(source)
        assert tok.tokenize("a [MASK] b") == ["a", "[MASK]", "b"], source.name
    assert real.tokenize("a [MASK] b") == ["a", "[MASK]", "b"]


def test_row6_batch_encode_and_decode(real):
    texts = ["a cat", "a much longer sentence here"]
    ragged = real.batch_encode(texts)
    assert [len(r) for r in ragged] == [4, 7]
    with pytest.raises(ValueError, match="padding=True"):
        real.batch_encode(texts, return_tensor=True)
    padded = real.batch_encode(texts, padding=True, return_tensor=True)
    assert padded.shape == (2, 7) and padded[0, 4:].tolist() == [0, 0, 0]
    assert real.batch_encode(texts, padding=True, max_length=10)[0][-1] == 0
    cut = real.batch_encode(texts, max_length=5, truncation=True)
    assert cut[1] == [101, 1037, 2172, 2936, 102]  # [SEP] kept; lucid slices it off
    assert real.batch_decode(padded) == ["a cat", "a much longer sentence here"]


def test_row6_lucid_tokenizer_config_lowercase_key(bert_vocab, tmp_path):
    (tmp_path / "vocab.txt").write_text(bert_vocab.read_text())
    (tmp_path / "tokenizer_config.json").write_text('{"lowercase": false}')
    assert BERTTokenizerFast.from_pretrained(tmp_path).tokenize("Hello") != ["hello"]


# ---- row 7: deliberate differences -----------------------------------------------------------------
def test_row7_long_texts_are_truncated_keeping_specials(tiny_tokenizer):
    ids = tiny_tokenizer.encode("list " * 600, "tuple " * 600)
    assert len(ids) == tiny_tokenizer.model_max_length == 512
    assert ids[0] == tiny_tokenizer.cls_token_id and ids[-1] == tiny_tokenizer.sep_token_id
    assert ids.count(tiny_tokenizer.sep_token_id) == 2


def test_row7_unicode_normalisation_as_real_checkpoints_were_trained(real):
    """lucid's tokenizer is ASCII-only; the uncased BERT normaliser strips accents, lower-cases
    Unicode and splits CJK characters into tokens of their own."""
    assert real.tokenize("Héllo Wörld") == real.tokenize("hello world") == ["hello", "world"]
    assert real.tokenize("ÉCOLE") == real.tokenize("ecole")
    assert real.tokenize("東京") == ["東", "京"]
