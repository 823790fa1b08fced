"""Hugging Face-format checkpoints: strict loading with explicit name mapping, and saving.

Accepted weight namings, all mapped onto HF's canonical names:
- HF `BertForPreTraining` (`LayerNorm.weight/bias`, `cls.predictions.bias`, optionally the tied
  `cls.predictions.decoder.weight` and its alias `cls.predictions.decoder.bias`);
- Google-converted checkpoints (`LayerNorm.gamma/beta`), as in the original bert-base-uncased files;
- lucid 2.x (`layernorm` in lower case, the decoder bias inside `cls.predictions.decoder`, and the
  decoder saved a second time as `bert.output_embeddings`, lucid's registration of the output
  embeddings inside the encoder). Such weights mark a lucid-origin checkpoint (`is_lucid_state`).
Anything else is an error that names the missing, unexpected and mis-shaped keys. A decoder weight
tied to the word embeddings must equal them.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lucid_eval.errors import UserError
from lucid_eval.models.config import BERTConfig
from lucid_eval.models.named import NAMES, local_or_demo

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
BIN_NAME = "pytorch_model.bin"
DECODER_WEIGHT = "cls.predictions.decoder.weight"
DECODER_BIAS = "cls.predictions.decoder.bias"
HEAD_BIAS = "cls.predictions.bias"
WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"
LUCID_OUTPUT_EMBEDDINGS = "bert.output_embeddings."
LUCID_LAYERNORM = re.compile(r"(^|\.)layernorm\.")
# Buffers some exporters save; they carry no weights.
IGNORED_KEYS = re.compile(r"^(bert\.)?embeddings\.(position_ids|token_type_ids)$")


class CheckpointError(UserError, ValueError):
    """A checkpoint that does not match the model it is loaded into."""


def canonical_name(name: str) -> str:
    """Map one saved parameter name onto HF's naming."""
    if name.startswith(LUCID_OUTPUT_EMBEDDINGS):  # the same module as the MLM decoder
        name = "cls.predictions.decoder." + name.removeprefix(LUCID_OUTPUT_EMBEDDINGS)
    name = LUCID_LAYERNORM.sub(r"\1LayerNorm.", name)
    name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
    name = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)
    if name == DECODER_BIAS:
        return HEAD_BIAS
    return name


def is_lucid_state(state: dict[str, torch.Tensor]) -> bool:
    """Whether weights are named as lucid 2.x names them (output embeddings inside the encoder, or
    lower-case `layernorm`): a checkpoint lucid trained, whose "gelu" is the tanh form."""
    return any(k.startswith(LUCID_OUTPUT_EMBEDDINGS) or LUCID_LAYERNORM.search(k) for k in state)


def read_state_dict(path: Path, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """Read weights from a dir or file; safetensors preferred, .bin only with weights_only=True."""
    if path.is_dir():
        if (path / SAFETENSORS_NAME).exists():
            path = path / SAFETENSORS_NAME
        elif (path / BIN_NAME).exists():
            path = path / BIN_NAME
        else:
            raise CheckpointError(f"{path} has neither {SAFETENSORS_NAME} nor {BIN_NAME}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device=map_location)
        except Exception as exc:  # SafetensorError: empty, truncated or not a safetensors file
            raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); is it complete?") from exc
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle with arbitrary objects is refused, not executed
        raise CheckpointError(f"{path} could not be loaded with weights_only=True: {exc}") from exc


def remap_state_dict(saved: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename saved keys to the model's names and check that keys and shapes match exactly."""
    mapped: dict[str, torch.Tensor] = {}
    tied_decoder: torch.Tensor | None = None
    unexpected: list[str] = []
    for key, tensor in saved.items():
        if IGNORED_KEYS.match(key):
            continue
        name = canonical_name(key)
        if name == DECODER_WEIGHT and DECODER_WEIGHT not in expected:
            if tied_decoder is not None and not torch.equal(tied_decoder, tensor):
                raise CheckpointError(f"{key} and another name both map to {name} with different values")
            tied_decoder = tensor  # tied to the word embeddings: checked against them, then dropped
            continue
        if name in mapped:
            if not torch.equal(mapped[name], tensor):
                raise CheckpointError(f"{key} and another name both map to {name} with different values")
            continue
        if name not in expected:
            unexpected.append(key)
            continue
        mapped[name] = tensor
    missing = sorted(set(expected) - set(mapped))
    shapes = [
        f"{name}: checkpoint {tuple(mapped[name].shape)} vs model {tuple(expected[name].shape)}"
        for name in sorted(mapped)
        if mapped[name].shape != expected[name].shape
    ]
    word = WORD_EMBEDDINGS
    if tied_decoder is not None and word in expected and tied_decoder.shape != expected[word].shape:
        shapes.append(
            f"{DECODER_WEIGHT}: checkpoint {tuple(tied_decoder.shape)} vs model {tuple(expected[word].shape)}"
        )
    elif tied_decoder is not None and word in mapped and not torch.equal(tied_decoder, mapped[word]):
        raise CheckpointError(
            f"{DECODER_WEIGHT} differs from {word}, but the config ties them (tie_word_embeddings): "
            "set tie_word_embeddings to false in config.json to load an untied decoder"
        )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(sorted(unexpected))}")
        if shapes:
            parts.append(f"shape mismatches ({len(shapes)}): {'; '.join(shapes)}")
        raise CheckpointError("checkpoint does not match the model: " + " | ".join(parts))
    return mapped


def untied_state(state: dict[str, torch.Tensor], tie_word_embedding: bool) -> dict[str, torch.Tensor]:
    """A model's state as a checkpoint holds it: without the decoder weight when that is tied to
    the word embeddings."""
    if tie_word_embedding:
        state.pop(DECODER_WEIGHT, None)
    return state


def read_config(path: Path) -> BERTConfig:
    """The config.json of the checkpoint (a dir, or a weights file with the config beside it)."""
    config_path = path / CONFIG_NAME if path.is_dir() else path.parent / CONFIG_NAME
    if not config_path.exists():
        shadow = (f" (the directory {path} here is taken before the name {str(path)!r}: run from another directory "
                  "for the named checkpoint)") if str(path) in NAMES else ""  # fmt: skip
        raise CheckpointError(f"no {CONFIG_NAME} next to the weights at {path}{shadow}")
    try:
        return BERTConfig.from_json_file(config_path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc


def checkpoint_path(path: str | Path) -> Path:
    """`path` as a checkpoint location ("demo": the shipped one); a path that does not exist is an
    error that says so."""
    path = local_or_demo(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file or directory")
    return path


def write_checkpoint(path: str | Path, config: BERTConfig, state: dict[str, torch.Tensor]) -> None:
    """Write config.json + model.safetensors in Hugging Face format."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config.to_json_file(path / CONFIG_NAME)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    save_file(tensors, str(path / SAFETENSORS_NAME), metadata={"format": "pt"})
