"""BERTTokenizerFast: BERT's WordPiece tokenizer on the Rust `tokenizers` library (lucid's API).

Normalisation, pre-tokenisation, WordPiece and the [CLS]/[SEP] template are the `tokenizers`
components Hugging Face uses for BERT, so ids match `transformers.BertTokenizerFast`: Unicode
lower-casing, accent stripping and CJK splitting as real checkpoints were trained with, where
lucid's own tokenizer is ASCII-only. Texts longer than `model_max_length` are truncated longest-first
keeping [CLS]/[SEP] (lucid never truncates, so the model then fails on position embeddings).
The rest follows lucid: string and id conversions, `__call__` returning ids, special tokens
([UNK], [PAD], [CLS], [SEP]) stripped by `decode` and never chosen for masking.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Encoding, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from lucid_eval.models.device import resolve_device
from lucid_eval.models.named import local_or_demo
from lucid_eval.models.padding import pad_batch

SPECIAL_TOKENS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer_config.json"


def read_vocab(path: str | Path) -> dict[str, int]:
    """vocab.txt: one token a line, id = line number."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {token: i for i, token in enumerate(lines)}


class BERTTokenizerFast:
    """WordPiece tokenizer for BERT text (pairs), with pair truncation that keeps [CLS]/[SEP]."""

    def __init__(
        self,
        vocab_file: str | Path | None = None,
        *,
        vocab: dict[str, int] | None = None,
        tokenizer_object: Tokenizer | None = None,
        lowercase: bool = True,
        strip_accents: bool | None = None,
        model_max_length: int = 512,
        **special_tokens: str,
    ) -> None:
        unknown = set(special_tokens) - set(SPECIAL_TOKENS)
        if unknown:
            raise TypeError(f"unknown arguments: {sorted(unknown)}")
        self.special_tokens = {**SPECIAL_TOKENS, **special_tokens}
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.model_max_length = model_max_length
        if tokenizer_object is None:
            if vocab is None:
                if vocab_file is None:
                    raise ValueError("pass vocab_file, vocab or tokenizer_object")
                vocab = read_vocab(vocab_file)
            tokenizer_object = self._build(vocab)
        self._tokenizer = tokenizer_object
        missing = [t for t in self.special_tokens.values() if self._tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"special tokens missing from the vocabulary: {missing}")
        self._set_post_processor()

    def _build(self, vocab: dict[str, int]) -> Tokenizer:
        tok = Tokenizer(
            models.WordPiece(vocab, unk_token=self.special_tokens["unk_token"], max_input_chars_per_word=100)
        )
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=self.strip_accents, lowercase=self.lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        # Registered so that "[MASK]" in text stays one token, as it does from an HF tokenizer.json.
        tok.add_special_tokens([t for t in self.special_tokens.values() if t in vocab])  # missing: refused below
        return tok

    def _set_post_processor(self) -> None:
        cls, sep = self.special_tokens["cls_token"], self.special_tokens["sep_token"]
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, self.cls_token_id), (sep, self.sep_token_id)],
        )
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()

    @classmethod
    def train(
        cls, texts: Sequence[str], vocab_size: int = 8000, *, lowercase: bool = True, min_frequency: int = 2
    ) -> BERTTokenizerFast:
        """Learn a WordPiece vocabulary from raw texts with the `tokenizers` trainer."""
        specials = list(SPECIAL_TOKENS.values())
        order = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # BERT's id order for the specials
        seed = cls(vocab={t: i for i, t in enumerate(order)}, lowercase=lowercase)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=order, continuing_subword_prefix="##"
        )
        seed._tokenizer.post_processor = None
        seed._tokenizer.train_from_iterator(texts, trainer=trainer)
        assert all(seed._tokenizer.token_to_id(t) is not None for t in specials)
        return cls(tokenizer_object=seed._tokenizer, lowercase=lowercase)

    # ---- loading and saving -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path) -> BERTTokenizerFast:
        """Load from a dir or file: tokenizer.json, or vocab.txt with optional tokenizer_config.json.
        "demo" is the shipped demo checkpoint's tokenizer unless a directory of that name exists here."""
        path = local_or_demo(path)
        folder = path if path.is_dir() else path.parent
        config: dict[str, Any] = {}
        if (folder / CONFIG_FILE).exists():
            config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        kwargs: dict[str, Any] = {k: config[k] for k in SPECIAL_TOKENS if isinstance(config.get(k), str)}
        kwargs["lowercase"] = config.get("do_lower_case", config.get("lowercase", True))  # HF's key, lucid's
        kwargs["strip_accents"] = config.get("strip_accents")
        if isinstance(config.get("model_max_length"), int) and config["model_max_length"] < 10**9:
            kwargs["model_max_length"] = config["model_max_length"]
        if path.is_dir():
            if (path / TOKENIZER_FILE).exists():
                path = path / TOKENIZER_FILE
            elif (path / VOCAB_FILE).exists():
                path = path / VOCAB_FILE
            else:
                raise FileNotFoundError(f"{path} has neither {TOKENIZER_FILE} nor {VOCAB_FILE}")
        if not path.exists():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        if path.suffix == ".json":
            return cls(tokenizer_object=Tokenizer.from_file(str(path)), **kwargs)
        return cls(path, **kwargs)

    def save_pretrained(self, path: str | Path) -> None:
        """Write tokenizer.json, vocab.txt and tokenizer_config.json (readable by HF too)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._tokenizer.save(str(path / TOKENIZER_FILE))
        vocab = sorted(self.get_vocab().items(), key=lambda kv: kv[1])
        (path / VOCAB_FILE).write_text("".join(f"{t}\n" for t, _ in vocab), encoding="utf-8")
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.lowercase,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": True,
            "model_max_length": self.model_max_length,
            **self.special_tokens,
        }
        (path / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    # ---- vocabulary ---------------------------------------------------------------------------------
    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def _id(self, name: str) -> int:
        return self._tokenizer.token_to_id(self.special_tokens[name])

    cls_token_id = property(lambda self: self._id("cls_token"))
    sep_token_id = property(lambda self: self._id("sep_token"))
    pad_token_id = property(lambda self: self._id("pad_token"))
    mask_token_id = property(lambda self: self._id("mask_token"))
    unk_token_id = property(lambda self: self._id("unk_token"))
    cls_token = property(lambda self: self.special_tokens["cls_token"])
    sep_token = property(lambda self: self.special_tokens["sep_token"])
    pad_token = property(lambda self: self.special_tokens["pad_token"])
    mask_token = property(lambda self: self.special_tokens["mask_token"])
    unk_token = property(lambda self: self.special_tokens["unk_token"])
    bos_token = cls_token  # lucid's base-class names for [CLS] and [SEP]
    eos_token = sep_token

    @property
    def all_special_tokens(self) -> list[str]:
        """[UNK], [PAD], [CLS], [SEP] as lucid lists them ([MASK] is not one: decode keeps it)."""
        return [self.unk_token, self.pad_token, self.cls_token, self.sep_token]

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Id of one token (an int) or of each of a list; unknown tokens give [UNK]'s id."""
        if isinstance(tokens, str):
            found = self._tokenizer.token_to_id(tokens)
            return self.unk_token_id if found is None else found
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        """Token of one id (a str) or of each of a list; an id outside the vocabulary is an error."""
        if isinstance(ids, int | np.integer) or (isinstance(ids, torch.Tensor) and ids.ndim == 0):
            token = self._tokenizer.id_to_token(int(ids))
            if token is None:
                raise ValueError(f"token id {int(ids)} is outside the vocabulary (size {self.vocab_size})")
            return token
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of `text`, without [CLS]/[SEP]."""
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Tokens joined into text: "##" pieces merged, spaces before punctuation cleaned as HF does."""
        return self._tokenizer.decoder.decode(list(tokens))

    def build_inputs_with_special_tokens(self, tokens: list[str], tokens_b: list[str] | None = None) -> list[str]:
        """[CLS] A [SEP], or [CLS] A [SEP] B [SEP] for a pair."""
        pair = [] if tokens_b is None else [*tokens_b, self.sep_token]
        return [self.cls_token, *tokens, self.sep_token, *pair]

    def special_tokens_mask(self, ids: Sequence[int]) -> list[int]:
        """1 at every special token (all_special_ids, wherever it stands, as lucid marks them), else 0."""
        special = set(self.all_special_ids)
        return [int(i in special) for i in ids]

    # ---- encoding ----------------------------------------------------------------------------------
    def encode_batch(
        self,
        text_a: Sequence[str],
        text_b: Sequence[str] | None = None,
        *,
        max_length: int | None = None,
        add_special_tokens: bool = True,
    ) -> list[Encoding]:
        """Encode many texts (pairs) in the Rust tokenizer's threads; longest-first pair truncation
        to max_length never drops [CLS]/[SEP]. `len(enc.overflowing) > 0` marks a truncated pair."""
        limit = max_length or self.model_max_length
        if add_special_tokens and limit < (3 if text_b is not None else 2):
            raise ValueError(f"max_length {limit} leaves no room for [CLS]/[SEP]")
        self._tokenizer.enable_truncation(limit, strategy="longest_first")
        try:
            inputs = list(text_a) if text_b is None else list(zip(text_a, text_b, strict=True))
            return self._tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens)
        finally:
            self._tokenizer.no_truncation()

    def encode(
        self,
        text_a: str,
        text_b: str | None = None,
        *,
        add_special_tokens: bool = True,
        return_tensor: bool = False,
        device: str | torch.device = "cpu",
        max_length: int | None = None,
    ) -> list[int] | torch.Tensor:
        """Ids of a text (pair): a list, or a (T,) int64 tensor with return_tensor."""
        if isinstance(text_b, bool):
            raise TypeError("the second argument is text_b; pass add_special_tokens= by keyword")
        pairs = None if text_b is None else [text_b]
        ids = self.encode_batch([text_a], pairs, max_length=max_length, add_special_tokens=add_special_tokens)[0].ids
        return _tensor(ids, device) if return_tensor else ids

    def __call__(
        self, text: str, add_special_tokens: bool = True, return_tensor: bool = False, device: str = "cpu"
    ) -> list[int] | torch.Tensor:
        """lucid's call: the ids of one text, as `encode`."""
        return self.encode(text, add_special_tokens=add_special_tokens, return_tensor=return_tensor, device=device)

    def encode_plus(
        self, text_a: str, text_b: str | None = None, *, max_length: int | None = None
    ) -> dict[str, list[int]]:
        enc = self.encode_batch([text_a], None if text_b is None else [text_b], max_length=max_length)[0]
        return {"input_ids": enc.ids, "token_type_ids": enc.type_ids, "attention_mask": enc.attention_mask}

    def encode_pretraining_inputs(
        self,
        text_a: str,
        text_b: str | None = None,
        return_tensor: bool = False,
        device: str | torch.device = "cpu",
        *,
        max_length: int | None = None,
    ) -> dict[str, Any]:
        """encode_plus plus special_tokens_mask; with return_tensor, (1, T) int64 tensors on `device`."""
        enc = self.encode_batch([text_a], None if text_b is None else [text_b], max_length=max_length)[0]
        out = {
            "input_ids": enc.ids,
            "token_type_ids": enc.type_ids,
            "attention_mask": enc.attention_mask,
            "special_tokens_mask": self.special_tokens_mask(enc.ids),
        }
        if not return_tensor:
            return out
        return {k: _tensor([v], device) for k, v in out.items()}

    def batch_encode_plus(
        self,
        text_a: Sequence[str],
        text_b: Sequence[str] | None = None,
        *,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: bool = False,
    ) -> dict[str, Any]:
        """Encode and right-pad a batch to its longest member (optionally a multiple of N): lists,
        or (B, T) int64 tensors with return_tensors."""
        encs = self.encode_batch(text_a, text_b, max_length=max_length)
        width = max(len(e.ids) for e in encs)
        if pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        columns = {
            "input_ids": [e.ids for e in encs],
            "token_type_ids": [e.type_ids for e in encs],
            "special_tokens_mask": [self.special_tokens_mask(e.ids) for e in encs],
        }
        batch = pad_batch(columns, pad_token_id=self.pad_token_id, width=width)
        if return_tensors:
            return {k: torch.from_numpy(v) for k, v in batch.items()}
        return {k: v.tolist() for k, v in batch.items()}

    def batch_encode(
        self,
        texts: Sequence[str],
        add_special_tokens: bool = True,
        padding: bool = False,
        max_length: int | None = None,
        truncation: bool = False,
        return_tensor: bool = False,
        device: str | torch.device = "cpu",
    ) -> list[list[int]] | torch.Tensor:
        """lucid's batch encoding: one id list per text, or a (B, T) int64 tensor with return_tensor
        (padding=True pads with [PAD] to max_length, else to the longest). With truncation or
        padding, max_length truncates longest-first keeping [CLS]/[SEP] (lucid slices them off)."""
        limit = max_length if (truncation or padding) else None
        batch = [e.ids for e in self.encode_batch(texts, max_length=limit, add_special_tokens=add_special_tokens)]
        if padding:
            width = max_length or max((len(ids) for ids in batch), default=0)
            batch = [ids + [self.pad_token_id] * (width - len(ids)) for ids in batch]
        if not return_tensor:
            return batch
        if len({len(ids) for ids in batch}) > 1:
            raise ValueError("a ragged batch has no (B, T) tensor: pass padding=True")
        return _tensor(batch, device)

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Text of one id sequence; skip_special_tokens drops all_special_tokens (lucid's four)."""
        if isinstance(ids, torch.Tensor) and ids.ndim != 1:
            raise ValueError(f"decode takes a 1-D sequence of ids, got a {ids.ndim}-D tensor")
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            special = set(self.all_special_ids)
            ids = [i for i in ids if i not in special]
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def batch_decode(
        self, batch_ids: Sequence[Sequence[int]] | torch.Tensor, skip_special_tokens: bool = True
    ) -> list[str]:
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in batch_ids]


def _tensor(values: list, device: str | torch.device) -> torch.Tensor:
    """int64 tensor on `device` ('cpu'/'gpu' as lucid names them, or a torch device)."""
    return torch.tensor(values, dtype=torch.long, device=resolve_device(device) if isinstance(device, str) else device)
