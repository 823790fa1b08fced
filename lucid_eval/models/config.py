"""BERTConfig: the model's hyper-parameters, round-tripping Hugging Face `config.json`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# Activation names as HF/Google configs spell them. In HF "gelu" is the exact erf form; lucid 2.x's
# "gelu" is the tanh approximation, so a lucid-origin config's "gelu" becomes TANH_NAME (see
# `checkpoint_origin`). TANH_NAME is the HF name of torch's tanh GELU, so saved configs load in HF.
GELU_EXACT = ("gelu",)
GELU_TANH = ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_tanh")
TANH_NAME = "gelu_pytorch_tanh"
ORIGINS = ("hf", "lucid")


# Field annotation -> accepted JSON types, and how an error names them; nothing converts silently.
_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


@dataclass
class BERTConfig:
    """Hyper-parameters of a BERT encoder and its pretraining heads (HF field names)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    tie_word_embedding: bool = True
    # "sdpa" uses torch's fused attention; "eager" spells out matmul/softmax so ONNX Runtime's
    # transformer optimizer can recognise and fuse the attention pattern after export.
    attn_implementation: str = "sdpa"
    # Accepted for lucid compatibility; only the encoder-only values are supported.
    use_cache: bool = False
    is_decoder: bool = False
    add_cross_attention: bool = False
    chunk_size_feed_forward: int = 0
    # Whose conventions the checkpoint follows: "hf" (Hugging Face, Google) or "lucid" (lucid 2.x,
    # detected from its weight names on load). It decides what hidden_act "gelu" means.
    checkpoint_origin: str = "hf"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, _TYPES[f.type]) or (f.type != "bool" and isinstance(value, bool)):
                raise ValueError(f"{f.name} must be {_TYPE_NAMES[f.type]}, got {value!r}")
        sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size")  # fmt: skip
        if bad := [f"{name} {getattr(self, name)}" for name in sizes if getattr(self, name) < 1]:
            raise ValueError(f"sizes must be positive: {', '.join(bad)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.checkpoint_origin not in ORIGINS:
            raise ValueError(f"checkpoint_origin must be one of {ORIGINS}, got {self.checkpoint_origin!r}")
        if self.hidden_act == "gelu_tanh" or (self.hidden_act == "gelu" and self.checkpoint_origin == "lucid"):
            self.hidden_act = TANH_NAME  # one spelling per form, and one that transformers reads
        if self.hidden_act not in GELU_EXACT + GELU_TANH:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; use one of {GELU_EXACT + GELU_TANH}")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {self.attn_implementation!r}")
        if self.is_decoder or self.add_cross_attention:
            raise ValueError("BERTForPreTraining is encoder-only: is_decoder/add_cross_attention must be False")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def gelu_form(self) -> str:
        """The GELU the model computes: "tanh" (lucid 2.x's, HF's gelu_pytorch_tanh) or "erf" (HF's gelu)."""
        return "tanh" if self.hidden_act in GELU_TANH else "erf"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BERTConfig:
        """Build from an HF or lucid config dict; keys that do not shape the model are ignored."""
        if not isinstance(data, dict):
            raise ValueError(f"a model config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {data['position_embedding_type']!r} is not supported")
        if "tie_word_embeddings" in data and "tie_word_embedding" not in data:
            data["tie_word_embedding"] = data["tie_word_embeddings"]
        if "_attn_implementation" in data and "attn_implementation" not in data:
            data["attn_implementation"] = data["_attn_implementation"] or "sdpa"
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and v is not None})

    def to_dict(self) -> dict[str, Any]:
        """HF-compatible dict (what `transformers.BertConfig.from_dict` reads)."""
        data = asdict(self)
        data["tie_word_embeddings"] = data.pop("tie_word_embedding")
        data.pop("attn_implementation")
        return {
            "architectures": ["BertForPreTraining"],
            "model_type": "bert",
            "position_embedding_type": "absolute",
            **data,
        }

    @classmethod
    def from_json_file(cls, path: str | Path) -> BERTConfig:
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            raise ValueError(f"{path}: {exc}") from exc

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def base(cls, **overrides: Any) -> BERTConfig:
        """bert-base-uncased shape: 12 layers, hidden 768, 12 heads."""
        return cls(**overrides)

    @classmethod
    def large(cls, **overrides: Any) -> BERTConfig:
        """bert-large shape: 24 layers, hidden 1024, 16 heads."""
        params: dict[str, Any] = dict(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
        )
        return cls(**{**params, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> BERTConfig:
        """A few-thousand-parameter model for tests and demos (2 layers, hidden 32)."""
        params: dict[str, Any] = dict(
            vocab_size=1000,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=512,
        )
        return cls(**{**params, **overrides})
